"""A fake OpenAI-compatible provider: a real aiohttp server on 127.0.0.1 that misbehaves on cue.

Each request takes the next ``Step`` from the script (or the default when the script is empty)
and records what it received. Steps cover the upstream faults of FAULTS.md: a normal answer
(JSON or SSE, with or without the usage chunk), any status with any body and headers (429 with
each Retry-After form, an HTML 502 page), a connection reset before any byte, hanging before the
headers, hanging mid-stream, a stream cut in the middle of a line, EOF without ``[DONE]``, an
in-band error event, a stream that never ends, and SSE quirks (CRLF/CR line ends, comments, BOM,
multi-line data, empty ``choices`` annotation frames).
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Step:
    kind: str = (
        "ok"  # ok | status | reset | hang | hang_mid | cut | eof | inband | quirks | endless
    )
    content: str = "Hello from the fake."
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    chunks_before: int = 2
    usage: bool = True
    #: Tool calls of the answer: (id, name, arguments).
    tools: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)


def ok(content: str = "Hello from the fake.", *, usage: bool = True) -> Step:
    return Step("ok", content=content, usage=usage)


def tool_call(name: str, arguments: dict[str, Any], call_id: str = "call_1") -> Step:
    return Step("ok", content="", tools=[(call_id, name, arguments)])


def status(
    code: int,
    message: str = "boom",
    headers: dict[str, str] | None = None,
    *,
    body: bytes | None = None,
    content_type: str = "application/json",
) -> Step:
    if body is None:
        body = json.dumps(
            {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
        ).encode()
    return Step("status", status=code, body=body, headers=headers or {}, content_type=content_type)


def html_502() -> Step:
    page = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    return status(502, body=page, content_type="text/html")


def reset() -> Step:
    return Step("reset")


def hang() -> Step:
    return Step("hang")


def hang_mid(chunks_before: int = 2) -> Step:
    return Step("hang_mid", chunks_before=chunks_before)


def cut(chunks_before: int = 2) -> Step:
    return Step("cut", chunks_before=chunks_before)


def eof(chunks_before: int = 2) -> Step:
    return Step("eof", chunks_before=chunks_before)


def inband(chunks_before: int = 0, message: str = "The server is overloaded") -> Step:
    return Step("inband", chunks_before=chunks_before, content=message)


def quirks(content: str = "Hello quirky world") -> Step:
    return Step("quirks", content=content)


def endless() -> Step:
    """A stream of content chunks that never ends (until the client hangs up)."""
    return Step("endless")


#: The request fields OpenAI's chat completions API takes; anything else is refused with a 400
#: ("Unrecognized request argument supplied"), as the real API does, so a translator that invents
#: a field fails a test.
CHAT_FIELDS = frozenset(
    [
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "n",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "seed",
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "user",
        "metadata",
        "store",
        "service_tier",
        "reasoning_effort",
        "modalities",
        "audio",
        "prediction",
        "web_search_options",
        "verbosity",
        "safety_identifier",
        "prompt_cache_key",
        "functions",
        "function_call",
    ]
)
#: The request fields of OpenAI's Responses API.
RESPONSES_FIELDS = frozenset(
    [
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "text",
        "max_output_tokens",
        "temperature",
        "top_p",
        "parallel_tool_calls",
        "user",
        "metadata",
        "reasoning",
        "stream",
        "stream_options",
        "store",
        "previous_response_id",
        "include",
        "truncation",
        "background",
        "conversation",
        "prompt",
        "max_tool_calls",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
        "top_logprobs",
    ]
)
COMPLETIONS_FIELDS = frozenset(
    [
        "model",
        "prompt",
        "suffix",
        "max_tokens",
        "temperature",
        "top_p",
        "n",
        "stream",
        "stream_options",
        "logprobs",
        "echo",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "best_of",
        "logit_bias",
        "user",
        "seed",
    ]
)

#: The request fields of Mistral's FIM API (``POST /v1/fim/completions``).
FIM_FIELDS = frozenset(
    [
        "model",
        "prompt",
        "suffix",
        "max_tokens",
        "min_tokens",
        "temperature",
        "top_p",
        "stream",
        "stop",
        "random_seed",
    ]
)


def unknown_field(body: dict[str, Any], known: frozenset[str]) -> web.Response | None:
    """OpenAI's 400 for the first field it does not know, if any."""
    extra = sorted(set(body) - known)
    if not extra:
        return None
    err = {
        "message": f"Unrecognized request argument supplied: {extra[0]}",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    return web.json_response({"error": err}, status=400)


def _invalid(param: str, message: str) -> web.Response:
    err = {"message": message, "type": "invalid_request_error", "param": param, "code": None}
    return web.json_response({"error": err}, status=400)


def _data(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def free_port() -> int:
    """A port nothing listens on (bound once, then released): connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class FakeOpenAI:
    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.script: deque[Step] = deque()
        self.default = ok()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.cancelled = 0
        self.active = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def then(self, *steps: Step) -> FakeOpenAI:
        self.script.extend(steps)
        return self

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/fim/completions", self._fim)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- handlers -------------------------------------------------------------------------------

    async def _receive(self, request: web.Request) -> Any:
        """The request's JSON body, recorded with its headers."""
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        return body

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await self._receive(request)
        step = self.script.popleft() if self.script else self.default
        if step.kind != "ok":
            return await self._misbehave(request, step, stream=False, body=body)
        items = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return web.json_response(
            {
                "object": "list",
                "model": body["model"],
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.1, 0.2]}
                    for i, _ in enumerate(items)
                ],
                "usage": {"prompt_tokens": 7, "total_tokens": 7},
            }
        )

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/responses`` (the pass-through): a text answer, whole or as typed events."""
        body = await self._receive(request)
        refused = unknown_field(body, RESPONSES_FIELDS)
        if refused is not None:
            return refused
        step = self.script.popleft() if self.script else self.default
        if step.kind != "ok":
            return await self._misbehave(request, step, stream=False, body=body)
        resp = responses_answer(body, step.content)
        if body.get("stream") is not True:
            return web.json_response(resp)
        out = await self._open_stream(request)
        for kind, data in responses_events(resp):
            await out.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())
        await out.write_eof()
        return out

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/completions`` (text completions): ``step.content`` as the text of each
        prompt's choice, whole or as ``text_completion`` chunks (one per word)."""
        body = await self._receive(request)
        refused = unknown_field(body, COMPLETIONS_FIELDS)
        if refused is not None:
            return refused
        if not isinstance(body.get("prompt"), str | list):
            return _invalid("prompt", "'prompt' is a required property")
        if "max_completion_tokens" in body or not isinstance(body.get("max_tokens", 16), int):
            return _invalid("max_tokens", "max_tokens must be an integer")
        step = self.script.popleft() if self.script else self.default
        stream = body.get("stream") is True
        if step.kind != "ok":
            return await self._misbehave(request, step, stream=stream, body=body)
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        n = body.get("n") or 1
        count = len(prompts) * n
        head = {"id": "cmpl-fake", "object": "text_completion", "created": 1}
        head["model"] = body["model"]
        words = step.content.split(" ")
        usage = {"prompt_tokens": 3, "completion_tokens": len(words) * count}
        usage["total_tokens"] = 3 + usage["completion_tokens"]
        if not stream:
            choices = [
                {"text": step.content, "index": i, "logprobs": None, "finish_reason": "stop"}
                for i in range(count)
            ]
            return web.json_response({**head, "choices": choices, "usage": usage})
        resp = await self._open_stream(request)
        for i in range(count):
            for k, w in enumerate(words):
                text = (" " if k else "") + w
                ch = {"text": text, "index": i, "logprobs": None, "finish_reason": None}
                await resp.write(_data({**head, "choices": [ch]}))
            end = {"text": "", "index": i, "logprobs": None, "finish_reason": "stop"}
            await resp.write(_data({**head, "choices": [end]}))
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(_data({**head, "choices": [], "usage": usage}))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _fim(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/fim/completions`` (Mistral's FIM API): answered as chat completions."""
        body = await self._receive(request)
        extra = sorted(set(body) - FIM_FIELDS)
        if extra or not isinstance(body.get("prompt"), str):
            return _invalid(extra[0] if extra else "prompt", "Extra inputs are not permitted")
        step = self.script.popleft() if self.script else self.default
        if body.get("stream") is True:
            return await self._stream_ok(request, {**body, "stream_options": {}}, step)
        return web.json_response(self._completion(body, step))

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._receive(request)
        refused = unknown_field(body, CHAT_FIELDS)
        if refused is not None:
            return refused
        step = self.script.popleft() if self.script else self.default
        stream = body.get("stream") is True
        self.active += 1
        try:
            if step.kind == "ok":
                if stream:
                    return await self._stream_ok(request, body, step)
                return web.json_response(self._completion(body, step))
            return await self._misbehave(request, step, stream=stream, body=body)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1

    def _completion(self, body: dict[str, Any], step: Step) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": step.content or None},
                    "finish_reason": "tool_calls" if step.tools else "stop",
                }
            ],
        }
        if step.tools:
            out["choices"][0]["message"]["tool_calls"] = [
                {"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
                for i, n, a in step.tools
            ]
        if step.usage:
            out["usage"] = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
        return out

    @staticmethod
    def chunk(
        model: str, content: str | None, finish: str | None = None, *, role: bool = False
    ) -> dict[str, Any]:
        delta: dict[str, Any] = {"role": "assistant"} if role else {}
        if content is not None:
            delta["content"] = content
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def _frames(self, body: dict[str, Any], step: Step) -> list[bytes]:
        model = body["model"]
        words = step.content.split(" ") if step.content else []
        # Like OpenAI, the first chunk carries the role.
        frames = [
            self.chunk(model, (" " if i else "") + w, role=i == 0) for i, w in enumerate(words)
        ]
        for k, (cid, name, args) in enumerate(step.tools):
            frame = self.chunk(model, None, role=not words)
            call = {"id": cid, "type": "function", "function": {"name": name, "arguments": ""}}
            frame["choices"][0]["delta"]["tool_calls"] = [{"index": k, **call}]
            frames.append(frame)
            more = self.chunk(model, None)
            fn = {"arguments": json.dumps(args)}
            more["choices"][0]["delta"]["tool_calls"] = [{"index": k, "function": fn}]
            frames.append(more)
        frames.append(self.chunk(model, None, "tool_calls" if step.tools else "stop"))
        out = [b"data: " + json.dumps(f).encode() + b"\n\n" for f in frames]
        so = body.get("stream_options") or {}
        if step.usage and so.get("include_usage"):
            usage = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": model,
                "choices": [],
                "usage": {
                    "prompt_tokens": 11,
                    "completion_tokens": len(words),
                    "total_tokens": 11 + len(words),
                },
            }
            out.append(b"data: " + json.dumps(usage).encode() + b"\n\n")
        return out

    async def _open_stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        return resp

    async def _stream_ok(
        self, request: web.Request, body: dict[str, Any], step: Step
    ) -> web.StreamResponse:
        resp = await self._open_stream(request)
        for frame in self._frames(body, step):
            await resp.write(frame)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _misbehave(
        self, request: web.Request, step: Step, *, stream: bool, body: dict[str, Any]
    ) -> web.StreamResponse:
        kind = step.kind
        if kind == "status":
            return web.Response(
                status=step.status,
                body=step.body,
                headers=step.headers,
                content_type=step.content_type,
            )
        if kind == "reset":
            assert request.transport is not None
            request.transport.abort()
            await asyncio.sleep(3600)
        if kind == "hang":
            await asyncio.sleep(3600)
        frames = self._frames(
            body, ok("Hello from the fake." if kind == "inband" else step.content)
        )
        if kind == "quirks":
            return await self._quirks(request, body, step)
        resp = await self._open_stream(request)
        if kind == "endless":
            i = 0
            while True:  # until the sidecar drops the connection (cancelled, counted)
                word = self.chunk(body["model"], f" word{i}", role=i == 0)
                await resp.write(b"data: " + json.dumps(word).encode() + b"\n\n")
                i += 1
                await asyncio.sleep(0)
        for frame in frames[: step.chunks_before]:
            await resp.write(frame)
        if kind == "hang_mid":
            await asyncio.sleep(3600)
        elif kind == "cut":
            await resp.write(b'data: {"id":"chatcmpl-fake","choi')
            assert request.transport is not None
            request.transport.abort()
            await asyncio.sleep(3600)
        elif kind == "eof":
            await resp.write_eof()
        elif kind == "inband":
            err = {
                "error": {"message": step.content, "type": "overloaded_error", "code": "overloaded"}
            }
            await resp.write(b"data: " + json.dumps(err).encode() + b"\n\n")
            await resp.write_eof()
        return resp

    async def _quirks(
        self, request: web.Request, body: dict[str, Any], step: Step
    ) -> web.StreamResponse:
        model = body["model"]
        resp = await self._open_stream(request)
        words = step.content.split(" ")
        await resp.write(b"\xef\xbb\xbf: keep-alive comment\r\n\r\n")
        annotation = {
            "id": "",
            "object": "",
            "created": 0,
            "model": "",
            "choices": [],
            "prompt_filter_results": [],
        }
        await resp.write(b"data: " + json.dumps(annotation).encode() + b"\r\n\r\n")
        for i, w in enumerate(words):
            text = json.dumps(self.chunk(model, (" " if i else "") + w), indent=1)
            # multi-line data: one JSON document spread over several data: lines, CR line ends
            lines = b"".join(b"data:" + line.encode() + b"\r" for line in text.split("\n"))
            await resp.write(lines[:7])
            await resp.write(lines[7:] + b"\r")
        await resp.write(
            b"data:  " + json.dumps(self.chunk(model, None, "stop")).encode() + b"\n\n"
        )
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def responses_answer(body: dict[str, Any], text: str) -> dict[str, Any]:
    """A ``response`` object (OpenAI's Responses API) answering ``text``."""
    return {
        "id": "resp_fake",
        "object": "response",
        "created_at": 1,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "model": body["model"],
        "output": [
            {
                "type": "message",
                "id": "msg_fake",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "temperature": None,
        "top_p": None,
        "metadata": {},
        "store": body.get("store", True),
        "previous_response_id": body.get("previous_response_id"),
        "usage": {
            "input_tokens": 11,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 5,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 16,
        },
    }


def responses_events(resp: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The typed event stream of ``resp`` (one text delta per word)."""
    item = resp["output"][0]
    text = item["content"][0]["text"]
    started = {**resp, "status": "in_progress", "output": [], "usage": None}
    evs: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {
            "type": "response.content_part.added",
            "item_id": item["id"],
            "output_index": 0,
            "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": []},
        },
    ]
    for k, word in enumerate(text.split(" ")):
        evs.append(
            {
                "type": "response.output_text.delta",
                "item_id": item["id"],
                "output_index": 0,
                "content_index": 0,
                "delta": (" " if k else "") + word,
                "logprobs": [],
            }
        )
    evs += [
        {
            "type": "response.output_text.done",
            "item_id": item["id"],
            "output_index": 0,
            "content_index": 0,
            "text": text,
            "logprobs": [],
        },
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": resp},
    ]
    return [(ev["type"], {**ev, "sequence_number": i}) for i, ev in enumerate(evs)]
