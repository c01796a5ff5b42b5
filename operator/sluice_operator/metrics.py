"""Prometheus metrics of the operator process, served on the control-plane port at ``/metrics``.

Owns the registry and the metric definitions; values are read from the reconciler and the API
writer when scraped (callbacks), so the hot paths only bump plain integers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


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
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    for name, doc, fn in [
        ("sluice_operator_reconcile_passes", "Namespace reconcile passes run.", passes),
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
    return registry


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


def handler(registry: CollectorRegistry) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def metrics(_: web.Request) -> web.StreamResponse:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return metrics
