"""Server-sent events: an incremental parser and a writer, per the WHATWG HTML "event stream" rules.

Owns the byte-level framing of ``text/event-stream`` and nothing else (it knows no JSON, no
OpenAI). Pure: no IO; the caller feeds bytes as they arrive and writes what ``encode`` returns.

Parsing rules implemented (https://html.spec.whatwg.org/multipage/server-sent-events.html):
lines end with CRLF, LF or CR (a CR at the end of one chunk and an LF at the start of the next are
one line end); one leading UTF-8 BOM is dropped; lines starting with ``:`` are comments; a field
without a colon has an empty value; one space after the colon is dropped; ``data`` lines of one
event are joined with LF; an empty line dispatches the event unless its data is empty; ``id``
values containing NUL are ignored; ``retry`` is honoured only when all ASCII digits; an event left
unterminated at end of stream is discarded (``has_partial`` tells the caller that happened).
Bytes are split only at ASCII line ends, so a multi-byte character split across chunks is safe;
invalid UTF-8 becomes U+FFFD.
"""

from __future__ import annotations

from dataclasses import dataclass

_BOM = b"\xef\xbb\xbf"


@dataclass(slots=True)
class Event:
    """One dispatched event; treat it as immutable (not frozen: building a frozen dataclass
    costs three times as much, and a stream makes one per chunk)."""

    data: str
    event: str | None = None
    id: str | None = None
    retry: int | None = None


class Parser:
    """Feed bytes in any split; get the same events as if the stream had arrived whole."""

    __slots__ = ("_buf", "_data", "_event", "_id", "_retry", "_skip_lf", "_started")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None
        self._skip_lf = False
        self._started = False

    def feed(self, chunk: bytes) -> list[Event]:
        """Consume ``chunk``; return the events it completed, in order."""
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
        buf = self._buf + chunk if self._buf else chunk
        if not self._started:
            if len(buf) < 3 and _BOM.startswith(buf):
                self._buf = buf
                return []
            self._started = True
            if buf.startswith(_BOM):
                buf = buf[3:]
        if b"\r" in buf:
            if buf.endswith(b"\r"):
                self._skip_lf = True
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        events: list[Event] = []
        for raw in lines:
            if not raw:
                if self._data:
                    events.append(Event("\n".join(self._data), self._event, self._id, self._retry))
                    self._data = []
                self._event = None
                continue
            if raw[0] == 0x3A:  # ':' comment / keep-alive
                continue
            self._field(raw.decode("utf-8", "replace"))
        return events

    def _field(self, line: str) -> None:
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)

    def simple_events(self, chunk: bytes) -> list[bytes] | None:
        """The payloads of ``chunk``'s events (each event's one ``data:`` value, without the
        ``data: ``) when every event is that simple — one ``data:`` field with a space and a
        non-empty value, LF line ends, nothing pending from an earlier chunk, the chunk ending
        at an event boundary — as upstreams send nearly always; None otherwise (then use
        ``feed``). The payloads are what ``feed`` would dispatch as data (undecoded), and each
        event is ``data: <payload>`` and a blank line in ``chunk``, so a caller can pass the
        bytes on without decoding and encoding them."""
        if (
            self._buf
            or self._data
            or self._skip_lf
            or not chunk.startswith(b"data: ")
            or not chunk.endswith(b"\n\n")
            or chunk.find(b"\r") >= 0  # not ``in``: bytes ``in`` first tries an integer
        ):
            return None
        end = len(chunk) - 2
        if chunk.find(b"\n") == end:  # one event (the usual read): one line, then a blank one
            if end == 6:  # "data: " and nothing: empty data is not dispatched
                return None
            payloads = [chunk[6:end]]
        else:
            # "data: p1\n\ndata: p2 … \n\n": split at the event boundaries; a line end left
            # inside a payload (another field, multi-line data, a blank line too many) or an
            # empty payload is not simple.
            payloads = chunk[6:end].split(b"\n\ndata: ")
            if b"" in payloads or b"".join(payloads).find(b"\n") >= 0:
                return None
        self._started = True
        self._event = None
        return payloads

    @property
    def has_partial(self) -> bool:
        """True when bytes or fields of an event are pending that no blank line has completed."""
        return bool(self._buf) or bool(self._data)


def encode(data: str, event: str | None = None) -> bytes:
    """One event in canonical form: ``event:`` (if any), a ``data:`` per line, blank line."""
    head = f"event: {event}\n" if event is not None else ""
    if "\n" in data or "\r" in data:
        lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        body = "".join(f"data: {line}\n" for line in lines)
    else:
        body = f"data: {data}\n"
    return f"{head}{body}\n".encode()


def encode_data(data: bytes) -> bytes:
    """Fast path for a single-line payload already in bytes (a JSON chunk)."""
    return b"data: " + data + b"\n\n"


DONE = b"data: [DONE]\n\n"
