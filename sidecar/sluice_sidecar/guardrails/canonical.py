"""Canonical text for the prompt-injection scan: one spelling for the many ways to hide words.

Owns ``canonicalize``: Unicode NFKC (full-width and mathematical letters, ligatures), removal of
invisible and direction-control characters (zero-width space/joiner, soft hyphen, bidi
overrides, variation selectors), Unicode "tag" characters decoded to the ASCII they smuggle,
look-alike letters folded to Latin (Cyrillic, Greek, Armenian, small capitals), accents
stripped, case folded, whitespace collapsed, letter-spaced words joined (``i g n o r e`` →
``ignore``) and embedded Base64 payloads decoded and appended (twice nested at most). It also
counts the hiding it undid; a hidden instruction is more suspicious than a plain one.

The result is only ever scanned, never sent anywhere: folding Cyrillic turns Russian into
nonsense, which is fine for a scan view. Work is linear in the text: ASCII text skips the
Unicode steps, and Base64 decoding is bounded (``MAX_PAYLOADS`` runs of at most
``MAX_PAYLOAD_CHARS`` characters, ``MAX_DECODED_CHARS`` decoded in all). Pure: no IO.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from dataclasses import dataclass
from typing import Final

MAX_PAYLOADS: Final = 8
MAX_PAYLOAD_CHARS: Final = 8192
MAX_DECODED_CHARS: Final = 16384
MAX_DEPTH: Final = 2

_INVISIBLE_RANGES: Final = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE001F),
    (0xE007F, 0xE007F),
    (0xE0100, 0xE01EF),
)
_TAG_FIRST, _TAG_LAST = 0xE0020, 0xE007E  # "tag" characters mirroring printable ASCII

# Look-alikes NFKC leaves alone: (confusable characters, the Latin letters they stand for).
_HOMOGLYPHS: Final = (
    # Cyrillic
    ("аврсеёкмнорстухѕіїјԁԛԝһӏ", "abpceekmhopctyxsiijdqwhl"),
    ("АВЕКМНОРСТУХЅІЇЈӀԚԜ", "ABEKMHOPCTYXSIIJIQW"),
    # Greek
    ("αγεικνορτυχω", "ayeikvoptuxw"),
    ("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧ", "ABEZHIKMNOPTYX"),  # noqa: RUF001
    # Armenian, Latin variants, small capitals
    ("ոսօցհɡıɩ", "nuoghgii"),  # noqa: RUF001
    ("ᴀʙᴄᴅᴇɢʜɪᴊᴋʟᴍɴᴏᴘʀꜱᴛᴜᴠᴡʏᴢ", "abcdeghijklmnoprstuvwyz"),
)


def _table() -> dict[int, int | None]:
    table: dict[int, int | None] = {}
    for lo, hi in _INVISIBLE_RANGES:
        for cp in range(lo, hi + 1):
            table[cp] = None
    for cp in range(_TAG_FIRST, _TAG_LAST + 1):
        table[cp] = cp - 0xE0000
    for quote in "\u2018\u2019\u201a\u201b\u02bc\u2032\uff07":
        table[ord(quote)] = ord("'")
    for quote in "\u201c\u201d\u201e\u201f\u2033\uff02":
        table[ord(quote)] = ord('"')
    for src, dst in _HOMOGLYPHS:
        assert len(src) == len(dst)
        for a, b in zip(src, dst, strict=True):
            table[ord(a)] = ord(b)
    return table


_TABLE: Final = _table()


def _charset(codepoints: list[int]) -> str:
    """A regex character class body matching exactly ``codepoints``."""
    out: list[str] = []
    cps = sorted(codepoints)
    i = 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        out.append(f"\\U{cps[i]:08x}" + (f"-\\U{cps[j]:08x}" if j > i else ""))
        i = j + 1
    return "".join(out)


_SPECIAL = re.compile(f"[{_charset(list(_TABLE))}]")
_INVISIBLE_CLASS: Final = "".join(
    f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in (*_INVISIBLE_RANGES, (_TAG_FIRST, _TAG_LAST))
)
_HIDDEN_IN_WORD = re.compile(f"(?<=\\w)[{_INVISIBLE_CLASS}]+(?=\\w)")
_TAGS = re.compile(f"[\\U{_TAG_FIRST:08x}-\\U{_TAG_LAST:08x}]+")
_LOOKALIKES: Final = "".join(src for src, _ in _HOMOGLYPHS)
_MIXED_SCRIPT = re.compile(f"[A-Za-z][{_LOOKALIKES}]|[{_LOOKALIKES}][A-Za-z]")
_COMBINING = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_INVISIBLE_ANY = re.compile(f"[{_INVISIBLE_CLASS}]")
_LOOKALIKE_ANY = re.compile(f"[{_LOOKALIKES}]")
_LETTER_GATE = re.compile(r"[ .\-_*|][^\W\d_][ .\-_*|][^\W\d_][ .\-_*|]")
#: A letter-spaced word (group 2) and the character before it (group 1; searched in
#: ``" " + text``): the words of ``(?<![^\W_])(?:[^\W\d_][ .\-_*|]){2,}[^\W\d_](?![^\W_])``,
#: found faster (a pattern that starts with a character class is tried only where the class
#: matches; a lookbehind first is tried at every position). ASCII text uses the ``re.ASCII``
#: twin (the same classes there; a table look-up per character).
_LETTER_SPACED_BODY = r"([\W_])((?:[^\W\d_][ .\-_*|]){2,}[^\W\d_])(?![^\W_])"
_LETTER_SPACED = re.compile(_LETTER_SPACED_BODY)
_LETTER_SPACED_ASCII = re.compile(_LETTER_SPACED_BODY, re.ASCII)


def _join_letters(m: re.Match[str]) -> str:
    return m.group(1) + m.group(2)[::2]


#: A Base64 run (group 1), matched with the character before it (searched in ``" " + text``):
#: the runs of ``(?<![A-Za-z0-9+/_=-])[A-Za-z0-9+/_-]{16,}={0,2}``, found faster (a pattern
#: that starts with a character class is tried only where the class matches; a lookbehind
#: first is tried at every position).
_BASE64 = re.compile(r"[^A-Za-z0-9+/_=-]([A-Za-z0-9+/_-]{16,}={0,2})")


@dataclass(frozen=True, slots=True)
class Canonical:
    """The scan view of a text and the hiding that was undone to get it."""

    text: str
    #: Where decoded payloads start in ``text`` (``len(text)`` when there are none).
    decoded_at: int
    #: Invisible characters inside words, plus tag characters anywhere.
    invisible: int = 0
    #: Words mixing Latin letters and look-alikes from another script.
    homoglyphs: int = 0
    #: Base64 payloads decoded.
    decoded: int = 0
    #: Letter-spaced words joined.
    spaced: int = 0

    @property
    def obfuscated(self) -> bool:
        return bool(self.invisible or self.homoglyphs or self.decoded or self.spaced)


@dataclass(slots=True)
class _Budget:
    payloads: int = MAX_PAYLOADS
    chars: int = MAX_DECODED_CHARS


def _fold(text: str) -> tuple[str, int, int]:
    """NFKC, invisibles removed, tags decoded, look-alikes folded, accents stripped."""
    if text.isascii():
        return text, 0, 0
    text = unicodedata.normalize("NFKC", text)
    invisible = homoglyphs = 0
    if _SPECIAL.search(text):
        if _INVISIBLE_ANY.search(text):
            tagged = sum(len(run) for run in _TAGS.findall(text))
            invisible = len(_HIDDEN_IN_WORD.findall(text)) + tagged
            if tagged:  # smuggled ASCII is a text of its own: keep it apart from its neighbours
                text = _TAGS.sub(lambda m: f" {m.group()} ", text)
        if _LOOKALIKE_ANY.search(text):
            homoglyphs = len(_MIXED_SCRIPT.findall(text))
        text = text.translate(_TABLE)
    if not text.isascii():
        decomposed = unicodedata.normalize("NFD", text)
        if _COMBINING.search(decomposed):
            text = _COMBINING.sub("", decomposed)
    return text, invisible, homoglyphs


def _printable(text: str) -> bool:
    if not text:
        return False
    printable = sum(ch.isprintable() or ch in "\n\r\t" for ch in text)
    letters = sum(ch.isalpha() or ch == " " for ch in text)
    return printable >= 0.95 * len(text) and letters >= 0.5 * len(text)


def _payloads(text: str, budget: _Budget) -> list[str]:
    """Base64 runs of ``text`` that decode to readable UTF-8 text."""
    out: list[str] = []
    for m in _BASE64.finditer(" " + text):
        if budget.payloads <= 0 or budget.chars <= 0:
            break
        run = m.group(1).rstrip("=")[:MAX_PAYLOAD_CHARS]
        run = run[: len(run) - len(run) % 4] if len(run) % 4 == 1 else run
        if "-" in run or "_" in run:
            run = run.replace("-", "+").replace("_", "/")
        try:
            raw = base64.b64decode(run + "=" * (-len(run) % 4), validate=True)
            decoded = raw.decode("utf-8")
        except (binascii.Error, ValueError):
            continue
        if not _printable(decoded):
            continue
        budget.payloads -= 1
        decoded = decoded[: budget.chars]
        budget.chars -= len(decoded)
        out.append(decoded)
    return out


def _canonical(text: str, depth: int, budget: _Budget) -> Canonical:
    folded, invisible, homoglyphs = _fold(text)
    payloads = _payloads(folded, budget) if depth > 0 and len(folded) >= 16 else []
    view = folded.casefold()
    spaced = 0
    if _LETTER_GATE.search(view):
        spacing = _LETTER_SPACED_ASCII if view.isascii() else _LETTER_SPACED
        joined, spaced = spacing.subn(_join_letters, " " + view)
        view = joined[1:]
    view = " ".join(view.split())
    decoded_at = len(view)
    decoded = 0
    for payload in payloads:
        inner = _canonical(payload, depth - 1, budget)
        view += " \n " + inner.text
        invisible += inner.invisible
        homoglyphs += inner.homoglyphs
        decoded += 1 + inner.decoded
        spaced += inner.spaced
    return Canonical(view, decoded_at, invisible, homoglyphs, decoded, spaced)


def canonicalize(text: str) -> Canonical:
    """The scan view of ``text`` (see the module docstring)."""
    return _canonical(text, MAX_DEPTH, _Budget())
