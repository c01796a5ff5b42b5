"""Rate limits of a Budget (``rateLimits.rpm`` / ``tpm``) as continuously refilled token buckets.

Owns ``TokenBucket`` and ``RateLimiter`` (the rpm and tpm buckets of one budget rule). A bucket
holds up to ``capacity`` (the per-minute limit: a burst of one minute's worth is allowed) and
refills at ``capacity / 60`` per second, continuously: there are no fixed windows whose edges
would let twice the limit through. A request larger than the whole bucket (a tpm cost above tpm)
is admitted only when the bucket is full and leaves it in debt, so the long-run rate still holds.

Time is passed in as monotonic seconds (``Clock.now``); a value earlier than the last one seen is
treated as the last one (no refill, never a negative refill). Pure and single-threaded: callers
on one event loop need no locks, because no method awaits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..contract import RateLimits

#: Shortfalls below this many tokens are rounding error, not a reason to refuse.
_EPS = 1e-9


class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second, starting full."""

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        if capacity <= 0 or rate <= 0:
            raise ValueError("a token bucket needs a positive capacity and rate")
        self.capacity = float(capacity)
        self.rate = float(rate)
        self.tokens = float(capacity)
        self.updated = now

    @classmethod
    def per_minute(cls, limit: int, now: float) -> TokenBucket:
        return cls(limit, limit / 60.0, now)

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def available(self, now: float) -> float:
        self._refill(now)
        return self.tokens

    def retry_after(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` can be taken (0 when it can be now)."""
        self._refill(now)
        need = min(amount, self.capacity) - self.tokens
        return 0.0 if need <= _EPS else need / self.rate

    def try_take(self, amount: float, now: float) -> float:
        """Take ``amount`` if it fits and return 0; else take nothing and return the retry-after."""
        wait = self.retry_after(amount, now)
        if wait == 0.0:
            self.tokens -= amount
        return wait

    def take(self, amount: float, now: float) -> None:
        """Take ``amount`` unconditionally (may leave the bucket in debt)."""
        self._refill(now)
        self.tokens -= amount

    def give_back(self, amount: float, now: float) -> None:
        """Return ``amount`` taken earlier (a released request, a settled over-estimate)."""
        self._refill(now)
        self.tokens = min(self.capacity, self.tokens + amount)


@dataclass(frozen=True, slots=True)
class RateExceeded:
    """A rate limit that refuses a request now, and when it would not."""

    which: Literal["rpm", "tpm"]
    limit: int
    retry_after: float


class RateLimiter:
    """The rpm and tpm buckets of one budget rule (either may be absent)."""

    __slots__ = ("limits", "rpm", "tpm")

    def __init__(self, limits: RateLimits, now: float) -> None:
        self.limits = limits
        self.rpm = TokenBucket.per_minute(limits.rpm, now) if limits.rpm else None
        self.tpm = TokenBucket.per_minute(limits.tpm, now) if limits.tpm else None

    @property
    def active(self) -> bool:
        return self.rpm is not None or self.tpm is not None

    def check(self, tokens: int, now: float) -> RateExceeded | None:
        """Whether one request of (worst case) ``tokens`` fits now; takes nothing."""
        worst: RateExceeded | None = None
        if self.rpm is not None and self.limits.rpm:
            wait = self.rpm.retry_after(1, now)
            if wait > 0:
                worst = RateExceeded("rpm", self.limits.rpm, wait)
        if self.tpm is not None and self.limits.tpm:
            wait = self.tpm.retry_after(tokens, now)
            if wait > 0 and (worst is None or wait > worst.retry_after):
                worst = RateExceeded("tpm", self.limits.tpm, wait)
        return worst

    def take(self, tokens: int, now: float) -> None:
        """Take one request and ``tokens`` (after ``check`` said they fit, or to record anyway)."""
        if self.rpm is not None:
            self.rpm.take(1, now)
        if self.tpm is not None:
            self.tpm.take(tokens, now)

    def give_back(self, requests: int, tokens: int, now: float) -> None:
        if self.rpm is not None and requests:
            self.rpm.give_back(requests, now)
        if self.tpm is not None and tokens:
            self.tpm.give_back(tokens, now)

    def correct(self, reserved_tokens: int, actual_tokens: int, now: float) -> None:
        """Replace a taken worst case by the actual count: refund the rest, or take the excess."""
        if self.tpm is None:
            return
        if actual_tokens < reserved_tokens:
            self.tpm.give_back(reserved_tokens - actual_tokens, now)
        elif actual_tokens > reserved_tokens:
            self.tpm.take(actual_tokens - reserved_tokens, now)
