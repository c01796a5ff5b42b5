"""The IO half shared by the translating providers (Anthropic, Gemini): send, read, read a stream.

Owns posting one request with the route's connect timeout (a non-2xx answer becomes an
``UpstreamStatusError`` through the provider's ``Normaliser``), reading a whole JSON answer within
``limits.maxResponseBytes``, and the SSE read loop that hands each event to the provider's pure
translator and batches the frames of one network read into one write. What the bytes mean is the
translator's business; nothing here knows a wire format.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp

from .. import errors, sse
from ..clock import Clock
from . import http
from .base import Call, Upstream


class Poster:
    """POSTs with per-connect-timeout ``ClientTimeout`` objects built once and reused."""

    def __init__(self, session: aiohttp.ClientSession, clock: Clock) -> None:
        self._session = session
        self._clock = clock
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    async def post(
        self,
        call: Call,
        url: str,
        payload: bytes,
        headers: dict[str, str],
        normalise: http.Normaliser,
    ) -> aiohttp.ClientResponse:
        connect = call.route.timeouts.connect
        timeout = self._timeouts.get(connect)
        if timeout is None:
            timeout = self._timeouts[connect] = aiohttp.ClientTimeout(
                total=None, sock_connect=connect
            )
        if call.trace_headers:
            headers.update(call.trace_headers)
        name = call.backend.name
        try:
            resp = await self._session.post(url, data=payload, headers=headers, timeout=timeout)
        except http.TRANSPORT_ERRORS as exc:
            raise http.map_exception(exc, name, after_headers=False) from exc
        if not 200 <= resp.status < 300:
            raise await http.status_error(resp, name, self._clock.wall(), normalise)
        return resp


class TranslatedUpstream(Upstream):
    """A 2xx response read through a pure translator: ``translate_body`` for a whole answer,
    ``on_event`` per SSE event and ``on_end`` at the end of the stream."""

    def __init__(self, resp: aiohttp.ClientResponse, call: Call) -> None:
        self._resp = resp
        self._backend = call.backend.name
        self._max_bytes = call.max_response_bytes
        #: Set by ``on_event`` when the provider said its last word (no more events needed).
        self.finished = False

    @abstractmethod
    def translate_body(self, raw: bytes, obj: dict[str, Any]) -> bytes:
        """The answer for the client from the provider's JSON body; sets ``usage``."""

    @abstractmethod
    def on_event(self, ev: sse.Event) -> list[bytes]:
        """Frames for the client from one provider event; raises ``UpstreamError``."""

    def on_end(self) -> list[bytes]:
        """Frames after the provider's last event; raises when the answer is incomplete."""
        if not self.complete:
            raise errors.BadUpstreamResponse(
                f"Backend '{self._backend}' ended the stream before the answer was complete.",
                backend=self._backend,
            )
        return []

    async def read(self) -> bytes:
        name = self._backend
        raw, obj = await http.read_answer(self._resp, name, self._max_bytes)
        if not isinstance(obj, dict):
            raise errors.BadUpstreamResponse(
                f"Backend '{name}' answered 200 with a body that is not a JSON object "
                f"(content-type {self._resp.content_type!r}).",
                backend=name,
            )
        out = self.translate_body(raw, obj)
        self.complete = True
        return out

    async def frames(self) -> AsyncGenerator[bytes, None]:
        name = self._backend
        parser = sse.Parser()
        content = self._resp.content
        try:
            while not self.finished:
                raw = await content.readany()
                if not raw:
                    break
                batch: list[bytes] = []
                for ev in parser.feed(raw):
                    try:
                        batch += self.on_event(ev)
                    except errors.UpstreamError:
                        if batch:
                            yield b"".join(batch)
                        raise
                    if self.finished:
                        break
                if batch:
                    yield b"".join(batch)
        except http.TRANSPORT_ERRORS as exc:
            raise http.map_exception(exc, name, after_headers=True) from exc
        if not self.finished and parser.has_partial:
            raise errors.BadUpstreamResponse(
                f"Backend '{name}' cut the stream in the middle of an event.", backend=name
            )
        tail = self.on_end()
        if tail:
            yield b"".join(tail)

    def close(self) -> None:
        self._resp.close()

    def release(self) -> None:
        self._resp.release()


def loads_event(ev: sse.Event, backend: str) -> dict[str, Any]:
    """An event's data as a JSON object; ``BadUpstreamResponse`` otherwise."""
    try:
        obj = json.loads(ev.data)
    except (ValueError, RecursionError):
        obj = None
    if not isinstance(obj, dict):
        raise errors.BadUpstreamResponse(
            f"Backend '{backend}' sent a stream event that is not a JSON object.", backend=backend
        )
    return obj


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(obj: Any) -> bytes:
    """Compact JSON for request bodies (UTF-8, no ASCII escaping)."""
    return _ENCODER.encode(obj).encode()
