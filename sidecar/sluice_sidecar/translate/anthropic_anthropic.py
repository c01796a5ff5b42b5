"""The ``anthropic_anthropic`` translator (pass-through): an Anthropic client's ``/v1/messages``
request sent to an Anthropic backend as the client wrote it, and answered as the backend did.

Owns the pass-through explicitly: the request is the client's own body with the backend's model
name (``Call.native``: set only while no stage rewrote the request — a rewritten request takes
``anthropic_openai`` through the canonical body instead); the answer is metered on the way
(usage from ``message_start`` and ``message_delta``, content events counted) but not changed.
Events before the first content are held back, so a failure before any content (an
``overloaded_error`` event) can still be retried invisibly. ``COUNT_TOKENS`` passes
``POST /v1/messages/count_tokens`` through the same way; ``estimate_count`` is the sidecar's
estimate for routes whose backend is not Anthropic. Pure: no IO.
"""

from __future__ import annotations

import json
from typing import Any

from .. import sse
from ..model import Operation, Usage
from .anthropic_openai import check
from .base import Answer, Call, EventStream, Normalised, dumps, held_back, loads_event
from .openai_anthropic import headers_for, normalise_error, stream_error, url_of, usage_of


class NativeStream(EventStream):
    """Anthropic events passed through to an Anthropic client, metered on the way. Events before
    the first content are held back, so a failure before any content can still be retried."""

    def __init__(self, backend: str) -> None:
        super().__init__(backend)
        self.usage: Usage | None = None
        self.complete = False
        self.finished = False
        self.content_chunks = 0
        self._held: list[bytes] | None = []

    def event(self, ev: sse.Event) -> list[bytes]:
        data = loads_event(ev, self.backend)
        raw = ev.data
        kind = data.get("type") or ev.event
        if kind == "error":
            raise stream_error(data, self.backend)
        frame = sse.encode(raw, str(kind))
        if kind == "message_start":
            self.usage = usage_of((data.get("message") or {}).get("usage"))
        elif kind == "content_block_delta":
            self.content_chunks += 1
        elif kind == "message_delta":
            self.complete = True
            u = data.get("usage")
            if isinstance(u, dict) and isinstance(u.get("output_tokens"), int):
                base = self.usage or Usage(0, 0)
                if isinstance(u.get("input_tokens"), int):
                    base = usage_of(u) or base
                self.usage = Usage(base.input_tokens, u["output_tokens"], base.cached_input_tokens)
        elif kind == "message_stop":
            self.finished = True
        release = kind in ("content_block_delta", "message_delta", "message_stop")
        out, self._held = held_back(self._held, frame, release)
        return out


class NativeDialect:
    """The backend half of ``anthropic_anthropic``."""

    name = "anthropic"
    operations: frozenset[Operation] = frozenset({"chat"})

    def request(self, call: Call) -> tuple[str, bytes, dict[str, str]]:
        assert call.native is not None, "anthropic_anthropic needs the client's own body"
        body = dict(call.native)
        body["model"] = call.backend.model
        return url_of(call.backend.base_url), dumps(body), headers_for(call)

    def normalise_error(
        self, status: int, code: str | None, etype: str | None, message: str
    ) -> Normalised:
        return normalise_error(status, code, etype, message)

    def answer(self, call: Call, raw: bytes, obj: dict[str, Any], created: int) -> Answer:
        if obj.get("type") == "error":
            raise stream_error(obj, call.backend.name)
        return Answer(raw, usage_of(obj.get("usage")))

    def stream(self, call: Call, created: int) -> NativeStream:
        return NativeStream(call.backend.name)


DIALECT = NativeDialect()


# --- count_tokens -----------------------------------------------------------------------------


class CountTokensDialect(NativeDialect):
    """``POST /v1/messages/count_tokens`` passed through to an Anthropic backend: the client's
    own body with the backend's model name; the answer (``{"input_tokens": n}``) as it is."""

    def request(self, call: Call) -> tuple[str, bytes, dict[str, str]]:
        url, body, headers = super().request(call)
        return url + "/count_tokens", body, headers

    def answer(self, call: Call, raw: bytes, obj: dict[str, Any], created: int) -> Answer:
        super().answer(call, raw, obj, created)
        return Answer(raw, None)

    def stream(self, call: Call, created: int) -> NativeStream:
        raise NotImplementedError("count_tokens is never streamed")


COUNT_TOKENS = CountTokensDialect()


def check_count(body: dict[str, Any]) -> str:
    """Check a ``count_tokens`` body (a Messages body without ``max_tokens``); its model."""
    return check({**body, "max_tokens": 1})


def estimate_count(body: dict[str, Any]) -> bytes:
    """The ``count_tokens`` answer the sidecar estimates for a backend that cannot count
    (characters of the system prompt, messages and tools / 4). A pure function."""
    chars = len(json.dumps(body.get("tools") or [], ensure_ascii=False))
    system = body.get("system")
    chars += len(system) if isinstance(system, str) else len(json.dumps(system or ""))
    for m in body.get("messages") or ():
        content = m.get("content") if isinstance(m, dict) else None
        chars += len(content) if isinstance(content, str) else len(json.dumps(content or ""))
    return json.dumps({"input_tokens": (chars + 3) // 4}).encode()
