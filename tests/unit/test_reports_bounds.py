"""What ``Reports`` keeps per pod stays bounded whatever the report rate, and the counters it
sums from that bounded state are the window's (issue #12: the operator kept every report of the
last five minutes, about 5 KB each, and reached 0.7 GB under 1,000 sidecars reporting every
second)."""

from __future__ import annotations

import statistics

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice_operator.reports import BUCKET, MAX_BUCKETS, MAX_SAMPLES, WINDOW, Reports
from sluice_sidecar.contract import (
    BackendHealth,
    BackendState,
    GuardrailCount,
    UsageEntry,
    UsageReport,
)


def report(seq: int, requests: int, latency: float | None = 10.0, pod: str = "p1") -> UsageReport:
    return UsageReport(
        namespace="ns",
        pod=pod,
        config_hash="h1",
        seq=seq,
        window_start=0,
        window_end=10,
        usage=(
            UsageEntry(route="chat", backend="a", requests=requests, latency_p50_ms=latency),
            UsageEntry(route="other", backend="z", requests=1),
        ),
    )


def backend_a(r: Reports, now: float) -> dict[str, object]:
    out = r.route_status("ns", "chat", "h1", now=now)
    return next((b for b in out["backends"] if b["name"] == "a"), {"requests": 0})


def test_a_pod_reporting_every_second_for_an_hour_keeps_a_bounded_state() -> None:
    r = Reports()
    for second in range(3600):
        r.add(report(second + 1, 1), now=float(second))
    (pod,) = r.pods.values()
    assert len(pod.buckets) <= MAX_BUCKETS
    assert all(len(c.latencies) <= MAX_SAMPLES for b in pod.buckets for c in b.counts.values())
    # the last five minutes (and at most one bucket more), not the hour
    assert WINDOW <= backend_a(r, now=3599.0)["requests"] <= WINDOW + BUCKET


def test_a_pod_reporting_many_times_a_second_keeps_a_bounded_state() -> None:
    r = Reports()
    for i in range(20_000):
        r.add(report(i + 1, 1, latency=float(i % 7)), now=i / 50)
    (pod,) = r.pods.values()
    assert len(pod.buckets) <= MAX_BUCKETS
    assert sum(len(c.latencies) for b in pod.buckets for c in b.counts.values()) <= (
        MAX_BUCKETS * MAX_SAMPLES
    )


def test_a_report_only_the_other_route_used_shows_nothing_for_this_one() -> None:
    r = Reports()
    r.add(report(1, 0, latency=None), now=0)
    a = backend_a(r, now=1)
    assert a["requests"] == 0
    assert "p50LatencyMs" not in a


gaps = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.5, 1.0, 3.0, 9.5, 10.0, 12.0, 30.0]) | st.floats(0.0, 40.0),
        st.integers(min_value=0, max_value=1000),
    ),
    min_size=40,
    max_size=150,
)


@settings(deadline=None)  # no timing: a loaded machine must not fail it
@given(gaps)
def test_sums_are_the_window_at_most_one_bucket_longer(sent: list[tuple[float, int]]) -> None:
    """Any report times: the requests shown, whenever asked, are at least the sum over the last
    ``WINDOW`` seconds and at most the sum over the last ``WINDOW + BUCKET`` seconds."""
    r = Reports()
    kept: list[tuple[float, int]] = []
    now = 0.0
    for seq, (gap, n) in enumerate(sent, start=1):
        now += gap
        r.add(report(seq, n), now=now)
        kept.append((now, n))
        for later in range(0, 50, 4):  # a pod stays live for 60 s after its latest report
            at = now + later
            shown = backend_a(r, now=at)["requests"]
            assert sum(n for t, n in kept if at - t <= WINDOW) <= shown
            assert shown <= sum(n for t, n in kept if at - t <= WINDOW + BUCKET)


def test_at_a_report_a_second_the_latency_is_the_median_of_every_report() -> None:
    r = Reports()
    latencies = [float((7 * i) % 23) for i in range(120)]
    for i, latency in enumerate(latencies):
        r.add(report(i + 1, 1, latency), now=float(i))
    assert backend_a(r, now=119.0)["p50LatencyMs"] == round(statistics.median(latencies), 1)


@settings(deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=BUCKET, max_value=60.0),
            st.integers(min_value=0, max_value=100),
            st.none() | st.floats(min_value=0.0, max_value=1e4),
        ),
        min_size=1,
        max_size=60,
    )
)
def test_one_report_a_bucket_shows_what_keeping_every_report_showed(
    sent: list[tuple[float, int, float | None]],
) -> None:
    """At one report per ``BUCKET`` or slower (the default interval is 10 s) the status is the
    one every report of the window gave: the same sums and the median of the same latencies."""
    r = Reports()
    now, kept = 0.0, []
    for seq, (gap, n, latency) in enumerate(sent, start=1):
        now += gap
        r.add(report(seq, n, latency), now=now)
        kept.append((now, n, latency))
    window = [(n, lat) for t, n, lat in kept if now - t <= WINDOW]
    a = backend_a(r, now=now)
    assert a["requests"] == sum(n for n, _ in window)
    latencies = [lat for _, lat in window if lat is not None]
    if latencies:
        assert a["p50LatencyMs"] == round(statistics.median(latencies), 1)
    else:
        assert "p50LatencyMs" not in a


def test_many_pods_each_keep_their_own_bounded_state() -> None:
    r = Reports()
    for second in range(400):
        for p in range(50):
            r.add(report(second + 1, 1, pod=f"p{p}"), now=float(second))
    assert len(r.pods) == 50
    assert all(len(p.buckets) <= MAX_BUCKETS for p in r.pods.values())
    assert 50 * WINDOW <= backend_a(r, now=399.0)["requests"] <= 50 * (WINDOW + BUCKET)


def test_the_latest_report_is_kept_without_what_is_kept_elsewhere() -> None:
    """Usage goes to the buckets, spend to ``BudgetSpend``, guardrail counts to ``GuardStats``:
    the report a pod keeps has its health, hash and name only."""
    r = Reports()
    full = report(1, 5).model_copy(
        update={
            "guardrails": tuple(
                GuardrailCount(policy="p", entity=f"E{i}", start=0.0, redacted=1) for i in range(50)
            ),
            "health": (BackendHealth(route="chat", backend="a", state=BackendState.EJECTED),),
        }
    )
    r.add(full, now=0)
    (pod,) = r.pods.values()
    assert (pod.report.usage, pod.report.guardrails, pod.report.budgets) == ((), (), ())
    assert (pod.report.pod, pod.report.config_hash, pod.report.health) == ("p1", "h1", full.health)
    a = backend_a(r, now=1)
    assert (a["requests"], a["state"]) == (5, "Ejected")
