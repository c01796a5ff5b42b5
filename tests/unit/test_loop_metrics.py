"""The lock-free metrics of the hot path expose exactly what prometheus_client's would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from sluice_sidecar.metering import TOKEN_BUCKETS, LoopCounter, LoopHistogram


def exposition(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


def test_histogram_exposition_matches_prometheus_client() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    h = LoopHistogram("tokens", "Tokens.", ["route", "kind"], TOKEN_BUCKETS, ours)
    ref = Histogram("tokens", "Tokens.", ["route", "kind"], buckets=TOKEN_BUCKETS, registry=theirs)
    for value in (0, 1, 3, 4, 5, 70000, 4194304, 10**9, 2.5):
        for route in ("a", "b"):
            h.labels(route, "in").observe(value)
            ref.labels(route, "in").observe(value)
    assert exposition(ours) == exposition(theirs)
    assert 'tokens_bucket{kind="in",le="4.194304e+06",route="a"} 8.0' in exposition(ours)


def test_counter_exposition_matches_prometheus_client() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    c = LoopCounter("sluice_things", "Things.", ["route"], ours)
    ref = Counter("sluice_things", "Things.", ["route"], registry=theirs)
    for amount in (1, 2.5, 0.000001):
        c.labels("r").inc(amount)
        ref.labels("r").inc(amount)
    c.labels("s").inc()
    ref.labels("s").inc()
    assert exposition(ours) == exposition(theirs)


def test_families_are_exported_before_any_update_and_labels_are_checked() -> None:
    registry = CollectorRegistry()
    h = LoopHistogram("lat_seconds", "Latency.", ["route"], (0.1, 1), registry)
    assert "# TYPE lat_seconds histogram" in generate_latest(registry).decode()
    with pytest.raises(ValueError, match="expected string values"):
        h.labels("a", "b")
    with pytest.raises(ValueError, match="expected string values"):
        h.labels(3)  # type: ignore[arg-type]
    assert h.labels("a") is h.labels("a")
