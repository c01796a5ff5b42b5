"""The OpenAI wire format: ``openai``, ``mistral`` and ``openai-compatible`` (vLLM, Ollama, …).

Owns request building (base URL + path, ``Authorization: Bearer``, the backend's model name,
``stream_options.include_usage`` so usage arrives on streams, ``limits.defaultMaxTokens`` as
``max_completion_tokens`` for OpenAI and ``max_tokens`` for the others when the request has no
cap) and reading answers: usage from the
body or from the final usage chunk, in-band ``{"error": …}`` frames, streams that end without
``[DONE]``. Frames are re-emitted in canonical SSE form (the client never sees an upstream's CR
line ends or a half line). Annotation-only frames (empty ``choices``, no usage; Azure sends
them) and a usage chunk the client did not ask for are dropped so naive ``choices[0]`` clients
keep working. Mistral is not sent ``stream_options`` (it reports usage on the last chunk anyway).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp

from .. import errors, sse
from ..clock import Clock
from ..contract import FailureClass, Provider
from . import http, wire
from .base import Adapter, Call, Upstream, Usage

DEFAULT_BASE_URLS = {
    Provider.OPENAI: "https://api.openai.com/v1",
    Provider.MISTRAL: "https://api.mistral.ai/v1",
}
PATHS = {"chat": "/chat/completions", "embeddings": "/embeddings"}


def usage_of(obj: dict[str, Any]) -> Usage | None:
    """Usage from an OpenAI body or chunk; None when absent or malformed."""
    u = obj.get("usage")
    if not isinstance(u, dict):
        return None
    prompt = u.get("prompt_tokens")
    completion = u.get("completion_tokens", 0)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    details = u.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    return Usage(prompt, completion, cached if isinstance(cached, int) else 0)


def in_band_error(obj: dict[str, Any], backend: str) -> errors.UpstreamError | None:
    err = obj.get("error")
    if not err:
        return None
    if isinstance(err, dict):
        message = str(err.get("message") or err.get("type") or "unknown error")
        code = err.get("code") or err.get("type")
    else:
        message, code = str(err), None
    out = errors.UpstreamStreamError(
        f"Backend '{backend}' reported an error: {errors.sanitise(message)}", backend=backend
    )
    failure = errors.classify_status(500, str(code) if code else None, message)
    if failure is not FailureClass.SERVER_ERROR:
        out.failure = failure
    return out


def build_request(call: Call) -> tuple[str, bytes, dict[str, str]]:
    """(url, body, headers) for ``call``. A purely computational function."""
    backend = call.backend
    base = (backend.base_url or DEFAULT_BASE_URLS.get(backend.provider, "")).rstrip("/")
    body = dict(call.body)
    body["model"] = backend.model
    if (
        call.operation == "chat"
        and body.get("max_tokens") is None
        and body.get("max_completion_tokens") is None
    ):
        # OpenAI's reasoning models refuse max_tokens; other OpenAI-style servers may not know
        # max_completion_tokens.
        key = "max_completion_tokens" if backend.provider is Provider.OPENAI else "max_tokens"
        body[key] = call.default_max_tokens
    if call.stream and backend.provider is not Provider.MISTRAL:
        so = body.get("stream_options")
        so = dict(so) if isinstance(so, dict) else {}
        so["include_usage"] = True
        body["stream_options"] = so
    payload = wire.dumps(body)
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream" if call.stream else "application/json",
        "X-Request-Id": call.request_id,
    }
    if call.api_key:
        headers["Authorization"] = f"Bearer {call.api_key}"
    if call.trace_headers:
        headers.update(call.trace_headers)
    return base + PATHS[call.operation], payload, headers


class OpenAIAdapter(Adapter):
    def __init__(self, session: aiohttp.ClientSession, clock: Clock) -> None:
        self._session = session
        self._clock = clock
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    async def open(self, call: Call) -> Upstream:
        url, payload, headers = build_request(call)
        connect = call.route.timeouts.connect
        timeout = self._timeouts.get(connect)
        if timeout is None:
            timeout = self._timeouts[connect] = aiohttp.ClientTimeout(
                total=None, sock_connect=connect
            )
        name = call.backend.name
        try:
            resp = await self._session.post(url, data=payload, headers=headers, timeout=timeout)
        except http.TRANSPORT_ERRORS as exc:
            raise http.map_exception(exc, name, after_headers=False) from exc
        if not 200 <= resp.status < 300:
            raise await http.status_error(resp, name, self._clock.wall())
        return OpenAIUpstream(resp, call)


class OpenAIUpstream(Upstream):
    def __init__(self, resp: aiohttp.ClientResponse, call: Call) -> None:
        self._resp = resp
        self._backend = call.backend.name
        self._wants_usage = call.client_wants_usage
        self._max_bytes = call.max_response_bytes

    async def read(self) -> bytes:
        name = self._backend
        raw, obj = await http.read_answer(self._resp, name, self._max_bytes)
        if not isinstance(obj, dict):
            raise errors.BadUpstreamResponse(
                f"Backend '{name}' answered 200 with a body that is not a JSON object "
                f"(content-type {self._resp.content_type!r}).",
                backend=name,
            )
        failure = in_band_error(obj, name)
        if failure is not None:
            raise failure
        self.usage = usage_of(obj)
        self.complete = True
        return raw

    async def frames(self) -> AsyncGenerator[bytes, None]:
        """Frames as they arrive; the frames of one network read go out as one write."""
        name = self._backend
        parser = sse.Parser()
        content = self._resp.content
        try:
            while True:
                raw = await content.readany()
                if not raw:
                    break
                batch: list[bytes] = []
                for ev in parser.feed(raw):
                    try:
                        out = self._frame(ev)
                    except errors.UpstreamError:
                        if batch:
                            yield b"".join(batch)
                        raise
                    if out is None:
                        continue
                    if out is _DONE:
                        self.complete = True
                        if batch:
                            yield b"".join(batch)
                        return
                    batch.append(out)
                if batch:
                    yield b"".join(batch)
        except http.TRANSPORT_ERRORS as exc:
            raise http.map_exception(exc, name, after_headers=True) from exc
        if parser.has_partial:
            raise errors.BadUpstreamResponse(
                f"Backend '{name}' cut the stream in the middle of an event.", backend=name
            )
        if not self.complete:
            raise errors.BadUpstreamResponse(
                f"Backend '{name}' ended the stream before the answer was complete "
                "(no [DONE], no finish_reason).",
                backend=name,
            )

    def _frame(self, ev: sse.Event) -> bytes | None:
        data = ev.data
        if data.strip() == "[DONE]":
            return _DONE
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):
            obj = None
        if not isinstance(obj, dict):
            raise errors.BadUpstreamResponse(
                f"Backend '{self._backend}' sent a stream event that is not a JSON object.",
                backend=self._backend,
            )
        failure = in_band_error(obj, self._backend)
        if failure is not None:
            raise failure
        choices = obj.get("choices")
        if obj.get("usage"):
            usage = usage_of(obj)
            if usage is not None:
                self.usage = usage
        if not choices:
            if obj.get("usage") and self._wants_usage:
                return _encode(data)
            return None
        if isinstance(choices, list):
            for choice in choices:
                if not isinstance(choice, dict):
                    continue
                if choice.get("finish_reason"):
                    self.complete = True
                delta = choice.get("delta")
                if isinstance(delta, dict) and (delta.get("content") or delta.get("tool_calls")):
                    self.content_chunks += 1
        return _encode(data)

    def close(self) -> None:
        self._resp.close()

    def release(self) -> None:
        self._resp.release()


_DONE = b"[DONE]"


def _encode(data: str) -> bytes:
    if "\n" in data or "\r" in data:
        return sse.encode(data)
    return sse.encode_data(data.encode())
