"""The budget ledger (pure): reserve/settle/release, the concurrent burst at the budget edge,
idempotent request ids, TTL expiry, window rollover and clock steps, alert thresholds."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice_sidecar.budget.ledger import (
    PICO_PER_USD,
    Amount,
    Exceeded,
    Ledger,
    Reservation,
    to_pico,
)
from sluice_sidecar.contract import BudgetLimit, BudgetRule, WindowKind

DAY, ROLLING = WindowKind.DAY, WindowKind.ROLLING
#: 2025-05-10 12:00 UTC
NOON = datetime(2025, 5, 10, 12, 0, tzinfo=UTC).timestamp()
MIDNIGHT = datetime(2025, 5, 11, 0, 0, tzinfo=UTC).timestamp()


def rule(*limits: BudgetLimit, thresholds: tuple[int, ...] = (50, 80, 100)) -> BudgetRule:
    return BudgetRule(name="team", limits=limits, alert_thresholds=thresholds)


def daily(
    usd: float | None = None, tokens: int | None = None, requests: int | None = None
) -> BudgetLimit:
    return BudgetLimit(window=DAY, timezone="UTC", usd=usd, tokens=tokens, requests=requests)


def granted(r: Reservation | Exceeded) -> Reservation:
    assert isinstance(r, Reservation), r
    return r


def refused(r: Reservation | Exceeded) -> Exceeded:
    assert isinstance(r, Exceeded), r
    return r


def spent(ledger: Ledger, now: float = NOON, i: int = 0) -> tuple[float, int, int, float, int, int]:
    s = ledger.status(now)[i]
    return s.spent_usd, s.tokens, s.requests, s.held_usd, s.held_tokens, s.held_requests


def test_amounts_are_exact() -> None:
    assert to_pico(0.1) + to_pico(0.2) == to_pico(0.3)
    assert Amount.of(1.5, 10, 1).usd == 1.5
    assert Amount.of(-1.0, -5) == Amount()
    assert Amount(1, 2, 3).max(Amount(3, 1, 0)) == Amount(3, 2, 3)
    assert (Amount(1, 2, 3) - Amount(2, 2, 2)).clamp() == Amount(0, 0, 1)
    assert to_pico(25.0) == 25 * PICO_PER_USD


def test_reserve_then_settle_replaces_the_hold_by_the_actual() -> None:
    led = Ledger(rule(daily(usd=1.0, tokens=10_000, requests=10)))
    r = granted(led.reserve("a", 0.30, 3000, NOON))
    assert spent(led) == (0.0, 0, 0, 0.30, 3000, 1)
    led.settle(r, 0.05, 500, NOON + 1)
    assert spent(led) == (0.05, 500, 1, 0.0, 0, 0)
    # Settle with actual < worst case freed the rest: 0.95 is available again.
    granted(led.reserve("b", 0.95, 9500, NOON + 2))
    refused(led.reserve("c", 0.01, 1, NOON + 3))


def test_release_drops_the_hold_and_the_request() -> None:
    led = Ledger(rule(daily(usd=1.0, requests=1)))
    r = granted(led.reserve("a", 0.6, 10, NOON))
    refused(led.reserve("b", 0.6, 10, NOON))
    led.release(r)
    assert spent(led) == (0.0, 0, 0, 0.0, 0, 0)
    granted(led.reserve("b", 0.6, 10, NOON))


def test_settle_and_release_twice_are_no_ops() -> None:
    led = Ledger(rule(daily(usd=1.0)))
    r = granted(led.reserve("a", 0.5, 10, NOON))
    led.settle(r, 0.2, 5, NOON)
    led.settle(r, 0.2, 5, NOON)
    led.release(r)
    assert spent(led)[:3] == (0.2, 5, 1)
    assert spent(led)[3:] == (0.0, 0, 0)
    assert not r.open


def test_actual_above_worst_case_is_charged() -> None:
    led = Ledger(rule(daily(usd=1.0)))
    r = granted(led.reserve("a", 0.1, 10, NOON))
    led.settle(r, 0.4, 40, NOON)
    assert spent(led)[:2] == (0.4, 40)


def test_refusal_names_the_binding_limit_and_the_reset() -> None:
    led = Ledger(
        rule(
            daily(usd=10.0),
            BudgetLimit(window=WindowKind.MONTH, timezone="Europe/Berlin", tokens=1000),
        )
    )
    led.settle(granted(led.reserve("a", 1.0, 900, NOON)), 1.0, 900, NOON)
    x = refused(led.reserve("b", 1.0, 200, NOON))
    assert (x.rule, x.limit_index, x.window, x.metric) == ("team", 1, WindowKind.MONTH, "tokens")
    assert (x.limit, x.used, x.requested) == (1000, 900, 200)
    assert x.percent == 90.0
    assert x.timezone == "Europe/Berlin"
    assert x.resets_at == datetime(2025, 5, 31, 22, 0, tzinfo=UTC).timestamp()
    assert x.retry_after == x.resets_at - NOON
    assert not x.in_flight


def test_refused_by_holds_alone_retries_soon() -> None:
    led = Ledger(rule(daily(usd=1.0)))
    granted(led.reserve("a", 0.9, 10, NOON))
    x = refused(led.reserve("b", 0.2, 10, NOON))
    assert x.in_flight and x.retry_after == 1.0


def test_a_request_larger_than_the_limit_can_never_fit() -> None:
    led = Ledger(rule(daily(usd=1.0)))
    x = refused(led.reserve("a", 1.5, 10, NOON))
    assert x.retry_after is None


def test_exact_fit_is_admitted() -> None:
    led = Ledger(rule(daily(usd=0.3, requests=3)))
    for i in range(3):
        granted(led.reserve(str(i), 0.1, 1, NOON))
    x = refused(led.reserve("x", 0.0, 1, NOON))
    assert x.metric == "requests"


async def test_concurrent_burst_at_the_edge_never_exceeds_the_limit() -> None:
    led = Ledger(rule(daily(usd=1.0)))
    led.settle(granted(led.reserve("warm", 0.93, 10, NOON)), 0.93, 10, NOON)

    async def one(i: int) -> Reservation | Exceeded:
        await asyncio.sleep(0)
        r = led.reserve(f"r{i}", 0.01, 10, NOON)
        await asyncio.sleep(0)  # others run between reserve and settle
        if isinstance(r, Reservation):
            led.settle(r, 0.01, 10, NOON + 1)
        return r

    results = await asyncio.gather(*(one(i) for i in range(500)))
    admitted = [r for r in results if isinstance(r, Reservation)]
    assert len(admitted) == 7
    s = led.status(NOON + 1)[0]
    assert s.spent_usd == pytest.approx(1.0)
    assert to_pico(s.spent_usd) <= to_pico(1.0)
    assert s.requests == 8
    assert (s.held_usd, s.held_requests) == (0.0, 0)


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["reserve", "settle", "release", "tick"]),
            st.integers(0, 15),  # request id
            st.integers(1, 400),  # worst case, in cents
            st.floats(0, 1.5),  # actual / worst
        ),
        max_size=80,
    )
)
def test_random_interleavings_keep_the_invariant(ops: list[tuple[str, int, int, float]]) -> None:
    """Whatever the interleaving of reserves, settles, releases and expiries: committed spend
    plus holds never exceed the limit except by what settled requests cost beyond their worst
    case; holds go back to zero once nothing is open."""
    limit = 10.0
    led = Ledger(rule(daily(usd=limit)), ttl=30.0)
    open_: dict[int, list[Reservation]] = {}
    excess = 0
    now = NOON
    for op, rid, cents, ratio in ops:
        if op == "tick":
            now += 20.0
            led.expire(now)
        elif op == "reserve":
            r = led.reserve(str(rid), cents / 100, cents, now)
            if isinstance(r, Reservation):
                open_.setdefault(rid, []).append(r)
        elif open_.get(rid):
            r = open_[rid].pop(0)
            if op == "settle":
                actual = to_pico(cents / 100 * ratio)
                excess += max(0, actual - r.worst.pusd)
                led.settle(r, actual / PICO_PER_USD, int(cents * ratio), now)
            else:
                led.release(r)
        s = led.status(now)[0]
        assert to_pico(s.spent_usd) + to_pico(s.held_usd) <= to_pico(limit) + excess
    for rs in open_.values():
        for r in rs:
            led.release(r)
    s = led.status(now)[0]
    assert (s.held_usd, s.held_tokens, s.held_requests) == (0.0, 0, 0)


# --- idempotency ---------------------------------------------------------------------------------


def test_same_request_id_retried_after_settle_is_counted_once() -> None:
    led = Ledger(rule(daily(usd=1.0, requests=5)))
    first = granted(led.reserve("req-1", 0.2, 100, NOON))
    led.settle(first, 0.1, 50, NOON + 1)
    retry = granted(led.reserve("req-1", 0.2, 100, NOON + 5))
    assert retry.replay
    led.settle(retry, 0.08, 40, NOON + 6)
    assert spent(led, NOON + 6)[:3] == (0.1, 50, 1)  # the larger attempt, once


def test_retry_costing_more_replaces_the_charge_not_adds() -> None:
    led = Ledger(rule(daily(usd=1.0)))
    led.settle(granted(led.reserve("k", 0.2, 100, NOON)), 0.1, 50, NOON)
    led.settle(granted(led.reserve("k", 0.2, 100, NOON)), 0.15, 70, NOON)
    assert spent(led)[:3] == (0.15, 70, 1)


def test_concurrent_duplicates_join_one_hold() -> None:
    led = Ledger(rule(daily(usd=1.0, requests=1)))
    a = granted(led.reserve("dup", 0.5, 100, NOON))
    b = granted(led.reserve("dup", 0.5, 100, NOON))  # requests=1 would refuse a new request
    assert b.replay and not a.replay
    assert spent(led)[3:] == (0.5, 100, 1)
    led.settle(a, 0.3, 60, NOON)
    assert spent(led) == (0.3, 60, 1, 0.2, 40, 0)  # b still holds up to its worst case
    led.settle(b, 0.2, 40, NOON)
    assert spent(led) == (0.3, 60, 1, 0.0, 0, 0)


def test_a_retry_that_cannot_add_enough_is_refused() -> None:
    led = Ledger(rule(daily(usd=1.0)))
    led.settle(granted(led.reserve("k", 0.2, 10, NOON)), 0.1, 5, NOON)
    granted(led.reserve("other", 0.8, 10, NOON))
    x = refused(led.reserve("k", 0.3, 10, NOON))  # would hold 0.2 beyond its charge of 0.1
    assert x.requested == pytest.approx(0.2)


def test_a_released_request_id_is_a_new_request_next_time() -> None:
    led = Ledger(rule(daily(usd=1.0)))
    led.release(granted(led.reserve("k", 0.2, 10, NOON)))
    assert not led.knows("k")
    assert not granted(led.reserve("k", 0.2, 10, NOON)).replay


def test_request_ids_are_forgotten_after_the_idempotency_time() -> None:
    led = Ledger(rule(daily(usd=10.0)), ttl=10.0, idempotency_ttl=100.0)
    led.settle(granted(led.reserve("k", 0.2, 10, NOON)), 0.1, 5, NOON)
    assert led.knows("k")
    led.expire(NOON + 109)
    assert led.knows("k")
    led.expire(NOON + 111)
    assert not led.knows("k")
    led.settle(granted(led.reserve("k", 0.2, 10, NOON + 112)), 0.1, 5, NOON + 112)
    assert spent(led, NOON + 112)[:3] == (0.2, 10, 2)


def test_replays_are_capped() -> None:
    led = Ledger(rule(daily(usd=100.0)), max_replays=2)
    for _ in range(5):
        led.settle(granted(led.reserve("same", 0.2, 10, NOON)), 0.1, 5, NOON)
    # 1 + 2 replays, then a new logical request (+ 2 replays of it)
    assert spent(led)[2] == 2


def test_memory_is_bounded() -> None:
    led = Ledger(rule(daily(usd=1e9)), max_entries=100)
    for i in range(1000):
        led.settle(granted(led.reserve(f"r{i}", 0.001, 1, NOON)), 0.001, 1, NOON)
    assert len(led._entries) <= 101
    assert spent(led)[2] == 1000


def test_a_retry_in_the_next_window_counts_there() -> None:
    led = Ledger(rule(daily(requests=5)))
    led.settle(granted(led.reserve("k", 0.0, 1, MIDNIGHT - 10)), 0.0, 1, MIDNIGHT - 9)
    r = granted(led.reserve("k", 0.0, 1, MIDNIGHT + 10))
    assert not r.replay
    led.settle(r, 0.0, 1, MIDNIGHT + 11)
    assert spent(led, MIDNIGHT + 11)[2] == 1


# --- TTL -----------------------------------------------------------------------------------------


def test_unsettled_reservation_expires_without_phantom_spend() -> None:
    led = Ledger(rule(daily(usd=1.0, requests=1)), ttl=60.0)
    r = granted(led.reserve("crashed", 0.9, 10, NOON))
    refused(led.reserve("next", 0.2, 10, NOON + 59))
    nxt = granted(led.reserve("next", 0.2, 10, NOON + 60))
    assert spent(led, NOON + 60) == (0.0, 0, 0, 0.2, 10, 1)
    led.release(r)  # a stale handle cannot release someone else's hold
    assert spent(led, NOON + 60) == (0.0, 0, 0, 0.2, 10, 1)
    led.settle(nxt, 0.1, 5, NOON + 61)
    assert spent(led, NOON + 61) == (0.1, 5, 1, 0.0, 0, 0)


def test_late_settle_after_expiry_still_charges_the_real_cost() -> None:
    led = Ledger(rule(daily(usd=1.0)), ttl=10.0)
    r = granted(led.reserve("slow", 0.5, 10, NOON))
    led.expire(NOON + 11)
    assert spent(led, NOON + 11)[3] == 0.0
    led.settle(r, 0.3, 8, NOON + 20)
    assert spent(led, NOON + 20)[:4] == (0.3, 8, 1, 0.0)


def test_per_reservation_ttl() -> None:
    led = Ledger(rule(daily(usd=1.0)), ttl=1000.0)
    granted(led.reserve("a", 0.5, 10, NOON, ttl=5.0))
    led.expire(NOON + 6)
    assert spent(led, NOON + 6)[3] == 0.0


# --- windows and clocks --------------------------------------------------------------------------


def test_window_rollover_resets_spend_and_holds_stay_with_their_window() -> None:
    led = Ledger(rule(daily(usd=1.0)))
    led.settle(granted(led.reserve("a", 0.9, 10, MIDNIGHT - 60)), 0.9, 10, MIDNIGHT - 50)
    late = granted(led.reserve("b", 0.1, 10, MIDNIGHT - 1))
    # A new day: yesterday's spend and yesterday's in-flight hold do not count against it.
    assert spent(led, MIDNIGHT + 1) == (0.0, 0, 0, 0.0, 0, 0)
    granted(led.reserve("c", 1.0, 10, MIDNIGHT + 1))
    led.settle(late, 0.1, 10, MIDNIGHT + 2)  # charged to the day it was admitted in
    assert spent(led, MIDNIGHT + 2)[:3] == (0.0, 0, 0)


def test_clock_stepping_back_across_midnight_does_not_reopen_yesterday() -> None:
    led = Ledger(rule(daily(usd=1.0)))
    led.settle(granted(led.reserve("y", 0.9, 10, MIDNIGHT - 60)), 0.9, 10, MIDNIGHT - 60)
    led.settle(granted(led.reserve("t", 0.5, 10, MIDNIGHT + 30)), 0.5, 10, MIDNIGHT + 30)
    # NTP steps the clock back 2 minutes: still today, counted today, yesterday stays closed.
    r = granted(led.reserve("back", 0.4, 10, MIDNIGHT - 90))
    led.settle(r, 0.4, 10, MIDNIGHT - 89)
    s = led.status(MIDNIGHT - 80)[0]
    assert s.start == MIDNIGHT
    assert s.spent_usd == pytest.approx(0.9)
    refused(led.reserve("more", 0.2, 10, MIDNIGHT - 70))


def test_clock_stepping_back_within_the_window_keeps_counting() -> None:
    led = Ledger(rule(daily(usd=1.0)))
    led.settle(granted(led.reserve("a", 0.6, 10, NOON)), 0.6, 10, NOON)
    led.settle(granted(led.reserve("b", 0.3, 10, NOON - 3600)), 0.3, 10, NOON - 3600)
    assert spent(led, NOON - 3600)[0] == pytest.approx(0.9)


def test_rolling_window_forgets_old_spend_and_tells_when() -> None:
    lim = BudgetLimit(window=ROLLING, rolling_seconds=3600, usd=1.0)
    led = Ledger(rule(lim))
    led.settle(granted(led.reserve("a", 0.6, 10, NOON)), 0.6, 10, NOON)
    led.settle(granted(led.reserve("b", 0.3, 10, NOON + 600)), 0.3, 10, NOON + 600)
    x = refused(led.reserve("c", 0.5, 10, NOON + 1200))
    # Room for 0.5 needs the 0.6 from NOON to leave: its bucket goes at NOON + 3600 + 60.
    bucket = NOON // 60 * 60
    assert x.retry_after == pytest.approx(bucket + 3660 - (NOON + 1200))
    granted(led.reserve("c", 0.5, 10, bucket + 3660))


def test_rolling_window_holds_until_settled() -> None:
    lim = BudgetLimit(window=ROLLING, rolling_seconds=60, tokens=100)
    led = Ledger(rule(lim))
    r = granted(led.reserve("a", 0.0, 80, NOON))
    refused(led.reserve("b", 0.0, 30, NOON + 200))  # a hold does not age out (TTL is 300)
    led.settle(r, 0.0, 20, NOON + 201)
    granted(led.reserve("b", 0.0, 30, NOON + 202))


def test_reconfigure_keeps_counters_of_unchanged_windows() -> None:
    led = Ledger(rule(daily(usd=1.0)))
    led.settle(granted(led.reserve("a", 0.8, 10, NOON)), 0.8, 10, NOON)
    led.reconfigure(rule(daily(usd=2.0), BudgetLimit(window=WindowKind.WEEK, requests=5)))
    assert spent(led)[0] == pytest.approx(0.8)
    assert led.status(NOON)[1].requests == 0
    granted(led.reserve("b", 1.0, 10, NOON))
    led.reconfigure(rule(BudgetLimit(window=DAY, timezone="Europe/Berlin", usd=2.0)))
    assert spent(led)[0] == 0.0  # another zone is another window


def test_rolling_limit_needs_a_duration() -> None:
    with pytest.raises(ValueError, match="Rolling"):
        Ledger(rule(BudgetLimit(window=ROLLING, usd=1.0)))


# --- alerts --------------------------------------------------------------------------------------


def test_each_threshold_is_reported_once_per_window() -> None:
    led = Ledger(rule(daily(usd=1.0)))

    def pay(rid: str, usd: float, now: float = NOON) -> list[int]:
        r = granted(led.reserve(rid, usd, 1, now, enforce=False))
        return [a.threshold for a in led.settle(r, usd, 1, now)]

    assert pay("a", 0.4) == []
    assert pay("b", 0.45) == [50, 80]
    assert pay("c", 0.05) == []
    assert pay("d", 0.2) == [100]
    assert pay("e", 0.2) == []
    assert pay("f", 0.6, MIDNIGHT + 5) == [50]  # a new window re-arms them
    g = granted(led.reserve("g", 0.4, 1, MIDNIGHT + 6, enforce=False))
    a = led.settle(g, 0.4, 1, MIDNIGHT + 6)
    assert [(x.threshold, x.window_start) for x in a] == [(80, MIDNIGHT), (100, MIDNIGHT)]
    assert led.status(MIDNIGHT + 7)[0].state == "Exhausted"


def test_status_states() -> None:
    led = Ledger(rule(daily(tokens=100)))
    assert led.status(NOON)[0].state == "Ok"
    led.settle(granted(led.reserve("a", 0, 85, NOON)), 0, 85, NOON)
    assert led.status(NOON)[0].state == "Warning"
    assert led.status(NOON)[0].percent == 85.0


def test_enforce_false_records_over_the_limit() -> None:
    led = Ledger(rule(daily(usd=1.0)))
    led.settle(granted(led.reserve("a", 1.0, 10, NOON)), 1.0, 10, NOON)
    r = granted(led.reserve("b", 0.5, 10, NOON, enforce=False))
    assert r.over is not None and r.over.metric == "usd"
    led.settle(r, 0.5, 10, NOON)
    assert led.status(NOON)[0].percent == pytest.approx(150.0)


def test_a_key_that_cannot_come_again_is_forgotten_once_settled() -> None:
    led = Ledger(rule(daily(usd=100.0)))
    kept = granted(led.reserve("client-id", 1.0, 10, NOON))
    made = granted(led.reserve("sidecar-id", 1.0, 10, NOON, replayable=False))
    led.settle(kept, 0.5, 5, NOON + 1)
    led.settle(made, 0.5, 5, NOON + 1)
    assert spent(led)[:3] == (1.0, 10, 2)  # both spends count
    # the client's id is remembered: its retry is a replay, not a second request
    assert granted(led.reserve("client-id", 1.0, 10, NOON + 2)).replay
    # the sidecar's own id is not: nothing is kept for it (memory under load)
    assert not granted(led.reserve("sidecar-id", 1.0, 10, NOON + 2)).replay
