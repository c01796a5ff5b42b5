"""Budget policy and hooks (pure, fake clock): selection, worst case and the imposed cap,
combining budgets, Block / Downgrade / AlertOnly, rate limits, Retry-After, idempotent retries,
and a concurrent burst through the hooks."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from sluice_sidecar import errors
from sluice_sidecar.budget import (
    BudgetExceeded,
    BudgetPolicy,
    BudgetStage,
    check_budgets,
    prompt_tokens,
    selects,
    worst_case,
)
from sluice_sidecar.budget.ledger import Alert
from sluice_sidecar.budget.policy import cap_field, exceeded_message
from sluice_sidecar.contract import (
    Backend,
    BudgetLimit,
    BudgetRule,
    ExceededAction,
    Limits,
    Pricing,
    Provider,
    RateLimits,
    Route,
    Selector,
    SidecarConfig,
    Timeouts,
    WindowKind,
)
from sluice_sidecar.exchange import Exchange
from sluice_sidecar.model import Usage
from tests.fakes.clock import FakeClock

DAY = WindowKind.DAY
#: 2025-05-10 23:00:00 UTC — one hour before a UTC day resets.
LATE = datetime(2025, 5, 10, 23, 0, tzinfo=UTC).timestamp()
LABELS = {"app": "search", "team": "search"}


def backend(name: str, inp: float, out: float, provider: str = "mock") -> Backend:
    return Backend(
        name=name,
        provider=Provider(provider),
        model=name,
        pricing=Pricing(input_per_mtok=inp, output_per_mtok=out),
    )


CHAT = Route(
    name="chat",
    source="chat",
    backends=(backend("big", 10.0, 30.0), backend("small", 1.0, 2.0)),
    timeouts=Timeouts(total=60.0),
)
CHEAP = Route(name="chat-cheap", source="chat-cheap", backends=(backend("tiny", 0.1, 0.2),))
OPENAI = Route(name="oai", source="oai", backends=(backend("o", 1, 1, "openai"),))
ROUTES = {r.name: r for r in (CHAT, CHEAP, OPENAI)}


def budget(name: str = "team-daily", **kw: Any) -> BudgetRule:
    kw.setdefault("limits", (BudgetLimit(window=DAY, timezone="UTC", usd=1.0),))
    return BudgetRule(name=name, **kw)


def clock_at(wall: float) -> FakeClock:
    return FakeClock(start=1000.0, wall=wall)


def body(text: str = "hello", **kw: Any) -> dict[str, Any]:
    return {"model": "chat", "messages": [{"role": "user", "content": text}], **kw}


def exchange(rid: str, b: dict[str, Any] | None = None, route: Route = CHAT) -> Exchange:
    b = body(max_tokens=100) if b is None else b
    ex = Exchange(rid, "chat", started=1000.0, body=b, model=route.name, route=route)
    ex.client_request_id = True  # the ids here stand for x-request-id headers
    ex.bytes_in = len(json.dumps(b))
    return ex


def finish(ex: Exchange, inp: int, out: int) -> None:
    assert ex.route is not None
    ex.backend = ex.route.backends[0]
    ex.usage = Usage(inp, out)
    ex.attempts = 1


def spent(e: BudgetStage, i: int = 0) -> tuple[float, int, int, float]:
    s = e.status()[i]
    return s.spent_usd, s.tokens, s.requests, s.held_usd


# --- selection and the worst case ---------------------------------------------------------------


def test_selector_matching() -> None:
    assert selects(Selector(), {}, "chat")
    assert selects(Selector(match_labels={"team": "search"}), LABELS, "chat")
    assert not selects(Selector(match_labels={"team": "ads"}), LABELS, "chat")
    assert not selects(Selector(match_labels={"tier": "gold"}), LABELS, "chat")
    assert selects(Selector(routes=("chat", "x")), LABELS, "chat")
    assert not selects(Selector(routes=("x",)), LABELS, "chat")


def test_prompt_token_estimate() -> None:
    b = body("x" * 400)
    assert prompt_tokens(b) == 100 + 4 + 3
    b = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "y" * 40}, {"type": "image_url"}]}
        ],
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }
    assert prompt_tokens(b) > 10 + 1600
    assert prompt_tokens({"input": ["abcd" * 10, "ab"]}, "embeddings") == 11
    assert prompt_tokens({"input": [[1, 2, 3], [4]]}, "embeddings") == 4


def test_worst_case_prices_the_dearest_backend_and_counts_n() -> None:
    w = worst_case(CHAT, body(max_tokens=1000, n=2), "chat", 4096, prompt=1000)
    assert (w.prompt_tokens, w.output_tokens, w.imposed) == (1000, 2000, None)
    assert w.usd == pytest.approx((1000 * 10 + 2000 * 30) / 1e6)
    w = worst_case(CHAT, body(max_completion_tokens=50, max_tokens=999), "chat", 4096, prompt=0)
    assert w.output_tokens == 50


def test_missing_max_tokens_is_imposed() -> None:
    w = worst_case(CHAT, body(), "chat", 512, prompt=10)
    assert w.output_tokens == 512 and w.imposed == ("max_tokens", 512)
    assert cap_field(OPENAI) == "max_completion_tokens"
    assert worst_case(OPENAI, body(), "chat", 512).imposed == ("max_completion_tokens", 512)
    e = worst_case(CHAT, {"input": "abcd"}, "embeddings", 512)
    assert (e.output_tokens, e.imposed) == (0, None)


async def test_hook_imposes_the_cap_on_a_new_body() -> None:
    before = BudgetStage(
        [budget()], LABELS, clock_at(LATE), ROUTES, default_max_tokens=256
    ).on_request
    original = body()
    ex = exchange("r1", original)
    await before(ex)
    assert ex.body is not original and "max_tokens" not in original
    assert ex.body["max_tokens"] == 256
    assert ex.annotations["budget"]["imposedMaxTokens"] == 256
    kept = body(max_tokens=10)
    ex = exchange("r2", kept)
    await before(ex)
    assert ex.body is kept


# --- Block --------------------------------------------------------------------------------------


async def test_block_answers_429_naming_budget_window_and_reset() -> None:
    e = BudgetStage(
        [budget(limits=(BudgetLimit(window=DAY, usd=0.01),))], {}, clock_at(LATE), ROUTES
    )
    ex = exchange("big", body("x" * 4000, max_tokens=1000))  # ~$0.04 at the dearest backend
    with pytest.raises(BudgetExceeded) as info:
        await e.on_request(ex)
    err = info.value
    assert err.status == 429
    assert err.exceeded.retry_after is None and err.headers() == {}  # waiting cannot help
    obj = errors.error_object(err)["error"]
    assert obj["type"] == "insufficient_quota" and obj["code"] == "budget_exceeded"
    assert "team-daily" in obj["message"] and "lower max_tokens" in obj["message"]

    # Spend the budget, then a request that would fit an empty window: Retry-After to midnight.
    before = e.on_request
    ok = exchange("a", body(max_tokens=100))
    await before(ok)
    finish(ok, 300, 100)  # $0.006
    e.on_finish(ok)
    with pytest.raises(BudgetExceeded) as info:
        await before(exchange("b", body(max_tokens=200)))
    err = info.value
    assert err.exceeded.retry_after == pytest.approx(3600.0)
    assert err.headers() == {"Retry-After": "3600"}
    msg = err.message
    assert "Budget 'team-daily' is exhausted for its Day window (UTC)" in msg
    assert "2025-05-11T00:00:00+00:00" in msg and "in 1h" in msg
    assert "$0.01" in msg


async def test_retry_after_counts_down_to_the_window_reset_in_its_zone() -> None:
    lim = BudgetLimit(window=DAY, timezone="America/New_York", requests=1)
    clock = clock_at(datetime(2025, 11, 2, 12, 0, tzinfo=UTC).timestamp())  # 07:00 EST
    e = BudgetStage([budget(limits=(lim,))], {}, clock, ROUTES)
    ex = exchange("a")
    await e.on_request(ex)
    finish(ex, 10, 10)
    e.on_finish(ex)
    with pytest.raises(BudgetExceeded) as info:
        await e.on_request(exchange("b"))
    assert info.value.headers() == {"Retry-After": str(17 * 3600)}  # to 00:00 EST
    assert "America/New_York" in info.value.message


async def test_all_budgets_must_admit_and_a_refusal_releases_the_others() -> None:
    roomy = budget("roomy", limits=(BudgetLimit(window=DAY, usd=100.0),))
    tight = budget("tight", limits=(BudgetLimit(window=DAY, requests=1),))
    e = BudgetStage([roomy, tight], {}, clock_at(LATE), ROUTES)
    await e.on_request(exchange("a"))
    with pytest.raises(BudgetExceeded) as info:
        await e.on_request(exchange("b"))
    assert info.value.exceeded.rule == "tight"
    roomy_status = next(s for s in e.status() if s.rule == "roomy")
    assert roomy_status.held_requests == 1  # only the admitted request holds


async def test_refusal_by_in_flight_holds_says_retry_soon() -> None:
    e = BudgetStage(
        [budget(limits=(BudgetLimit(window=DAY, requests=1),))], {}, clock_at(LATE), ROUTES
    )
    await e.on_request(exchange("a"))
    with pytest.raises(BudgetExceeded) as info:
        await e.on_request(exchange("b"))
    assert info.value.exceeded.in_flight
    assert info.value.headers() == {"Retry-After": "1"}
    assert "in flight" in info.value.message


# --- Downgrade and AlertOnly --------------------------------------------------------------------


def downgrading(usd: float = 0.001) -> BudgetRule:
    return budget(
        "dg",
        limits=(BudgetLimit(window=DAY, usd=usd),),
        on_exceeded=ExceededAction.DOWNGRADE,
        downgrade_route="chat-cheap",
    )


async def test_downgrade_moves_the_request_to_the_cheaper_route() -> None:
    e = BudgetStage([downgrading()], {}, clock_at(LATE), ROUTES)
    ex = exchange("a", body("x" * 400, max_tokens=100))
    await e.on_request(ex)
    assert ex.route is CHEAP
    assert ex.deadline == ex.started + CHEAP.timeouts.total
    assert ex.annotations["budget"]["downgradedFrom"] == "chat"
    assert "overBudget" not in ex.annotations["budget"]  # the cheap request fits
    finish(ex, 107, 100)
    e.on_finish(ex)
    assert spent(e)[2] == 1


async def test_downgraded_request_is_recorded_even_over_the_limit() -> None:
    e = BudgetStage([downgrading(usd=0.00001)], {}, clock_at(LATE), ROUTES)
    ex = exchange("a", body("x" * 400, max_tokens=100))
    await e.on_request(ex)
    assert ex.route is CHEAP
    assert ex.annotations["budget"]["overBudget"] == ["dg"]


async def test_downgrade_keeps_the_route_when_the_budget_allows() -> None:
    e = BudgetStage([downgrading(usd=10.0)], {}, clock_at(LATE), ROUTES)
    ex = exchange("a")
    await e.on_request(ex)
    assert ex.route is CHAT and "downgradedFrom" not in ex.annotations["budget"]


async def test_downgrade_still_obeys_block_budgets_of_the_new_route() -> None:
    cheap_cap = budget(
        "cheap-cap",
        selector=Selector(routes=("chat-cheap",)),
        limits=(BudgetLimit(window=DAY, requests=1),),
    )
    e = BudgetStage([downgrading(), cheap_cap], {}, clock_at(LATE), ROUTES)
    await e.on_request(exchange("a"))
    with pytest.raises(BudgetExceeded) as info:
        await e.on_request(exchange("b"))
    assert info.value.exceeded.rule == "cheap-cap"


async def test_downgrade_to_a_missing_route_blocks() -> None:
    rule = downgrading().model_copy(update={"downgrade_route": "nowhere"})
    e = BudgetStage([rule], {}, clock_at(LATE), ROUTES)
    with pytest.raises(BudgetExceeded) as info:
        await e.on_request(exchange("a", body("x" * 400, max_tokens=100)))
    assert "downgrade route 'nowhere' is not available" in info.value.message


async def test_alert_only_admits_records_and_alerts() -> None:
    alerts: list[Alert] = []
    rule = budget(
        limits=(BudgetLimit(window=DAY, usd=0.001),),
        on_exceeded=ExceededAction.ALERT_ONLY,
        alert_thresholds=(50, 100),
    )
    e = BudgetStage([rule], {}, clock_at(LATE), ROUTES, on_alert=alerts.append)
    for i in range(3):
        ex = exchange(f"r{i}", body("x" * 400, max_tokens=100))
        await e.on_request(ex)
        assert ex.route is CHAT
        finish(ex, 100, 100)  # $0.004 each at "big"
        e.on_finish(ex)
    assert [a.threshold for a in alerts] == [50, 100]
    s = e.status()[0]
    assert s.requests == 3 and s.state == "Exhausted" and s.percent == pytest.approx(1200.0)


# --- rate limits --------------------------------------------------------------------------------


async def test_rpm_refuses_with_retry_after_and_refills() -> None:
    clock = clock_at(LATE)
    e = BudgetStage([budget(limits=(), rate_limits=RateLimits(rpm=2))], {}, clock, ROUTES)
    for rid in ("a", "b"):
        await e.on_request(exchange(rid))
    with pytest.raises(errors.RateLimited) as info:
        await e.on_request(exchange("c"))
    assert not isinstance(info.value, BudgetExceeded)
    assert info.value.headers() == {"Retry-After": "30"}
    assert "2 requests per minute" in info.value.message and "team-daily" in info.value.message
    clock.advance(30)
    await e.on_request(exchange("c"))


async def test_tpm_uses_the_worst_case_then_refunds_the_rest() -> None:
    clock = clock_at(LATE)
    e = BudgetStage([budget(limits=(), rate_limits=RateLimits(tpm=1000))], {}, clock, ROUTES)
    ex = exchange("a", body(max_tokens=900))
    await e.on_request(ex)
    with pytest.raises(errors.RateLimited):
        await e.on_request(exchange("b", body(max_tokens=500)))
    finish(ex, 10, 20)
    e.on_finish(ex)  # 30 actual tokens: the rest of the 900+ comes back
    await e.on_request(exchange("b", body(max_tokens=500)))


async def test_alert_only_rate_limits_do_not_refuse() -> None:
    rule = budget(limits=(), rate_limits=RateLimits(rpm=1), on_exceeded=ExceededAction.ALERT_ONLY)
    e = BudgetStage([rule], {}, clock_at(LATE), ROUTES)
    for rid in "abc":
        await e.on_request(exchange(rid))


# --- settlement, idempotency, bursts ------------------------------------------------------------


async def test_failed_request_releases_its_reservation() -> None:
    e = BudgetStage([budget()], {}, clock_at(LATE), ROUTES)
    ex = exchange("a")
    await e.on_request(ex)
    assert spent(e)[3] > 0
    ex.outcome, ex.attempts = "error", 1
    e.on_finish(ex)
    assert spent(e) == (0.0, 0, 0, 0.0)
    e.on_finish(ex)  # twice: nothing more
    assert e.in_flight() == 0


async def test_request_that_never_reached_the_hook_is_ignored() -> None:
    e = BudgetStage([budget()], {}, clock_at(LATE), ROUTES)
    e.on_finish(exchange("never"))
    assert spent(e) == (0.0, 0, 0, 0.0)


async def test_client_retry_with_the_same_request_id_is_counted_once() -> None:
    e = BudgetStage([budget()], {}, clock_at(LATE), ROUTES)
    for _ in range(3):  # the SDK retried twice after timeouts it saw
        ex = exchange("req-42")
        await e.on_request(ex)
        finish(ex, 100, 50)
        e.on_finish(ex)
    usd, tokens, requests, _ = spent(e)
    assert (tokens, requests) == (150, 1)
    assert usd == pytest.approx((100 * 10 + 50 * 30) / 1e6)
    # The same id on a different request (another body) is not taken for a retry.
    other = exchange("req-42", body("a much longer and different question", max_tokens=100))
    await e.on_request(other)
    finish(other, 100, 50)
    e.on_finish(other)
    assert spent(e)[2] == 2


async def test_concurrent_burst_through_the_hooks_stays_within_the_budget() -> None:
    limit = 0.05
    e = BudgetStage(
        [budget(limits=(BudgetLimit(window=DAY, usd=limit),))], {}, clock_at(LATE), ROUTES
    )
    worst = worst_case(CHAT, body(max_tokens=100), "chat", 4096).usd

    async def one(i: int) -> bool:
        ex = exchange(f"r{i}")
        try:
            await e.on_request(ex)
        except BudgetExceeded:
            return False
        finally:
            await asyncio.sleep(0)
        await asyncio.sleep(0)  # in flight while others reserve
        finish(ex, 7, 100)  # the estimate is exact here; actual < worst case
        e.on_finish(ex)
        return True

    results = await asyncio.gather(*(one(i) for i in range(300)))
    admitted = sum(results)
    assert admitted == int(limit / worst + 1e-9)
    s = e.status()[0]
    assert s.spent_usd <= limit
    assert s.requests == admitted and s.held_usd == 0.0


async def test_prompt_underestimate_is_the_only_overshoot() -> None:
    """A prompt that tokenizes to more than estimated costs more than it reserved: the overshoot
    is at most that difference, for the requests in flight at the edge."""
    limit = 0.02
    e = BudgetStage(
        [budget(limits=(BudgetLimit(window=DAY, usd=limit),))], {}, clock_at(LATE), ROUTES
    )
    b = body("日本語のテキスト" * 50, max_tokens=100)  # 400 chars ≈ 107 tokens estimated
    estimated = worst_case(CHAT, b, "chat", 4096)
    inflight = []
    for i in range(100):
        ex = exchange(f"r{i}", b)
        try:
            await e.on_request(ex)
        except BudgetExceeded:
            break
        inflight.append(ex)
    real_prompt = 400  # about one token per character
    for ex in inflight:
        finish(ex, real_prompt, 100)
        e.on_finish(ex)
    bound = len(inflight) * (real_prompt - estimated.prompt_tokens) * 10 / 1e6
    assert e.status()[0].spent_usd <= limit + bound + 1e-12
    assert e.status()[0].spent_usd > limit  # the overshoot is real, and bounded


# --- config -------------------------------------------------------------------------------------


def test_budgets_for_other_pods_are_ignored() -> None:
    p = BudgetPolicy([budget(selector=Selector(match_labels={"team": "ads"}))], LABELS, ROUTES)
    assert not p.active
    p = BudgetPolicy([budget(selector=Selector(match_labels={"team": "search"}))], LABELS, ROUTES)
    assert p.active and p.applicable("chat") and p.applicable("chat-cheap")
    p = BudgetPolicy([budget(selector=Selector(routes=("chat-cheap",)))], LABELS, ROUTES)
    assert not p.applicable("chat")
    assert p.admit("x", CHAT, body(), "chat", wall=LATE, mono=0.0) is None


async def test_config_swap_keeps_spend_and_rejects_broken_budgets() -> None:
    clock = clock_at(LATE)
    e = BudgetStage([budget()], {}, clock, ROUTES)
    ex = exchange("a")
    await e.on_request(ex)
    finish(ex, 100, 100)
    e.on_finish(ex)
    before = spent(e)
    cfg = SidecarConfig(
        namespace="ns",
        routes=(CHAT, CHEAP),
        budgets=(budget(limits=(BudgetLimit(window=DAY, usd=2.0),)),),
        limits=Limits(default_max_tokens=64),
    )
    e.on_config(cfg)
    assert spent(e) == before
    assert e.policy.default_max_tokens == 64
    bad = cfg.model_copy(
        update={
            "budgets": (budget(limits=(BudgetLimit(window=DAY, timezone="Nowhere/X", usd=1),)),)
        }
    )
    with pytest.raises(ValueError, match="unknown time zone"):
        e.on_config(bad)
    assert spent(e) == before


def test_check_budgets() -> None:
    problems = check_budgets(
        [
            budget("a", limits=(BudgetLimit(window=WindowKind.ROLLING, usd=1),)),
            budget("a", limits=(BudgetLimit(window=DAY),)),
            budget("c", on_exceeded=ExceededAction.DOWNGRADE, rate_limits=RateLimits(rpm=0)),
        ]
    )
    assert problems == [
        "budgets[0].limits[0].rollingSeconds: a Rolling window needs a duration",
        "budgets[1].name: duplicate budget 'a'",
        "budgets[1].limits[0]: sets none of usd, tokens, requests",
        "budgets[2].downgradeRoute: required for onExceeded Downgrade",
        "budgets[2].rateLimits.rpm: must be positive",
    ]
    assert check_budgets([budget()]) == []


def test_messages_for_rolling_and_token_limits() -> None:
    p = BudgetPolicy(
        [
            budget(
                limits=(BudgetLimit(window=WindowKind.ROLLING, rolling_seconds=3600, tokens=1000),)
            )
        ],
        {},
        ROUTES,
    )
    p.admit("a", CHAT, body(max_tokens=900), "chat", wall=LATE, mono=0.0)
    with pytest.raises(BudgetExceeded) as info:
        p.admit("b", CHAT, body(max_tokens=900), "chat", wall=LATE + 10, mono=10.0)
    x = info.value.exceeded
    assert x.metric == "tokens" and x.in_flight
    text = exceeded_message(x, LATE + 10)
    assert "rolling 1h window" in text and "1,000 tokens" in text
