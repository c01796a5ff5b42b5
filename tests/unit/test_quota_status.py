"""What an operator sees of the provider quota shares: a limited backend's ``quota`` block in the
ModelRoute's ``status.backends[]`` (written by the leader on the passes it makes anyway, granted
totals rounded so that shares moving at each renewal do not write the status) and the exact
values as ``sluice_quota_*`` gauges on the operator's /metrics."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sluice_operator import metrics, status
from sluice_operator.api.modelroute import ModelRouteStatus
from sluice_operator.reconcile import Reconciler
from sluice_sidecar.contract import (
    BackendHealth,
    BackendState,
    LeaseRequest,
    QuotaAsk,
    UsageReport,
)

from .test_api_models import ROUTE
from .test_reconcile import Recorder

NS = "team-a"
PODS = ("p1", "p2", "p3")


@given(st.integers(0, 10**7), st.integers(1, 10**7))
def test_a_granted_total_is_shown_to_the_nearest_twentieth_of_its_limit(
    value: int, limit: int
) -> None:
    shown = status.rounded(value, limit)
    step = max(1, limit // status.QUOTA_STEPS)
    assert abs(shown - value) <= step // 2 + step % 2
    assert shown <= max(value, limit)  # a total within the limit is shown within it
    assert shown % step == 0 or shown == max(value, limit)
    if limit < status.QUOTA_STEPS:
        assert shown == value
    if value == 0:
        assert shown == 0


class World:
    """A leading reconciler over one ModelRoute whose ``local`` backend has limits, a fake wall
    clock, and three sidecar processes that report and ask for quota shares."""

    def __init__(self) -> None:
        self.t = 1_000_000.0
        self.rec = Recorder()
        self.r = Reconciler(
            writer=self.rec, wall=lambda: self.t, now=lambda: "2026-12-06T08:00:00Z"
        )
        obj = copy.deepcopy(ROUTE)
        obj["spec"]["backends"][1]["limits"] = {"rpm": 60, "tpm": 20_000}
        self.r.observe("modelroutes", None, obj)
        self.seq = 0

    async def start(self) -> None:
        result = await self.r.reconcile(NS)
        self.r.leases.since[NS] = self.t - 3_600  # no restart grace: shares follow demand
        for pod in PODS:  # every sidecar reports every backend of its routes
            self.seq += 1
            self.r.take_report(
                UsageReport(
                    namespace=NS,
                    pod=pod,
                    config_hash=result.hash,
                    seq=self.seq,
                    window_start=self.t - 10,
                    window_end=self.t,
                    health=tuple(
                        BackendHealth(route="chat", backend=b, state=BackendState.HEALTHY)
                        for b in ("primary", "local")
                    ),
                )
            )

    def ask(self, pod: str, rpm: int, tpm: int, *, release: bool = False) -> None:
        self.seq += 1
        request = LeaseRequest(
            namespace=NS,
            pod=pod,
            instance=f"{pod}-1",
            seq=self.seq,
            quotas=(QuotaAsk(route="chat", backend="local", rpm=rpm, tpm=tpm),),
            release=release,
        )
        assert self.r.answer_leases(request) is not None

    def writes(self) -> list[dict[str, Any]]:
        return [s for plural, name, s in self.rec.statuses if plural == "modelroutes"]

    def backends(self) -> dict[str, dict[str, Any]]:
        st_ = self.r.objects[("modelroutes", NS, "chat")]["status"]
        ModelRouteStatus.model_validate(st_)  # the CRD's schema has every field written
        return {b["name"]: b for b in st_["backends"]}

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        registry = CollectorRegistry()
        metrics.register_quotas(registry, self.r.quota_views)
        text = generate_latest(registry).decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


def sample(name: str, metric: str | None = None) -> tuple[str, tuple[tuple[str, str], ...]]:
    labels = {"namespace": NS, "route": "chat", "backend": "local"}
    if metric is not None:
        labels["metric"] = metric
    return (name, tuple(sorted(labels.items())))


async def test_the_status_shows_each_limited_backends_quota_and_its_shares() -> None:
    w = World()
    await w.start()
    await w.r.reconcile(NS)
    # Before any sidecar asked: the limit, nothing granted, no holder. No quota without limits.
    assert w.backends()["local"]["quota"] == {
        "rpm": 60,
        "grantedRpm": 0,
        "tpm": 20_000,
        "grantedTpm": 0,
        "holders": 0,
    }
    assert "quota" not in w.backends()["primary"]

    # One busy process, two idle ones; the busy one and the last renew once more.
    w.ask("p1", 500, 50_000)
    w.ask("p2", 0, 0)
    w.ask("p3", 0, 0)
    w.ask("p1", 500, 50_000)
    w.ask("p3", 0, 0)
    book = w.r.leases.quotas.book(NS, "chat", "local")
    assert book is not None and book.live_total(w.t) == (57, 19_000)  # one floor stays free
    written = len(w.writes())
    await w.r.reconcile(NS)  # a pass the reports make anyway (never one per lease request)
    assert len(w.writes()) == written + 1
    assert w.backends()["local"]["quota"] == {
        "rpm": 60,
        "grantedRpm": 57,
        "tpm": 20_000,
        "grantedTpm": 19_000,
        "holders": 3,
    }

    # The busy one's demand eases a little: its share moves (56 in all), the status does not.
    w.ask("p1", 50, 18_500)
    assert book.live_total(w.t) == (56, 19_000)
    written = len(w.writes())
    await w.r.reconcile(NS)
    assert len(w.writes()) == written
    assert w.scrape()[sample("sluice_quota_granted_per_minute", "rpm")] == 56  # exact here

    # A process stops: one holder fewer, and that is written.
    w.ask("p3", 0, 0, release=True)
    await w.r.reconcile(NS)
    assert len(w.writes()) == written + 1
    quota = w.backends()["local"]["quota"]
    assert (quota["holders"], quota["grantedRpm"]) == (2, 54)  # 50 + 3, shown to 3s


async def test_the_metrics_give_limit_granted_and_holders_of_limited_backends_only() -> None:
    w = World()
    await w.start()
    w.ask("p1", 500, 50_000)
    w.ask("p2", 0, 0)
    w.ask("p1", 500, 50_000)
    got = w.scrape()
    assert got[sample("sluice_quota_limit_per_minute", "rpm")] == 60
    assert got[sample("sluice_quota_limit_per_minute", "tpm")] == 20_000
    assert got[sample("sluice_quota_granted_per_minute", "rpm")] == 57  # 54 + a floor of 3
    assert got[sample("sluice_quota_granted_per_minute", "tpm")] == 19_000
    assert got[sample("sluice_quota_holders")] == 2
    assert not any(dict(labels).get("backend") == "primary" for _, labels in got)

    # An expired lease (TTL + skew without renewal) stops counting.
    w.t += w.r.leases.ttl + w.r.leases.slack + 1
    w.ask("p1", 500, 50_000)
    got = w.scrape()
    assert got[sample("sluice_quota_holders")] == 1
    assert got[sample("sluice_quota_granted_per_minute", "rpm")] == 57

    # A follower grants no shares: no quota series.
    w.r.follow()
    assert w.scrape() == {}
    assert w.r.quota_views() == []
