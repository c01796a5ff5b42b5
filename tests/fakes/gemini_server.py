"""A fake Gemini API: a real aiohttp server on 127.0.0.1 that misbehaves on cue.

``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse`` take the
next ``Step`` and record the request (with the model and method from the URL) and headers.
Answers are ``GenerateContentResponse`` objects in the REST (camelCase) form documented for the
Gemini API (no official Python SDK is installed here to validate them against; the shapes follow
the API reference: candidates[].content.parts, finishReason, promptFeedback.blockReason,
usageMetadata, modelVersion, responseId). Streams are SSE ``data:`` events with CRLF line ends and
no terminator, as Gemini sends them. Steps: a text or function-call answer, a SAFETY finish, a
blocked prompt, any status with a Google error body (429, 503, 400 API key invalid, 400 token
limit), a reset, hanging, an in-band error, a stream cut mid-event, EOF before a finishReason.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


@dataclass
class Step:
    kind: str = "ok"  # ok | blocked | status | reset | hang | inband | cut | eof
    text: str = "Hello from Gemini."
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    finish: str = "STOP"
    usage: tuple[int, int, int, int] = (9, 4, 0, 0)  # prompt, candidates, cached, thoughts
    status: int = 200
    message: str = "boom"
    reason: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    events_before: int = 1


def ok(text: str = "Hello from Gemini.", **kw: Any) -> Step:
    return Step("ok", text=text, **kw)


def function_call(name: str, args: dict[str, Any], text: str = "") -> Step:
    return Step("ok", text=text, calls=[(name, args)])


def safety(text: str = "I can") -> Step:
    return Step("ok", text=text, finish="SAFETY")


def blocked(reason: str = "SAFETY") -> Step:
    return Step("blocked", reason=reason)


def status(
    code: int,
    message: str = "boom",
    reason: str | None = None,
    headers: dict[str, str] | None = None,
) -> Step:
    return Step("status", status=code, message=message, reason=reason, headers=headers or {})


def key_invalid() -> Step:
    return status(400, "API key not valid. Please pass a valid API key.", "API_KEY_INVALID")


def too_long() -> Step:
    return status(
        400,
        "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
    )


def inband(events_before: int = 0) -> Step:
    return Step(
        "inband", events_before=events_before, status=503, message="The model is overloaded."
    )


def cut(events_before: int = 1) -> Step:
    return Step("cut", events_before=events_before)


def eof(events_before: int = 1) -> Step:
    return Step("eof", events_before=events_before)


def hang() -> Step:
    return Step("hang")


#: ``GenerateContentRequest`` fields and ``generationConfig`` fields (REST names); anything else
#: is refused with Gemini's 400 ("Invalid JSON payload received. Unknown name …").
REQUEST_FIELDS = frozenset(
    [
        "contents",
        "systemInstruction",
        "generationConfig",
        "tools",
        "toolConfig",
        "safetySettings",
        "cachedContent",
    ]
)
CONFIG_FIELDS = frozenset(
    [
        "temperature",
        "topP",
        "topK",
        "candidateCount",
        "maxOutputTokens",
        "stopSequences",
        "presencePenalty",
        "frequencyPenalty",
        "seed",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "thinkingConfig",
        "responseLogprobs",
        "logprobs",
        "responseModalities",
    ]
)


def unknown_field(body: dict[str, Any]) -> web.Response | None:
    extra = sorted(set(body) - REQUEST_FIELDS)
    config = body.get("generationConfig") or {}
    extra += sorted(f"generation_config.{k}" for k in set(config) - CONFIG_FIELDS)
    if not extra:
        return None
    message = f'Invalid JSON payload received. Unknown name "{extra[0]}": Cannot find field.'
    return web.json_response(error_body(400, message), status=400)


def error_body(code: int, message: str, reason: str | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {
        "code": code,
        "message": message,
        "status": GOOGLE_STATUS.get(code, "UNKNOWN"),
    }
    if reason:
        err["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
            }
        ]
    return {"error": err}


def _usage(step: Step, final: bool) -> dict[str, Any]:
    prompt, out, cached, thoughts = step.usage
    u: dict[str, Any] = {"promptTokenCount": prompt}
    if final:
        u["candidatesTokenCount"] = out
        u["totalTokenCount"] = prompt + out + thoughts
        if cached:
            u["cachedContentTokenCount"] = cached
        if thoughts:
            u["thoughtsTokenCount"] = thoughts
    else:
        u["totalTokenCount"] = prompt
    return u


def response(step: Step, model: str) -> dict[str, Any]:
    """A whole ``GenerateContentResponse`` for ``step``."""
    if step.kind == "blocked":
        return {
            "promptFeedback": {
                "blockReason": step.reason,
                "safetyRatings": [
                    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}
                ],
            },
            "usageMetadata": {"promptTokenCount": step.usage[0], "totalTokenCount": step.usage[0]},
            "modelVersion": model,
            "responseId": "resp-fake",
        }
    parts: list[dict[str, Any]] = []
    if step.text:
        parts.append({"text": step.text})
    for name, args in step.calls:
        parts.append({"functionCall": {"name": name, "args": args}, "thoughtSignature": "c2ln"})
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": parts},
                "finishReason": step.finish,
                "index": 0,
            }
        ],
        "usageMetadata": _usage(step, True),
        "modelVersion": model,
        "responseId": "resp-fake",
    }


def stream_events(step: Step, model: str) -> list[dict[str, Any]]:
    """The streamed form of ``step``: one event per word, calls in the last event."""
    if step.kind == "blocked":
        return [response(step, model)]
    words = step.text.split(" ") if step.text else []
    out: list[dict[str, Any]] = []
    for k, w in enumerate(words):
        out.append(
            {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [{"text": (" " if k else "") + w}]},
                        "index": 0,
                    }
                ],
                "usageMetadata": _usage(step, False),
                "modelVersion": model,
                "responseId": "resp-fake",
            }
        )
    last_parts: list[dict[str, Any]] = [
        {"functionCall": {"name": n, "args": a}, "thoughtSignature": "c2ln"} for n, a in step.calls
    ]
    out.append(
        {
            "candidates": [
                {
                    "content": {"role": "model", "parts": last_parts or [{"text": ""}]},
                    "finishReason": step.finish,
                    "index": 0,
                }
            ],
            "usageMetadata": _usage(step, True),
            "modelVersion": model,
            "responseId": "resp-fake",
        }
    )
    return out


def encode(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\r\n\r\n"


class FakeGemini:
    def __init__(self, name: str = "gemini") -> None:
        self.name = name
        self.script: deque[Step] = deque()
        self.default = ok()
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def then(self, *steps: Step) -> FakeGemini:
        self.script.extend(steps)
        return self

    async def start(self) -> FakeGemini:
        app = web.Application()
        app.router.add_post("/v1beta/models/{target}", self._generate)
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

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["target"].partition(":")
        body = await request.json()
        self.requests.append(body)
        self.paths.append(request.path_qs)
        self.headers.append(dict(request.headers))
        refused = unknown_field(body)
        if refused is not None:
            return refused
        step = self.script.popleft() if self.script else self.default
        if step.kind == "status":
            return web.json_response(
                error_body(step.status, step.message, step.reason),
                status=step.status,
                headers=step.headers,
            )
        if step.kind == "reset":
            assert request.transport is not None
            request.transport.abort()
            await asyncio.sleep(3600)
        if step.kind == "hang":
            await asyncio.sleep(3600)
        if method == "generateContent":
            return web.json_response(response(step, model))
        assert method == "streamGenerateContent" and request.query.get("alt") == "sse"
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        evs = stream_events(step, model)
        if step.kind in ("ok", "blocked"):
            for ev in evs:
                await resp.write(encode(ev))
        else:
            for ev in evs[: step.events_before]:
                await resp.write(encode(ev))
            if step.kind == "inband":
                await resp.write(encode(error_body(step.status, step.message)))
            elif step.kind == "cut":
                await resp.write(b'data: {"candidates": [{"content": {"ro')
                assert request.transport is not None
                request.transport.abort()
                await asyncio.sleep(3600)
        await resp.write_eof()
        return resp
