"""The streaming redactor (pure): any split gives the unary result and nothing leaks early."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice_sidecar.guardrails.detectors import ENTITIES, Scanner
from sluice_sidecar.guardrails.holdback import SCAN_BATCH, HoldbackRedactor
from sluice_sidecar.guardrails.redact import redact

DENY = re.compile(r"(?i)project bluebird")
SCANNER = Scanner(ENTITIES, [("policy#0", DENY)], window=32)

PIECES = [
    "4111 1111 1111 1111",
    "4111 11",
    "11 1111 1111",
    "3782 822463 10005",
    "bob@example.com",
    "GB82 WEST 1234 5698 7654 32",
    "123-45-6789",
    "+44 20 7946 0958",
    "(555) 123-4567",
    "943 476 5919",
    "192.168.1.1",
    "2001:db8::1",
    "sk-proj-abcDEF1234567890abcdefGHIJ",
    "AKIAIOSFODNN7EXAMPLE",
    "project bluebird",
    "Project",
    " Bluebird",
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
    "\u200b",
    "Zürich",
]
TEXT = st.lists(
    st.sampled_from(PIECES) | st.text(alphabet="0123456789 -.@:+()abcAB", max_size=6),
    max_size=20,
).map("".join)


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c for c in cuts if 0 < c < len(text)})
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]


def stream(chunks: list[str], scanner: Scanner = SCANNER) -> tuple[list[str], str]:
    """Everything released after each chunk (cumulative), and the final output."""
    hb = HoldbackRedactor(scanner)
    out = ""
    seen: list[str] = []
    for chunk in chunks:
        out += hb.feed(chunk)
        seen.append(out)
    out += hb.finish()
    return seen, out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXT, st.lists(st.integers(0, 400), max_size=10))
def test_any_split_gives_the_unary_result_and_never_leaks(text: str, cuts: list[int]) -> None:
    want = redact(text, SCANNER)
    seen, out = stream(split(text, cuts))
    assert out == want
    for released in seen:  # every released prefix is a prefix of the redacted text
        assert want.startswith(released)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXT, st.lists(st.integers(0, 1600), max_size=12))
def test_any_byte_split_even_inside_a_character(text: str, cuts: list[int]) -> None:
    """FAULTS: PII split across SSE chunks and across UTF-8 byte boundaries."""
    data = text.encode("utf-8", "surrogatepass")
    points = sorted({c for c in cuts if 0 < c < len(data)})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    hb = HoldbackRedactor(SCANNER)
    want = redact(text, SCANNER)
    out = ""
    for chunk in chunks:
        out += hb.push_bytes(chunk).text
        assert want.startswith(out)
    out += hb.finish()
    assert out == want


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(sorted(ENTITIES)), min_size=1, unique=True), TEXT, st.data())
def test_only_the_chosen_labels_are_replaced(
    labels: list[str], text: str, data: st.DataObject
) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=6))
    hb = HoldbackRedactor(SCANNER, labels=frozenset(labels))
    out = "".join(hb.feed(c) for c in split(text, cuts)) + hb.finish()
    assert out == redact(text, SCANNER, labels=frozenset(labels))


def test_card_prefix_is_held_until_it_is_clear() -> None:
    """FAULTS: "4111 11" + "11 1111 1111" → redacted, no prefix leaked."""
    hb = HoldbackRedactor(Scanner(["CREDIT_CARD"]), batch=1)  # every chunk scanned at once
    assert hb.feed("pay with 4111 11") == "pay with"
    assert hb.feed("11 1111 1111") == ""
    assert hb.feed(" please") == " [CREDIT_CARD] please"
    assert hb.finish() == ""


def test_a_digit_run_that_is_not_a_card_is_released_in_full() -> None:
    hb = HoldbackRedactor(Scanner(["CREDIT_CARD"]), batch=1)
    assert hb.feed("order 4111 11") == "order"
    assert hb.feed("11 1111 1112 ok") == " 4111 1111 1111 1112 ok"
    assert hb.finish() == ""


def test_prose_is_released_word_by_word() -> None:
    hb = HoldbackRedactor(Scanner(["EMAIL", "CREDIT_CARD"]), batch=1)
    assert hb.feed("Hello there, my ") == "Hello there, my"
    assert hb.feed("mail is bob") == " mail is "  # "bob" may start an address
    assert hb.feed("@example.com") == ""
    assert hb.feed(" thanks") == "[EMAIL] "
    assert hb.finish() == "thanks"


def test_released_spans_report_positions_in_the_whole_stream() -> None:
    hb = HoldbackRedactor(Scanner(["EMAIL"]), labels=frozenset(), batch=1)  # report only
    got = [hb.push("a bob@x.io b "), hb.push("c@d.ee e"), hb.close()]
    spans = [s for r in got for s in r.spans]
    text = "a bob@x.io b c@d.ee e"
    assert [text[s.start : s.end] for s in spans] == ["bob@x.io", "c@d.ee"]
    assert "".join(r.text for r in got) == text


def test_a_long_run_is_bounded_by_the_longest_possible_match() -> None:
    hb = HoldbackRedactor(Scanner(["EMAIL"]))
    released = hb.feed("x" * 5000)
    assert len(released) >= 5000 - 610
    assert hb.pending <= 610


def test_deny_patterns_are_held_for_the_policy_window() -> None:
    scanner = Scanner([], [("p#0", DENY)], window=16)
    hb = HoldbackRedactor(scanner, batch=1)
    assert hb.feed("abcdefghijklmnopqrstuvwxyz") == "abcdefghij"
    assert hb.feed(" project blue") == "klmnopqrstuvw"  # the last 16 characters wait
    assert hb.feed("bird!") == "xyz "
    assert hb.finish() == "[REDACTED]!"


@pytest.mark.parametrize(
    "text",
    [
        ".bob@example.com and more text after it to pass the deny window of this scanner",
        "x 4111 1111 1111 1111 123 and more text after it to pass the deny window here",
        "GB82 WEST 1234 5698 7654 32 AB and more text after it to pass the deny window",
        "4111 1111 1111 1112 then text long enough to pass the deny window of this one",
    ],
    ids=["trimmed-start", "trimmed-end", "iban-trimmed", "rejected"],
)
def test_cuts_never_fall_inside_a_candidate(text: str) -> None:
    """A validator may trim a candidate or reject it; a cut inside it would rescan differently
    (a hypothesis find: "." + email, where the email's span starts after the dot)."""
    scanner = Scanner(ENTITIES, [("p#0", DENY)], window=8)
    want = redact(text, scanner)
    for size in range(1, 12):
        hb = HoldbackRedactor(scanner)
        out = "".join(hb.feed(text[i : i + size]) for i in range(0, len(text), size))
        assert out + hb.finish() == want


def test_short_deltas_are_scanned_in_batches() -> None:
    """Deltas shorter than ``SCAN_BATCH`` wait until a batch is full (one scan per batch, not
    per delta); the output is the same as for any other split, and ``close`` scans the rest."""
    hb = HoldbackRedactor(Scanner(["EMAIL"]))
    text = "Hello there, my mail is bob@example.com, thanks a lot for asking!"
    released = [hb.feed(text[i : i + 4]) for i in range(0, len(text), 4)]
    assert released[: SCAN_BATCH // 4 - 1] == [""] * (SCAN_BATCH // 4 - 1)  # the first batch
    assert released[SCAN_BATCH // 4 - 1] != ""  # is scanned when it is full
    assert "".join(released) + hb.finish() == redact(text, Scanner(["EMAIL"]))
    assert hb.pending == 0


def test_push_after_close_is_an_error() -> None:
    hb = HoldbackRedactor(SCANNER)
    hb.close()
    with pytest.raises(RuntimeError):
        hb.push("x")


def test_per_chunk_work_stays_small() -> None:
    """A 40 kB answer in 4-character chunks with every detector on: what is held (and so
    rescanned or kept per chunk) stays bounded by the longest match, whatever the length."""
    text = ("The quick brown fox, bob@example.com, 4111 1111 1111 1111 and 10.0.0.1. " * 600)[
        :40_000
    ]
    hb = HoldbackRedactor(SCANNER)
    out = ""
    most = 0
    for i in range(0, len(text), 4):
        out += hb.feed(text[i : i + 4])
        most = max(most, hb.pending)
    assert most <= 64 + SCAN_BATCH  # the longest match here, plus one batch not yet scanned
    assert out + hb.finish() == redact(text, SCANNER)
