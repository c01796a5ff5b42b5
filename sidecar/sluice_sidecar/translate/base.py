"""The shapes every translator shares: one try's request (``Call``), the backend half of a
translator (``BackendDialect`` and its per-stream ``StreamDecoder``), the client half
(``ClientAPI`` and ``Reshaper``) and the pair itself (``Translator``).

A translator is pure: it turns a request body into an upstream request (url, bytes, headers) and
an upstream answer (a whole JSON body, or one SSE event at a time) back into the canonical answer
— OpenAI's chat completion and its ``chat.completion.chunk`` frames — and, when the client speaks
another API, the canonical answer into the client's shape. The one HTTP adapter (``upstream``)
does the IO; the request path (``gateway``) picks the pair per try.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from .. import errors, sse
from ..contract import Backend, Route
from ..model import Operation, Usage
from ..validate import long_digits
from .signatures import SignatureStore

#: A provider's view of its own error answer: (status, code, type, message) → (status, code,
#: type) in OpenAI's vocabulary, so that e.g. "prompt is too long" becomes
#: ``context_length_exceeded`` and is classified like OpenAI's.
Normalised = tuple[int, str | None, str | None]


@dataclass(slots=True)
class Call:
    """One try against one backend."""

    operation: Operation
    route: Route
    backend: Backend
    body: dict[str, Any]
    stream: bool
    #: The client itself asked for ``stream_options.include_usage`` (else the usage chunk the
    #: sidecar asked for is dropped before it reaches the client).
    client_wants_usage: bool
    api_key: str | None
    request_id: str
    #: ``max_tokens`` sent when the request has none (every provider gets a cap).
    default_max_tokens: int = 4096
    #: The client's own body when it is passed through as it is (``anthropic_anthropic``).
    native: dict[str, Any] | None = None
    #: ``traceparent`` / ``tracestate`` to send upstream (W3C trace context).
    trace_headers: dict[str, str] = field(default_factory=dict)
    #: The most bytes of a non-streamed answer that are read (``limits.maxResponseBytes``).
    max_response_bytes: int = 32 * 1024 * 1024
    #: Headers of the client's own request that its API forwards (``ClientAPI.forward_headers``:
    #: ``anthropic-version`` and ``anthropic-beta`` from an Anthropic client), lower-case names.
    client_headers: dict[str, str] = field(default_factory=dict)
    #: Where provider-specific tool-call state (Gemini's thought signatures) is kept between
    #: turns, keyed by the short tool-call ids clients see (``signatures.SignatureStore``).
    signatures: SignatureStore | None = None


class StreamDecoder(Protocol):
    """The backend's stream → canonical chunk frames, for one stream. Feed it the bytes as they
    arrive; it keeps what the meter needs."""

    usage: Usage | None
    #: Chunks that carried generated content (the token estimate when no usage came).
    content_chunks: int
    #: The provider said the answer is complete (a finish reason, ``[DONE]``, …).
    complete: bool
    #: The provider said its last word: no more events are needed.
    finished: bool

    def feed(self, chunk: bytes, out: list[bytes]) -> None:
        """Append to ``out`` the frames for the client from ``chunk``; raises
        ``UpstreamError`` (in-band errors), with the frames before the error in ``out``."""

    def end(self) -> list[bytes]:
        """Frames after the last byte; raises ``BadUpstreamResponse`` when the answer is
        incomplete or the stream was cut inside an event."""


class EventStream:
    """The usual ``StreamDecoder``: SSE events parsed from the bytes, each handed to ``event``
    (a subclass's translation of one event); ``complete`` when the provider said so."""

    usage: Usage | None = None
    content_chunks = 0
    complete = False
    finished = False

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.parser = sse.Parser()

    def event(self, ev: sse.Event) -> list[bytes]:
        """Frames for the client from one event; raises ``UpstreamError`` (in-band errors)."""
        raise NotImplementedError

    def feed(self, chunk: bytes, out: list[bytes]) -> None:
        for ev in self.parser.feed(chunk):
            out += self.event(ev)
            if self.finished:
                return

    def end(self) -> list[bytes]:
        if not self.finished and self.parser.has_partial:
            raise errors.BadUpstreamResponse(
                f"Backend '{self.backend}' cut the stream in the middle of an event.",
                backend=self.backend,
            )
        return self.tail()

    def tail(self) -> list[bytes]:
        """Frames after the last event; raises when the answer is incomplete."""
        if not self.complete:
            raise incomplete(self.backend)
        return []


class BackendDialect(Protocol):
    """The backend half of a translator: a provider's wire format."""

    #: The dialect's name (the second half of a translator's name).
    name: str
    operations: frozenset[Operation]

    def request(self, call: Call) -> tuple[str, bytes, dict[str, str]]:
        """(url, body, headers) for ``call``."""

    def normalise_error(
        self, status: int, code: str | None, etype: str | None, message: str
    ) -> Normalised:
        """The provider's error answer in OpenAI's vocabulary."""

    def answer(self, call: Call, raw: bytes, obj: dict[str, Any], created: int) -> Answer:
        """A whole 2xx answer; raises ``UpstreamError`` for an error inside it."""

    def stream(self, call: Call, created: int) -> StreamDecoder: ...


@dataclass(slots=True)
class Answer:
    """A whole answer in the dialect the request path serves it in."""

    body: bytes
    usage: Usage | None


class StreamReshaper(Protocol):
    def feed(self, frames: bytes) -> bytes: ...

    def end(self) -> bytes: ...


class Reshaper(Protocol):
    """Canonical answers → a client dialect's answers (the client half of a translator)."""

    def answer(self, body: bytes) -> bytes: ...

    def stream(self) -> StreamReshaper: ...


class ClientAPI(Protocol):
    """An API a client speaks: its request checks, its error shapes and its stream's ending."""

    name: str
    #: What ends a successful stream (``b""`` when the last event is enough).
    done: bytes
    #: Request headers (lower-case) handed to the backend half as ``Call.client_headers``.
    forward_headers: tuple[str, ...]

    def error_status(self, err: errors.SluiceError) -> int:
        """The HTTP status ``err`` is answered with in this API."""

    def parse(self, obj: dict[str, Any], operation: Operation) -> tuple[str, dict[str, Any]]:
        """(model, canonical body) for the client's body; ``InvalidField`` when it is wrong."""

    def error_body(self, err: errors.SluiceError) -> bytes: ...

    def stream_error(self, err: errors.SluiceError) -> bytes: ...

    def length_stop(self, output_tokens: int, chunk: tuple[str, int, str, int]) -> bytes:
        """What ends a stream the sidecar cut at ``limits.maxStreamBytes`` (the dialect's
        "stopped at the token limit"), after ``output_tokens``; ``chunk`` is the stream's
        (id, created, model, number of choices) as the client saw them."""


@dataclass(frozen=True, slots=True)
class Translator:
    """One (client dialect, backend dialect) pair: ``backend`` speaks to the provider and
    ``reshape`` turns canonical answers into the client's (None: the backend half already
    answers in the client's dialect — OpenAI clients, and pass-through)."""

    name: str
    backend: BackendDialect
    reshape: Reshaper | None = None
    #: The backend half answers in the canonical shape (False for a pass-through of another
    #: dialect): only canonical answers are shown to the stages' response phases.
    canonical: bool = True


#: A canonical field's value that asks for nothing (so a backend that lacks the field can take
#: the request): ``n: 1``, ``logprobs: false``, …
NO_OP: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "logit_bias": ({},),
    "store": (False,),
    "parallel_tool_calls": (True,),
    "service_tier": ("auto", "default"),
    "stream_options": ({},),
}


def refuse_unknown(body: dict[str, Any], fields: dict[str, str], call: Call) -> None:
    """Refuse (400 naming the field) every field of the canonical ``body`` the backend's dialect
    does not translate (``fields``: field → how it is translated; a value starting with
    ``refused`` is a field it cannot honour), unless its value asks for nothing (``NO_OP``).
    A purely computational function: a field is translated, passed through or refused — never
    silently dropped."""
    for name, value in body.items():
        how = fields.get(name)
        if how is not None and not how.startswith("refused"):
            continue
        if value is None or value in NO_OP.get(name, ()):
            continue
        backend = call.backend
        why = how.removeprefix("refused").strip(" :—-") if how else "it has no such field"
        raise errors.InvalidField(
            name,
            f"backend '{backend.name}' ({backend.provider}) cannot honour it ({why}); remove "
            "it or route this request to a backend that supports it",
        )


_STDLIB = json.JSONDecoder()


def loads_json(data: str | bytes) -> Any:
    """A JSON value as the standard library reads it; None when it is not JSON. ``orjson``
    (several times cheaper) reads the text unless it has a run of 19 or more digits (orjson
    reads an integer beyond 64 bits as a float; the standard library as an integer, which the
    scrubber then rejects as usage); the standard library reads that and whatever orjson
    refuses (``NaN``, numbers beyond a double's range)."""
    if not long_digits(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return _STDLIB.decode(text)
    except (ValueError, RecursionError):
        return None


def held_back(
    held: list[bytes] | None, frame: bytes, release: bool
) -> tuple[list[bytes], list[bytes] | None]:
    """A pass-through stream's frames held back until its first content, so that a failure
    before it can still be retried invisibly: (frames to send now, what is still held — None
    once released)."""
    if held is None:
        return [frame], None
    held.append(frame)
    return (held, None) if release else ([], held)


def loads_event(ev: sse.Event, backend: str) -> dict[str, Any]:
    """An event's data as a JSON object; ``BadUpstreamResponse`` otherwise."""
    obj = loads_json(ev.data)
    if not isinstance(obj, dict):
        raise errors.BadUpstreamResponse(
            f"Backend '{backend}' sent a stream event that is not a JSON object.", backend=backend
        )
    return obj


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(obj: Any) -> bytes:
    """Compact JSON for request bodies (UTF-8, no ASCII escaping). ``orjson`` when it can say
    the value (it refuses integers beyond 64 bits, which a client may send), else the
    standard library's encoder."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return _ENCODER.encode(obj).encode()


def incomplete(backend: str) -> errors.BadUpstreamResponse:
    return errors.BadUpstreamResponse(
        f"Backend '{backend}' ended the stream before the answer was complete.", backend=backend
    )
