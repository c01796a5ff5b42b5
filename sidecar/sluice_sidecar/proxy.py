"""The request pipeline: from the client's bytes to the provider and back, once per request.

Owns the order of the steps (DESIGN.md, "The sidecar's request path"): read the body within the
size limit and ``limits.bodyTimeout`` → parse and check it → resolve the route → pipeline hooks
(prompt, guardrails, budget: later work) → choose a backend → try it under the per-try and total
deadlines → on failure ask ``routing`` whether and where to try again (``retries``) → answer: a
whole answer here, a stream in ``streaming`` (commit point, output limit, mid-stream failures). A
client that goes away cancels the handler (aiohttp ``handler_cancellation``) and with it the
upstream request at once. Every request ends in ``Gateway.finish`` (metrics, audit, trace), run
just after the answer went out. A client speaking another API (``exchange.Dialect``:
``POST /v1/messages``) is translated to the canonical OpenAI body at the door and its answers
and errors back to its shape.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from aiohttp import web
from aiohttp.streams import StreamReader

from . import errors, metering, retries, streaming, tracing, validate
from .errors import SluiceError
from .exchange import Dialect, Exchange
from .providers.base import Call, Operation, Upstream, Usage
from .runtime import Gateway

log = logging.getLogger("sluice.proxy")
_JSON = "application/json"


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
        limits = ex.limits = snap.config.limits
        body = buffered_body(request, limits.max_request_bytes)
        if body is None:
            body = await read_body(request, limits.max_request_bytes, limits.body_timeout)
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
        if op == "chat":
            ex.output_cap = _output_cap(ex.body, limits.default_max_tokens)
            if ex.body.get("stream") is True:
                ex.stream = True
                so = ex.body.get("stream_options")
                ex.client_wants_usage = isinstance(so, dict) and so.get("include_usage") is True
        canonical = ex.body
        for hook in gw.hooks.before_backend:
            await hook(ex)
        if ex.body is not canonical:
            ex.native = None  # a hook rewrote the request: the client's own body is stale
        if ex.stream:
            return await streaming.serve(gw, request, ex)
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
        # Metrics, audit and hooks run right after the answer has been handed to the socket:
        # the client does not wait for them.
        asyncio.get_running_loop().call_soon(gw.finish, ex)


def _output_cap(body: dict[str, Any], default: int) -> int:
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    return cap if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 else default


def buffered_body(request: web.Request, limit: int) -> bytes | None:
    """The body when all of it is in memory already (the usual small request: it came with the
    head), else None (then ``read_body``). 413 when it is over ``limit``."""
    length = request.content_length
    if length is not None and length > limit:
        raise errors.PayloadTooLarge(limit)
    content = request.content
    if not content.is_eof():
        return None
    data = content.read_nowait()
    if length is not None and len(data) != length:
        raise errors.InvalidJSON("The request body is shorter than its Content-Length.")
    if len(data) > limit:
        raise errors.PayloadTooLarge(limit)
    return data


async def read_body(request: web.Request, limit: int, seconds: float) -> bytes:
    """The body, refusing (413) as soon as it is known to exceed ``limit``: by Content-Length
    before reading anything, else while reading, so memory stays bounded by ``limit``. A body
    that does not arrive within ``seconds`` is refused with 408 (slowloris); a body
    already in the buffer (the usual small request) is taken without starting a timer."""
    length = request.content_length
    if length is not None and length > limit:
        raise errors.PayloadTooLarge(limit)
    if length == 0:
        return b""
    content = request.content
    if content.is_eof():
        return await _read(content, length, limit)
    try:
        async with asyncio.timeout(seconds):
            return await _read(content, length, limit)
    except TimeoutError:
        raise errors.RequestTimeout(seconds) from None


async def _read(content: StreamReader, length: int | None, limit: int) -> bytes:
    if length is not None:
        try:
            return await content.readexactly(length)
        except asyncio.IncompleteReadError:
            raise errors.InvalidJSON(
                "The request body is shorter than its Content-Length."
            ) from None
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await content.readany()
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
        content_type=_JSON,
        headers={**metering.headers(ex), **err.headers()},
    )
    if err.status in (408, 413):
        resp.force_close()  # do not wait for (or drain) the rest of the body
    return resp


# --- whole answers ------------------------------------------------------------------------------


async def _try_unary(gw: Gateway, ex: Exchange, call: Call) -> tuple[Upstream, bytes]:
    """One non-streamed try. A provider sends the headers of a non-streamed answer only once it
    has generated it, so ``firstToken`` bounds the whole try (one timer: cheaper than two)."""
    limit = retries.budget(gw, ex, call.route.timeouts.first_token)
    up: Upstream | None = None
    try:
        async with asyncio.timeout(limit):
            up = retries.adapt(ex, await gw.adapter(call).open(call))
            body = await up.read()
    except TimeoutError:
        if up is not None:
            up.close()
        what = "did not answer" if up is None else "stalled while sending its answer"
        raise retries.timeout_error(call, what, limit) from None
    except BaseException:
        if up is not None:
            up.close()
        raise
    up.release()
    return up, body


async def _unary(gw: Gateway, ex: Exchange) -> web.Response:
    up, body = await retries.with_retries(gw, ex, lambda call: _try_unary(gw, ex, call))
    ex.status = 200
    ex.ttft = gw.clock.now() - ex.started
    ex.usage = up.usage or _estimate(ex, up)
    return web.Response(body=body, content_type=_JSON, headers=metering.headers(ex))


def _estimate(ex: Exchange, up: Upstream) -> Usage:
    prompt = validate.estimate_tokens(validate.prompt_chars(ex.body))
    return Usage(prompt, up.content_chunks, source="estimated")
