"""Budget rate limits (pure): token buckets with continuous refill and Retry-After."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice_sidecar.budget.ratelimit import RateLimiter, TokenBucket
from sluice_sidecar.contract import RateLimits


def test_bucket_starts_full_and_refills_continuously() -> None:
    b = TokenBucket.per_minute(60, now=0.0)  # 1 per second
    for _ in range(60):
        assert b.try_take(1, 0.0) == 0.0
    assert b.try_take(1, 0.0) == pytest.approx(1.0)
    assert b.try_take(1, 0.5) == pytest.approx(0.5)  # half a token is there: half a second
    assert b.try_take(1, 1.0) == 0.0
    assert b.available(31.0) == pytest.approx(30.0)
    assert b.available(1000.0) == 60.0  # capped at one minute's worth


def test_no_fixed_window_edge_doubling() -> None:
    """A fixed per-minute window lets 2x through around its edge; the bucket never does."""
    b = TokenBucket.per_minute(600, now=0.0)
    taken = 0
    t = 0.0
    while t < 120.0:
        if b.try_take(1, t) == 0.0:
            taken += 1
        t += 0.01
    # Over any 60 s: at most capacity + 60 s of refill; over 120 s: 600 + 120 * 10.
    assert taken <= 600 + 1200 + 1


def test_retry_after_is_exact() -> None:
    b = TokenBucket.per_minute(120, now=100.0)  # 2 per second
    b.take(120, 100.0)
    assert b.retry_after(10, 100.0) == pytest.approx(5.0)
    assert b.retry_after(10, 103.0) == pytest.approx(2.0)
    assert b.retry_after(10, 105.0) == 0.0


def test_oversized_request_waits_for_a_full_bucket_then_leaves_debt() -> None:
    b = TokenBucket.per_minute(100, now=0.0)
    assert b.try_take(150, 0.0) == 0.0  # full: admitted, bucket at -50
    assert b.available(0.0) == -50
    assert b.retry_after(150, 0.0) == pytest.approx(150 / (100 / 60))  # back to full
    assert b.retry_after(1, 30.0) == pytest.approx((1 - (-50 + 50)) / (100 / 60))


def test_clock_going_back_neither_refills_nor_drains() -> None:
    b = TokenBucket.per_minute(60, now=100.0)
    b.take(60, 100.0)
    assert b.available(50.0) == 0.0
    assert b.available(101.0) == pytest.approx(1.0)


def test_give_back_is_capped() -> None:
    b = TokenBucket.per_minute(10, now=0.0)
    b.give_back(5, 0.0)
    assert b.available(0.0) == 10.0
    b.take(4, 0.0)
    b.give_back(4, 0.0)
    assert b.available(0.0) == 10.0


def test_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 1, 0.0)


@settings(max_examples=200, deadline=None)
@given(
    rpm=st.integers(1, 1000),
    gaps=st.lists(st.floats(min_value=0, max_value=5), min_size=1, max_size=200),
)
def test_admitted_never_exceeds_burst_plus_refill(rpm: int, gaps: list[float]) -> None:
    b = TokenBucket.per_minute(rpm, now=0.0)
    t = 0.0
    admitted = 0
    for g in gaps:
        t += g
        if b.try_take(1, t) == 0.0:
            admitted += 1
        else:
            assert b.retry_after(1, t) > 0
    assert admitted <= rpm + t * rpm / 60 + 1e-6


def test_rate_limiter_rpm_and_tpm() -> None:
    rl = RateLimiter(RateLimits(rpm=2, tpm=1000), now=0.0)
    assert rl.check(400, 0.0) is None
    rl.take(400, 0.0)
    assert rl.check(700, 0.0) is not None
    x = rl.check(700, 0.0)
    assert x is not None and x.which == "tpm" and x.limit == 1000
    assert x.retry_after == pytest.approx(100 / (1000 / 60))
    rl.take(100, 0.0)
    x = rl.check(1, 0.0)
    assert x is not None and x.which == "rpm" and x.retry_after == pytest.approx(30.0)


def test_rate_limiter_reports_the_longer_wait() -> None:
    rl = RateLimiter(RateLimits(rpm=2, tpm=60), now=0.0)
    rl.take(60, 0.0)
    rl.take(0, 0.0)  # rpm empty too: 30 s for one request, 60 s for 60 tokens
    x = rl.check(60, 0.0)
    assert x is not None and x.which == "tpm" and x.retry_after == pytest.approx(60.0)


def test_rate_limiter_corrections() -> None:
    rl = RateLimiter(RateLimits(tpm=1000), now=0.0)
    rl.take(800, 0.0)
    rl.correct(800, 100, 0.0)  # actual far below the worst case: the rest comes back
    assert rl.tpm is not None and rl.tpm.available(0.0) == pytest.approx(900)
    rl.correct(100, 300, 0.0)
    assert rl.tpm.available(0.0) == pytest.approx(700)
    rl.give_back(1, 700, 0.0)
    assert rl.tpm.available(0.0) == 1000


def test_no_limits_no_buckets() -> None:
    rl = RateLimiter(RateLimits(), now=0.0)
    assert not rl.active
    assert rl.check(10**9, 0.0) is None
    rl.take(10**9, 0.0)
