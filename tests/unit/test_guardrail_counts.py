"""Guardrail verdict counts: what a verdict record counts in the sidecar (per policy, entity and
five-minute bucket, gauges of the last hour), and what the operator sums into GuardrailPolicy
status (highest seq per process, the last hour, per entity and per bucket)."""

from __future__ import annotations

from typing import Any

from sluice_operator.guardstats import GuardStats, summary
from sluice_sidecar.contract import GuardrailCount, UsageReport
from sluice_sidecar.guardrails.stats import BUCKET_SECONDS, MAX_ROWS, VerdictCounts, counted

T0 = 1_800_000_000.0  # a bucket boundary (divisible by 300)


def _v(**kw: Any) -> dict[str, Any]:
    return {"policy": "p", "stage": "input", "mode": "Enforce", "enforced": True, **kw}


def test_each_verdict_counts_as_its_action_and_entity() -> None:
    assert list(counted(_v(check="pii", action="Redact", entities={"EMAIL": 2, "PHONE": 1}))) == [
        ("EMAIL", 0, 2, 0),
        ("PHONE", 0, 1, 0),
    ]
    assert list(counted(_v(check="pii", action="Block", entities={"CREDIT_CARD": 3}))) == [
        ("CREDIT_CARD", 1, 0, 0)
    ]
    assert list(counted(_v(check="pii", action="Log", entities={"EMAIL": 2}))) == [
        ("EMAIL", 0, 0, 2)
    ]
    # Monitor (and Audit streams) change nothing: what would have happened is flagged
    monitor = _v(check="pii", action="Block", entities={"EMAIL": 1}, enforced=False)
    assert list(counted(monitor)) == [("EMAIL", 0, 0, 1)]
    assert list(counted(_v(check="deny", action="Redact", patterns=[0, 2], matches=5))) == [
        ("deny[0]", 0, 4, 0),
        ("deny[2]", 0, 1, 0),
    ]
    assert list(counted(_v(check="promptInjection", action="Block", score=0.9))) == [
        ("PROMPT_INJECTION", 1, 0, 0)
    ]
    assert list(counted(_v(check="maxChars", action="Block", chars=9, limit=3))) == [
        ("MAX_CHARS", 1, 0, 0)
    ]
    assert list(counted(_v(check="external", action="Block", flagged=True))) == [
        ("EXTERNAL", 1, 0, 0)
    ]


def test_allowing_verdicts_count_nothing_and_a_classifier_down_is_its_own_entity() -> None:
    assert list(counted(_v(check="promptInjection", action="Allow", score=0.2))) == []
    assert list(counted(_v(check="external", action="Allow", flagged=False))) == []
    closed = _v(check="external", action="Block", failure="timeout", failureMode="Closed")
    assert list(counted(closed)) == [("EXTERNAL_UNAVAILABLE", 1, 0, 0)]
    opened = _v(check="external", action="Allow", failure="garbage", failureMode="Open")
    assert list(counted(opened)) == [("EXTERNAL_UNAVAILABLE", 0, 0, 1)]


def test_the_sidecar_reports_gauges_per_bucket_and_forgets_buckets_older_than_an_hour() -> None:
    counts = VerdictCounts()
    email = _v(check="pii", action="Redact", entities={"EMAIL": 2})
    counts.record([email], T0 + 10)
    counts.record([email], T0 + 20)
    counts.record([email, _v(policy="q", check="maxChars", action="Block")], T0 + 310)
    rows = counts.report(T0 + 320)
    assert rows == (
        GuardrailCount(policy="p", entity="EMAIL", start=T0, redacted=4),
        GuardrailCount(policy="p", entity="EMAIL", start=T0 + 300, redacted=2),
        GuardrailCount(policy="q", entity="MAX_CHARS", start=T0 + 300, blocked=1),
    )
    # the same totals again: a gauge, not a delta
    assert counts.report(T0 + 330) == rows
    # an hour later the first bucket is gone
    later = counts.report(T0 + 3600 + 10)
    assert [r.start for r in later] == [T0 + 300, T0 + 300]
    assert counts.report(T0 + 3600 + 310) == ()


def test_a_report_has_a_bounded_number_of_rows_newest_first() -> None:
    counts = VerdictCounts()
    for i in range(MAX_ROWS + 5):
        counts.record([_v(policy=f"p{i}", check="maxChars", action="Block")], T0 + 10)
    counts.record([_v(check="maxChars", action="Block")], T0 + BUCKET_SECONDS + 1)
    rows = counts.report(T0 + BUCKET_SECONDS + 2)
    assert len(rows) == MAX_ROWS
    assert rows[-1].start == T0 + BUCKET_SECONDS  # the newest bucket is kept


def _report(pod: str, seq: int, *rows: GuardrailCount, instance: str = "i1") -> UsageReport:
    return UsageReport(
        namespace="ns",
        pod=pod,
        config_hash="h",
        seq=seq,
        window_start=T0,
        window_end=T0,
        instance=instance,
        guardrails=rows,
    )


def _row(entity: str, start: float = T0, policy: str = "p", **kw: int) -> GuardrailCount:
    return GuardrailCount(policy=policy, entity=entity, start=start, **kw)


def test_the_operator_sums_processes_and_keeps_only_the_latest_report_of_each() -> None:
    stats = GuardStats()
    assert stats.add(_report("a", 1, _row("EMAIL", redacted=2)), T0 + 5)
    assert stats.add(_report("b", 1, _row("EMAIL", redacted=1), _row("PHONE", flagged=1)), T0)
    # a newer report of pod a replaces its counts (gauges): 2 -> 5, not 2 + 5
    assert stats.add(_report("a", 2, _row("EMAIL", redacted=5, blocked=1)), T0 + 10)
    # repeated and older reports change nothing
    assert not stats.add(_report("a", 2, _row("EMAIL", redacted=50)), T0 + 11)
    assert not stats.add(_report("a", 1, _row("EMAIL", redacted=50)), T0 + 12)
    # a restarted process (new instance) counts next to the old one
    assert stats.add(_report("a", 1, _row("EMAIL", redacted=1), instance="i2"), T0 + 13)
    # other policies and namespaces are apart
    assert stats.add(_report("a", 3, _row("EMAIL", policy="other", blocked=9)), T0 + 14) is True
    got = stats.status("ns", "p", T0 + 20)
    # pod a's latest report (seq 3) no longer has policy p: only b and the new instance count
    assert got["redacted"] == 2
    assert got["flagged"] == 1
    assert got["verdicts"]["entities"] == [
        {"entity": "EMAIL", "blocked": 0, "redacted": 2, "flagged": 0},
        {"entity": "PHONE", "blocked": 0, "redacted": 0, "flagged": 1},
    ]
    assert stats.status("ns", "other", T0 + 20)["blocked"] == 9
    assert stats.status("elsewhere", "p", T0 + 20)["blocked"] == 0


def test_the_status_covers_the_last_hour_in_five_minute_buckets() -> None:
    rows = [
        _row("EMAIL", start=T0, redacted=3),
        _row("EMAIL", start=T0 + 600, redacted=1, blocked=2),
        _row("deny[0]", start=T0 + 600, flagged=4),
    ]
    got = summary(rows, T0 + 700)
    assert (got["blocked"], got["redacted"], got["flagged"]) == (2, 4, 4)
    assert got["verdicts"]["window"] == "1h"
    assert got["verdicts"]["buckets"] == [
        {"start": "2027-01-15T08:00:00Z", "blocked": 0, "redacted": 3, "flagged": 0},
        {"start": "2027-01-15T08:10:00Z", "blocked": 2, "redacted": 1, "flagged": 4},
    ]
    # busiest entity first
    assert [e["entity"] for e in got["verdicts"]["entities"]] == ["EMAIL", "deny[0]"]
    # an hour on, the first bucket has left the window
    later = summary(rows, T0 + 3600 + 5)
    assert (later["blocked"], later["redacted"], later["flagged"]) == (2, 1, 4)
    assert summary(rows, T0 + 7200)["verdicts"] == {"window": "1h", "entities": [], "buckets": []}


def test_the_status_shape_is_what_the_crd_accepts() -> None:
    from sluice_operator.api.guardrailpolicy import GuardrailPolicyStatus

    got = summary([_row("EMAIL", redacted=3), _row("EXTERNAL_UNAVAILABLE", flagged=1)], T0 + 1)
    status = GuardrailPolicyStatus.model_validate(got)
    assert status.redacted == 3
    assert status.verdicts is not None
    assert [e.entity for e in status.verdicts.entities] == ["EMAIL", "EXTERNAL_UNAVAILABLE"]
