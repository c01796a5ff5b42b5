"""Prometheus metrics of the operator process, served on the control-plane port at ``/metrics``.

Owns the registry and the metric definitions; values are read from the reconciler and the API
writer when scraped (callbacks), so the hot paths only bump plain integers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .quotas import QuotaView


def build_registry(
    *,
    passes: Callable[[], float],
    api_requests: Callable[[], float],
    namespaces: Callable[[], float],
    objects: Callable[[], float],
    problems: Callable[[], float],
    sidecars: Callable[[], float],
    token_reviews: Callable[[], float] = lambda: 0,
    denials: Callable[[], Mapping[str, int]] = dict,
    requests: Callable[[], Mapping[tuple[str, str], int]] = dict,
    leader: Callable[[], float] = lambda: 1,
) -> CollectorRegistry:
    """The operator's registry; ``requests``: control-plane requests by (route pattern, status
    code), ``controlplane.Auth.requests``."""
    registry = CollectorRegistry(auto_describe=True)
    for name, doc, fn in [
        ("sluice_operator_reconcile_passes", "Namespace reconcile passes run.", passes),
        (
            "sluice_operator_leader",
            "1 while this replica is the elected leader (writes status, takes reports, grants "
            "budget leases), else 0.",
            leader,
        ),
        (
            "sluice_operator_api_requests",
            "Write requests sent to the Kubernetes API.",
            api_requests,
        ),
        ("sluice_operator_namespaces", "Namespaces with Sluice resources.", namespaces),
        ("sluice_operator_objects", "Sluice objects watched.", objects),
        ("sluice_operator_problems", "Unresolved reference problems across namespaces.", problems),
        ("sluice_operator_reporting_sidecars", "Sidecars that reported recently.", sidecars),
        (
            "sluice_operator_token_reviews",
            "TokenReviews sent for the control plane (cache misses).",
            token_reviews,
        ),
    ]:
        Gauge(name, doc, registry=registry).set_function(fn)
    registry.register(_Denials(denials))
    registry.register(_Requests(requests))
    return registry


class _Requests(Collector):
    """``sluice_operator_controlplane_requests_total{path,code}``: control-plane requests by route
    pattern (``/v1/leases``, ``/v1/config/{namespace}``, ...) and status code (499: the client
    went away before the answer)."""

    def __init__(self, counts: Callable[[], Mapping[tuple[str, str], int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "sluice_operator_controlplane_requests",
            "Control-plane requests answered, by route pattern and status code.",
            labels=["path", "code"],
        )
        for (path, code), count in sorted(self.counts().items()):
            family.add_metric([path, code], count)
        yield family


class _Denials(Collector):
    """``sluice_operator_controlplane_denied_total{reason}``: control-plane refusals by reason
    (a fixed vocabulary, ``controlplane.DENIAL_REASONS``)."""

    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "sluice_operator_controlplane_denied",
            "Control-plane requests refused, by reason (unauthenticated, rate_limited, "
            "namespace_mismatch, pod_mismatch, unbound_token, too_large).",
            labels=["reason"],
        )
        for reason, count in sorted(self.counts().items()):
            family.add_metric([reason], count)
        yield family


class BudgetSample(Protocol):
    @property
    def window(self) -> str: ...
    @property
    def spent_usd(self) -> float: ...
    @property
    def percent(self) -> float: ...
    @property
    def limit_usd(self) -> float | None: ...
    @property
    def seconds(self) -> float: ...


def register_budgets(
    registry: CollectorRegistry,
    windows: Callable[[], Mapping[tuple[str, str], Sequence[BudgetSample]]],
    crossings: Callable[[], Mapping[tuple[str, str, str, int], int]],
) -> None:
    """Budget metrics from the operator's summed spend (what ``Budget.status`` shows):
    ``sluice_budget_spent_usd``, ``sluice_budget_limit_usd``, ``sluice_budget_usage_ratio`` and
    ``sluice_budget_window_seconds`` per ``{namespace, budget, window}``, and
    ``sluice_budget_threshold_crossings_total{namespace, budget, window, threshold}``."""
    registry.register(_Budgets(windows, crossings))


class _Budgets(Collector):
    def __init__(
        self,
        windows: Callable[[], Mapping[tuple[str, str], Sequence[BudgetSample]]],
        crossings: Callable[[], Mapping[tuple[str, str, str, int], int]],
    ) -> None:
        self.windows = windows
        self.crossings = crossings

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        labels = ["namespace", "budget", "window"]
        spent = GaugeMetricFamily(
            "sluice_budget_spent_usd", "Settled spend in the current window.", labels=labels
        )
        limit = GaugeMetricFamily(
            "sluice_budget_limit_usd", "The window's spend limit.", labels=labels
        )
        ratio = GaugeMetricFamily(
            "sluice_budget_usage_ratio",
            "Highest share of the window's limits used (1 = exhausted).",
            labels=labels,
        )
        seconds = GaugeMetricFamily(
            "sluice_budget_window_seconds", "The window's length.", labels=labels
        )
        for (ns, name), samples in sorted(self.windows().items()):
            for s in samples:
                key = [ns, name, s.window]
                spent.add_metric(key, s.spent_usd)
                ratio.add_metric(key, s.percent / 100)
                seconds.add_metric(key, s.seconds)
                if s.limit_usd is not None:
                    limit.add_metric(key, s.limit_usd)
        crossed = CounterMetricFamily(
            "sluice_budget_threshold_crossings",
            "Alert thresholds crossed (once per window).",
            labels=[*labels, "threshold"],
        )
        for (ns, name, window, th), count in sorted(self.crossings().items()):
            crossed.add_metric([ns, name, window, str(th)], count)
        yield from (spent, limit, ratio, seconds, crossed)


def register_quotas(
    registry: CollectorRegistry, views: Callable[[], Sequence[tuple[str, QuotaView]]]
) -> None:
    """Provider quota shares (``quotas``), from the leader's books at scrape time, for limited
    backends only: ``sluice_quota_limit_per_minute`` and ``sluice_quota_granted_per_minute`` per
    ``{namespace, route, backend, metric}`` (``metric``: ``rpm`` or ``tpm``, only a limited one)
    and ``sluice_quota_holders`` per ``{namespace, route, backend}``. ``route`` is the virtual
    model name, as in the sidecar's metrics."""
    registry.register(_Quotas(views))


class _Quotas(Collector):
    def __init__(self, views: Callable[[], Sequence[tuple[str, QuotaView]]]) -> None:
        self.views = views

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["namespace", "route", "backend"]
        limit = GaugeMetricFamily(
            "sluice_quota_limit_per_minute",
            "A backend's provider quota (limits.rpm or limits.tpm) on a route.",
            labels=[*labels, "metric"],
        )
        granted = GaugeMetricFamily(
            "sluice_quota_granted_per_minute",
            "The quota's shares granted to live sidecar processes, summed.",
            labels=[*labels, "metric"],
        )
        holders = GaugeMetricFamily(
            "sluice_quota_holders",
            "Sidecar processes holding a live share of the backend's quota.",
            labels=labels,
        )
        for namespace, v in self.views():
            key = [namespace, v.route, v.backend]
            holders.add_metric(key, v.holders)
            for metric, cap, total in zip(("rpm", "tpm"), v.limit, v.granted, strict=True):
                if cap is not None:
                    limit.add_metric([*key, metric], cap)
                    granted.add_metric([*key, metric], total)
        yield from (limit, granted, holders)


def handler(registry: CollectorRegistry) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def metrics(_: web.Request) -> web.StreamResponse:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return metrics
