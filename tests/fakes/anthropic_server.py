"""A fake Anthropic Messages API: a real aiohttp server on 127.0.0.1 that misbehaves on cue.

``POST /v1/messages`` takes the next ``Step`` from the script (or the default) and records the
request body and headers. Answers are built by ``message()`` and ``events()``, which tests also use
directly, and every one is validated against the official SDK's types (``anthropic.types.Message``
and ``RawMessageStreamEvent``) before it is sent, so the fake cannot drift from the real wire
format. Steps: a text or tool-use answer (JSON or SSE, with cache usage if asked), any status with
an Anthropic error body (529 overloaded, 429 with Retry-After, 400 prompt too long, 401), a
connection reset, hanging, an in-band ``error`` event after N events, a stream cut mid-event, EOF
without ``message_stop``.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import anthropic.types as at
from aiohttp import web
from pydantic import TypeAdapter

_EVENT = TypeAdapter(at.RawMessageStreamEvent)


@dataclass
class Step:
    kind: str = "ok"  # ok | status | reset | hang | inband | cut | eof
    text: str = "Hello from Claude."
    tools: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    stop_reason: str = "end_turn"
    usage: tuple[int, int, int, int] = (12, 5, 0, 0)  # input, output, cache write, cache read
    status: int = 200
    error_type: str = "api_error"
    message: str = "boom"
    headers: dict[str, str] = field(default_factory=dict)
    events_before: int = 0


def ok(text: str = "Hello from Claude.", **kw: Any) -> Step:
    return Step("ok", text=text, **kw)


def tool_use(
    name: str, arguments: dict[str, Any], text: str = "", tool_id: str = "toolu_01"
) -> Step:
    return Step("ok", text=text, tools=[(tool_id, name, arguments)], stop_reason="tool_use")


def status(
    code: int, error_type: str, message: str = "boom", headers: dict[str, str] | None = None
) -> Step:
    return Step(
        "status", status=code, error_type=error_type, message=message, headers=headers or {}
    )


def overloaded() -> Step:
    return status(529, "overloaded_error", "Overloaded")


def prompt_too_long() -> Step:
    return status(
        400, "invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum"
    )


def inband(events_before: int = 1, error_type: str = "overloaded_error") -> Step:
    return Step("inband", events_before=events_before, error_type=error_type, message="Overloaded")


def cut(events_before: int = 5) -> Step:
    return Step("cut", events_before=events_before)


def eof(events_before: int = 5) -> Step:
    return Step("eof", events_before=events_before)


def hang() -> Step:
    return Step("hang")


def reset() -> Step:
    return Step("reset")


def _usage(step: Step) -> dict[str, Any]:
    i, o, cw, cr = step.usage
    return {
        "input_tokens": i,
        "output_tokens": o,
        "cache_creation_input_tokens": cw,
        "cache_read_input_tokens": cr,
    }


def message(step: Step, model: str) -> dict[str, Any]:
    """A ``message`` answer, validated against ``anthropic.types.Message``."""
    content: list[dict[str, Any]] = []
    if step.text:
        content.append({"type": "text", "text": step.text})
    for tid, name, args in step.tools:
        content.append({"type": "tool_use", "id": tid, "name": name, "input": args})
    body = {
        "id": "msg_fake01",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": step.stop_reason,
        "stop_sequence": None,
        "usage": _usage(step),
    }
    at.Message.model_validate(body)
    return body


def events(step: Step, model: str) -> list[tuple[str, dict[str, Any]]]:
    """The event stream of ``step``'s answer, each event validated against the SDK's types."""
    start = message(step, model)
    start = {**start, "content": [], "stop_reason": None}
    start["usage"] = {**start["usage"], "output_tokens": 1}
    out: list[dict[str, Any]] = [{"type": "message_start", "message": start}, {"type": "ping"}]
    index = 0
    if step.text:
        out.append(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }
        )
        words = step.text.split(" ")
        for k, w in enumerate(words):
            delta = {"type": "text_delta", "text": (" " if k else "") + w}
            out.append({"type": "content_block_delta", "index": 0, "delta": delta})
        out.append({"type": "content_block_stop", "index": 0})
        index = 1
    for tid, name, args in step.tools:
        block = {"type": "tool_use", "id": tid, "name": name, "input": {}}
        out.append({"type": "content_block_start", "index": index, "content_block": block})
        raw = json.dumps(args)
        for piece in (raw[: len(raw) // 2], raw[len(raw) // 2 :]):
            delta = {"type": "input_json_delta", "partial_json": piece}
            out.append({"type": "content_block_delta", "index": index, "delta": delta})
        out.append({"type": "content_block_stop", "index": index})
        index += 1
    out.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": step.stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": step.usage[1]},
        }
    )
    out.append({"type": "message_stop"})
    for ev in out:
        if ev["type"] != "ping":  # the SDK skips pings; its event union has no type for them
            _EVENT.validate_python(ev)
    return [(ev["type"], ev) for ev in out]


#: The Messages API's request fields; anything else is refused with a 400 ("Extra inputs are
#: not permitted"), as the real API does.
MESSAGES_FIELDS = frozenset(
    [
        "model",
        "messages",
        "max_tokens",
        "system",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "metadata",
        "thinking",
        "output_config",
        "service_tier",
        "container",
        "mcp_servers",
        "context_management",
    ]
)
COUNT_FIELDS = frozenset(
    [
        "model",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
    ]
)


def unknown_field(body: dict[str, Any], known: frozenset[str]) -> web.Response | None:
    extra = sorted(set(body) - known)
    if not extra:
        return None
    err = error_body("invalid_request_error", f"{extra[0]}: Extra inputs are not permitted")
    return web.json_response(err, status=400)


def error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}}


def encode(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


class FakeAnthropic:
    def __init__(self, name: str = "claude") -> None:
        self.name = name
        self.script: deque[Step] = deque()
        self.default = ok()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.cancelled = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def then(self, *steps: Step) -> FakeAnthropic:
        self.script.extend(steps)
        return self

    async def start(self) -> FakeAnthropic:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        assert site._server is not None
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _count_tokens(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        refused = unknown_field(body, COUNT_FIELDS)
        if refused is not None:
            return refused
        return web.json_response({"input_tokens": 42})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        refused = unknown_field(body, MESSAGES_FIELDS)
        if refused is not None:
            return refused
        step = self.script.popleft() if self.script else self.default
        model = body["model"]
        try:
            if step.kind == "status":
                return web.json_response(
                    error_body(step.error_type, step.message),
                    status=step.status,
                    headers=step.headers,
                )
            if step.kind == "reset":
                assert request.transport is not None
                request.transport.abort()
                await asyncio.sleep(3600)
            if step.kind == "hang":
                await asyncio.sleep(3600)
            if body.get("stream") is not True:
                return web.json_response(message(step, model))
            return await self._stream(request, step, model)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def _stream(self, request: web.Request, step: Step, model: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        evs = events(step, model)
        if step.kind == "ok":
            for kind, data in evs:
                await resp.write(encode(kind, data))
            await resp.write_eof()
            return resp
        for kind, data in evs[: step.events_before]:
            await resp.write(encode(kind, data))
        if step.kind == "inband":
            await resp.write(encode("error", error_body(step.error_type, step.message)))
            await resp.write_eof()
        elif step.kind == "cut":
            await resp.write(b'event: content_block_delta\ndata: {"type":"content_bl')
            assert request.transport is not None
            request.transport.abort()
            await asyncio.sleep(3600)
        elif step.kind == "eof":
            await resp.write_eof()
        return resp
