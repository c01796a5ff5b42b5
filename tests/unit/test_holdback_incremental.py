"""The incremental holdback (``detectors.StreamScan``) against the rescan it replaced: for any
text and any split into deltas, every ``push`` releases exactly what rescanning the held window
at every delta released (text and spans), so no streamed byte changed."""

from __future__ import annotations

import re
from collections.abc import Container, Iterable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice_sidecar.guardrails.detectors import ENTITIES, Scanner, Span
from sluice_sidecar.guardrails.holdback import HoldbackRedactor, Released
from sluice_sidecar.guardrails.redact import apply

_CONTEXT = 64


def _merged(extents: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(extents):
        if out and start < out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


class RescanRedactor:
    """The holdback redactor as it was before ``StreamScan`` (commit ef1a9e8): ``settled``
    and ``find`` over the whole held window at every delta. The reference."""

    def __init__(self, scanner: Scanner, labels: Container[str] | None = None) -> None:
        self._scanner = scanner
        self._labels = labels
        self._buf = ""
        self._pos = 0
        self._base = 0

    def push(self, chunk: str) -> Released:
        if chunk:
            self._buf += chunk
        buf, pos = self._buf, self._pos
        settled = self._scanner.settled(buf)
        if settled <= pos:
            return Released("")
        extents: list[tuple[int, int]] = []
        spans = self._scanner.find(buf, pos, extents)
        cut = settled
        if extents:
            for start, end in _merged(e for e in extents if e[0] < settled):
                if start < cut < end:
                    cut = start
                    break
            if cut <= pos:
                return Released("")
        return self._release(cut, [s for s in spans if s.start < cut] if spans else spans)

    def close(self) -> Released:
        if len(self._buf) == self._pos:
            return Released("")
        return self._release(len(self._buf), self._scanner.find(self._buf, self._pos))

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


DENY = re.compile(r"(?i)project bluebird")
GREEDY = re.compile(r"a[^.]*b")  # longer than any window: exactly as wrong as before
#: The Python path (``native=False``): the native redactor is held equal to it in
#: ``test_native_scan.py``.
SCANNERS = [
    Scanner(ENTITIES, native=False),
    Scanner(ENTITIES, [("p#0", DENY)], window=32, native=False),
    Scanner(ENTITIES, [("p#0", DENY), ("p#1", GREEDY)], window=8, native=False),
    Scanner(["EMAIL", "IP_ADDRESS", "API_KEY"], native=False),
    Scanner(["CREDIT_CARD", "PHONE", "US_SSN", "IBAN"], [("p#0", DENY)], window=64, native=False),
    Scanner([], [("p#0", DENY)], window=16, native=False),
]

PIECES = [
    "4111 1111 1111 1111",
    "4111 11",
    "11 1111 1111",
    "3782 822463 10005",
    "503846999434",
    "Card: ",
    "bob@example.com",
    "jane.doe.123@locks.example.com",
    "..",
    "GB82 WEST 1234 5698 7654 32",
    "DE89370400440532013000",
    "123-45-6789",
    "+44 20 7946 0958",
    "+1 415 555 0134",
    "(555) 123-4567",
    "943 476 5919",
    "Tel.: ",
    "call me on ",
    "192.168.1.1",
    "10:22:33",
    "2001:db8::1",
    "fe80:0:0:0:0:0:0:1",
    "::",
    "sk-proj-abcDEF1234567890abcdefGHIJ",
    "AKIAIOSFODNN7EXAMPLE",
    "AIzaSyA1234567890abcdefghijklmnopqrstu",
    "ghp_" + "a1" * 18,
    "xoxb-1234567890-abc",
    "project bluebird",
    "Project",
    " Bluebird",
    " a b. ",
    " ",
    "  ",
    "-",
    ".",
    "@",
    ":",
    "\n",
    "x",
    "9",
    "0",
    "é",
    "💳",
    "日本語",
    "\u200b",
    "Zürich",
]
TEXT = st.lists(
    st.sampled_from(PIECES) | st.text(alphabet="0123456789 -.@:+()abcdefxAB_kés", max_size=8),
    max_size=30,
).map("".join)


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c for c in cuts if 0 < c < len(text)})
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]


def _same(scanner: Scanner, chunks: list[str], labels: frozenset[str] | None = None) -> None:
    # batch=1: each push scanned at once, as the rescan does (batching is another split)
    new, old = HoldbackRedactor(scanner, labels, batch=1), RescanRedactor(scanner, labels)
    for i, chunk in enumerate(chunks):
        assert new.push(chunk) == old.push(chunk), (i, chunks)
    assert new.close() == old.close(), chunks


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXT, st.lists(st.integers(0, 600), max_size=40), st.sampled_from(range(len(SCANNERS))))
def test_every_push_releases_what_the_rescan_released(
    text: str, cuts: list[int], which: int
) -> None:
    _same(SCANNERS[which], split(text, cuts))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXT, st.integers(1, 6), st.sampled_from(range(len(SCANNERS))))
def test_small_even_deltas_as_a_model_streams(text: str, size: int, which: int) -> None:
    """One delta per token or so: matches span many deltas."""
    _same(SCANNERS[which], [text[i : i + size] for i in range(0, len(text), size)])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXT, st.lists(st.integers(0, 600), max_size=20), st.data())
def test_with_labels_and_empty_deltas(text: str, cuts: list[int], data: st.DataObject) -> None:
    labels = data.draw(st.none() | st.frozensets(st.sampled_from(sorted(ENTITIES))))
    chunks = split(text, cuts)
    chunks = [c for chunk in chunks for c in (chunk, "")]  # push("") re-asks without text
    _same(SCANNERS[1], chunks, labels)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=12), st.integers(1, 5))
def test_long_runs_beyond_the_reach(pieces: list[str], size: int) -> None:
    """Runs longer than a detector's reach (a base64 blob, a long digit run) move the settled
    point inside the run."""
    text = "k" * 500 + "".join(pieces) + "7" * 90 + " " + "".join(pieces) + "a1" * 350
    _same(SCANNERS[0], [text[i : i + size * 7] for i in range(0, len(text), size * 7)])
    _same(SCANNERS[2], [text[i : i + size] for i in range(0, len(text), size)])


def test_a_card_over_twenty_deltas_is_held_and_redacted_once() -> None:
    text = "Card 4111 1111 1111 1111 is on file; the gates open at noon."
    chunks = [text[i : i + 3] for i in range(0, len(text), 3)]
    _same(SCANNERS[1], chunks)
    hb = HoldbackRedactor(SCANNERS[1])
    out = "".join(hb.feed(c) for c in chunks) + hb.finish()
    assert out == "Card [CREDIT_CARD] is on file; the gates open at noon."
