"""Dispatch: the try loop of one request, and the one place that books a failed try.

Owns ``with_retries`` (run an attempt against the backends ``routing`` picks until one succeeds
or routing gives up), ``book_failure`` (a failed try's record, breaker, metrics — for a try that
failed before its answer and for a stream that failed after its commit point alike),
``next_try`` (where to go after a failure), and the small helpers every try shares: its translator
and call, its time under the request's deadline (``time_left``), its timer (``TryTimer``), the
timeout error. What one try does is the caller's: ``handle.try_unary`` for whole answers,
``stream.try_stream`` for streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TypeVar

from .. import errors, routing, tracing, validate
from ..contract import Backend, FailureClass, Route
from ..errors import UpstreamError
from ..exchange import Exchange, Try
from ..translate import Call, Translator
from .state import Gateway

T = TypeVar("T")
#: One try: the call and its translator → the try's result (raises ``UpstreamError``).
Attempt = Callable[[Call, Translator], Awaitable[T]]
#: Where a resumed request goes first: the backend that failed, the decision and its reason.
Resume = tuple[Backend, routing.Attempt, FailureClass | None]


async def with_retries(
    gw: Gateway, ex: Exchange, attempt: Attempt[T], resume: Resume | None = None
) -> T:
    """Run ``attempt`` against backends chosen by ``routing`` until one succeeds or routing gives
    up; then re-raise the last failure. Without ``resume`` this is a new request (counted by the
    retry budget, first backend by strategy); with it, a continuation of the request's earlier
    tries that starts with ``routing``'s decision after a failure."""
    route = ex.route
    assert route is not None
    clock, metrics = gw.clock, gw.metrics
    state = gw.route_state(route)
    if resume is None:
        now = clock.now()
        state.retry_budget.record_request(now)
        if route.rules:
            route = _apply_rules(ex, route, state)
        tokens = quota_tokens(ex, route)
        candidates = routing.order(route, state, now, gw.rng, tokens)
        if not candidates:
            if routing.at_limit(route, state, tokens, now):
                raise errors.RateLimited(
                    f"Every backend of route '{route.name}' is at its provider quota "
                    "(limits.rpm / limits.tpm); try again after Retry-After.",
                    retry_after=routing.next_available_in(route, state, now, tokens),
                )
            raise errors.NoBackendAvailable(
                f"Every backend of route '{route.name}' is ejected or cooling down after "
                "failures; try again after Retry-After.",
                retry_after=routing.next_available_in(route, state, now),
            )
        backend = candidates[0]
    else:
        failed, decision, failure = resume
        backend = await _move(gw, ex, route, failed=failed, decision=decision, failure=failure)
        tokens = quota_tokens(ex, route)
    while True:
        ex.attempts += 1
        ex.backend = backend
        health = state.of(backend)
        started = clock.now()
        record = Try(backend, started, tracing.new_id(8) if gw.tracer.enabled else None)
        ex.tries.append(record)
        routing.on_dispatch(health, started)
        routing.consume(state, backend, tokens, started)
        try:
            tr = gw.translator(ex, backend)
            result = await attempt(gw.make_call(ex, route, backend, record.span_id), tr)
        except UpstreamError as err:
            book_failure(gw, ex, err, retry_after=err.retry_after)
            step = next_try(gw, ex, err)
            if isinstance(step, routing.GiveUp):
                raise
            backend = await _move(gw, ex, route, failed=backend, decision=step, failure=err.failure)
            continue
        except BaseException:
            record.result = "abandoned"
            routing.on_abandon(health)
            raise
        record.duration = clock.now() - started
        routing.on_success(health, record.duration)
        metrics.attempts.labels(route.name, backend.name, "ok").inc()
        return result


def book_failure(
    gw: Gateway,
    ex: Exchange,
    err: UpstreamError,
    *,
    retry_after: float | None,
    mid_stream: bool = False,
) -> None:
    """Book the failure of the request's last try (``ex.tries[-1]`` against ``ex.backend``):
    its audit record, the backend's breaker and cool-down, and the metrics. A stream that
    failed after its commit point passes ``mid_stream`` (counted as a stream failure, never a
    cool-down from a Retry-After it cannot honour)."""
    route, backend = ex.route, ex.backend
    assert route is not None and backend is not None
    now = gw.clock.now()
    if ex.tries:
        record = ex.tries[-1]
        record.duration = now - record.started
        record.result = str(err.failure or "fatal")
        record.reason = err.code
        record.status = getattr(err, "upstream_status", None)
    metrics = gw.metrics
    if mid_stream:
        reason = str(err.failure) if err.failure else (err.code or "error")
        metrics.stream_failures.labels(route.name, backend.name, reason).inc()
    else:
        metrics.attempts.labels(route.name, backend.name, str(err.failure or "fatal")).inc()
    ejected = routing.on_failure(
        route,
        gw.route_state(route).of(backend),
        failure=err.failure,
        counts_for_breaker=err.counts_for_breaker,
        retry_after=retry_after,
        now=now,
        rng=gw.rng,
    )
    if ejected:
        metrics.ejections.labels(route.name, backend.name).inc()


def next_try(gw: Gateway, ex: Exchange, err: UpstreamError) -> routing.Attempt | routing.GiveUp:
    """``routing.next_try`` after ``err`` on the request's last backend; a give-up is recorded
    (metric, ``gaveUp`` annotation)."""
    route, backend = ex.route, ex.backend
    assert route is not None and backend is not None
    decision = routing.next_try(
        route,
        gw.route_state(route),
        failed=backend,
        failure=err.failure,
        retry_same_backend=err.retry_same_backend,
        retry_after=err.retry_after,
        tries=tries_per_backend(ex),
        now=gw.clock.now(),
        deadline=ex.deadline,
        rng=gw.rng,
        tokens=quota_tokens(ex, route),
    )
    if isinstance(decision, routing.GiveUp):
        if decision.reason == "retry budget exhausted":
            gw.metrics.retry_budget_exhausted.labels(route.name).inc()
        ex.annotations["gaveUp"] = decision.reason
    return decision


async def _move(
    gw: Gateway,
    ex: Exchange,
    route: Route,
    *,
    failed: Backend,
    decision: routing.Attempt,
    failure: FailureClass | None,
) -> Backend:
    """Count the move ``decision`` makes (a fallback or a retry), wait its delay, return where
    it goes."""
    metrics = gw.metrics
    if decision.fallback:
        ex.fallbacks += 1
        metrics.fallbacks.labels(route.name, failed.name, decision.backend.name, str(failure)).inc()
    else:
        ex.retries += 1
        metrics.retries.labels(route.name, failed.name).inc()
    if decision.delay > 0:
        await gw.clock.sleep(decision.delay)
    return decision.backend


def _apply_rules(ex: Exchange, route: Route, state: routing.RouteState) -> Route:
    """The route narrowed by its first matching routing rule (named in the audit record)."""
    rule = routing.match_rule(
        route,
        prompt_tokens=lambda: _prompt_tokens(ex),
        body=ex.body,
        headers=ex.headers,
    )
    if rule is None:
        return route
    ex.annotations["routingRule"] = rule.name
    ex.route = narrowed = routing.rule_route(route, state, rule)
    return narrowed


def _prompt_tokens(ex: Exchange) -> int:
    return validate.estimate_tokens(validate.prompt_chars(ex.body))


def quota_tokens(ex: Exchange, route: Route) -> int:
    """What a try of ``ex`` counts against a backend's ``tpm`` quota (0 without one)."""
    return routing.request_tokens(route, lambda: _prompt_tokens(ex), ex.output_cap)


def tries_per_backend(ex: Exchange) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in ex.tries:
        out[t.backend.name] = out.get(t.backend.name, 0) + 1
    return out


def timeout_error(call: Call, what: str, seconds: float) -> errors.UpstreamTimeout:
    return errors.UpstreamTimeout(
        f"Backend '{call.backend.name}' {what} within {seconds:g}s.", backend=call.backend.name
    )


def time_left(gw: Gateway, ex: Exchange, limit: float) -> float:
    """Seconds a step may take: ``limit``, or less when the request's deadline is nearer."""
    return max(0.0, min(limit, ex.deadline - gw.clock.now()))


class TryTimer:
    """``asyncio.timeout(seconds)`` for one try (and a stream's relay), as a plain context
    manager: the same behaviour — when the time runs out the task is cancelled, and the
    ``CancelledError`` that comes of it leaves the block as ``TimeoutError`` unless the task was
    also cancelled for another reason (the client went away) — at a fraction of the cost (no
    coroutines to enter and leave, one timer handle). ``seconds=None`` sets no time: the block
    ends only when ``expire`` is called (``asyncio.Timeout.reschedule`` to now). Enter it in the
    task it bounds; ``loop`` is the running loop when the caller knows it (``Gateway.loop``)."""

    __slots__ = ("_cancelling", "_expired", "_handle", "_loop", "_task")

    def __init__(
        self, seconds: float | None, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        self._loop = loop = loop or asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("TryTimer should be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._expired = False
        self._handle: asyncio.Handle | None = None
        if seconds is not None:
            self._handle = (
                loop.call_at(loop.time() + seconds, self._expire)
                if seconds > 0
                else loop.call_soon(self._expire)
            )

    def expire(self) -> None:
        """End the block now (at the loop's next turn)."""
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_soon(self._expire)

    def _expire(self) -> None:
        self._handle = None
        self._expired = True
        self._task.cancel()

    def __enter__(self) -> TryTimer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if (
            self._expired
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc
