"""Which backend serves a try, and whether a failed try is tried again: strategies and resilience.

Owns the routing decisions of one route: ordering its backends by strategy (Failover, Weighted,
LeastLatency on an EWMA of time to first token, LeastCost), per-backend circuit breakers (open after
N consecutive failures, ejection growing with every ejection and jittered, one half-open probe),
429 cool-downs that honour ``Retry-After`` but never take the only backend away, a retry budget
(a ratio of recent requests with a floor per second) and the retry/fallback decision for a failed
try under one total deadline. Also:

* **Provider quotas.** A backend's ``limits{rpm, tpm}`` (its provider account's quota) are token
  buckets in the route state (capacity one minute's worth, continuous refill). A try takes one
  request and the request's token estimate (prompt estimate + output cap, as providers count it
  at admission) when it is sent; a backend without room for the next request is skipped like a
  cooling-down one, so traffic moves to the other backends before the provider answers 429.
  When no backend has room (always so for a route's only backend at its limit) nothing is taken
  away silently: the sidecar answers 429 itself with ``Retry-After`` = when the first bucket has
  room again (``at_limit``, ``next_available_in``), instead of spending the provider's quota on
  a certain 429. Across replicas the operator shares each quota out (``QuotaKeeper`` below): a
  bucket's rate and capacity are this process's granted share, not the whole limit.
* **Quota shares.** ``QuotaKeeper`` is the sidecar's half of the shared quotas (the network half
  is ``controlplane_client.LeaseClient``, the asks ride on the budget lease request): per
  limited backend of every route it serves, it measures the demand since the last renewal
  (tries sent plus tries steered away for lack of room, per minute), asks the operator for a
  share and resizes the buckets to the share granted (the fill kept proportionally; never above
  the full limit). No share from the operator for a backend (an operator that does not share
  quotas, or none yet) means the whole limit locally, as before; an answer that stops coming
  (a lost control plane) leaves the last share in place (fail-static).
* **Routing rules.** ``Route.rules`` pick backends by request traits (prompt size, tools present,
  a metadata entry, a header): evaluated in order, the first match wins (``match_rule``), and the
  request is served by the rule's backends only (``rule_route``, the route's strategy ordering
  them); no match means every backend.

A purely computational module with no side-effects beyond the state objects handed to it: time
(``now``, monotonic seconds) and randomness (``rng``) are arguments; the caller performs the IO and
the sleeping. ``RouteState`` objects are owned by the caller and mutated only by these functions.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .contract import (
    Backend,
    BackendState,
    FailureClass,
    QuotaAsk,
    QuotaShare,
    RateLimits,
    Route,
    RoutingRule,
    Strategy,
)

EWMA_ALPHA = 0.3
BUDGET_WINDOW_SECONDS = 10
EJECTION_JITTER = 0.1
#: Seconds a bucket with a share of nothing says to wait (the next lease renewal may grant one).
EMPTY_SHARE_WAIT = 1.0


@dataclass(slots=True)
class BackendHealth:
    """Mutable health of one backend of one route."""

    consecutive_failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    probing: bool = False
    cooldown_until: float = 0.0
    ewma_ttft: float | None = None
    requests: int = 0
    failures: int = 0


class RetryBudget:
    """Retries allowed in the last window: max(ratio x requests, floor per second x window).

    Counted in one-second buckets of the caller's clock, so it costs O(1) per request.
    """

    __slots__ = ("_floor", "_ratio", "_requests", "_retries", "_stamps")

    def __init__(self, ratio: float, min_per_second: float) -> None:
        self._ratio = ratio
        self._floor = min_per_second * BUDGET_WINDOW_SECONDS
        self._stamps = [-1] * BUDGET_WINDOW_SECONDS
        self._requests = [0] * BUDGET_WINDOW_SECONDS
        self._retries = [0] * BUDGET_WINDOW_SECONDS

    def _slot(self, now: float) -> int:
        second = int(now)
        slot = second % BUDGET_WINDOW_SECONDS
        if self._stamps[slot] != second:
            self._stamps[slot] = second
            self._requests[slot] = 0
            self._retries[slot] = 0
        return slot

    def record_request(self, now: float) -> None:
        self._requests[self._slot(now)] += 1

    def try_withdraw(self, now: float) -> bool:
        """Take one retry from the budget; False (and nothing taken) when it is spent."""
        slot = self._slot(now)
        oldest = int(now) - BUDGET_WINDOW_SECONDS
        requests = retries = 0
        for i in range(BUDGET_WINDOW_SECONDS):
            if self._stamps[i] > oldest:
                requests += self._requests[i]
                retries += self._retries[i]
        if retries + 1 > max(self._floor, self._ratio * requests):
            return False
        self._retries[slot] += 1
        return True


class Bucket:
    """A token bucket of ``per_minute`` capacity, refilled continuously; its level may go
    below zero (a try larger than the room left), which delays the next one."""

    __slots__ = ("at", "capacity", "level", "rate")

    def __init__(self, per_minute: int, now: float) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.at = now

    def _refill(self, now: float) -> None:
        if now > self.at:
            self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = max(self.at, now)

    def wait(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` (at most the capacity) fits; 0 when it fits now. A bucket
        of no capacity (a share of nothing) says ``EMPTY_SHARE_WAIT``: a renewal may bring one."""
        self._refill(now)
        if self.rate <= 0:
            return EMPTY_SHARE_WAIT
        need = min(amount, self.capacity) - self.level
        return 0.0 if need <= 0 else need / self.rate

    def take(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level -= amount

    def resize(self, per_minute: int, now: float) -> None:
        """A new capacity (and rate) of ``per_minute``: the fill keeps its proportion of the
        capacity (a bucket that had none starts full, as a new bucket does)."""
        self._refill(now)
        new = float(per_minute)
        if new == self.capacity:
            return
        self.level = self.level * new / self.capacity if self.capacity > 0 else new
        self.capacity = new
        self.rate = new / 60.0


class BackendLimiter:
    """A backend's provider quota: an rpm and a tpm bucket (either may be absent), sized to the
    share this process holds (``share``; None: the whole limit), and its demand counters (tries
    sent and steered away: requests and their tokens since the process started)."""

    __slots__ = ("limits", "need", "rpm", "share", "tpm", "wanted_requests", "wanted_tokens")

    def __init__(self, limits: RateLimits, now: float) -> None:
        self.limits = limits
        self.rpm = Bucket(limits.rpm, now) if limits.rpm else None
        self.tpm = Bucket(limits.tpm, now) if limits.tpm else None
        self.share: tuple[int | None, int | None] | None = None
        self.wanted_requests = 0
        self.wanted_tokens = 0
        #: Called once when a try is steered away (then cleared): ``QuotaKeeper`` arms it to
        #: renew early when the share granted is short of the demand.
        self.need: Callable[[], None] | None = None

    def wait(self, tokens: int, now: float) -> float:
        w = self.rpm.wait(1, now) if self.rpm is not None else 0.0
        if self.tpm is not None:
            w = max(w, self.tpm.wait(tokens, now))
        return w

    def take(self, tokens: int, now: float) -> None:
        self.wanted_requests += 1
        self.wanted_tokens += tokens
        if self.rpm is not None:
            self.rpm.take(1, now)
        if self.tpm is not None:
            self.tpm.take(tokens, now)

    def steered(self, tokens: int) -> None:
        """A try went elsewhere (or nowhere) for lack of room here: it counts as demand."""
        self.wanted_requests += 1
        self.wanted_tokens += tokens
        need = self.need
        if need is not None:
            self.need = None
            need()

    def resize(self, share: tuple[int | None, int | None] | None, now: float) -> None:
        """Size the buckets to ``share`` (rpm, tpm per minute; None in a metric or as a whole:
        the full limit), never above the full limit."""
        self.share = share
        rpm, tpm = share if share is not None else (None, None)
        if self.rpm is not None and self.limits.rpm is not None:
            self.rpm.resize(self.limits.rpm if rpm is None else min(rpm, self.limits.rpm), now)
        if self.tpm is not None and self.limits.tpm is not None:
            self.tpm.resize(self.limits.tpm if tpm is None else min(tpm, self.limits.tpm), now)


@dataclass(slots=True)
class RouteState:
    """Everything routing remembers about one route between requests."""

    retry_budget: RetryBudget
    health: dict[str, BackendHealth] = field(default_factory=dict)
    #: Provider quotas of the backends that have ``limits`` (by backend name).
    limiters: dict[str, BackendLimiter] = field(default_factory=dict)
    #: The route each routing rule narrows to (by rule name), for ``rules_of``.
    rule_routes: dict[str, Route] = field(default_factory=dict)
    rules_of: Route | None = None

    def of(self, backend: Backend) -> BackendHealth:
        h = self.health.get(backend.name)
        if h is None:
            h = self.health[backend.name] = BackendHealth()
        return h


def new_state(route: Route) -> RouteState:
    return RouteState(RetryBudget(route.retry.budget_ratio, route.retry.budget_min_per_second))


# --- provider quotas ----------------------------------------------------------------------------


def limited(b: Backend) -> bool:
    return b.limits.rpm is not None or b.limits.tpm is not None


def limiter(state: RouteState, b: Backend, now: float) -> BackendLimiter | None:
    """The quota buckets of ``b`` (None without ``limits``); rebuilt when its limits change."""
    if not limited(b):
        return None
    lim = state.limiters.get(b.name)
    if lim is None or lim.limits != b.limits:
        old = lim
        lim = state.limiters[b.name] = BackendLimiter(b.limits, now)
        if old is not None:  # an edited limit: the share and the demand counters carry over
            lim.wanted_requests, lim.wanted_tokens = old.wanted_requests, old.wanted_tokens
            lim.need = old.need
            lim.resize(old.share, now)
    return lim


def quota_wait(state: RouteState, b: Backend, tokens: int, now: float) -> float:
    """Seconds until ``b``'s quota has room for a try of ``tokens``; 0 when it has now."""
    lim = limiter(state, b, now)
    return 0.0 if lim is None else lim.wait(tokens, now)


def consume(state: RouteState, b: Backend, tokens: int, now: float) -> None:
    """A try of ``tokens`` is being sent to ``b``: take it from its quota."""
    lim = limiter(state, b, now)
    if lim is not None:
        lim.take(tokens, now)


def request_tokens(route: Route, prompt_tokens: Callable[[], int], output_cap: int) -> int:
    """What a try counts against a ``tpm`` quota (0, and no estimate made, when no backend of
    ``route`` has one)."""
    if not any(b.limits.tpm is not None for b in route.backends):
        return 0
    return prompt_tokens() + output_cap


def at_limit(route: Route, state: RouteState, tokens: int, now: float) -> bool:
    """True when some backend is healthy but none of those has quota room: the request should
    be answered with a 429 (``next_available_in`` says when to retry)."""
    healthy = [b for b in route.backends if available(state.of(b), now)]
    return bool(healthy) and all(quota_wait(state, b, tokens, now) > 0 for b in healthy)


# --- quota shares across replicas ---------------------------------------------------------------

#: The limited backends of the routes this process serves: (route, backend, its limiter).
Limiters = Callable[[float], Iterable[tuple[str, str, BackendLimiter]]]
#: Demand is measured over at least this many seconds (a renewal right after the last one).
MIN_DEMAND_SPAN = 1.0


@dataclass(slots=True)
class _Seen:
    limiter: BackendLimiter
    at: float
    requests: int
    tokens: int
    want: tuple[int, int]


class QuotaKeeper:
    """The quota shares of one sidecar process (see the module doc): ``asks`` for the lease
    request, ``take`` for its answer. Pure: instants are passed in; ``limiters`` walks the route
    states (the caller's)."""

    def __init__(self, limiters: Limiters) -> None:
        self.limiters = limiters
        self.on_need: Callable[[], None] = lambda: None
        self._seen: dict[tuple[str, str], _Seen] = {}
        self._pending: list[tuple[tuple[str, str], _Seen]] = []
        #: No early renewal for a short share before this instant (one per ``need_gap``).
        self._quiet_until = float("-inf")
        self.need_gap = 5.0

    def active(self, now: float) -> bool:
        """Whether any route this process serves has a backend with ``limits``."""
        return any(True for _ in self.limiters(now))

    def asks(self, now: float) -> tuple[QuotaAsk, ...]:
        """What to ask for: per limited backend, the demand per minute since the last answered
        request (or half the last one asked, when that is more: demand decays, it does not
        vanish between two renewals) and the share held."""
        out: list[QuotaAsk] = []
        self._pending = []
        if self._quiet_until == math.inf:  # an early renewal fired: the next waits a gap
            self._quiet_until = now + self.need_gap
        for route, backend, lim in self.limiters(now):
            key = (route, backend)
            last = self._seen.get(key)
            req, tok = lim.wanted_requests, lim.wanted_tokens
            if last is None or last.limiter is not lim or last.requests > req:
                want = (0, 0) if last is None else (last.want[0] // 2, last.want[1] // 2)
            else:
                minutes = max(MIN_DEMAND_SPAN, now - last.at) / 60.0
                want = (
                    max(math.ceil((req - last.requests) / minutes), last.want[0] // 2),
                    max(math.ceil((tok - last.tokens) / minutes), last.want[1] // 2),
                )
            self._pending.append((key, _Seen(lim, now, req, tok, want)))
            held = lim.share
            out.append(
                QuotaAsk(
                    route=route,
                    backend=backend,
                    rpm=want[0],
                    tpm=want[1],
                    held=(
                        None
                        if held is None
                        else QuotaShare(route=route, backend=backend, rpm=held[0], tpm=held[1])
                    ),
                )
            )
        return tuple(out)

    def take(self, shares: Sequence[QuotaShare], now: float, ttl: float) -> None:
        """An answer (leases of ``ttl`` seconds): every limited backend gets the share granted,
        or its whole limit when the operator granted none (it does not share that quota). A
        share that a try then finds short of room asks for an early renewal, at most once per
        ``need_gap`` (a sixth of the TTL)."""
        self.need_gap = ttl / 6
        for key, seen in self._pending:
            self._seen[key] = seen
        self._pending = []
        granted = {(q.route, q.backend): (q.rpm, q.tpm) for q in shares}
        arm = now >= self._quiet_until
        for route, backend, lim in self.limiters(now):
            share = granted.get((route, backend))
            lim.resize(share, now)
            lim.need = self._fire if arm and share is not None else None

    def _fire(self) -> None:
        self._quiet_until = math.inf  # re-armed by an answer ``need_gap`` after the next ask
        self.on_need()

    def whole(self, now: float) -> None:
        """No shares (an operator that grants no leases): every limit whole, locally."""
        for _, _, lim in self.limiters(now):
            lim.resize(None, now)
            lim.need = None


# --- routing rules ------------------------------------------------------------------------------


def match_rule(
    route: Route,
    *,
    prompt_tokens: Callable[[], int],
    body: Mapping[str, Any],
    headers: Mapping[str, str],
) -> RoutingRule | None:
    """The first rule of ``route`` whose traits the request has, or None. The prompt estimate
    is made once, and only when a rule asks for it."""
    tokens: int | None = None
    for rule in route.rules:
        m = rule.match
        if m.tools is not None and bool(body.get("tools") or body.get("functions")) != m.tools:
            continue
        if m.metadata:
            meta = body.get("metadata")
            if not isinstance(meta, Mapping) or any(
                meta.get(k) != v for k, v in m.metadata.items()
            ):
                continue
        if m.headers and any(headers.get(k) != v for k, v in m.headers.items()):
            continue
        if m.min_prompt_tokens is not None or m.max_prompt_tokens is not None:
            if tokens is None:
                tokens = prompt_tokens()
            if m.min_prompt_tokens is not None and tokens < m.min_prompt_tokens:
                continue
            if m.max_prompt_tokens is not None and tokens > m.max_prompt_tokens:
                continue
        return rule
    return None


def rule_route(route: Route, state: RouteState, rule: RoutingRule) -> Route:
    """``route`` narrowed to ``rule``'s backends (in the route's declaration order), made once
    per config; the route itself when the rule names none of them."""
    if state.rules_of is not route:
        state.rule_routes.clear()
        state.rules_of = route
    narrowed = state.rule_routes.get(rule.name)
    if narrowed is None:
        keep = tuple(b for b in route.backends if b.name in rule.backends)
        narrowed = route.model_copy(update={"backends": keep}) if keep else route
        state.rule_routes[rule.name] = narrowed
    return narrowed


# --- availability -------------------------------------------------------------------------------


def state_of(h: BackendHealth, now: float) -> BackendState:
    if now < h.ejected_until:
        return BackendState.EJECTED
    if now < h.cooldown_until:
        return BackendState.COOLING_DOWN
    return BackendState.HEALTHY


def available(h: BackendHealth, now: float) -> bool:
    """Can a try be sent now? A backend past its ejection admits exactly one probe at a time."""
    if now < h.ejected_until or now < h.cooldown_until:
        return False
    return not h.probing


def half_open(h: BackendHealth, now: float) -> bool:
    return h.ejections > 0 and now >= h.ejected_until and h.consecutive_failures > 0


def next_available_in(route: Route, state: RouteState, now: float, tokens: int = 0) -> float:
    """Seconds until some backend of ``route`` can take a try again (0 if one can now), its
    ejection, cool-down and quota (for a try of ``tokens``) all considered."""
    best = math.inf
    for b in route.backends:
        h = state.of(b)
        wait = quota_wait(state, b, tokens, now)
        if available(h, now):
            if wait <= 0:
                return 0.0
            best = min(best, wait)
        else:
            best = min(best, max(h.ejected_until - now, h.cooldown_until - now, wait))
    return max(0.0, best) if best != math.inf else 1.0


# --- ordering -----------------------------------------------------------------------------------


def order(
    route: Route, state: RouteState, now: float, rng: random.Random, tokens: int = 0
) -> list[Backend]:
    """The available backends of ``route`` (healthy, and with quota room for a try of
    ``tokens``), best first, by its strategy.

    Failover: ascending ``priority``, then declaration order. Weighted: a weighted random draw
    without replacement. LeastLatency: ascending EWMA of time to first token; never-measured
    backends first so they get measured. LeastCost: ascending list price (input + output per
    million tokens), then priority.
    """
    backends = []
    for b in route.backends:
        if not available(state.of(b), now):
            continue
        if limited(b):
            lim = limiter(state, b, now)
            if lim is not None and lim.wait(tokens, now) > 0:
                lim.steered(tokens)  # demand the share did not cover
                continue
        backends.append(b)
    if len(backends) <= 1:
        return backends
    strategy = route.strategy
    if strategy is Strategy.WEIGHTED:
        return _weighted(backends, rng)
    if strategy is Strategy.LEAST_LATENCY:

        def latency(b: Backend) -> tuple[float, int]:
            ewma = state.of(b).ewma_ttft
            return (-1.0 if ewma is None else ewma, b.priority)

        return sorted(backends, key=latency)
    if strategy is Strategy.LEAST_COST:
        return sorted(
            backends,
            key=lambda b: (b.pricing.input_per_mtok + b.pricing.output_per_mtok, b.priority),
        )
    return sorted(backends, key=lambda b: b.priority)


def _weighted(backends: list[Backend], rng: random.Random) -> list[Backend]:
    pool = [b for b in backends if b.weight > 0]
    rest = [b for b in backends if b.weight <= 0]
    out: list[Backend] = []
    while pool:
        total = sum(b.weight for b in pool)
        pick = rng.random() * total
        for i, b in enumerate(pool):
            pick -= b.weight
            if pick < 0 or i == len(pool) - 1:
                out.append(pool.pop(i))
                break
    return out + rest


# --- outcomes -----------------------------------------------------------------------------------


def on_dispatch(h: BackendHealth, now: float) -> None:
    """A try is about to go to this backend; a half-open backend's try becomes its probe."""
    h.requests += 1
    if half_open(h, now):
        h.probing = True


def on_success(h: BackendHealth, ttft: float | None) -> None:
    """The try succeeded: close the breaker, forget past ejections, feed the latency EWMA."""
    h.consecutive_failures = 0
    h.probing = False
    h.ejections = 0
    h.ejected_until = 0.0
    if ttft is not None:
        h.ewma_ttft = (
            ttft if h.ewma_ttft is None else (EWMA_ALPHA * ttft + (1 - EWMA_ALPHA) * h.ewma_ttft)
        )


def on_abandon(h: BackendHealth) -> None:
    """The try ended without a verdict (the client went away): free the half-open probe slot."""
    h.probing = False


def ejection_seconds(route: Route, ejections: int, rng: random.Random) -> float:
    """base x N (N = how many times ejected in a row), capped at max, minus up to 10% jitter."""
    cb = route.circuit_breaker
    base = min(cb.base_ejection * max(1, ejections), cb.max_ejection)
    return base * (1.0 - EJECTION_JITTER * rng.random())


def on_failure(
    route: Route,
    h: BackendHealth,
    *,
    failure: FailureClass | None,
    counts_for_breaker: bool,
    retry_after: float | None,
    now: float,
    rng: random.Random,
) -> bool:
    """Record a failed try. Returns True when this failure ejected the backend (breaker opened).

    A 429 cools the backend down for its ``Retry-After`` (capped at ``maxRetryAfter``; default
    back-off when absent or unparseable), unless it is the route's only backend: a cool-down must
    never make a route unavailable. 429s never count towards the breaker.
    """
    h.failures += 1
    was_probe = h.probing
    h.probing = False
    if failure is FailureClass.RATE_LIMITED:
        if retry_after is not None and route.fallback.respect_retry_after:
            wait = retry_after
        else:
            wait = backoff(1, route.retry.backoff_base, route.retry.backoff_max, rng)
        if len(route.backends) > 1:
            until = now + min(wait, route.fallback.max_retry_after)
            h.cooldown_until = max(h.cooldown_until, until)
        return False
    if not counts_for_breaker:
        return False
    h.consecutive_failures += 1
    if was_probe or h.consecutive_failures >= route.circuit_breaker.consecutive_failures:
        h.ejections += 1
        h.ejected_until = now + ejection_seconds(route, h.ejections, rng)
        return True
    return False


def backoff(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential back-off with equal jitter (half fixed, half random); ``attempt`` from 1."""
    ceiling = min(cap, base * (2.0 ** max(0, attempt - 1)))
    return ceiling / 2 + rng.random() * ceiling / 2


# --- the retry / fallback decision --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attempt:
    backend: Backend
    delay: float
    fallback: bool


@dataclass(frozen=True, slots=True)
class GiveUp:
    reason: str


def next_try(
    route: Route,
    state: RouteState,
    *,
    failed: Backend,
    failure: FailureClass | None,
    retry_same_backend: bool,
    retry_after: float | None,
    tries: Mapping[str, int],
    now: float,
    deadline: float,
    rng: random.Random,
    tokens: int = 0,
) -> Attempt | GiveUp:
    """After a failed try: which backend next, after how long, or why not at all.

    ``retry.attempts`` bounds the tries of one request over all backends. Fallback comes first
    (failure in ``fallback.on``: the next untried available backend, at once); then retry
    (failure in ``retry.retryOn``: the same backend, or with fallback allowed any available one,
    after jittered back-off, or after ``Retry-After`` for a 429 on a backend that was not cooled
    down, which happens only when it is the route's only backend). Every extra try must fit
    before ``deadline`` and be granted by the retry budget.
    """
    if failure is None:
        return GiveUp("not retryable")
    if sum(tries.values()) >= route.retry.attempts:
        return GiveUp("attempts exhausted")
    if now >= deadline:
        return GiveUp("deadline exceeded")
    may_fall_back = failure in route.fallback.on
    candidates = order(route, state, now, rng, tokens)
    choice: Attempt | None = None
    if may_fall_back:
        for b in candidates:
            if b.name != failed.name and tries.get(b.name, 0) == 0:
                choice = Attempt(b, 0.0, fallback=True)
                break
    if choice is None and failure in route.retry.retry_on:
        eligible = [
            b
            for b in candidates
            if (b.name == failed.name and retry_same_backend)
            or (b.name != failed.name and may_fall_back)
        ]
        if eligible:
            b = eligible[0]
            delay = backoff(
                tries.get(b.name, 0), route.retry.backoff_base, route.retry.backoff_max, rng
            )
            if (
                failure is FailureClass.RATE_LIMITED
                and b.name == failed.name
                and retry_after is not None
                and route.fallback.respect_retry_after
            ):
                if retry_after > route.fallback.max_retry_after:
                    return GiveUp("Retry-After exceeds maxRetryAfter")
                delay = retry_after
            choice = Attempt(b, delay, fallback=b.name != failed.name)
    if choice is None:
        return GiveUp("no backend left to try")
    if now + choice.delay >= deadline:
        return GiveUp("deadline exceeded")
    if not state.retry_budget.try_withdraw(now):
        return GiveUp("retry budget exhausted")
    return choice


def health_report(
    route: Route, state: RouteState, now: float
) -> Sequence[tuple[Backend, BackendState, BackendHealth]]:
    return [(b, state_of(state.of(b), now), state.of(b)) for b in route.backends]
