"""The native scanner (``sluice_native``, built from ``native/``) against the Python code it
stands in for. The detectors: ``Scanner.find`` (spans and raw extents, from any position) and
the streaming redactor (every push and the close, for any split of the text into deltas, any
batch size, with and without labels) give exactly what the Python path gives, on text rich in
entities, look-alikes, multi-byte characters and lone surrogates. The injection model's
features and weights (``WordModel``): the same logit for any text; the injection anchors
(``AnchorScan``): the same positions. The Python path is the reference.

The README's test command builds and installs the native scanner (``hack/test.sh``), so these
tests run against it in CI; ``test_the_native_scanner_is_installed`` fails where it is missing
rather than letting the rest pass without comparing anything."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import sluice_native
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice_sidecar.guardrails import detectors, injection, injection_model, native
from sluice_sidecar.guardrails.detectors import ENTITIES, Scanner
from sluice_sidecar.guardrails.holdback import HoldbackRedactor, Released

from .test_holdback_incremental import PIECES, split

DENY = re.compile(r"(?i)project bluebird")
GREEDY = re.compile(r"a[^.]*b")  # longer than any window: as wrong in both paths
#: Scanners as ``(entities, deny patterns, window)``: the built-in detectors, with and without
#: a policy's deny patterns (Python regexes the native redactor calls back for).
Spec = tuple[list[str], list[tuple[str, re.Pattern[str]]], int]
ALL = sorted(ENTITIES)
ENTITY_SETS: list[Spec] = [
    (ALL, [], 64),
    (["EMAIL", "IP_ADDRESS", "API_KEY"], [], 64),
    (["CREDIT_CARD", "PHONE", "US_SSN", "IBAN"], [], 64),
    (["PHONE"], [], 64),
    (["CREDIT_CARD", "IBAN"], [], 64),
    (ALL, [("p#0", DENY)], 32),
    (ALL, [("p#0", DENY), ("p#1", GREEDY)], 8),
    (["CREDIT_CARD", "PHONE", "US_SSN", "IBAN"], [("p#0", DENY)], 64),
]
MORE = [
    "Karte: ",
    "my number is ",
    "T\u00e9l. ",
    "m\u00f3vil ",
    "\ud800",  # a lone surrogate (JSON "\ud800" decodes to one)
    "\udfff9",
    "\u2014",
    "\u201c",
    "\u0663\u0664",
    "DE89 3704 0044 0532 0130 00",
    "078-05-1120",
    "+49 (0)30 1234567",
    "020 7946 0958 ext. 12",
    "25.371217",
    "4111-1111-1111-1111",
    "6011 0009 9013 9424 2025",
    "1::",
    "::ffff",
    "a" * 70 + "@",
    "5" * 25,
]
TEXT = st.lists(
    st.sampled_from(PIECES + MORE)
    | st.text(alphabet="0123456789 -.@:+()/#,abcdefxAB_k\u00e9\u2014", max_size=8),
    max_size=30,
).map("".join)


def _pair(spec: Spec) -> tuple[Scanner, Scanner]:
    entities, extra, window = spec
    native = Scanner(entities, extra, window)
    python = Scanner(entities, extra, window, native=False)
    assert native.native is not None and python.native is None
    return native, python


def test_the_native_scanner_is_installed() -> None:
    assert native.module() is not None, (
        "sluice_native is not installed: build it with `pip wheel ./native -w build/native-wheel`"
        " and install that wheel (hack/test.sh does; it needs cargo)"
    )
    assert Scanner(ENTITIES).native is not None


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXT, st.integers(0, 40), st.sampled_from(range(len(ENTITY_SETS))))
def test_find_is_the_python_find(text: str, pos: int, which: int) -> None:
    native, python = _pair(ENTITY_SETS[which])
    pos = min(pos, len(text))
    got_extents: list[tuple[int, int]] = []
    want_extents: list[tuple[int, int]] = []
    got = native.find(text, pos, got_extents)
    assert got == python.find(text, pos, want_extents), text
    assert got_extents == want_extents, text
    assert [type(s) for s in got] == [detectors.Span] * len(got)


def _same_stream(spec: Spec, chunks: list[str], labels: frozenset[str] | None, batch: int) -> None:
    native, python = _pair(spec)
    new = HoldbackRedactor(native, labels, batch=batch)
    old = HoldbackRedactor(python, labels, batch=batch)
    assert new.stepper != new.step  # the native redactor's own step
    for i, chunk in enumerate(chunks):
        assert new.stepper(chunk) == old.step(chunk), (i, chunks)
        assert new.pending == old.pending
    assert new.close() == old.close(), chunks
    assert new.closed and old.closed


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    TEXT,
    st.lists(st.integers(0, 600), max_size=40),
    st.sampled_from(range(len(ENTITY_SETS))),
    st.sampled_from([1, 4, 32]),
)
def test_every_push_releases_what_the_python_redactor_released(
    text: str, cuts: list[int], which: int, batch: int
) -> None:
    _same_stream(ENTITY_SETS[which], split(text, cuts), None, batch)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXT, st.integers(1, 6), st.data())
def test_small_deltas_with_labels(text: str, size: int, data: st.DataObject) -> None:
    labels = data.draw(st.none() | st.frozensets(st.sampled_from([*ALL, "deny:p#0"])))
    chunks = [text[i : i + size] for i in range(0, len(text), size)]
    chunks = [c for chunk in chunks for c in (chunk, "")]  # push("") asks again
    _same_stream(data.draw(st.sampled_from(ENTITY_SETS)), chunks, labels, 32)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PIECES + MORE), min_size=1, max_size=12), st.integers(1, 5))
def test_runs_longer_than_a_reach(pieces: list[str], size: int) -> None:
    text = "k" * 500 + "".join(pieces) + "7" * 90 + " " + "".join(pieces) + "a1" * 350
    _same_stream((ALL, [], 64), [text[i : i + size] for i in range(0, len(text), size)], None, 4)


def test_bytes_split_inside_characters_and_a_card_over_many_deltas() -> None:
    text = "Caf\u00e9 \u2014 Karte 4111 1111 1111 1111, bob@example.com \U0001f4b3 done."
    data = text.encode()
    native, python = _pair((ALL, [], 64))
    new, old = HoldbackRedactor(native), HoldbackRedactor(python)
    got, want = [], []
    for i in range(0, len(data), 3):
        got.append(new.push_bytes(data[i : i + 3]))
        want.append(old.push_bytes(data[i : i + 3]))
    got.append(new.close())
    want.append(old.close())
    assert got == want
    released = "".join(r.text for r in got)
    assert released == "Caf\u00e9 \u2014 Karte [CREDIT_CARD], [EMAIL] \U0001f4b3 done."
    assert [s.entity for r in got for s in r.spans] == ["CREDIT_CARD", "EMAIL"]


def test_push_after_close_raises_as_the_python_path_does() -> None:
    redactor = HoldbackRedactor(Scanner(ENTITIES))
    assert redactor.close() == Released("")
    try:
        redactor.stepper("more text than a batch holds, more than thirty-two characters")
    except RuntimeError as e:
        assert "after close" in str(e)
    else:
        raise AssertionError("push after close did not raise")


def test_deny_patterns_are_matched_in_python_for_the_native_scan() -> None:
    deny = [("p#0", DENY)]
    scanner = Scanner(ENTITIES, deny, window=32)
    assert scanner.native is not None
    text = "Project Bluebird: card 4111 1111 1111 1111, then nothing"
    assert scanner.find(text) == Scanner(ENTITIES, deny, window=32, native=False).find(text)
    assert [s.entity for s in scanner.find(text)] == ["deny:p#0", "CREDIT_CARD"]
    redactor = HoldbackRedactor(scanner)
    assert redactor.stepper != redactor.step  # streamed natively, deny patterns called back
    out = [redactor.stepper(text[i : i + 3])[0] for i in range(0, len(text), 3)]
    assert "".join(out) + redactor.close().text == "[REDACTED]: card [CREDIT_CARD], then nothing"


def test_turned_off_by_the_environment() -> None:
    code = (
        "from sluice_sidecar.guardrails.detectors import Scanner, ENTITIES;"
        "from sluice_sidecar.guardrails.native import scanning;"
        "from sluice_sidecar.guardrails import injection, injection_model;"
        "import sys;"
        "print(Scanner(ENTITIES).native is None, injection._native_anchors() is None,"
        " injection_model.load().native is None, 'sluice_native' in sys.modules, scanning())"
    )
    env = {**os.environ, "SLUICE_NATIVE_SCAN": "0"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "True True True False Python (SLUICE_NATIVE_SCAN=0)"
    assert native.scanning() == f"native (sluice_native {sluice_native.__version__})"


def test_loaded_only_when_a_policy_needs_it() -> None:
    """Importing the sidecar never loads the extension (about 0.6 MB of code a sidecar without
    a guardrail policy has no use for); the first scanner a policy builds does, and the start-up
    line says which of the two it is."""
    code = (
        "import sys; import sluice_sidecar.main, sluice_sidecar.app;"
        "from sluice_sidecar.guardrails import native;"
        "from sluice_sidecar.guardrails.detectors import Scanner, ENTITIES;"
        "print('sluice_native' in sys.modules, native.scanning(), sep='|');"
        "print(Scanner(ENTITIES).native is not None, 'sluice_native' in sys.modules,"
        " native.scanning(), sep='|')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    version = sluice_native.__version__
    assert out.stdout.splitlines() == [
        f"False|native (sluice_native {version}, loaded when a guardrail policy first needs it)",
        f"True|True|native (sluice_native {version})",
    ]


_MODEL = injection_model.load()
#: The same model in Python (``load()``'s keeps its weights in the native twin only).
_PYTHON = injection_model.from_document(injection_model.read_document(), verify=False)
_VOCAB = sorted(_PYTHON.weights)[:: max(1, len(_PYTHON.weights) // 300)]
WORDS = st.lists(
    st.sampled_from([w for v in _VOCAB for w in v.split()] + sorted(injection_model._NEGATIONS))
    | st.text(
        alphabet="abcdeIgnorPvs_019 .,'!?\n-\u00e9\u0142\u00b2\u0301\u65e5\u2014", max_size=10
    )
    | st.sampled_from(["\ud800", "\u00c9cole", "\u00e9t\u00e9", "na\u0308ive"]),
    max_size=60,
).map(" ".join)


def test_the_native_word_model_is_loaded() -> None:
    assert _MODEL.native is not None
    assert _MODEL.weights == {} and len(_PYTHON.weights) > 1000  # one copy of the weights
    # read by the native scanner from the same file: the same numbers
    assert (_MODEL.bias, _MODEL.min_features) == (_PYTHON.bias, _PYTHON.min_features)


@settings(max_examples=400, deadline=None)
@given(WORDS)
def test_word_model_logit_is_the_python_one(text: str) -> None:
    python = _PYTHON
    assert python.native is None
    assert _MODEL.logit(text) == python.logit(text)
    got = _MODEL.native.total(text)
    if text.isascii():
        assert got is not None
        found = injection_model.features(text)
        assert got == (sum(_PYTHON.weights.get(f, 0) for f in found), len(found))
    else:
        assert got is None  # Unicode words: found through the text's ASCII twin
        found = injection_model.features(text)
        assert _MODEL.native.total_twin(text, injection_model.ascii_twin(text)) == (
            sum(_PYTHON.weights.get(f, 0) for f in found),
            len(found),
        )


def test_the_native_anchor_scan_is_loaded() -> None:
    assert injection._native_anchors() is not None


ANCHOR_TEXT = st.lists(
    st.sampled_from(
        sorted({*injection._PERSONA_WORDS, *injection._BY_ANCHOR, "you are now", "ignore all"})
    )
    | st.sampled_from([" ", ".", "[", "]", "2", "22", "_", "-", "'", "\n", "<|", "###"])
    | st.sampled_from(["\u00e9", "\u0142", "\u00b2", "\u20ac", "\u00b0", "\u0301", "\ud800"])
    | st.text(alphabet="abdnoy2[ _.<|#\u00e9\u65e5\u00b2\u2014", max_size=4),
    max_size=40,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(ANCHOR_TEXT)
def test_anchor_scan_is_the_python_one(text: str) -> None:
    """Non-ASCII text is scanned as its ASCII twin (``injection_model.ascii_twin``)."""
    got = injection._native_anchors().scan(text)
    if text.isascii():
        assert got == injection._scan_anchors_python(text)
    else:
        assert got is None  # the native scan takes ASCII text only
    assert injection._scan_anchors(text) == injection._scan_anchors_python(text)


class _GivesUp:
    """A native engine whose matcher gives up (as PCRE2 does when its JIT stack overflows)."""

    def find(self, text: str, pos: int = 0, extents: object = None) -> list[object]:
        raise RuntimeError("native scan failed: JIT stack limit reached")


def test_a_native_scan_that_gives_up_is_redone_in_python() -> None:
    scanner = Scanner(ENTITIES)
    scanner._native = _GivesUp()
    text = "Card 4111 1111 1111 1111, mail bob@example.com"
    extents: list[tuple[int, int]] = []
    want: list[tuple[int, int]] = []
    assert scanner.find(text, 0, extents) == Scanner(ENTITIES, native=False).find(text, 0, want)
    assert extents == want and want


def test_a_pattern_the_engine_cannot_run_byte_by_byte_is_refused() -> None:
    """The engine matches byte by byte: sound only for ASCII classes that are not negated."""
    for pattern in (r"[^0-9]\d{4}", r"\d.\d", "caf\u00e9 \\d"):
        detector = ("CREDIT_CARD", "card", pattern, "0123456789", "digit", None)
        try:
            sluice_native.Engine([detector], [], "[0-9]", "[ ]", {}, 32, bool, bool, detectors.Span)
        except ValueError as e:
            assert "ASCII-only" in str(e)
        else:
            raise AssertionError(f"{pattern!r} was accepted")
    assert detectors._native_engine_of(sluice_native, Scanner(ENTITIES)._detectors, []) is not None


def test_an_installed_scanner_that_does_not_load_is_logged_and_python_scans(
    tmp_path: Path,
) -> None:
    """A wheel built for another machine: found, but its import fails. The guardrails scan in
    Python, one warning says why and what to do, and the start-up line says so too."""
    broken = tmp_path / "sluice_native"
    broken.mkdir()
    (broken / "__init__.py").write_text('raise ImportError("wrong ELF class: ELFCLASS32")\n')
    code = (
        "import logging; logging.basicConfig(format='%(levelname)s %(message)s');"
        "from sluice_sidecar.guardrails import native;"
        "from sluice_sidecar.guardrails.detectors import Scanner, ENTITIES;"
        "print(Scanner(ENTITIES).native is None, native.module() is None, native.scanning(),"
        " sep='|')"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == (
        "True|True|Python (the native scanner sluice_native does not load; see the warning)"
    )
    warnings = [line for line in out.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, out.stderr
    assert "ELFCLASS32" in warnings[0] and "Reinstall the sluice-native wheel" in warnings[0]


def test_a_weights_file_the_native_model_cannot_read_says_which_and_why(tmp_path: Path) -> None:
    cases = {
        "missing.json": None,
        "weight.json": (
            '{"bias": 0.5, "min_features": 3, "weights": {"ignore": "heavy"}}',
            "is not an integer",
        ),
        "bias.json": ('{"min_features": 3, "weights": {}}', "no number at bias"),
        "table.json": ('{"bias": 0.5, "min_features": 3, "weights": [1]}', "expected an object"),
        "trailing.json": ('{"bias": 0.5, "min_features": 3, "weights": {}} {}', "trailing"),
    }
    for name, case in cases.items():
        path = tmp_path / name
        why = name
        if case is not None:
            path.write_text(case[0])
            why = case[1]
        try:
            sluice_native.WordModel.load(str(path), [], 3)
        except ValueError as e:
            assert why in str(e) and str(path) in str(e), (name, str(e))
        else:
            raise AssertionError(f"{path} was read")


def test_the_native_model_holds_every_weight_of_the_file(tmp_path: Path) -> None:
    """The weights live in one compact table (every feature's text in one buffer, an index
    into it), filled from the file as it is read: every feature of the committed file is in
    it, a table larger than the reader's first guess grows and keeps every weight, and a
    feature the file names twice has its last weight, as Python's ``json`` reads it."""
    _, _, committed = sluice_native.WordModel.load(str(injection_model.PATH), [], 3)
    assert committed.features == len(_PYTHON.weights) > 1000
    many = {f"w{i}": i for i in range(20_000)}
    body = ", ".join(f'"{k}": {v}' for k, v in many.items())
    path = tmp_path / "many.json"
    path.write_text(f'{{"bias": 0.5, "min_features": 1, "weights": {{{body}, "w7": -7}}}}')
    bias, min_features, model = sluice_native.WordModel.load(str(path), [], 3)
    assert (bias, min_features, model.features) == (0.5, 1, 20_000)
    for i in (0, 1, 8191, 8192, 19_999):
        assert model.total(f"w{i}") == (i, 1)
    assert model.total("w7 w19999 nothing") == (-7 + 19_999, 5)  # 3 words, 2 pairs
