"""Aggregation of sidecar reports: idempotency, staleness, health and rollout."""

from __future__ import annotations

from sluice_operator.reports import STALE_AFTER, Reports
from sluice_sidecar.contract import BackendHealth, BackendState, UsageEntry, UsageReport


def report(pod: str, seq: int, hash_: str = "h1", **usage: int) -> UsageReport:
    return UsageReport(
        namespace="ns",
        pod=pod,
        config_hash=hash_,
        seq=seq,
        window_start=0,
        window_end=10,
        usage=(
            UsageEntry(route="chat", backend="a", latency_p50_ms=10.0, **usage),
            UsageEntry(route="other", backend="z", requests=100),
        ),
        health=(BackendHealth(route="chat", backend="b", state=BackendState.EJECTED, until=60.0),),
    )


def test_duplicates_and_old_sequence_numbers_are_ignored() -> None:
    r = Reports()
    assert r.add(report("p1", 2, requests=5), now=0)
    assert not r.add(report("p1", 2, requests=5), now=1)
    assert not r.add(report("p1", 1, requests=5), now=1)
    assert r.route_status("ns", "chat", "h1", now=1)["backends"][0]["requests"] == 5


def test_two_pods_sum_and_rollout_counts_hashes() -> None:
    r = Reports()
    r.add(report("p1", 1, requests=5, errors=1, fallbacks=2), now=0)
    r.add(report("p2", 1, "h0", requests=3), now=0)
    out = r.route_status("ns", "chat", "h1", now=1)
    a = next(b for b in out["backends"] if b["name"] == "a")
    assert (a["requests"], a["errors"], a["fallbacks"], a["p50LatencyMs"]) == (8, 1, 2, 10.0)
    b = next(b for b in out["backends"] if b["name"] == "b")
    assert (b["state"], b["until"]) == ("Ejected", "1970-01-01T00:01:00Z")
    assert out["rollout"] == {
        "configHash": "h1",
        "pods": 2,
        "applied": 1,
        "summary": "1/2",
        "sidecars": [
            {"pod": "p1", "configHash": "h1", "lastReport": "1970-01-01T00:00:00Z"},
            {"pod": "p2", "configHash": "h0", "lastReport": "1970-01-01T00:00:00Z"},
        ],
    }


def test_stale_pods_drop_out() -> None:
    r = Reports()
    r.add(report("p1", 1, requests=5), now=0)
    out = r.route_status("ns", "chat", "h1", now=STALE_AFTER + 1)
    assert out == {
        "backends": [],
        "rollout": {"configHash": "h1", "pods": 0, "applied": 0, "summary": "0/0", "sidecars": []},
        "keys": {"pods": 0, "missing": {}},
    }


def test_counts_sum_over_the_window_while_health_comes_from_the_latest() -> None:
    r = Reports()
    r.add(report("p1", 1, requests=5), now=0)
    r.add(report("p1", 2, requests=2), now=10)
    out = r.route_status("ns", "chat", "h1", now=11)
    a = next(b for b in out["backends"] if b["name"] == "a")
    assert a["requests"] == 7
    assert out["rollout"]["pods"] == 1


def test_namespace_rollout_counts_every_reporting_pod_and_reports_to_the_minute() -> None:
    r = Reports()
    r.add(report("p1", 1), now=125)
    other = report("p2", 1, "h0").model_copy(update={"health": ()})
    r.add(other, now=130)
    assert r.rollout("ns", "h1", now=131) == {
        "configHash": "h1",
        "pods": 2,
        "applied": 1,
        "summary": "1/2",
    }
    # the route's rollout counts only the pods whose health names it
    sidecars = r.route_status("ns", "chat", "h1", now=131)["rollout"]["sidecars"]
    assert sidecars == [{"pod": "p1", "configHash": "h1", "lastReport": "1970-01-01T00:02:00Z"}]


def test_pods_that_cannot_read_a_key_are_named_per_backend() -> None:
    def with_health(pod: str, *missing: str) -> UsageReport:
        return report(pod, 1).model_copy(
            update={
                "health": tuple(
                    BackendHealth(
                        route="chat",
                        backend=b,
                        state=BackendState.HEALTHY,
                        credentials_missing=b in missing,
                    )
                    for b in ("a", "b")
                )
            }
        )

    r = Reports()
    r.add(with_health("p1", "b"), now=0)
    r.add(with_health("p2", "a", "b"), now=0)
    r.add(with_health("p3"), now=0)
    out = r.route_status("ns", "chat", "h1", now=1)
    assert out["keys"] == {"pods": 3, "missing": {"a": ["p2"], "b": ["p1", "p2"]}}
    assert {b["name"]: b.get("credentials") for b in out["backends"]} == {
        "a": "Missing",
        "b": "Missing",
    }
    # Another route's report does not count; a pod that stopped reporting drops out.
    assert r.route_status("ns", "other", "h1", now=1)["keys"] == {"pods": 0, "missing": {}}
    r.add(with_health("p1").model_copy(update={"seq": 2}), now=STALE_AFTER)
    r.add(with_health("p3").model_copy(update={"seq": 2}), now=STALE_AFTER)
    out = r.route_status("ns", "chat", "h1", now=STALE_AFTER + 1)
    assert out["keys"] == {"pods": 2, "missing": {}}
    assert all("credentials" not in b for b in out["backends"])
