"""The request pipeline: from the client's bytes to the provider and back, once per request.

Owns the order of the steps (DESIGN.md, "The sidecar's request path"): read the body within the
size limit → parse and check it → resolve the route → pipeline hooks (prompt, guardrails, budget:
later work) → choose a backend → try it under the per-try and total deadlines → on failure ask
``routing`` whether and where to try again → answer. A streamed answer commits when its first
frame is in: before that, failures are retried or fall over like any other; after it there is no
silent fallback — a failure ends the stream with one terminal SSE error event and never a fake
``[DONE]``. A client that goes away cancels the handler (aiohttp ``handler_cancellation``) and
with it the upstream request at once. Every request ends in ``Gateway.finish`` (metrics, audit,
trace). A client speaking another API (``exchange.Dialect``: ``POST /v1/messages``) is translated
to the canonical OpenAI body at the door and its answers and errors back to its shape.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import TypeVar

from aiohttp import web

from . import errors, metering, routing, sse, tracing, validate
from .errors import SluiceError, UpstreamError
from .exchange import Dialect, Exchange, Try
from .providers.base import Call, Operation, Upstream, Usage
from .runtime import Gateway

log = logging.getLogger("sluice.proxy")
T = TypeVar("T")
_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}


def new_request_id() -> str:
    return os.urandom(12).hex()


async def handle(
    gw: Gateway, request: web.Request, op: Operation, dialect: Dialect | None = None
) -> web.StreamResponse:
    """Serve one chat completions or embeddings request (or a ``dialect``'s chat request)."""
    ex = Exchange(request.headers.get("x-request-id") or new_request_id(), op, gw.clock.now())
    ex.dialect = dialect
    if gw.tracer.enabled or "traceparent" in request.headers:
        ex.trace = tracing.incoming(request.headers, gw.tracer.enabled)
    try:
        snap = gw.snapshot
        if snap is None:
            raise errors.NotReady(
                "The Sluice sidecar has no valid config yet; see its /readyz for why."
            )
        body = await read_body(request, snap.config.limits.max_request_bytes)
        ex.bytes_in = len(body)
        obj = validate.parse_object(body)
        if dialect is not None:
            ex.model, ex.body = dialect.parse(obj)
            ex.native = obj
        else:
            ex.model = validate.chat(obj) if op == "chat" else validate.embeddings(obj)
            ex.body = obj
        route = snap.routes.get(ex.model)
        if route is None:
            raise errors.UnknownModel(ex.model, list(snap.routes))
        ex.route = route
        ex.deadline = ex.started + route.timeouts.total
        if op == "chat" and ex.body.get("stream") is True:
            ex.stream = True
            so = ex.body.get("stream_options")
            ex.client_wants_usage = isinstance(so, dict) and so.get("include_usage") is True
        canonical = ex.body
        for hook in gw.hooks.before_backend:
            await hook(ex)
        if ex.body is not canonical:
            ex.native = None  # a hook rewrote the request: the client's own body is stale
        if ex.stream:
            return await _stream(gw, request, ex)
        return await _unary(gw, ex)
    except SluiceError as err:
        return error_response(ex, err)
    except asyncio.CancelledError:
        ex.outcome = "client_disconnected"
        if not ex.committed:
            ex.status = 499
        raise
    except Exception:
        log.exception("internal error serving request %s", ex.request_id)
        return error_response(ex, errors.internal_error())
    finally:
        gw.finish(ex)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The body, refusing (413) as soon as it is known to exceed ``limit``: by Content-Length
    before reading anything, else while reading, so memory stays bounded by ``limit``."""
    length = request.content_length
    if length is not None:
        if length > limit:
            raise errors.PayloadTooLarge(limit)
        try:
            return await request.content.readexactly(length)
        except asyncio.IncompleteReadError:
            raise errors.InvalidJSON(
                "The request body is shorter than its Content-Length."
            ) from None
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise errors.PayloadTooLarge(limit)
        chunks.append(chunk)


def error_response(ex: Exchange, err: SluiceError) -> web.Response:
    ex.error = err
    ex.status = err.status
    ex.outcome = "error"
    resp = web.Response(
        status=err.status,
        body=errors.error_body(err) if ex.dialect is None else ex.dialect.error_body(err),
        content_type="application/json",
        headers={**metering.headers(ex), **err.headers()},
    )
    if err.status == 413:
        resp.force_close()  # do not drain an oversize body to keep the connection
    return resp


# --- tries --------------------------------------------------------------------------------------


async def with_retries(  # noqa: PLR0915 - the retry loop reads best in one piece
    gw: Gateway, ex: Exchange, attempt: Callable[[Call], Awaitable[T]]
) -> T:
    """Run ``attempt`` against backends chosen by ``routing`` until one succeeds or routing gives
    up; then re-raise the last failure. Feeds breakers, EWMAs, the retry budget and metrics."""
    route = ex.route
    assert route is not None
    clock, metrics = gw.clock, gw.metrics
    state = gw.route_state(route)
    now = clock.now()
    state.budget.record_request(now)
    candidates = routing.order(route, state, now, gw.rng)
    if not candidates:
        raise errors.NoBackendAvailable(
            f"Every backend of route '{route.name}' is ejected or cooling down after failures; "
            "try again after Retry-After.",
            retry_after=routing.next_available_in(route, state, now),
        )
    backend = candidates[0]
    tries: dict[str, int] = {}
    while True:
        tries[backend.name] = tries.get(backend.name, 0) + 1
        ex.attempts += 1
        ex.backend = backend
        health = state.of(backend)
        started = clock.now()
        record = Try(backend, started, tracing.new_id(8) if gw.tracer.enabled else None)
        ex.tries.append(record)
        routing.on_dispatch(health, started)
        try:
            result = await attempt(gw.make_call(ex, route, backend, record.span_id))
        except UpstreamError as err:
            now = clock.now()
            _failed(record, err, now)
            ejected = routing.on_failure(
                route,
                health,
                failure=err.failure,
                counts_for_breaker=err.counts_for_breaker,
                retry_after=err.retry_after,
                now=now,
                rng=gw.rng,
            )
            metrics.attempts.labels(route.name, backend.name, str(err.failure or "fatal")).inc()
            if ejected:
                metrics.ejections.labels(route.name, backend.name).inc()
            decision = routing.next_try(
                route,
                state,
                failed=backend,
                failure=err.failure,
                retry_same_backend=err.retry_same_backend,
                retry_after=err.retry_after,
                tries=tries,
                now=now,
                deadline=ex.deadline,
                rng=gw.rng,
            )
            if isinstance(decision, routing.GiveUp):
                if decision.reason == "retry budget exhausted":
                    metrics.budget_exhausted.labels(route.name).inc()
                ex.annotations["gaveUp"] = decision.reason
                raise
            if decision.fallback:
                ex.fallbacks += 1
                metrics.fallbacks.labels(
                    route.name, backend.name, decision.backend.name, str(err.failure)
                ).inc()
            else:
                ex.retries += 1
                metrics.retries.labels(route.name, backend.name).inc()
            if decision.delay > 0:
                await clock.sleep(decision.delay)
            backend = decision.backend
            continue
        except BaseException:
            record.result = "abandoned"
            routing.on_abandon(health)
            raise
        record.duration = clock.now() - started
        routing.on_success(health, record.duration)
        metrics.child(metrics.attempts, route.name, backend.name, "ok").inc()
        return result


def _failed(record: Try, err: UpstreamError, now: float) -> None:
    record.duration = now - record.started
    record.result = str(err.failure or "fatal")
    record.reason = err.code
    record.status = getattr(err, "upstream_status", None)


def _timeout_error(ex: Exchange, call: Call, what: str, seconds: float) -> errors.UpstreamTimeout:
    return errors.UpstreamTimeout(
        f"Backend '{call.backend.name}' {what} within {seconds:g}s.", backend=call.backend.name
    )


def _adapt(ex: Exchange, up: Upstream) -> Upstream:
    """``up`` answering in the client's dialect."""
    if ex.dialect is None or up.dialect == ex.dialect.name:
        return up
    return ex.dialect.adapt(up)


def _try_budget(gw: Gateway, ex: Exchange, limit: float) -> float:
    return max(0.0, min(limit, ex.deadline - gw.clock.now()))


async def _try_unary(gw: Gateway, ex: Exchange, call: Call) -> tuple[Upstream, bytes]:
    """One non-streamed try. A provider sends the headers of a non-streamed answer only once it
    has generated it, so ``firstToken`` bounds the whole try (one timer: cheaper than two)."""
    limit = _try_budget(gw, ex, call.route.timeouts.first_token)
    up: Upstream | None = None
    try:
        async with asyncio.timeout(limit):
            up = _adapt(ex, await gw.adapter(call).open(call))
            body = await up.read()
    except TimeoutError:
        if up is not None:
            up.close()
        what = "did not answer" if up is None else "stalled while sending its answer"
        raise _timeout_error(ex, call, what, limit) from None
    except BaseException:
        if up is not None:
            up.close()
        raise
    up.release()
    return up, body


async def _unary(gw: Gateway, ex: Exchange) -> web.Response:
    up, body = await with_retries(gw, ex, lambda call: _try_unary(gw, ex, call))
    ex.status = 200
    ex.ttft = gw.clock.now() - ex.started
    ex.usage = up.usage or _estimate(ex, up)
    return web.Response(body=body, content_type="application/json", headers=metering.headers(ex))


_Opened = tuple[Upstream, AsyncGenerator[bytes, None], bytes | None]


async def _try_stream(gw: Gateway, ex: Exchange, call: Call) -> _Opened:
    """Open the stream and wait for its first frame: the last point where a retry is invisible."""
    first_budget = _try_budget(gw, ex, call.route.timeouts.first_token)
    up: Upstream | None = None
    frames: AsyncGenerator[bytes, None] | None = None
    try:
        async with asyncio.timeout(first_budget):
            up = _adapt(ex, await gw.adapter(call).open(call))
            frames = up.frames()
            first = await anext(frames, None)
    except BaseException as exc:
        if frames is not None:
            await frames.aclose()
        if up is not None:
            up.close()
        if isinstance(exc, TimeoutError):
            raise _timeout_error(ex, call, "sent no first token", first_budget) from None
        raise
    return up, frames, first


async def _stream(gw: Gateway, request: web.Request, ex: Exchange) -> web.StreamResponse:
    up, frames, first = await with_retries(gw, ex, lambda call: _try_stream(gw, ex, call))
    route, backend = ex.route, ex.backend
    assert route is not None and backend is not None
    clock = gw.clock
    ex.ttft = clock.now() - ex.started
    ex.status = 200
    resp = web.StreamResponse(headers={**metering.headers(ex), **_SSE_HEADERS})
    loop = asyncio.get_running_loop()
    idle = route.timeouts.idle
    try:
        async with aclosing(frames):
            await resp.prepare(request)
            ex.committed = True
            if first is not None:
                await resp.write(first)
                async with asyncio.timeout(_try_budget(gw, ex, idle)) as tm:
                    async for frame in frames:
                        tm.reschedule(None)
                        await resp.write(frame)
                        tm.reschedule(loop.time() + _try_budget(gw, ex, idle))
            done = sse.DONE if ex.dialect is None else ex.dialect.done
            if done:
                await resp.write(done)
        up.release()
    except (TimeoutError, UpstreamError) as exc:
        up.close()
        err = (
            exc
            if isinstance(exc, UpstreamError)
            else errors.UpstreamTimeout(
                f"Backend '{backend.name}' stalled mid-stream (no event within {idle:g}s) or the "
                f"request exceeded its total timeout of {route.timeouts.total:g}s.",
                backend=backend.name,
            )
        )
        _mid_stream_failure(gw, ex, err)
        try:
            await resp.write(
                sse.encode(json.dumps(errors.error_object(err)))
                if ex.dialect is None
                else ex.dialect.stream_error(err)
            )
        except ConnectionError:
            ex.outcome = "client_disconnected"
    except ConnectionError:
        up.close()
        ex.outcome = "client_disconnected"
    except BaseException:
        up.close()
        raise
    finally:
        ex.usage = up.usage or _estimate(ex, up)
    try:
        await resp.write_eof()
    except ConnectionError:
        ex.outcome = "client_disconnected"
    return resp


def _mid_stream_failure(gw: Gateway, ex: Exchange, err: UpstreamError) -> None:
    route, backend = ex.route, ex.backend
    assert route is not None and backend is not None
    ex.outcome = "stream_error"
    ex.error = err
    reason = str(err.failure) if err.failure else (err.code or "error")
    gw.metrics.stream_failures.labels(route.name, backend.name, reason).inc()
    if routing.on_failure(
        route,
        gw.route_state(route).of(backend),
        failure=err.failure,
        counts_for_breaker=err.counts_for_breaker,
        retry_after=None,
        now=gw.clock.now(),
        rng=gw.rng,
    ):
        gw.metrics.ejections.labels(route.name, backend.name).inc()


def _estimate(ex: Exchange, up: Upstream) -> Usage:
    prompt = validate.estimate_tokens(validate.prompt_chars(ex.body))
    return Usage(prompt, up.content_chunks, source="estimated")
