"""The ``responses_openai`` translator (pass-through): a Responses API client's ``POST
/v1/responses`` sent to an OpenAI backend as the client wrote it, and answered as OpenAI did.

Owns the pass-through explicitly: the request is the client's own body with the backend's model
name (``Call.native``: set only while no stage rewrote the request — a rewritten request takes
``responses_chat`` through the canonical body instead), so everything of the Responses API works
here, stateful features included (``previous_response_id``, ``store``, built-in tools, reasoning
items). The answer is metered on the way (usage from the final ``response``, content deltas
counted), not changed; events before the first content are held back, so a failure before any
content can still be retried invisibly; an ``error`` or ``response.failed`` event is a failure.
Pure: no IO.
"""

from __future__ import annotations

from typing import Any

from .. import errors, sse
from ..contract import Provider
from ..model import Operation, Usage
from .base import Answer, Call, EventStream, Normalised, dumps, held_back, loads_event
from .openai_openai import DEFAULT_BASE_URLS, bearer_headers

_CONTENT = frozenset({"response.output_text.delta", "response.function_call_arguments.delta"})
_DONE = frozenset({"response.completed", "response.incomplete"})


def usage_of(u: Any) -> Usage | None:
    """Usage from a Responses ``usage`` object."""
    if not isinstance(u, dict) or not isinstance(u.get("input_tokens"), int):
        return None
    details = u.get("input_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    out = u.get("output_tokens")
    return Usage(
        u["input_tokens"],
        out if isinstance(out, int) else 0,
        cached if isinstance(cached, int) else 0,
    )


def failure(obj: dict[str, Any], backend: str) -> errors.UpstreamStreamError:
    """The failure an ``error`` event (or a failed response) stands for."""
    err = obj.get("error") if isinstance(obj.get("error"), dict) else obj
    resp = obj.get("response")
    if isinstance(resp, dict) and isinstance(resp.get("error"), dict):
        err = resp["error"]
    assert isinstance(err, dict)
    message = str(err.get("message") or err.get("code") or "unknown error")
    code = err.get("code")
    out = errors.UpstreamStreamError(
        f"Backend '{backend}' reported an error: {errors.sanitise(message)}", backend=backend
    )
    failure_class = errors.classify_status(500, str(code) if code else None, message)
    if failure_class is not None:
        out.failure = failure_class
    return out


class ResponsesStream(EventStream):
    """Responses events passed through, metered on the way; held back until the first content."""

    def __init__(self, backend: str) -> None:
        super().__init__(backend)
        self.usage: Usage | None = None
        self.complete = False
        self.finished = False
        self.content_chunks = 0
        self._held: list[bytes] | None = []

    def event(self, ev: sse.Event) -> list[bytes]:
        data = loads_event(ev, self.backend)
        kind = str(data.get("type") or ev.event)
        if kind in ("error", "response.failed"):
            raise failure(data, self.backend)
        frame = sse.encode(ev.data, kind)
        if kind in _CONTENT:
            self.content_chunks += 1
        elif kind in _DONE:
            resp = data.get("response")
            self.usage = usage_of(resp.get("usage")) if isinstance(resp, dict) else None
            self.complete = self.finished = True
        out, self._held = held_back(self._held, frame, kind in _CONTENT or kind in _DONE)
        return out


class ResponsesDialect:
    """The backend half of ``responses_openai``."""

    name = "openai-responses"
    operations: frozenset[Operation] = frozenset({"chat"})

    def request(self, call: Call) -> tuple[str, bytes, dict[str, str]]:
        assert call.native is not None, "responses_openai needs the client's own body"
        backend = call.backend
        body = dict(call.native)
        body["model"] = backend.model
        base = (backend.base_url or DEFAULT_BASE_URLS[Provider.OPENAI]).rstrip("/")
        return base + "/responses", dumps(body), bearer_headers(call)

    def normalise_error(
        self, status: int, code: str | None, etype: str | None, message: str
    ) -> Normalised:
        return status, code, etype

    def answer(self, call: Call, raw: bytes, obj: dict[str, Any], created: int) -> Answer:
        if obj.get("status") == "failed" or isinstance(obj.get("error"), dict):
            raise failure(obj, call.backend.name)
        return Answer(raw, usage_of(obj.get("usage")))

    def stream(self, call: Call, created: int) -> ResponsesStream:
        return ResponsesStream(call.backend.name)


DIALECT = ResponsesDialect()
