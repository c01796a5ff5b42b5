"""The shortcuts the guardrail hot paths take, each against the plain form it replaces: the
``_ANY`` prefilter written to start with a character class, the leads and triggers that let a
stream skip scans (``detectors.StreamScan``), and the batching arithmetic of ``holdback``."""

from __future__ import annotations

import re
from re import _parser  # the stdlib's own pattern parser: the widest match of a trigger

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice_sidecar.guardrails import detectors
from sluice_sidecar.guardrails.detectors import DETECTORS, ENTITIES, TRIGGER_WIDTH, Scanner
from sluice_sidecar.guardrails.holdback import HoldbackRedactor, Released

PIECES = [
    "4111 1111 1111 1111",
    "+44 20 7946 0958",
    "(555) 123-4567",
    "Tel.: 0473 529442",
    "123-45-6789",
    "192.168.1.1",
    "2001:db8::1",
    "10:22:33",
    "GB82 WEST 1234 5698 7654 32",
    "DE89370400440532013000",
    "bob@example.com",
    "sk-proj-abcDEF1234567890abcdefGHIJ",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_" + "a1" * 18,
    "github_pat_" + "b2" * 12,
    "xoxb-1234-abc",
    "AIza",
    "\u0663\u0664",  # Arabic-Indic digits: no built-in detector's \d
    "x9",
    "_7",
    " ",
    "-",
]
TEXT = st.lists(
    st.sampled_from(PIECES)
    | st.text(alphabet="0123456789 -.@:+()/#,abcdefxsgkAIzSGBK_é", max_size=8),
    max_size=25,
).map("".join)

#: ``_ANY`` as it was written before it started with a character class (its digits ASCII since
#: every built-in detector's pattern is: Arabic-Indic digits are no IBAN check digits).
_ANY_PLAIN = re.compile(r"[0-9@:]|sk-|AIza|gh[pousr]_|github_pat_|AKIA|ASIA|xox")


def _starts(pattern: re.Pattern[str], text: str) -> set[int]:
    return {p for p in range(len(text) + 1) if pattern.match(text, p)}


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_any_matches_where_the_plain_alternation_does(text: str) -> None:
    assert _starts(detectors._ANY, text) == _starts(_ANY_PLAIN, text)


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_a_match_starts_only_where_its_lead_matches(text: str) -> None:
    for dets in DETECTORS.values():
        for det in dets:
            if det.trigger is not None:
                continue
            assert det.lead is not None, det.entity
            assert _starts(det.pattern, text) <= _starts(det.lead, text), det.entity


def test_every_detector_without_a_trigger_has_a_lead_and_triggers_fit_the_width() -> None:
    scanner = Scanner(ENTITIES)
    assert scanner._leads is not None
    assert scanner._triggers
    for trigger in scanner._triggers:
        assert _parser.parse(trigger.pattern).getwidth()[1] <= TRIGGER_WIDTH, trigger.pattern


class _BatchedAsBefore:
    """The batching of ``HoldbackRedactor.step`` as it was written before ``_room``: a chunk
    joins the unscanned text while the two together are shorter than the batch."""

    def __init__(self, scanner: Scanner, batch: int) -> None:
        self._inner = HoldbackRedactor(scanner, batch=1)
        self._batch = batch
        self._unscanned = ""

    def push(self, chunk: str) -> Released:
        if self._unscanned or len(chunk) < self._batch:
            if chunk and len(self._unscanned) + len(chunk) < self._batch:
                self._unscanned += chunk
                return Released("")
            chunk, self._unscanned = self._unscanned + chunk, ""
        return self._inner.push(chunk)

    def close(self) -> str:
        return self._inner.push(self._unscanned).text + self._inner.close().text


@settings(max_examples=200, deadline=None)
@given(TEXT, st.lists(st.integers(0, 9), max_size=40), st.integers(1, 40))
def test_batching_releases_what_it_did_before(text: str, sizes: list[int], batch: int) -> None:
    scanner = Scanner(ENTITIES)
    new, old = HoldbackRedactor(scanner, batch=batch), _BatchedAsBefore(scanner, batch)
    at = 0
    for size in sizes:  # empty chunks included: a push("") scans what is waiting
        chunk = text[at : at + size]
        at += size
        assert new.push(chunk) == old.push(chunk)
    rest = text[at:]
    assert new.push(rest).text + new.close().text == old.push(rest).text + old.close()


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_every_match_of_a_triggered_detector_holds_its_trigger(text: str) -> None:
    for dets in DETECTORS.values():
        for det in dets:
            if det.trigger is None:
                continue
            for m in det.pattern.finditer(text):
                assert det.trigger.search(m.group()) is not None, (det.entity, m.group())


_PHONE_SEPARATORS_PLAIN = re.compile(r"[ .-]{2}|[().-][ .-]|\)\(|[ .-]$")
_PHONE_WORDS_PLAIN = re.compile(
    r"\b(?:(?:phone|telephone|call\w*|mobile?|cell|hotline|fax|whatsapp|sms|text me|reach"
    r"|my number|telefon\w*|handy\w*|mobil\w*|rufnummer|rufen|anrufen|erreichbar|durchwahl"
    r"|t[ée]l[ée]phone|portable|appel\w*|joignable|cellulare|chiam\w*|tel[ée]fono"
    r"|m[óo]vil|ll[áa]m\w*|telefoon|bel|mobiel|gsm|telefone|telem[óo]vel|ligue"
    r"|zadzwo[ńn]\w*|kom[óo]rk\w*)\b|(?:t[ée]l|ph|mob|tlf)\b\.?)[^\d.!?#\n]{0,24}$"
)
WORDS_BEFORE = st.lists(
    st.sampled_from(["tel", "tél.", "ph", "call", "calls2", "mobile", "text me", "my number"])
    | st.sampled_from(["phone", "xphone", "bel", "gsm", "_", "é", "3", ".", "!", "\n", ":", " "])
    | st.text(alphabet="aelnopt .:-1\n", max_size=5),
    max_size=10,
).map(lambda parts: "".join(parts)[-32:])


@settings(max_examples=500, deadline=None)
@given(WORDS_BEFORE)
def test_phone_words_are_found_where_the_plain_pattern_finds_them(before: str) -> None:
    got = detectors._PHONE_WORDS.search(" " + before) is not None
    assert got == (_PHONE_WORDS_PLAIN.search(before) is not None)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="0123 ().-/x", max_size=16))
def test_phone_separators_are_found_where_the_plain_pattern_finds_them(text: str) -> None:
    got = detectors._PHONE_SEPARATORS.search(text) is not None
    assert got == (_PHONE_SEPARATORS_PLAIN.search(text) is not None)


_EXT = r"(?P<ext>[ ]?(?:x|ext\.?)[ ]?\d{1,5})?"
#: ``_PHONE`` with its lookbehind in each alternative, as it was.
_PHONE_PLAIN = re.compile(
    r"[+(\d](?:(?<=\+)(?<![\w+.-]\+)(?P<intl>[1-9][\d ().-]{6,22}\d)"
    r"|(?<=\()(?<![\w+.-]\()(?:\d{3}\)[ ]?\d{3}[ .-]\d{4}"
    r"|(?P<ptrunk>0\d{1,4}\)[ /-]?\d{2,8}(?:[ -]\d{2,8}){0,2}))"
    r"|(?<=\d)(?<![\w+.-]\d)(?:\d\d(?P<nanp>[.-])\d{3}(?P=nanp)\d{4}"
    r"|(?<!\d \d)(?:\d\d[ .-]\d{3}[ .-]\d{4}"
    r"|(?<=1)[ .-]?(?:\(\d{3}\)[ ]?|\d{3}[ .-])\d{3}[ .-]\d{4}"
    r"|(?<=0)01[ .-]\d{3}[ .-]\d{3}[ .-]\d{4}"
    r"|(?<=0)[1-9](?:[ .]\d{2}){4}"
    r"|(?<=0)(?P<trunk>\d{1,4}(?:[ /-]\d{3,8}){1,3}))))" + _EXT + r"(?![\w]|[.-]\d)",
    re.ASCII,
)


@settings(max_examples=400, deadline=None)
@given(TEXT)
def test_phone_matches_what_the_pattern_with_a_lookbehind_per_alternative_matched(
    text: str,
) -> None:
    got = [(m.span(), m.groupdict()) for m in detectors._PHONE.finditer(text)]
    assert got == [(m.span(), m.groupdict()) for m in _PHONE_PLAIN.finditer(text)]
