"""Routing decisions without any server: strategies, breakers, cool-downs, Retry-After parsing,
the retry budget and the retry/fallback decision. Time and randomness are arguments."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from sluice_sidecar import routing
from sluice_sidecar.contract import (
    Backend,
    BackendState,
    CircuitBreaker,
    FailureClass,
    Fallback,
    Pricing,
    Retry,
    Route,
    Strategy,
)
from sluice_sidecar.upstream import http

NOW = 1000.0


def b(name: str, **kw: object) -> Backend:
    return Backend(name=name, provider="mock", model=name, **kw)  # type: ignore[arg-type]


def r(*backends: Backend, **kw: object) -> Route:
    return Route(name="r", source="r", backends=backends, **kw)  # type: ignore[arg-type]


def names(bs: list[Backend]) -> list[str]:
    return [x.name for x in bs]


def fail(
    route: Route,
    state: routing.RouteState,
    name: str,
    failure: FailureClass,
    now: float = NOW,
    retry_after: float | None = None,
) -> bool:
    backend = next(x for x in route.backends if x.name == name)
    return routing.on_failure(
        route,
        state.of(backend),
        failure=failure,
        counts_for_breaker=failure is not FailureClass.RATE_LIMITED,
        retry_after=retry_after,
        now=now,
        rng=random.Random(1),
    )


# --- strategies -----------------------------------------------------------------------------


def test_failover_orders_by_priority_then_declaration() -> None:
    route = r(b("a", priority=2), b("b", priority=1), b("c", priority=1))
    assert names(routing.order(route, routing.new_state(route), NOW, random.Random())) == [
        "b",
        "c",
        "a",
    ]


def test_weighted_follows_weights() -> None:
    route = r(b("a", weight=3), b("b", weight=1), b("z", weight=0), strategy=Strategy.WEIGHTED)
    state, rng = routing.new_state(route), random.Random(3)
    firsts = Counter(routing.order(route, state, NOW, rng)[0].name for _ in range(4000))
    assert 2800 < firsts["a"] < 3200 and firsts["z"] == 0
    assert sorted(names(routing.order(route, state, NOW, rng))) == ["a", "b", "z"]


def test_least_latency_explores_then_prefers_fastest() -> None:
    route = r(b("slow"), b("fast"), b("new"), strategy=Strategy.LEAST_LATENCY)
    state = routing.new_state(route)
    routing.on_success(state.of(route.backends[0]), 2.0)
    routing.on_success(state.of(route.backends[1]), 0.5)
    assert names(routing.order(route, state, NOW, random.Random())) == ["new", "fast", "slow"]
    h = state.of(route.backends[1])
    routing.on_success(h, 1.5)
    assert h.ewma_ttft == pytest.approx(0.3 * 1.5 + 0.7 * 0.5)


def test_least_cost_orders_by_price() -> None:
    route = r(
        b("dear", pricing=Pricing(input_per_mtok=5, output_per_mtok=15)),
        b("cheap", pricing=Pricing(input_per_mtok=0.1, output_per_mtok=0.4)),
        strategy=Strategy.LEAST_COST,
    )
    assert names(routing.order(route, routing.new_state(route), NOW, random.Random())) == [
        "cheap",
        "dear",
    ]


# --- breaker -----------------------------------------------------------------------------------


def test_breaker_opens_after_n_consecutive_failures_and_success_resets() -> None:
    route = r(b("a"), b("b"), circuit_breaker=CircuitBreaker(consecutive_failures=3))
    state = routing.new_state(route)
    assert not fail(route, state, "a", FailureClass.SERVER_ERROR)
    routing.on_success(state.of(route.backends[0]), None)
    assert not fail(route, state, "a", FailureClass.SERVER_ERROR)
    assert not fail(route, state, "a", FailureClass.TIMEOUT)
    assert fail(route, state, "a", FailureClass.CONNECT_ERROR)
    assert routing.state_of(state.of(route.backends[0]), NOW) is BackendState.EJECTED
    assert names(routing.order(route, state, NOW, random.Random())) == ["b"]


def test_ejection_grows_is_capped_and_jittered() -> None:
    route = r(b("a"), circuit_breaker=CircuitBreaker(base_ejection=10, max_ejection=25))
    rng = random.Random(0)
    got = [routing.ejection_seconds(route, n, rng) for n in (1, 2, 3, 9)]
    assert 9 <= got[0] <= 10 and 18 <= got[1] <= 20 and 22.5 <= got[2] <= 25
    assert 22.5 <= got[3] <= 25
    assert len({routing.ejection_seconds(route, 1, rng) for _ in range(5)}) > 1


def test_half_open_admits_one_probe_then_closes_or_reopens_longer() -> None:
    route = r(b("a"), circuit_breaker=CircuitBreaker(consecutive_failures=1, base_ejection=10))
    state = routing.new_state(route)
    h = state.of(route.backends[0])
    fail(route, state, "a", FailureClass.SERVER_ERROR)
    first_until = h.ejected_until
    assert not routing.available(h, NOW + 5)
    t = first_until + 0.1
    assert routing.available(h, t) and routing.half_open(h, t)
    routing.on_dispatch(h, t)
    assert not routing.available(h, t)  # one probe at a time
    fail(route, state, "a", FailureClass.SERVER_ERROR, now=t)
    assert h.ejections == 2 and h.ejected_until - t >= 18
    t2 = h.ejected_until + 0.1
    routing.on_dispatch(h, t2)
    routing.on_success(h, 0.1)
    assert h.ejections == 0 and routing.available(h, t2) and not routing.half_open(h, t2)


def test_abandoned_probe_frees_the_slot() -> None:
    route = r(b("a"), circuit_breaker=CircuitBreaker(consecutive_failures=1))
    state = routing.new_state(route)
    h = state.of(route.backends[0])
    fail(route, state, "a", FailureClass.SERVER_ERROR)
    t = h.ejected_until + 1
    routing.on_dispatch(h, t)
    routing.on_abandon(h)
    assert routing.available(h, t)


def test_all_ejected_reports_when_one_returns() -> None:
    route = r(b("a"), b("b"), circuit_breaker=CircuitBreaker(consecutive_failures=1))
    state = routing.new_state(route)
    fail(route, state, "a", FailureClass.SERVER_ERROR)
    fail(route, state, "b", FailureClass.SERVER_ERROR, now=NOW + 5)
    assert routing.order(route, state, NOW + 6, random.Random()) == []
    wait = routing.next_available_in(route, state, NOW + 6)
    assert wait == pytest.approx(state.of(route.backends[0]).ejected_until - NOW - 6)


# --- 429 -------------------------------------------------------------------------------------


def test_429_cools_down_with_retry_after_capped_and_never_ejects() -> None:
    route = r(b("a"), b("b"), fallback=Fallback(max_retry_after=10))
    state = routing.new_state(route)
    for _ in range(10):
        assert not fail(route, state, "a", FailureClass.RATE_LIMITED, retry_after=86400)
    h = state.of(route.backends[0])
    assert h.cooldown_until == NOW + 10 and h.consecutive_failures == 0
    assert routing.state_of(h, NOW) is BackendState.COOLING_DOWN


def test_429_without_retry_after_uses_backoff() -> None:
    route = r(b("a"), b("b"), retry=Retry(backoff_base=1, backoff_max=4))
    state = routing.new_state(route)
    fail(route, state, "a", FailureClass.RATE_LIMITED)
    assert NOW + 0.5 <= state.of(route.backends[0]).cooldown_until <= NOW + 1


def test_429_never_cools_down_the_only_backend() -> None:
    route = r(b("only"))
    state = routing.new_state(route)
    fail(route, state, "only", FailureClass.RATE_LIMITED, retry_after=30)
    assert routing.available(state.of(route.backends[0]), NOW)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2", 2.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("86400", 86400.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("-3", None),
        ("1e3", None),
        ("2 seconds", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past
        ("Sunday, 06-Nov-94 08:49:37 GMT", 0.0),  # obsolete RFC 850 form
        ("Sun Nov  6 08:49:37 1994", None),
    ],  # asctime has no zone: ambiguous, default back-off
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert http.parse_retry_after(value, 1_800_000_000.0) == expected


def test_parse_retry_after_future_date() -> None:
    now = 1_800_000_000.0
    date = format_datetime(datetime.fromtimestamp(now + 42, UTC), usegmt=True)
    assert http.parse_retry_after(date, now) == pytest.approx(42)


# --- budget and decisions ----------------------------------------------------------------------


def test_retry_budget_ratio_and_floor() -> None:
    budget = routing.RetryBudget(ratio=0.2, min_per_second=0.5)  # floor 5 per 10 s window
    for _ in range(100):
        budget.record_request(NOW)
    granted = sum(budget.try_withdraw(NOW) for _ in range(50))
    assert granted == 20
    later = NOW + routing.BUDGET_WINDOW_SECONDS + 1  # the window has moved on: only the floor
    assert sum(budget.try_withdraw(later) for _ in range(50)) == 5


def decide(
    route: Route,
    state: routing.RouteState,
    failed: str,
    failure: FailureClass | None,
    tries: dict[str, int],
    **kw: object,
) -> routing.Attempt | routing.GiveUp:
    backend = next(x for x in route.backends if x.name == failed)
    args: dict[str, object] = {
        "retry_same_backend": True,
        "retry_after": None,
        "now": NOW,
        "deadline": NOW + 60,
        "rng": random.Random(2),
    }
    args.update(kw)
    return routing.next_try(route, state, failed=backend, failure=failure, tries=tries, **args)  # type: ignore[arg-type]


def test_fallback_goes_to_next_untried_at_once() -> None:
    route = r(b("a"), b("b"), b("c"), retry=Retry(attempts=3))
    d = decide(route, routing.new_state(route), "a", FailureClass.SERVER_ERROR, {"a": 1})
    assert isinstance(d, routing.Attempt) and d.backend.name == "b" and d.delay == 0
    assert d.fallback


def test_retry_same_backend_with_backoff_when_alone() -> None:
    route = r(b("a"), retry=Retry(attempts=3, backoff_base=0.4, backoff_max=10))
    d = decide(route, routing.new_state(route), "a", FailureClass.CONNECT_ERROR, {"a": 2})
    assert isinstance(d, routing.Attempt) and d.backend.name == "a" and not d.fallback
    assert 0.4 <= d.delay <= 0.8


def test_attempts_bound_all_tries() -> None:
    route = r(b("a"), b("b"), retry=Retry(attempts=2))
    d = decide(route, routing.new_state(route), "b", FailureClass.SERVER_ERROR, {"a": 1, "b": 1})
    assert d == routing.GiveUp("attempts exhausted")


def test_not_retryable_and_not_in_lists() -> None:
    route = r(b("a"), b("b"))
    state = routing.new_state(route)
    assert decide(route, state, "a", None, {"a": 1}) == routing.GiveUp("not retryable")
    d = decide(route, state, "a", FailureClass.CONTENT_FILTER, {"a": 1})
    assert d == routing.GiveUp("no backend left to try")


def test_retry_only_class_stays_on_the_same_backend() -> None:
    route = r(b("a"), b("b"), fallback=Fallback(on=()), retry=Retry(attempts=3))
    d = decide(route, routing.new_state(route), "a", FailureClass.SERVER_ERROR, {"a": 1})
    assert isinstance(d, routing.Attempt) and d.backend.name == "a"


def test_tls_failure_is_not_retried_on_the_same_host() -> None:
    route = r(b("a"), retry=Retry(attempts=3))
    d = decide(
        route,
        routing.new_state(route),
        "a",
        FailureClass.CONNECT_ERROR,
        {"a": 1},
        retry_same_backend=False,
    )
    assert d == routing.GiveUp("no backend left to try")


def test_429_retry_after_waits_within_deadline_or_gives_up() -> None:
    route = r(b("a"), fallback=Fallback(max_retry_after=10))
    state = routing.new_state(route)
    d = decide(route, state, "a", FailureClass.RATE_LIMITED, {"a": 1}, retry_after=3.0)
    assert isinstance(d, routing.Attempt) and d.delay == 3.0
    assert decide(
        route, state, "a", FailureClass.RATE_LIMITED, {"a": 1}, retry_after=30.0
    ) == routing.GiveUp("Retry-After exceeds maxRetryAfter")
    assert decide(
        route, state, "a", FailureClass.RATE_LIMITED, {"a": 1}, retry_after=3.0, deadline=NOW + 2
    ) == routing.GiveUp("deadline exceeded")


def test_budget_refuses_extra_tries() -> None:
    route = r(b("a"), b("b"), retry=Retry(budget_ratio=0.0, budget_min_per_second=0.0))
    d = decide(route, routing.new_state(route), "a", FailureClass.SERVER_ERROR, {"a": 1})
    assert d == routing.GiveUp("retry budget exhausted")


def test_backoff_is_exponential_capped_and_jittered() -> None:
    rng = random.Random(5)
    for attempt, lo, hi in ((1, 0.05, 0.1), (2, 0.1, 0.2), (3, 0.2, 0.4), (10, 0.5, 1.0)):
        d = routing.backoff(attempt, 0.1, 1.0, rng)
        assert lo <= d <= hi
