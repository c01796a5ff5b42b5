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
character; invalid bytes become U+FFFD). Detection is incremental (``detectors.StreamScan``):
the settled point is kept from chunk to chunk, the built-in detectors scan each character once
and keep the candidates they decided, and only the deny patterns rescan what is held (at most
their window plus the chunk); every push releases exactly what rescanning the held window did
(property-tested against that rescan in ``test_holdback_incremental.py``). Short deltas are
scanned in batches of ``SCAN_BATCH`` characters: a batch is just another split of the text, so the
guarantee above holds unchanged, while a stream of 4-character deltas pays one scan (and one
release) per batch instead of per delta. Pure: no IO.

Where the native scanner is installed (``sluice_native``, built from ``native/``; the sidecar
image has it), the whole redactor runs natively: one call per delta (``stepper``), batching,
the rescan of the held window and the release in Rust, with one call back per batch for the
deny patterns' matches (Python regexes) when the policy has any; property-tested equal to this
class's Python path (``tests/unit/test_native_scan.py``).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from typing import Any

from .detectors import Scanner, Span
from .redact import apply

#: Released text kept as left context (lookbehinds, ``\b``) for the next scan.
_CONTEXT = 64
#: Deltas are scanned in batches of at least this many characters: a stream of 4-character
#: deltas costs per batch what one delta cost, and the split changes nothing in the output (any
#: split gives the same text); text waits at most this much longer before it is released.
SCAN_BATCH = 32


@dataclass(frozen=True, slots=True)
class Released:
    """Text that may go to the client now, and the spans found in the raw text it covers
    (positions in the whole raw stream)."""

    text: str
    spans: tuple[Span, ...] = ()


_NOTHING = Released("")
_EMPTY: tuple[str, tuple[Span, ...]] = ("", ())


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

    __slots__ = (
        "_base",
        "_batch",
        "_buf",
        "_decoder",
        "_labels",
        "_native",
        "_pos",
        "_room",
        "_scan",
        "_scanner",
        "_unscanned",
        "_window",
        "closed",
    )

    def __init__(
        self, scanner: Scanner, labels: Container[str] | None = None, *, batch: int = SCAN_BATCH
    ) -> None:
        self._scanner = scanner
        self._batch = batch
        self._scan = scanner.stream()
        #: The deny patterns' window (0: no deny pattern).
        self._window = scanner.window if scanner.has_extra else 0
        self._labels = labels
        self._buf = ""  # left context + pending raw text
        self._pos = 0  # where the pending text starts in _buf
        self._base = 0  # position of _buf[0] in the whole stream
        self._decoder: codecs.IncrementalDecoder | None = None
        self._unscanned = ""  # received, waiting for a batch of ``SCAN_BATCH`` characters
        #: ``batch - len(_unscanned)``: a shorter non-empty chunk only joins ``_unscanned``
        #: (0 once closed: every chunk then takes the path that raises).
        self._room = batch
        self.closed = False
        engine = scanner.native
        #: The native redactor (None: this class's Python path). Deny patterns are Python
        #: regexes: it calls back for their matches in the held text.
        self._native: Any = None
        if engine is not None:
            deny = scanner.deny_labels
            names = [*sorted(scanner.entities), *deny]
            self._native = engine.redactor(
                None if labels is None else [e for e in names if e in labels],
                batch,
                scanner.deny_matches if deny else None,
                deny,
                scanner.window if deny else 0,
            )

    @property
    def stepper(self) -> Callable[[str], tuple[str, tuple[Span, ...]]]:
        """``step`` itself, or the native redactor's: what a per-delta caller should keep."""
        native = self._native
        return self.step if native is None else native.step

    @property
    def pending(self) -> int:
        """Characters received but not released yet."""
        if self._native is not None:
            return int(self._native.pending)
        return len(self._buf) - self._pos + len(self._unscanned)

    def push(self, chunk: str) -> Released:
        text, spans = self.step(chunk)
        if not text:
            return _NOTHING
        return Released(text, spans) if spans else Released(text)

    def step(self, chunk: str) -> tuple[str, tuple[Span, ...]]:
        """``push`` without the ``Released`` (the per-delta path of ``policy.OutputFilter``)."""
        native = self._native
        if native is not None:
            out: tuple[str, tuple[Span, ...]] = native.step(chunk)
            return out
        size = len(chunk)
        if 0 < size < self._room:  # the batch is not full yet
            self._room -= size
            self._unscanned += chunk
            return _EMPTY
        if self.closed:
            raise RuntimeError("push after close")
        if self._unscanned:
            chunk, self._unscanned = self._unscanned + chunk, ""
        self._room = self._batch
        scan = self._scan
        if chunk:
            self._buf += chunk
            found = scan.grow(chunk)
        else:
            found = scan.detectors_settled
        buf, pos, base = self._buf, self._pos, self._base
        settled = found - base
        if self._window and len(buf) - self._window < settled:
            settled = len(buf) - self._window
        if settled <= pos:
            return _EMPTY
        spans, extents = scan.candidates(buf, base, pos, settled, found)
        # Cut where a rescan starting at the cut sees what this scan saw: never inside the
        # raw extent of a candidate (spans lie within their candidates' extents).
        cut = base + settled
        if extents:
            for start, end in _merged(extents):
                if start < cut < end:
                    cut = start
                    break
            if cut <= base + pos:
                return _EMPTY
            if spans:
                spans = [s for s in spans if s.start < cut]
        return self._release(cut, spans)

    def close(self) -> Released:
        """Everything still held, redacted; the stream is over."""
        native = self._native
        if native is not None:
            rest = "" if self._decoder is None else self._decoder.decode(b"", final=True)
            self.closed = True
            text, spans = native.close(rest)
            return Released(text, spans) if text or spans else _NOTHING
        if self._unscanned:
            self._buf += self._unscanned
            self._unscanned = ""
        self._room = 0
        if self._decoder is not None:
            rest = self._decoder.decode(b"", final=True)
            if rest:
                self._buf += rest
        self.closed = True
        if self.pending == 0:
            return _NOTHING
        base = self._base
        found = self._scanner.find(self._buf, self._pos)
        text, spans = self._release(
            base + len(self._buf), [Span(base + s.start, base + s.end, s.entity) for s in found]
        )
        return Released(text, spans)

    def push_bytes(self, data: bytes) -> Released:
        """``push`` for UTF-8 bytes split anywhere."""
        if self._decoder is None:
            self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        return self.push(self._decoder.decode(data))

    def feed(self, chunk: str) -> str:
        return self.push(chunk).text

    def finish(self) -> str:
        return self.close().text

    def _release(self, cut: int, spans: list[Span]) -> tuple[str, tuple[Span, ...]]:
        """Release up to ``cut`` with ``spans`` (both in stream positions)."""
        buf, pos, base, labels = self._buf, self._pos, self._base, self._labels
        cut -= base
        if not spans:
            text = buf[pos:cut]
        else:
            shown = spans if labels is None else [s for s in spans if s.entity in labels]
            text = apply(buf[pos:cut], shown, offset=base + pos)
        keep = cut - _CONTEXT if cut > _CONTEXT else 0
        self._buf = buf[keep:]
        self._pos = cut - keep
        self._base = base + keep
        return text, tuple(spans) if spans else ()
