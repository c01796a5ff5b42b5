"""The streaming redactor: text arrives in chunks, redacted text leaves as soon as it is final.

Owns ``HoldbackRedactor``. Text is released only when no match can still span it: the
``Scanner`` says up to where matches are settled (for the built-in detectors exactly: the start
of a trailing run that could still grow into a card, an address, …; for deny patterns the
policy's ``holdbackChars`` window), and a candidate match that straddles that point holds the
text back from where the candidate starts (not where its validated span starts: the next scan
begins at the cut and must see what this one saw). So "4111 11" is held until what follows
shows whether it is a card, and a card split over any number of chunks is redacted exactly as
in the whole text.

Guarantee (property-tested): for any split of a text into chunks, the concatenation of what
``push``/``close`` release equals ``redact(text)``, and every released prefix is a prefix of
``redact(text)`` (so no raw entity is ever released). Chunks are ``str``; ``push_bytes`` takes
UTF-8 bytes split anywhere, even inside a character (an incremental decoder keeps the partial
character; invalid bytes become U+FFFD). Work per chunk is bounded by the held text, which is at
most the longest possible match plus the chunk. Pure: no IO.
"""

from __future__ import annotations

import codecs
from collections.abc import Container, Iterable
from dataclasses import dataclass

from .detectors import Scanner, Span
from .redact import apply

#: Released text kept as left context (lookbehinds, ``\b``) for the next scan.
_CONTEXT = 64


@dataclass(frozen=True, slots=True)
class Released:
    """Text that may go to the client now, and the spans found in the raw text it covers
    (positions in the whole raw stream)."""

    text: str
    spans: tuple[Span, ...] = ()


_NOTHING = Released("")


def _merged(extents: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(extents):
        if out and start < out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


class HoldbackRedactor:
    """Feed chunks with ``push``; call ``close`` once at the end of the stream.

    ``labels`` limits which entities are replaced (None: all that ``scanner`` finds); spans of
    other entities are still reported (Log, Monitor) and still hold text back, so a reported
    span is always released whole.
    """

    __slots__ = ("_base", "_buf", "_decoder", "_labels", "_pos", "_scanner", "closed")

    def __init__(self, scanner: Scanner, labels: Container[str] | None = None) -> None:
        self._scanner = scanner
        self._labels = labels
        self._buf = ""  # left context + pending raw text
        self._pos = 0  # where the pending text starts in _buf
        self._base = 0  # position of _buf[0] in the whole stream
        self._decoder: codecs.IncrementalDecoder | None = None
        self.closed = False

    @property
    def pending(self) -> int:
        """Characters received but not released yet."""
        return len(self._buf) - self._pos

    def push(self, chunk: str) -> Released:
        if self.closed:
            raise RuntimeError("push after close")
        if chunk:
            self._buf += chunk
        buf, pos = self._buf, self._pos
        settled = self._scanner.settled(buf)
        if settled <= pos:
            return _NOTHING
        extents: list[tuple[int, int]] = []
        spans = self._scanner.find(buf, pos, extents)
        # Cut where a rescan starting at the cut sees what this scan saw: never inside the
        # raw extent of a candidate (spans lie within their candidates' extents).
        cut = settled
        if extents:
            for start, end in _merged(e for e in extents if e[0] < settled):
                if start < cut < end:
                    cut = start
                    break
            if cut <= pos:
                return _NOTHING
        return self._release(cut, [s for s in spans if s.start < cut] if spans else spans)

    def close(self) -> Released:
        """Everything still held, redacted; the stream is over."""
        if self._decoder is not None:
            rest = self._decoder.decode(b"", final=True)
            if rest:
                self._buf += rest
        self.closed = True
        if self.pending == 0:
            return _NOTHING
        return self._release(len(self._buf), self._scanner.find(self._buf, self._pos))

    def push_bytes(self, data: bytes) -> Released:
        """``push`` for UTF-8 bytes split anywhere."""
        if self._decoder is None:
            self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        return self.push(self._decoder.decode(data))

    def feed(self, chunk: str) -> str:
        return self.push(chunk).text

    def finish(self) -> str:
        return self.close().text

    def _release(self, cut: int, spans: list[Span]) -> Released:
        buf, pos, labels = self._buf, self._pos, self._labels
        if not spans:
            text = buf[pos:cut]
        else:
            shown = spans if labels is None else [s for s in spans if s.entity in labels]
            text = apply(buf[pos:cut], shown, offset=pos)
        base = self._base
        keep = max(0, cut - _CONTEXT)
        self._buf = buf[keep:]
        self._pos = cut - keep
        self._base = base + keep
        if not spans:
            return Released(text)
        return Released(text, tuple(Span(base + s.start, base + s.end, s.entity) for s in spans))
