"""``GuardStats`` keeps each process's guardrail counts as plain tuples of the window's rows, not
the report's models (issue #12: about 1 KB a row as models), and shows the same status."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice_operator.guardstats import (
    BUCKET_SECONDS,
    WINDOW_SECONDS,
    Count,
    GuardStats,
    compact,
    summary,
)
from sluice_sidecar.contract import GuardrailCount, UsageReport

T0 = 1_800_000_000.0  # a bucket boundary (divisible by 300)


def _report(seq: int, *rows: GuardrailCount, pod: str = "a") -> UsageReport:
    return UsageReport(
        namespace="ns",
        pod=pod,
        config_hash="h",
        seq=seq,
        window_start=T0,
        window_end=T0,
        instance=f"{pod}-1",
        guardrails=rows,
    )


def test_a_process_keeps_tuples_of_the_rows_in_the_window_only() -> None:
    stats = GuardStats()
    now = T0 + 2 * WINDOW_SECONDS
    rows = [
        GuardrailCount(policy="p", entity="EMAIL", start=T0, redacted=3),  # an hour too old
        GuardrailCount(policy="p", entity="EMAIL", start=now - 600, redacted=2, blocked=1),
        GuardrailCount(policy="q", entity="deny[0]", start=now - 300, flagged=4),
    ]
    assert stats.add(_report(1, *rows), now)
    (kept,) = stats.instances["ns"].values()
    assert kept.rows == (
        Count("p", "EMAIL", now - 600, 1, 2, 0),
        Count("q", "deny[0]", now - 300, 0, 0, 4),
    )
    assert all(type(r) is Count for r in kept.rows)
    # the same counts again (a later report of the process): nothing to show anew
    assert not stats.add(_report(2, *rows), now + 1)
    assert stats.status("ns", "p", now)["redacted"] == 2


def test_names_are_shared_between_processes() -> None:
    stats = GuardStats()
    for i in range(3):
        entity = "".join(["EMA", "IL"])  # a new string object each time, as parsed JSON gives
        row = GuardrailCount(policy="p", entity=entity, start=T0, redacted=1)
        stats.add(_report(1, row, pod=f"pod-{i}"), T0)
    kept = [i.rows[0].entity for i in stats.instances["ns"].values()]
    assert len({id(e) for e in kept}) == 1
    assert stats.status("ns", "p", T0)["redacted"] == 3


rows = st.lists(
    st.builds(
        GuardrailCount,
        policy=st.sampled_from(["p", "q"]),
        entity=st.sampled_from(["EMAIL", "PHONE", "deny[0]"]),
        start=st.integers(-15, 2).map(lambda b: T0 + BUCKET_SECONDS * b),
        blocked=st.integers(0, 5),
        redacted=st.integers(0, 5),
        flagged=st.integers(0, 5),
    ),
    max_size=40,
)


@settings(deadline=None)
@given(rows, st.floats(0, 2 * WINDOW_SECONDS), st.floats(0, 2 * WINDOW_SECONDS))
def test_the_kept_rows_show_what_the_models_showed(
    got: list[GuardrailCount], at: float, later: float
) -> None:
    added = T0 + at
    kept = compact(got, added)
    for now in (added, added + later):
        assert summary(kept, now) == summary(got, now)
