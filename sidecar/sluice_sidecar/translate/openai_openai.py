"""The ``openai_openai`` translator (pass-through): OpenAI clients to ``openai``, ``mistral`` and
``openai-compatible`` backends (vLLM, Ollama, …), and the backend half other OpenAI-shaped pairs
share (``anthropic_openai``).

Owns request building (base URL + path, ``Authorization: Bearer``, the backend's model name,
``stream_options.include_usage`` so usage arrives on streams, ``limits.defaultMaxTokens`` as
``max_completion_tokens`` for OpenAI and ``max_tokens`` for the others when the request has no
cap) and reading answers: usage from the
body or from the final usage chunk, in-band ``{"error": …}`` frames, streams that end without
``[DONE]``. Frames are re-emitted in canonical SSE form (the client never sees an upstream's CR
line ends or a half line); tool-call deltas without an ``index`` (Mistral) get one.
Annotation-only frames (empty ``choices``, no usage; Azure sends them) and a usage chunk the
client did not ask for are dropped so naive ``choices[0]`` clients keep working. Mistral is not
sent ``stream_options`` (it reports usage on the last chunk anyway).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from .. import errors, sse, validate
from ..contract import FailureClass, Provider
from ..model import Operation, Usage
from . import chat
from .base import Answer, Call, EventStream, Normalised, dumps, loads_json

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
    return base + PATHS[call.operation], dumps(body), bearer_headers(call)


def bearer_headers(call: Call) -> dict[str, str]:
    """The headers of a request to an OpenAI-style server (``Authorization: Bearer``)."""
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream" if call.stream else "application/json",
        "X-Request-Id": call.request_id,
    }
    if call.api_key:
        headers["Authorization"] = f"Bearer {call.api_key}"
    if call.trace_headers:
        headers.update(call.trace_headers)
    return headers


class OpenAIStream(EventStream):
    """An OpenAI-style stream, passed on in canonical SSE form as it arrives.

    The usual upstream chunk — whole events, each one ``data:`` line — takes ``simple_events``:
    each payload is checked as JSON and metered (``_check``), and the canonical bytes go on
    without being encoded again (runs of unchanged events as one slice of the chunk). Anything
    else (CR line ends, comments, multi-line data, an event split across reads) goes through
    the full parser and is re-encoded canonically.

    The middle of a stream repeats one event with only its text changed, so the last middle
    event that allows it is kept as a template (``_Template``): an event that is the template
    with another plain JSON string as its ``delta.content`` is that event with that text —
    valid JSON of the same shape — and is metered without being parsed. Several such events
    in a row in one read (``_RUN_MIN`` or more events left) are found in one go
    (``_Template.run``)."""

    def __init__(self, call: Call) -> None:
        super().__init__(call.backend.name)
        self._wants_usage = call.client_wants_usage
        #: Per choice, the tool calls seen so far (for deltas that lack an ``index``).
        self._tools: dict[Any, int] = {}
        #: ``_check`` changed the chunk: it is encoded again.
        self._dirty = False
        #: The last middle event as a template (None until one could be taken).
        self._template: _Template | None = None

    def feed(self, chunk: bytes, out: list[bytes]) -> None:  # noqa: PLR0915 - one loop per event
        payloads = self.parser.simple_events(chunk)
        if payloads is None:
            super().feed(chunk, out)
            return
        loads, check = orjson.loads, self._check
        # Events that go on unchanged leave as runs of ``chunk`` (the whole chunk in the usual
        # case): events ``kept`` to ``i`` (exclusive) are the run not yet in ``out``; ``i``
        # ends as the number of events taken (all of them, unless [DONE] or an error).
        kept = i = 0
        end = len(payloads)
        at = 0  # where event ``i`` starts in ``chunk``
        stopped = -1  # where the last run of the template's events ended: that event goes inline
        content = 0  # middle chunks with content, added to ``content_chunks`` at the end
        try:
            tpl = self._template
            head, tail, cut = (tpl.head, tpl.tail, tpl.cut) if tpl is not None else (b"", b"", 0)
            while i < end:
                if tpl is not None and end - i >= _RUN_MIN and i != stopped:
                    run = tpl.run(chunk, at)
                    if run is not None:
                        i += run[0]
                        content += run[0]
                        at += run[1]
                        stopped = i
                        continue
                payload = payloads[i]
                at += len(payload) + 8
                if payload == b"[DONE]":
                    self.complete = self.finished = True
                    return
                if tpl is not None and payload.startswith(head) and payload.endswith(tail):
                    # the template with another plain string as its text: a middle event
                    literal = payload[len(head) : len(payload) - cut]
                    if _PLAIN_STRING.fullmatch(literal) and (literal.isascii() or _utf8(literal)):
                        if len(literal) > 2:  # more than the two quotes: some text
                            content += 1
                        i += 1
                        continue
                try:
                    obj = loads(payload)
                except orjson.JSONDecodeError:
                    if payload.strip() == b"[DONE]":
                        self.complete = self.finished = True
                        return
                    obj = None
                # The middle of a stream (an object with one choice, an object ``delta``, no
                # finish, no tool calls, no usage, no error) is metered here, as ``_check``
                # would; anything else takes ``_check``. The look-ups succeed only on objects:
                # ``obj["choices"]`` on a dict, ``choice["delta"]`` on a dict, ``.get`` on a
                # dict (no other JSON value has it). The number of choices is asked, not
                # unpacked: an empty list (the usage event every stream ends with) would raise,
                # and raising costs 6k instructions.
                try:
                    choices = obj["choices"]
                    one = len(choices) == 1
                    if one:
                        choice = choices[0]
                        delta = choice["delta"]
                        text = delta.get("content")
                except (LookupError, TypeError, AttributeError):
                    one = False
                if one and (
                    not choice.get("finish_reason")
                    and "tool_calls" not in delta
                    and "error" not in obj
                    and not obj.get("usage")
                ):
                    if text:
                        content += 1
                    if type(text) is str:
                        learnt = _Template.of(payload, text)
                        if learnt is not None:
                            tpl = self._template = learnt
                            head, tail, cut = learnt.head, learnt.tail, learnt.cut
                    i += 1
                    continue
                # What orjson refused or read otherwise than the standard library (an integer
                # beyond 64 bits as a float, which would turn a usage out of range into none)
                # is read again by ``loads_json``; an event that is not an object is an error.
                if type(obj) is not dict or validate.long_digits(payload):
                    obj = _loads(payload, self.backend)
                if not check(obj) or self._dirty:
                    if i > kept:
                        out.append(_run(chunk, payloads, kept, i))
                    if self._dirty:
                        out.append(self._encoded(obj))
                    kept = i + 1
                i += 1
        finally:
            self.content_chunks += content
            if i > kept:
                whole = kept == 0 and i == end
                out.append(chunk if whole else _run(chunk, payloads, kept, i))

    def event(self, ev: sse.Event) -> list[bytes]:
        data = ev.data
        if data.strip() == "[DONE]":
            self.complete = self.finished = True
            return []
        obj = _loads(data, self.backend)
        if self._check(obj):
            return [self._encoded(obj) if self._dirty else _encode(data)]
        return []

    def _encoded(self, obj: dict[str, Any]) -> bytes:
        self._dirty = False
        return sse.encode_data(dumps(obj))

    def _check(self, obj: dict[str, Any]) -> bool:
        """Meter one chunk; whether the client gets it. Raises for an in-band error."""
        if "error" in obj:
            failure = in_band_error(obj, self.backend)
            if failure is not None:
                raise failure
        usage = obj.get("usage")
        if usage:
            metered = usage_of(obj)
            if metered is not None:
                self.usage = metered
        choices = obj.get("choices")
        if not choices:
            return bool(usage) and self._wants_usage
        if type(choices) is list:
            for choice in choices:
                if type(choice) is not dict:
                    continue
                if choice.get("finish_reason"):
                    self.complete = True
                delta = choice.get("delta")
                if type(delta) is dict and (delta.get("content") or delta.get("tool_calls")):
                    self.content_chunks += 1
                    if type(delta.get("tool_calls")) is list:
                        self._index_tool_calls(choice.get("index", 0), delta["tool_calls"])
        return True

    def _index_tool_calls(self, choice: Any, calls: list[Any]) -> None:
        """Give tool-call deltas that lack an ``index`` (Mistral sends whole calls without one)
        the index OpenAI clients' accumulators need: a delta with an ``id`` starts the next
        call, one without continues the last."""
        for tc in calls:
            if type(tc) is not dict or "index" in tc:
                continue
            key = choice if type(choice) is int else 0
            seen = self._tools.get(key, 0)
            if tc.get("id") or not seen:
                self._tools[key] = seen = seen + 1
            tc["index"] = seen - 1
            self._dirty = True

    def tail(self) -> list[bytes]:
        if not self.complete:
            raise errors.BadUpstreamResponse(
                f"Backend '{self.backend}' ended the stream before the answer was complete "
                "(no [DONE], no finish_reason).",
                backend=self.backend,
            )
        return []


#: A plain JSON string: quotes around anything but a quote, a backslash (no escapes) or a
#: control character (the bytes must also be UTF-8: ``_utf8``).
_PLAIN_STRING = re.compile(rb'"[^"\\\x00-\x1f]*"')
_CONTENT_KEY = b'"content"'
#: A ``_Template``'s ``key``, then a run of its events with plain strings, not empty, as their
#: text (the head and the tail matched as the key's groups). Each repetition is one whole
#: event — ``data: ``, the head, the string, the tail and a blank line — as no line end comes
#: before the event's blank line.
_RUN = re.compile(rb'([^\x00]*)\x00([^\x00]*)\x00(?:data: \1"[^"\\\x00-\x1f]+"\2\n\n)*')
#: ``_Template.run`` for this many events left in a read or more, the checks inline for fewer:
#: for one event they cost 6k instructions, the run 10k.
_RUN_MIN = 3
#: The most bytes of a read one ``_Template.run`` looks at (what it copies): a longer run goes
#: on with the next, after one event checked inline.
_WINDOW = 8192


def _utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


class _Template:
    """A middle event of a stream split around the JSON string of its ``delta.content``:
    ``head``, that string, ``tail`` (``cut`` bytes).

    Taken only from an event the full checks found to be the middle of a stream and that has
    no backslash at all (so every quote delimits a string and every key is written as it is)
    and the key ``"content"`` exactly once (so that key is ``delta.content``'s: the delta has
    one). An event that is ``head + S + tail`` for a plain JSON string ``S`` (``_PLAIN_STRING``,
    UTF-8) is then valid JSON with the same tokens but that one string: the same middle event
    with ``S`` as its text. ``OpenAIStream.feed`` checks that inline for one event, and with
    ``run`` for several in a row."""

    __slots__ = ("cut", "head", "key", "lead", "tail")

    def __init__(self, head: bytes, tail: bytes) -> None:
        self.head = head
        self.tail = tail
        self.cut = len(tail)
        #: How an event of the template starts in a chunk.
        self.lead = b"data: " + head
        #: What ``_RUN`` reads the head and the tail from (neither holds a NUL: JSON has none).
        self.key = b"%s\0%s\0" % (head, tail)

    def run(self, chunk: bytes, at: int) -> tuple[int, int] | None:
        """The events of ``chunk`` from ``at`` on (``at`` is where one starts; the chunk is
        simple events, ``sse.Parser.simple_events``) that are this template with another plain
        JSON string as their text, not empty (and UTF-8): how many there are and their length
        in bytes; None when the event at ``at`` is not one. One regular expression over the
        chunk (``_RUN``) instead of the checks per event: on a read of 23 events, 19 of them
        the template's after the first, the decoder takes 200k instructions instead of 240k."""
        if not chunk.startswith(self.lead, at):
            return None
        key = self.key
        subject = key + chunk[at : at + _WINDOW]
        start = len(key)
        m = _RUN.match(subject)  # it always matches (``*``)
        stop = m.end() if m is not None else start
        if stop > start and not subject.isascii():
            try:
                subject[start:stop].decode()
            except UnicodeDecodeError as exc:  # the events before the one with the bad byte
                stop = subject.rfind(b"\n\n", start, start + exc.start) + 2
        if stop <= start:
            return None
        return subject.count(b"\n\ndata: ", start, stop) + 1, stop - start

    @classmethod
    def of(cls, payload: bytes, text: str) -> _Template | None:
        """``payload`` (a middle event whose ``delta.content`` is ``text``) as a template, or
        None when it cannot be one."""
        if payload.find(b"\\") >= 0 or payload.count(_CONTENT_KEY) != 1:
            return None
        at = payload.find(_CONTENT_KEY) + len(_CONTENT_KEY)
        rest = payload[at:].lstrip(b" \t")
        if not rest.startswith(b":"):
            return None
        start = len(payload) - len(rest[1:].lstrip(b" \t"))
        literal = b'"' + text.encode() + b'"'
        if payload[start : start + len(literal)] != literal:
            return None
        return cls(payload[:start], payload[start + len(literal) :])


def _run(chunk: bytes, payloads: list[bytes], first: int, end: int) -> bytes:
    """The bytes of the events ``first`` to ``end`` (exclusive) in ``chunk``, whose events are
    ``data: <payload>`` and a blank line each (``sse.Parser.simple_events``)."""
    start = sum(map(len, payloads[:first])) + 8 * first
    return chunk[start : start + sum(map(len, payloads[first:end])) + 8 * (end - first)]


def _loads(data: str | bytes, backend: str) -> dict[str, Any]:
    obj = loads_json(data)
    if not isinstance(obj, dict):
        raise errors.BadUpstreamResponse(
            f"Backend '{backend}' sent a stream event that is not a JSON object.",
            backend=backend,
        )
    return obj


class OpenAIDialect:
    """The backend half of ``openai_openai``: the body goes on as it is (model, cap and
    ``stream_options`` set), the answer comes back as it is."""

    name = "openai"
    operations: frozenset[Operation] = frozenset({"chat", "embeddings"})

    def request(self, call: Call) -> tuple[str, bytes, dict[str, str]]:
        return build_request(call)

    def normalise_error(
        self, status: int, code: str | None, etype: str | None, message: str
    ) -> Normalised:
        return status, code, etype

    def answer(self, call: Call, raw: bytes, obj: dict[str, Any], created: int) -> Answer:
        failure = in_band_error(obj, call.backend.name)
        if failure is not None:
            raise failure
        return Answer(raw, usage_of(obj))

    def stream(self, call: Call, created: int) -> OpenAIStream:
        return OpenAIStream(call)


DIALECT = OpenAIDialect()


class OpenAIAPI:
    """The OpenAI API as a client API (``/v1/chat/completions``, ``/v1/embeddings``): the body is
    already canonical; errors are OpenAI's ``{"error": {…}}``."""

    name = "openai"
    done = sse.DONE
    forward_headers: tuple[str, ...] = ()

    def error_status(self, err: errors.SluiceError) -> int:
        return err.status

    def parse(self, obj: dict[str, Any], operation: Operation) -> tuple[str, dict[str, Any]]:
        model = validate.chat(obj) if operation == "chat" else validate.embeddings(obj)
        return model, obj

    def error_body(self, err: errors.SluiceError) -> bytes:
        return errors.error_body(err)

    def stream_error(self, err: errors.SluiceError) -> bytes:
        return sse.encode(json.dumps(errors.error_object(err)))

    def length_stop(self, output_tokens: int, chunk: tuple[str, int, str, int]) -> bytes:
        id_, created, model, choices = chunk
        return chat.finish_chunk(id_, created, model, "length", choices)


API = OpenAIAPI()


def _encode(data: str) -> bytes:
    if "\n" in data or "\r" in data:
        return sse.encode(data)
    return sse.encode_data(data.encode())
