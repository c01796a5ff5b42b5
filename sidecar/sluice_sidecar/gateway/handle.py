"""Handling one request, top to bottom: parse → resolve → stages → dispatch → respond.

Owns the order of the steps (DESIGN.md, "The sidecar's request path"):

1. read the body within ``limits.maxRequestBytes`` and ``limits.bodyTimeout`` (``body``);
2. parse it in the client's API (``translate.ClientAPI.parse``: the canonical OpenAI body, and
   the client's own body kept for a pass-through);
3. resolve the route (404 for an unknown model) and the request's deadline;
4. the stages' ``on_request`` in their declared order (prompt, input guardrails, budget: may
   rewrite, refuse or re-route);
5. dispatch: tries against the backends ``routing`` picks (``dispatch.with_retries``), each
   through its translator and the one HTTP adapter (``upstream``);
6. respond: a whole answer here (the stages' ``on_response``, then reshaped for the client), a
   stream in ``stream`` (commit point, the stages' filters, the output limit, mid-stream
   failures);
7. finish: ``Gateway.finish`` (metrics, the stages' ``on_finish``, audit, trace), scheduled just
   after the answer went out.

A client that goes away cancels the handler (aiohttp ``handler_cancellation``) and with it the
upstream request at once. Errors are answered in the client's API (``ClientAPI.error_body``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from aiohttp import web

from .. import errors, metering, prompts, tracing, validate
from ..errors import SluiceError
from ..exchange import Exchange
from ..model import Operation, Usage
from ..stage import Stages, UnaryAnswer
from ..translate import OPENAI, Call, ClientAPI, Translator
from ..upstream import Upstream
from . import body as request_body
from . import dispatch, stream
from .state import Gateway

log = logging.getLogger("sluice.gateway")
_JSON = "application/json"


def _exchange(gw: Gateway, request: web.Request, op: Operation, client: ClientAPI) -> Exchange:
    headers = request.headers
    sent_id = headers.get("x-request-id")
    ex = Exchange(sent_id or new_request_id(), op, gw.clock.now(), bool(sent_id))
    ex.client = client
    ex.headers = headers
    return ex


#: Request ids are cut from one ``os.urandom`` read of this many (one system call per this
#: many requests instead of one per request); a forked child starts its own.
_IDS_PER_READ = 256
_ids: list[str] = []
os.register_at_fork(after_in_child=_ids.clear)


def new_request_id() -> str:
    """24 hex digits: 96 bits from ``os.urandom``."""
    if not _ids:
        pool = os.urandom(12 * _IDS_PER_READ).hex()
        _ids.extend([pool[i : i + 24] for i in range(0, len(pool), 24)])
    return _ids.pop()


async def handle(
    gw: Gateway, request: web.Request, op: Operation, client: ClientAPI = OPENAI
) -> web.StreamResponse:
    """Serve one request of ``op`` from a client speaking ``client``."""
    ex = _exchange(gw, request, op, client)
    if gw.tracer.enabled or "traceparent" in request.headers:
        ex.trace = tracing.incoming(request.headers, gw.tracer.enabled)
    try:
        snap = gw.snapshot
        if snap is None:
            raise errors.NotReady(
                "The Sluice sidecar has no valid config yet; see its /readyz for why."
            )
        ex.config = snap.config
        stages = gw.stages.live(snap.config)  # without the stages idle for this config
        # 1. read
        limits = ex.limits = snap.config.limits
        raw = request_body.buffered_body(request, limits.max_request_bytes)
        if raw is None:
            raw = await request_body.read_body(
                request, limits.max_request_bytes, limits.body_timeout
            )
        ex.bytes_in = len(raw)
        # 2. parse
        obj = validate.parse_object(raw)
        if client is OPENAI and op == "chat":
            prompts.from_headers(obj, request.headers)  # x-sluice-prompt → metadata.prompt
        ex.model, ex.body = _parse(client, obj, op)
        if client is not OPENAI:
            ex.native = obj
        if client.forward_headers:
            ex.client_headers = {
                h: v for h in client.forward_headers if (v := request.headers.get(h))
            }
        # 3. resolve
        ex.route = route = gw.resolve(snap, ex)
        ex.deadline = ex.started + route.timeouts.total
        if op != "embeddings":
            ex.output_cap = _output_cap(ex.body, limits.default_max_tokens)
            if ex.body.get("stream") is True:
                ex.stream = True
                so = ex.body.get("stream_options")
                ex.client_wants_usage = isinstance(so, dict) and so.get("include_usage") is True
        # 4. stages
        canonical = ex.body
        for stage in stages.request:
            await stage.on_request(ex)
        if ex.body is not canonical:
            ex.native = None  # a stage rewrote the request: the client's own body is stale
        if op == "completions" and stages.streams:
            _checkable_completion(stages, ex)
        # 5-6. dispatch and respond
        if ex.stream:
            return await stream.serve(gw, request, ex, stages)
        return await _unary(gw, ex, stages)
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
        # 7. Metrics, audit and the stages' finish run right after the answer has been handed
        # to the socket: the client does not wait for them.
        (gw.loop or asyncio.get_running_loop()).call_soon(gw.finish, ex)


def _parse(client: ClientAPI, obj: dict[str, Any], op: Operation) -> tuple[str, dict[str, Any]]:
    """``client.parse``; a shape its checks let through but its translation cannot take is
    still the client's mistake (400), never a 500."""
    try:
        return client.parse(obj, op)
    except (TypeError, AttributeError, KeyError, IndexError, ValueError) as exc:
        raise errors.InvalidField(
            "<body>", f"a field has a type the {client.name} API does not allow ({_why(exc)})"
        ) from None


def _why(exc: Exception) -> str:
    return errors.sanitise(f"{type(exc).__name__}: {exc}")[:120]


def _checkable_completion(stages: Stages, ex: Exchange) -> None:
    """A text completion whose answer a stage checks (output guardrails, restored
    placeholders) is served only where the check can run: its stream, through the stages'
    filters. A whole answer (the stages' response phase reads chat completions only) and
    ``logprobs`` (token texts no filter sees) are refused — never passed on unchecked."""
    if not stages.filters(ex):
        return
    if not ex.stream:
        raise errors.InvalidField(
            "stream",
            "this route's answers pass output checks (a GuardrailPolicy), which /v1/completions "
            "runs on streamed answers only; send stream: true",
        )
    if ex.body.get("logprobs") is not None:
        raise errors.InvalidField(
            "logprobs",
            "this route's answers pass output checks (a GuardrailPolicy), which cannot check "
            "the token texts of logprobs; remove it",
        )


def _output_cap(body: dict[str, Any], default: int) -> int:
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    if type(cap) is not int and (not isinstance(cap, int) or isinstance(cap, bool)):
        return default
    if cap <= 0:
        return default
    return cap if cap < validate.MAX_TOKENS_FIELD else validate.MAX_TOKENS_FIELD


def error_response(ex: Exchange, err: SluiceError) -> web.Response:
    ex.error = err
    ex.status = ex.client.error_status(err)
    ex.outcome = "error"
    resp = web.Response(
        status=ex.status,
        body=ex.client.error_body(err),
        content_type=_JSON,
        headers={**metering.headers(ex), **err.headers()},
    )
    if ex.status in (408, 413) or err.close_connection:
        resp.force_close()  # do not wait for (or drain) the rest of the body
    return resp


# --- whole answers ------------------------------------------------------------------------------

Unary = tuple[Upstream, bytes, Translator]


async def try_unary(gw: Gateway, ex: Exchange, call: Call, tr: Translator) -> Unary:
    """One non-streamed try. A provider sends the headers of a non-streamed answer only once it
    has generated it, so ``firstToken`` bounds the whole try (one timer: cheaper than two)."""
    limit = dispatch.time_left(gw, ex, call.route.timeouts.first_token)
    up: Upstream | None = None
    try:
        with dispatch.TryTimer(limit, gw.loop):
            up = await gw.transports[call.backend.provider].open(call, tr.backend)
            body = await up.read()
    except TimeoutError:
        if up is not None:
            up.close()
        what = "did not answer" if up is None else "stalled while sending its answer"
        raise dispatch.timeout_error(call, what, limit) from None
    except BaseException:
        if up is not None:
            up.close()
        raise
    up.release()
    return up, body, tr


async def _unary(gw: Gateway, ex: Exchange, stages: Stages) -> web.Response:
    up, body, tr = await dispatch.with_retries(gw, ex, lambda call, tr: try_unary(gw, ex, call, tr))
    ex.status = 200
    ex.ttft = gw.clock.now() - ex.started
    ex.usage = up.usage or _estimate(ex, up, body)
    if stages.response and tr.canonical:
        answer = UnaryAnswer(body)
        for stage in stages.response:
            stage.on_response(ex, answer)
        for stage in stages.answer:
            await stage.on_answer(ex, answer)
        body = answer.encoded()
    if tr.reshape is not None:
        body = tr.reshape.answer(body)
    return web.Response(body=body, content_type=_JSON, headers=metering.headers(ex))


def _estimate(ex: Exchange, up: Upstream, body: bytes) -> Usage:
    """Usage counted from the text: the provider reported none, or none in range."""
    if up.usage_invalid:
        ex.annotations["usageInvalid"] = True
    prompt = validate.estimate_tokens(validate.prompt_chars(ex.body))
    output = validate.estimate_tokens(validate.answer_chars(body)) if ex.operation == "chat" else 0
    return Usage(prompt, output, source="estimated")
