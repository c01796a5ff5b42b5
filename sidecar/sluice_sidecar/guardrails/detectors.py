"""Personal-data and secret detectors: text → ``Span(start, end, entity)``, validated.

Owns the entity kinds of ``GuardrailPolicy.spec.{input,output}.pii.entities`` (EMAIL, PHONE,
CREDIT_CARD, IBAN, US_SSN, IP_ADDRESS, API_KEY), how each is found (a precompiled regular
expression per shape, a validator that rejects look-alikes) and ``Scanner``, the compiled search
for the kinds one policy configures plus its deny patterns. Only configured kinds are searched,
so a number that merely looks like another kind (an NHS number is shaped like a US phone number)
is acted on only when that kind is listed. Pure: no IO.

False positives are kept down by validation, not by looser patterns:

* CREDIT_CARD: a whole run of 12-19 digits (single space or dash separators; printed groups
  start with four digits and are at most six long), a known issuer prefix (IIN) with a length
  it uses and the Luhn checksum; a failing run is retried at shorter group boundaries. A valid
  EAN-13 barcode is not a card, and a bare 12-digit run (Maestro) is one only after a card
  word (``Karte: 503846999434``).
* IBAN: a known country code with its exact length and the ISO 7064 mod-97 checksum.
* US_SSN: ``AAA-GG-SSSS`` (dashes or spaces, the same twice); area not 000, 666 or 9xx,
  group not 00, serial not 0000. Bare 9-digit runs are not SSNs (too many order numbers).
* PHONE: ``+`` international (8-15 digits, E.164), NANP ``(555) 123-4567`` / ``555-123-4567``
  (also ``1-``/``001-`` prefixed), trunk-prefix national numbers ``020 7946 0958`` /
  ``(0115) 4960391`` / ``02124/15868344`` / ``01 23 45 67 89`` (8-13 digits), each with an
  optional extension (``x1234``, ``ext. 12``). An unformatted digit run without ``+`` (8-15
  digits) is a phone only right after a phone word in one of the corpus languages (``Tel.:``,
  ``call me on``, ``Handynummer``, ``portable``, ``cellulare``, ``móvil``, ``bel``, …) with no
  digit or sentence end between: validators read at most ``CONTEXT_BEFORE`` characters back.
* IP_ADDRESS: dotted IPv4 with octets ≤ 255; IPv6 checked by ``ipaddress`` and at least four
  hex digits (so ``a::b`` and clock times are not addresses).
* EMAIL: RFC-5321-sized local part and dotted domain with an alphabetic TLD.
* API_KEY: ``sk-…`` / ``sk-proj-…`` / ``sk-ant-…`` (with a digit and a letter, so ``sk-learn``
  is not a key), ``AIza…`` (39), ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_``, ``github_pat_``,
  ``AKIA``/``ASIA`` (20), Slack ``xox?-``.

A span inside another of its kind is dropped (two patterns found one number), and so is a phone
or SSN inside a card or IBAN and a card inside an IBAN: the checksum explains those digits.
Accuracy against Presidio on a multilingual corpus: ``bench/pii_accuracy.py``; CPU cost per
KB: ``bench/guardrail_cost.py``. Text with no digit, ``@``, ``:`` or key prefix is not scanned
at all, and the EMAIL, IPv6 and API_KEY patterns run only around their markers.

Streaming support (``Scanner.settled``): each pattern only ever reads characters of its own
"run" class (digits and separators for a card, and so on) plus one character after, and at most
``reach`` characters from where it starts. So a match attempt is decided as soon as a character
outside the class follows, or ``reach`` characters are in: ``settled(text)`` is the earliest
position whose attempt could still change when more text arrives. ``holdback`` never releases
text at or after it. Deny patterns (user regexes) cannot be analysed that way; for them the
policy's ``holdbackChars`` is the assumed longest match. ``StreamScan`` (``Scanner.stream()``)
is the same search over a text that grows by deltas, for ``holdback``: it keeps the settled
point and the decided candidates between deltas, so each character is scanned once by the
built-in detectors (property-tested equal to rescanning the held window at every delta), and not
at all while the new text holds no place where a match could start (``Detector.lead``) and no
marker (``Detector.trigger``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final, NamedTuple

from . import native

EMAIL: Final = "EMAIL"
PHONE: Final = "PHONE"
CREDIT_CARD: Final = "CREDIT_CARD"
IBAN: Final = "IBAN"
US_SSN: Final = "US_SSN"
IP_ADDRESS: Final = "IP_ADDRESS"
API_KEY: Final = "API_KEY"
ENTITIES: Final = frozenset({EMAIL, PHONE, CREDIT_CARD, IBAN, US_SSN, IP_ADDRESS, API_KEY})
#: Entity label prefix of deny-pattern matches (``deny:<key>``).
DENY_PREFIX: Final = "deny:"
#: How far before a match a validator may read (the streaming redactor keeps at least this
#: much released text as left context).
CONTEXT_BEFORE: Final = 32


class Span(NamedTuple):
    """``text[start:end]`` is an ``entity``."""

    start: int
    end: int
    entity: str


# --- validators ---------------------------------------------------------------------------------


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) checksum of a digit string holds."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def card_prefix_ok(digits: str) -> bool:
    """A known issuer (IIN) prefix and a length that issuer uses."""
    n = len(digits)
    p2, p4 = int(digits[:2]), int(digits[:4])
    if digits[0] == "4":  # Visa
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:  # Mastercard
        return n == 16
    if p2 in (34, 37):  # American Express
        return n == 15
    if p4 == 6011 or p2 == 65 or 644 <= int(digits[:3]) <= 649 or p2 == 62:  # Discover/UnionPay
        return 16 <= n <= 19
    if 3528 <= p4 <= 3589:  # JCB
        return 16 <= n <= 19
    if p4 in (2131, 1800):  # JCB (older 15-digit numbers)
        return n == 15
    if 300 <= int(digits[:3]) <= 305 or p2 in (36, 38, 39):  # Diners Club
        return 14 <= n <= 19
    if p2 in (50, 56, 57, 58, 67) or p4 in (6304, 6390):  # Maestro (and Laser)
        return 12 <= n <= 19
    return False


def ean13_ok(digits: str) -> bool:
    """The GTIN/EAN-13 check digit (weights 1, 3 from the left) holds."""
    total = sum((ord(ch) - 48) * (3 if i % 2 else 1) for i, ch in enumerate(digits))
    return total % 10 == 0


def card_ok(digits: str) -> bool:
    """Issuer prefix and length, Luhn, and not a product barcode: a 13-digit number that is a
    valid EAN-13 is taken for one (13-digit Visa numbers are long out of issue; barcodes are
    everywhere in shop and order text)."""
    n = len(digits)
    return (
        12 <= n <= 19
        and card_prefix_ok(digits)
        and luhn_ok(digits)
        and not (n == 13 and ean13_ok(digits))
    )


#: ISO 13616 country code → IBAN length.
IBAN_LENGTHS: Final[dict[str, int]] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def iban_ok(compact: str) -> bool:
    """``compact`` (no spaces, upper case) has its country's length and mod-97 == 1."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def ssn_ok(area: str, group: str, serial: str) -> bool:
    a = int(area)
    return a not in (0, 666) and a < 900 and group != "00" and serial != "0000"


def ipv6_ok(candidate: str) -> bool:
    # Eight groups, or "::" for the zeros left out: a clock time (10:22:33) is neither, and is
    # turned down before the (slower) parse.
    if "::" not in candidate and candidate.count(":") != 7:
        return False
    if sum(ch not in ":." for ch in candidate) < 4:
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _key_ok(body: str) -> bool:
    return any(ch.isdigit() for ch in body) and any(ch.isalpha() for ch in body)


# --- patterns -----------------------------------------------------------------------------------

#: ``\d`` and ``\w`` under ``re.ASCII``, as the ranges they stand for.
_ASCII_CLASSES: Final = {"d": "0-9", "w": "0-9A-Za-z_"}
#: Each pattern ``_ascii`` compiled, with the source it was given (for the test that holds the
#: two equal).
ASCII_SOURCES: Final[dict[re.Pattern[str], str]] = {}


def _ascii(source: str) -> re.Pattern[str]:
    r"""``re.compile(source, re.ASCII)``, with ``\d`` and ``\w`` spelled as the ranges they
    mean under ``re.ASCII`` (``[+(\d]`` becomes ``[+(0-9]``, ``\d{3}`` ``[0-9]{3}``): the same
    language, but the regex engine tests a class of literals and ranges with one bitmap
    look-up where it tests one holding a category item by item, at every character it skips
    or repeats over (unary checks: 5-6 % fewer instructions on text with personal data).
    Property-tested equal to the plain compile (``test_guardrails_detectors.py``)."""
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(source):
        ch = source[i]
        if ch == "\\":
            escaped = source[i + 1]
            if escaped in _ASCII_CLASSES:
                ranges = _ASCII_CLASSES[escaped]
                out.append(ranges if in_class else f"[{ranges}]")
            else:
                out.append(ch + escaped)
            i += 2
            continue
        if ch == "[" and not in_class:
            in_class = True
            if source.startswith("^", i + 1):  # a negated class: its "^" is no item
                ch = "[^"
                i += 1
        elif ch == "]" and in_class:
            in_class = False
        out.append(ch)
        i += 1
    pattern = re.compile("".join(out), re.ASCII)
    ASCII_SOURCES[pattern] = source
    return pattern


Validator = Callable[[re.Match[str]], "tuple[int, int] | None"]


@dataclass(frozen=True, slots=True)
class Detector:
    """One entity kind: a pattern, its validator and what streaming needs to know about it."""

    entity: str
    pattern: re.Pattern[str]
    #: The span to report for a candidate match, or None when it is a look-alike.
    validate: Validator
    #: Every character an attempt may read except the one that ends it.
    run: frozenset[str]
    #: The most characters an attempt reads from its start (lookahead included), rounded up.
    reach: int
    #: A cheap necessary condition on the text (C-speed substring tests), or None.
    hint: Callable[[str], bool] | None = None
    #: For kinds whose matches hold a rare marker (``@``, two colons at most four hex digits
    #: apart, a key prefix): the marker (at most ``TRIGGER_WIDTH`` characters).
    #: The pattern then runs only over the runs of ``run`` characters around each marker
    #: (a match lies in one, and an attempt reads one character past it at most), with the
    #: same results as over the whole text and far less work on ordinary prose.
    trigger: re.Pattern[str] | None = None
    #: For kinds without a trigger: a pattern that matches wherever a match of ``pattern``
    #: starts (a necessary condition, searched in C): a stream skips its scans while the text
    #: they would cover holds no such position (``StreamScan``).
    lead: re.Pattern[str] | None = None


_CARD = _ascii(r"\d(?<![\w.-]\d)(?<!\d[ -]\d)(?:[ -]?\d){11,18}(?!\d)")


_CARD_SEPARATORS = re.compile(r"[ -]")


def _card_groups_ok(text: str) -> bool:
    """Printed cards start with a group of four and have no group longer than six (4-4-4-4,
    4-6-5, 4-6-4, ...); an order id like ``112-4839201-9938275`` is not a card."""
    groups = _CARD_SEPARATORS.split(text)
    return len(groups) == 1 or (len(groups[0]) == 4 and max(map(len, groups)) <= 6)


#: Words that make a bare 12-digit run a (Maestro) card: ``Card: 503874464863``.
_CARD_WORDS = re.compile(
    r"(?:card|kart|carte|carta|tarjeta|cart[ãa]o|kaart|maestro|visa|mastercard)"
    r"\w*\b[^\d.!?#\n]{0,24}$"
)


def _card(m: re.Match[str]) -> tuple[int, int] | None:
    text = m.group()
    # Try the whole run, then shorter prefixes ending at a separator (a card then a year).
    digits = text.replace(" ", "").replace("-", "")
    if card_ok(digits) and _card_groups_ok(text):
        # Bare 12 digits: a reference number unless a card is named just before.
        if len(text) == 12 and not _card_context(_before(m)):
            return None
        return m.span()
    for i in range(len(text) - 1, 0, -1):
        if text[i] in " -":
            prefix = text[:i]
            digits = prefix.replace(" ", "").replace("-", "")
            if len(digits) < 12:
                break
            if card_ok(digits) and _card_groups_ok(prefix):
                return m.start(), m.start() + i
    return None


_IBAN = _ascii(
    r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]\d{2}"
    r"(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)(?![A-Za-z0-9])"
)


def _iban(m: re.Match[str]) -> tuple[int, int] | None:
    text = m.group()
    length = IBAN_LENGTHS.get(text[:2])
    if length is None:
        return None
    # The candidate may run into a following upper-case word; cut it at the country's length.
    count = 0
    for i, ch in enumerate(text):
        if ch != " ":
            count += 1
            if count == length:
                end = i + 1
                if end < len(text) and text[end] != " ":
                    return None
                return (
                    (m.start(), m.start() + end) if iban_ok(text[:end].replace(" ", "")) else None
                )
    return None


_SSN = _ascii(r"\d(?<![\w-]\d)\d\d([- ])(\d{2})\1(\d{4})(?![\w]|-\d)")


def _ssn(m: re.Match[str]) -> tuple[int, int] | None:
    area = m.string[m.start() : m.start() + 3]
    return m.span() if ssn_ok(area, m.group(2), m.group(3)) else None


#: A trailing extension: ``x1234``, `` ext. 12``.
_EXT = r"(?P<ext>[ ]?(?:x|ext\.?)[ ]?\d{1,5})?"
_PHONE = _ascii(  # starts with a character class: the regex engine skips to candidates
    # Not after a word character, "+", "." or "-" (one lookbehind for the three first
    # characters: a digit inside a number fails there, before the alternatives are tried).
    r"[+(\d](?<![\w+.-][+(\d])(?:(?<=\+)(?P<intl>[1-9][\d ().-]{6,22}\d)"
    r"|(?<=\()(?:\d{3}\)[ ]?\d{3}[ .-]\d{4}"
    r"|(?P<ptrunk>0\d{1,4}\)[ /-]?\d{2,8}(?:[ -]\d{2,8}){0,2}))"
    r"|(?<=\d)(?:\d\d(?P<nanp>[.-])\d{3}(?P=nanp)\d{4}"  # NANP after "2024 "
    r"|(?<!\d \d)(?:\d\d[ .-]\d{3}[ .-]\d{4}"  # not inside a run of digit groups
    r"|(?<=1)[ .-]?(?:\(\d{3}\)[ ]?|\d{3}[ .-])\d{3}[ .-]\d{4}"
    r"|(?<=0)01[ .-]\d{3}[ .-]\d{3}[ .-]\d{4}"
    r"|(?<=0)[1-9](?:[ .]\d{2}){4}"
    r"|(?<=0)(?P<trunk>\d{1,4}(?:[ /-]\d{3,8}){1,3}))))" + _EXT + r"(?![\w]|[.-]\d)",
)
#: ``[ .-]{2}|[().-][ .-]|\)\(|[ .-]$`` written to start with a character class (the regex
#: engine skips to it; the alternation it would try at every position).
_PHONE_SEPARATORS = re.compile(r"[ ().-](?:[ .-]|(?<=\))\(|(?<=[ .-])$)")


def _phone(m: re.Match[str]) -> tuple[int, int] | None:
    text = m.group()
    digits = _digits(text)
    if m.group("intl") is not None:
        body = m.group("intl")
        digits = _digits(body)
        if not 8 <= digits <= 15 or _PHONE_SEPARATORS.search(body.replace(") ", ")")):
            return None
        opened = body.count("(")
        if opened != body.count(")") or opened > 1:
            return None
        if opened and body.index("(") > body.index(")"):
            return None
    elif m.group("trunk") is not None or m.group("ptrunk") is not None:
        # A national number: 8-13 digits with the trunk 0 (Austria's run to 13).
        national = m.group("ptrunk") or "0" + m.group("trunk")
        if not 8 <= _digits(national) <= 13:
            return None
    return m.span()


def _digits(text: str) -> int:
    return sum(map(str.isdigit, text))


#: Phone-shaped digits that only a nearby word makes a phone number: ``Tel.: 0473 529442``,
#: ``Call me on 2942778471``, ``Mój numer komórki to 609141777``. The word must end at most
#: 24 characters before the number with no digit in between (searched in lower case).
_PHONE_LOOSE = _ascii(
    r"[(\d](?<![\w+.,/:()#-][(\d])(?:(?<=\()\d{1,5}\)[ /-]?\d)?[\d ./-]{5,18}\d"
    + _EXT
    + r"(?![\w]|[.,/-]\d)",
)
#: Searched in ``" " + before``: it matches the character before the word, where
#: ``\b(?:phone|…)`` has ``\b`` (every word starts with a letter, so that character is no
#: word character, or the start): a pattern that starts with a character class is tried only
#: where the class matches, a ``\b`` at every position.
_PHONE_WORDS = re.compile(
    r"[^\w](?:(?:phone|telephone|call\w*|mobile?|cell|hotline|fax|whatsapp|sms|text me|reach"
    r"|my number|telefon\w*|handy\w*|mobil\w*|rufnummer|rufen|anrufen|erreichbar|durchwahl"
    r"|t[ée]l[ée]phone|portable|appel\w*|joignable|cellulare|chiam\w*|tel[ée]fono"
    r"|m[óo]vil|ll[áa]m\w*|telefoon|bel|mobiel|gsm|telefone|telem[óo]vel|ligue"
    r"|zadzwo[ńn]\w*|kom[óo]rk\w*)\b|(?:t[ée]l|ph|mob|tlf)\b\.?)[^\d.!?#\n]{0,24}$"
)


def _phone_loose(m: re.Match[str]) -> tuple[int, int] | None:
    text = m.group() if m.group("ext") is None else m.string[m.start() : m.start("ext")]
    digits = _digits(text)
    if not 8 <= digits <= 15 or _PHONE_SEPARATORS.search(text.replace(") ", ")")):
        return None
    if text.count("(") != text.count(")"):
        return None
    if text.count(".") == 1 and _digits(text) == len(text) - 1:  # a decimal: 25.371217
        return None
    if not _phone_context(_before(m)):
        return None
    return m.span()


def _before(m: re.Match[str]) -> str:
    """The ``CONTEXT_BEFORE`` characters before a match."""
    start = m.start()
    return m.string[max(0, start - CONTEXT_BEFORE) : start]


def _card_context(before: str) -> bool:
    """A card word ends just before a bare 12-digit run (``before``: ``_before`` of it).
    Lower-cased here: the word patterns are lower case (a case-sensitive search is about
    three times faster than ``IGNORECASE``)."""
    return _CARD_WORDS.search(before.lower()) is not None


def _phone_context(before: str) -> bool:
    """A phone word ends just before a loose phone-shaped number (``_PHONE_WORDS``)."""
    return _PHONE_WORDS.search(" " + before.lower()) is not None


_IPV4 = _ascii(r"\d(?<![\w.]\d)\d{0,2}(?:\.\d{1,3}){3}(?![\w]|\.\d)")


def _ipv4(m: re.Match[str]) -> tuple[int, int] | None:
    for octet in m.group().split("."):
        if int(octet) > 255 or (len(octet) > 1 and octet[0] == "0"):
            return None
    return m.span()


_IPV6 = _ascii(  # starts with a character class: the regex engine skips to candidates
    r"[0-9A-Fa-f:](?<![\w:][0-9A-Fa-f:])"
    r"(?:(?<=:)[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){1,6}"
    r"|(?<!:)[0-9A-Fa-f]{0,3}(?::[0-9A-Fa-f]{0,4}){2,7})(?![\w:])",
)


#: Every IPv6 match holds two colons with at most four hex digits between them (its pattern
#: repeats ``:[0-9A-Fa-f]{0,4}`` at least twice, or once after a leading ``:``): a run of its
#: characters without that ("Card number: 4111…", "Note:") holds no match and is not scanned.
_IPV6_TRIGGER = re.compile(":[0-9A-Fa-f]{0,4}:")


def _ipv6(m: re.Match[str]) -> tuple[int, int] | None:
    return m.span() if ipv6_ok(m.group()) else None


_EMAIL = _ascii(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}"
    r"(?![A-Za-z0-9-])",
)


def _email(m: re.Match[str]) -> tuple[int, int] | None:
    text = m.group()
    local = text[: text.index("@")]
    skip = len(local) - len(local.lstrip("."))
    local = local[skip:]
    if not local or local.endswith(".") or ".." in local:
        return None
    return m.start() + skip, m.end()


_KEY = _ascii(
    r"[sAgx](?<![A-Za-z0-9_-][sAgx])(?:"
    r"(?<=s)(?P<sk>k-(?:ant-(?:[a-z]{1,10}\d\d-)?|proj-|svcacct-|admin-)?)"
    r"(?P<body>[A-Za-z0-9_-]{20,400})"
    r"|(?<=A)Iza[0-9A-Za-z_-]{35}"
    r"|(?<=g)h[pousr]_[A-Za-z0-9]{36,251}"
    r"|(?<=g)ithub_pat_[A-Za-z0-9_]{22,251}"
    r"|(?<=A)(?:KIA|SIA)[0-9A-Z]{16}"
    r"|(?<=x)ox[abprs]-[A-Za-z0-9-]{10,200}"
    r")(?![A-Za-z0-9_-])",
)
_KEY_HINT = re.compile(r"sk-|AIza|gh[pousr]_|github_pat_|AKIA|ASIA|xox")


def _key(m: re.Match[str]) -> tuple[int, int] | None:
    if m.group("sk") is not None and not _key_ok(m.group("body")):
        return None
    return m.span()


def _chars(spec: str) -> frozenset[str]:
    """The characters of a simple class spec like ``0-9 -``."""
    out: set[str] = set()
    i = 0
    while i < len(spec):
        if i + 2 < len(spec) and spec[i + 1] == "-":
            out.update(chr(c) for c in range(ord(spec[i]), ord(spec[i + 2]) + 1))
            i += 3
        else:
            out.add(spec[i])
            i += 1
    return frozenset(out)


_DIGIT = re.compile(r"\d", re.ASCII)


def _has_digit(text: str) -> bool:
    return _DIGIT.search(text) is not None


def _has_dot(text: str) -> bool:
    return "." in text


def _has_at(text: str) -> bool:
    return "@" in text


def _may_hold_ipv6(text: str) -> bool:
    return "::" in text or text.count(":") >= 7


#: Something every built-in detector's match contains: a digit (cards, IBANs, SSNs, phones,
#: IPv4), ``@`` (email), ``:`` (IPv6) or a key prefix. Text without any is not scanned.
#: Written to start with a character class (``[\d@:]|sk-|AIza|…`` as one): the regex engine
#: then skips to the characters in it instead of trying every alternative at every position.
_ANY = _ascii(
    r"[\d@:sAgx](?:(?<=[\d@:])|(?<=s)k-|(?<=A)(?:Iza|KIA|SIA)|(?<=g)(?:h[pousr]_|ithub_pat_)"
    r"|(?<=x)ox)"
)

#: Where a card, SSN, phone or IPv4 match may start: their patterns start with ``[+(\d]`` and
#: none starts at a digit that follows a word character (each one's lookbehind says so).
_NUMBER_LEAD = re.compile(r"[+(0-9](?<![A-Za-z0-9_][0-9])")
_EVERYWHERE = re.compile("")
#: Where an IBAN match may start: its pattern's first four characters.
_IBAN_LEAD = _ascii(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]\d{2}")
#: The longest text a trigger matches (``github_pat_``): a trigger that starts this far from
#: the end of a text lies in it whole.
TRIGGER_WIDTH: Final = 11


DETECTORS: Final[dict[str, tuple[Detector, ...]]] = {
    CREDIT_CARD: (Detector(CREDIT_CARD, _CARD, _card, _chars("0-9 -"), 40, _has_digit,
                           lead=_NUMBER_LEAD),),
    IBAN: (Detector(IBAN, _IBAN, _iban, _chars("A-Z0-9 "), 48, _has_digit, lead=_IBAN_LEAD),),
    US_SSN: (Detector(US_SSN, _SSN, _ssn, _chars("0-9 -"), 16, _has_digit, lead=_NUMBER_LEAD),),
    PHONE: (
        Detector(PHONE, _PHONE, _phone, _chars("0-9 ().+/xet-"), 50, _has_digit,
                 lead=_NUMBER_LEAD),
        Detector(PHONE, _PHONE_LOOSE, _phone_loose, _chars("0-9 ().,/xet-"), 50, _has_digit,
                 lead=_NUMBER_LEAD),
    ),
    IP_ADDRESS: (
        Detector(IP_ADDRESS, _IPV4, _ipv4, _chars("0-9."), 20, _has_dot,
                 lead=_NUMBER_LEAD),
        Detector(IP_ADDRESS, _IPV6, _ipv6, _chars("0-9A-Fa-f:"), 44, _may_hold_ipv6,
                 _IPV6_TRIGGER),
    ),
    EMAIL: (Detector(EMAIL, _EMAIL, _email, _chars("A-Za-z0-9._%+@-"), 610, _has_at,
                     re.compile("@")),),
    API_KEY: (
        # No hint: the trigger search is that test already.
        Detector(API_KEY, _KEY, _key, _chars("A-Za-z0-9_-"), 430, None, _KEY_HINT),
    ),
}  # fmt: skip


#: Which validator of the native scanner is each Python one's twin, and which hint.
_NATIVE_VALIDATORS: Final[dict[Validator, str]] = {
    _card: "card", _iban: "iban", _ssn: "ssn", _phone: "phone", _phone_loose: "phone_loose",
    _ipv4: "ipv4", _ipv6: "ipv6", _email: "email", _key: "key",
}  # fmt: skip
_NATIVE_HINTS: Final[dict[Callable[[str], bool] | None, str]] = {
    None: "",
    _has_digit: "digit",
    _has_dot: "dot",
    _may_hold_ipv6: "ipv6",
    _has_at: "at",
}
#: Native engines by the entity kinds they search (immutable, so scanners share them).
_ENGINES: dict[frozenset[str], Any] = {}


def _native_engine(
    entities: frozenset[str], detectors: Sequence[Detector], tails: Sequence[tuple[str, int]]
) -> Any:
    """The native twin of a scanner's built-in detectors, or None (not installed, turned off,
    or no detector). The Python detectors hand over their own pattern sources."""
    ext = native.module()
    if not detectors or ext is None:
        return None
    engine = _ENGINES.get(entities, False)
    if engine is False:
        try:
            engine = _native_engine_of(ext, detectors, tails)
        except ValueError:  # a pattern the native engine cannot run as Python does: Python's
            engine = None
        _ENGINES[entities] = engine
    return engine


def _native_engine_of(
    ext: ModuleType, detectors: Sequence[Detector], tails: Sequence[tuple[str, int]]
) -> Any:
    """``sluice_native.Engine`` of ``detectors``; ValueError when it refuses a pattern (it runs
    only ASCII patterns without negated classes or ``.``, byte by byte: see native/src/scan.rs)."""
    return ext.Engine(
        [
            (
                d.entity,
                _NATIVE_VALIDATORS[d.validate],
                d.pattern.pattern,
                "".join(sorted(d.run)),
                _NATIVE_HINTS[d.hint],
                None if d.trigger is None else d.trigger.pattern,
            )
            for d in detectors
        ],
        list(tails),
        _ANY.pattern,
        _PHONE_SEPARATORS.pattern,
        IBAN_LENGTHS,
        CONTEXT_BEFORE,
        _card_context,
        _phone_context,
        Span,
    )


#: Kinds that only a checksum-proved span of another kind can contain (and explain).
_SHAPE_ONLY: Final = frozenset({PHONE, US_SSN})


def _resolve(spans: list[Span]) -> list[Span]:
    """Drop spans (sorted by start, longest first) that say nothing new: one inside an earlier
    span of the same entity (two patterns of one kind found the same number); a phone or SSN
    inside a card or IBAN, and a card inside an IBAN (``GB64 RJTN 5767 4855 2881 86`` holds a
    phone-shaped and a Maestro-shaped run; the IBAN's mod-97 checksum covers them all)."""
    reach: dict[str, int] = {}
    out: list[Span] = []
    for span in spans:
        end = span.end
        if reach.get(span.entity, -1) >= end or reach.get(IBAN, -1) >= end:
            continue
        if span.entity in _SHAPE_ONLY and reach.get(CREDIT_CARD, -1) >= end:
            continue
        out.append(span)
        reach[span.entity] = max(reach.get(span.entity, -1), end)
    return out


#: Detectors reading at most this far from where they start share one ``settled`` tail.
_SHORT_REACH: Final = 64


class Scanner:
    """The search for a set of entity kinds plus extra patterns (a policy's deny rules).

    ``find`` returns validated spans sorted by start; ``settled`` says up to where those spans
    are final while more text may still arrive. Unknown entity names are ignored (the CRD
    enumerates the kinds; a newer operator must not break an older sidecar).
    """

    __slots__ = (
        "_detectors",
        "_extra",
        "_forward",
        "_lead_index",
        "_leads",
        "_native",
        "_tails",
        "_triggers",
        "entities",
        "window",
    )

    def __init__(
        self,
        entities: Iterable[str],
        extra: Sequence[tuple[str, re.Pattern[str]]] = (),
        window: int = 64,
        *,
        native: bool = True,
    ) -> None:
        self.entities = frozenset(e for e in entities if e in DETECTORS)
        self._detectors = tuple(d for e in sorted(self.entities) for d in DETECTORS[e])
        #: Per detector (by index; None without a trigger): the end of a run of its
        #: characters from a position. A tuple: a dict keyed by pattern hashed the pattern's
        #: compiled code at every look-up.
        self._forward = tuple(
            None
            if d.trigger is None
            else re.compile("[" + "".join(re.escape(c) for c in sorted(d.run)) + "]*")
            for d in self._detectors
        )
        #: The distinct leads of the detectors without a trigger (one without a lead has the
        #: empty pattern: it matches everywhere), each detector's index among them (-1 with a
        #: trigger), and the distinct triggers: ``StreamScan`` skips the scans of a lead's
        #: detectors while it does not occur in new text, of the triggered ones while no
        #: trigger does. Separate searches, not one alternation: each pattern starts with a
        #: literal or a character class, which the regex engine skips to (an alternation of
        #: them it would try at every position).
        leads = [None if d.trigger is not None else d.lead or _EVERYWHERE for d in self._detectors]
        self._leads = tuple(dict.fromkeys(lead for lead in leads if lead is not None))
        self._lead_index = tuple(-1 if lead is None else self._leads.index(lead) for lead in leads)
        self._triggers = tuple(
            dict.fromkeys(d.trigger for d in self._detectors if d.trigger is not None)
        )
        # A (run, reach) pair is implied by one with a superset run and at least its reach.
        # The short-reach ones (numbers, IBANs, IPv6) are merged into one: a union run starts
        # no later than each of its parts, so the answer is as safe, sometimes a few
        # characters more cautious, and ``settled`` (called for every streamed delta) does
        # one strip where it did three.
        pairs = {(d.run, d.reach) for d in self._detectors if d.reach > _SHORT_REACH}
        short = [d for d in self._detectors if d.reach <= _SHORT_REACH]
        if short:
            pairs.add((frozenset().union(*(d.run for d in short)), max(d.reach for d in short)))
        self._tails = tuple(
            sorted(
                (
                    ("".join(sorted(run)), reach)
                    for run, reach in pairs
                    if not any(
                        (r2, n2) != (run, reach) and run <= r2 and reach <= n2 for r2, n2 in pairs
                    )
                ),
                key=lambda rr: -rr[1],
            )
        )
        self._extra = tuple((DENY_PREFIX + key, pattern) for key, pattern in extra)
        #: The longest deny-pattern match (with lookaround) streaming must allow for.
        self.window = max(1, window)
        #: The native twin of the built-in detectors (``native=False``: the Python ones).
        self._native = (
            _native_engine(self.entities, self._detectors, self._tails) if native else None
        )

    @property
    def native(self) -> Any:
        """The native engine of the built-in detectors, or None (the Python path)."""
        return self._native

    @property
    def empty(self) -> bool:
        return not self._detectors and not self._extra

    @property
    def has_extra(self) -> bool:
        """Whether deny patterns are searched (streams then hold ``window`` characters)."""
        return bool(self._extra)

    def find(
        self, text: str, pos: int = 0, extents: list[tuple[int, int]] | None = None
    ) -> list[Span]:
        """Every match that starts at or after ``pos`` (text before ``pos`` is context only).

        ``extents`` (when given) receives the raw extent of every candidate, valid or not:
        a later scan that starts inside one would not see what this scan saw (the validator
        may have trimmed the span, or rejected the candidate and the scan moved past it).
        """
        native = self._native
        if native is not None:
            try:
                found: list[Span] = native.find(text, pos, extents)
            except RuntimeError:  # the native matcher gave up (its stack): Python's path
                if extents is not None:
                    extents.clear()
            else:
                if not self._extra:
                    return found
                return self._with_extra(found, text, pos, extents)
        spans: list[Span] = []
        # A match starting at or after pos has what the hints look for in text[pos:]; a
        # stream's scans start at the first unreleased character, so this is short there.
        # Several kinds share a hint (a digit): each is asked once.
        rest = text[pos:] if pos else text
        hints: dict[Callable[[str], bool], bool] = {}
        forwards = self._forward
        for i, det in enumerate(self._detectors if _ANY.search(rest) else ()):
            hint = det.hint
            if hint is not None:
                ok = hints.get(hint)
                if ok is None:
                    ok = hints[hint] = hint(rest)
                if not ok:
                    continue
            if det.trigger is None:
                self._scan(det, text, pos, len(text), spans=spans, extents=extents)
                continue
            run, forward, at = det.run, forwards[i], pos
            assert forward is not None
            while (t := det.trigger.search(text, at)) is not None:
                start = t.start()
                while start > at and text[start - 1] in run:
                    start -= 1
                tail = forward.match(text, t.end())
                end = t.end() if tail is None else tail.end()
                self._scan(det, text, start, end + 1, spans=spans, extents=extents)
                at = end + 1
        return self._with_extra(spans, text, pos, extents)

    @property
    def deny_labels(self) -> list[str]:
        """The deny patterns' span labels (``deny:<key>``), in order."""
        return [label for label, _ in self._extra]

    def deny_matches(self, text: str, pos: int) -> list[tuple[int, int, int]]:
        """The deny patterns' matches in ``text`` from ``pos`` as ``(start, end, index into
        deny_labels)``, in the order ``find`` adds them (the native redactor's deny search)."""
        out: list[tuple[int, int, int]] = []
        for i, (_, pattern) in enumerate(self._extra):
            for m in pattern.finditer(text, pos):
                if m.end() > m.start():
                    out.append((m.start(), m.end(), i))
        return out

    def _with_extra(
        self, spans: list[Span], text: str, pos: int, extents: list[tuple[int, int]] | None
    ) -> list[Span]:
        """``spans`` of the built-in detectors with the deny patterns' added, resolved."""
        for label, pattern in self._extra:
            for m in pattern.finditer(text, pos):
                if m.end() > m.start():
                    spans.append(Span(m.start(), m.end(), label))
                    if extents is not None:
                        extents.append(m.span())
        spans.sort(key=lambda s: (s.start, -s.end))
        return _resolve(spans) if len(spans) > 1 else spans

    @staticmethod
    def _scan(
        det: Detector,
        text: str,
        start: int,
        end: int,
        *,
        spans: list[Span],
        extents: list[tuple[int, int]] | None,
    ) -> None:
        for m in det.pattern.finditer(text, start, end):
            got = det.validate(m)
            if got is not None:
                spans.append(Span(got[0], got[1], det.entity))
            if extents is not None:
                extents.append(m.span())

    def settled(self, text: str) -> int:
        """The earliest position of ``text`` where a match could still start and be changed by
        text appended later: spans starting before it are exactly those of any longer text."""
        out = n = len(text)
        for run, reach in self._tails:  # _tail, inlined: this runs for every streamed delta
            floor = n - reach if n > reach else 0
            tail = floor + len(text[floor:].rstrip(run))
            out = min(out, tail)
        if self._extra:
            out = min(out, max(0, len(text) - self.window))
        return out

    def stream(self) -> StreamScan:
        """The incremental form of this scanner for one growing text (``holdback``)."""
        return StreamScan(self)


def detect(text: str, entities: Iterable[str]) -> list[Span]:
    """The spans of ``entities`` in ``text`` (a one-off ``Scanner``; policies keep theirs)."""
    return Scanner(entities).find(text)


#: A candidate match: its raw extent in the whole stream, and its span when it validated.
_Candidate = tuple[int, int, Span | None]


class StreamScan:
    """``Scanner.find`` and ``Scanner.settled`` over a text that grows at its end (one streamed
    answer), doing per delta only the work the new characters make possible.

    ``grow`` tells it the characters appended; ``settled`` is then ``Scanner.settled`` of the
    whole text so far, kept from delta to delta (the start of each tail's trailing run moves
    only when a delta holds a character outside the run: one ``rstrip`` of the delta). The
    built-in detectors scan each character once: a match attempt that starts before the
    detectors' own settled point is decided (``Scanner.settled``), so its candidate is kept
    (positions in the whole stream) and the next scan resumes after it; a detector that runs
    around markers keeps every window that ended (a character outside its run follows) and
    rescans only the last one while it still grows. ``candidates`` then gives what
    ``Scanner.find`` would return from ``pos`` for every candidate starting before a limit at
    or before ``settled`` (that is all a holdback redactor reads): the kept ones, the growing
    window's, and the deny patterns' (user regexes cannot be analysed: they are rescanned from
    ``pos`` every time, in C). Property-tested equal to the rescan for any split.

    Requires what ``HoldbackRedactor`` guarantees: ``pos`` never moves backwards and never
    lands strictly inside the extent of a candidate that starts before the limit.
    """

    __slots__ = (
        "_cands",
        "_dets",
        "_extra",
        "_forward",
        "_lead_from",
        "_lead_index",
        "_leads",
        "_n",
        "_resume",
        "_runs",
        "_trig_from",
        "_triggers",
    )

    def __init__(self, scanner: Scanner) -> None:
        self._dets = scanner._detectors
        self._forward = scanner._forward
        self._extra = scanner._extra
        self._leads = scanner._leads
        self._lead_index = scanner._lead_index
        self._triggers = scanner._triggers
        #: Per lead: the stream position before which none of its detectors can start a
        #: match (no lead in the settled text searched); before ``_trig_from`` no trigger
        #: starts (in the text searched).
        self._lead_from = [0] * len(self._leads)
        self._trig_from = 0
        #: Per tail: its run, its reach and where its trailing run starts.
        self._runs: list[list[Any]] = [[run, reach, 0] for run, reach in scanner._tails]
        self._n = 0  # characters so far
        self._resume = [0] * len(self._dets)  # per detector: where its next scan starts
        self._cands: list[list[_Candidate]] = [[] for _ in self._dets]

    def grow(self, chunk: str) -> int:
        """``chunk`` was appended to the text: the new ``detectors_settled``."""
        n = self._n
        end = self._n = n + len(chunk)
        out = end
        for tail in self._runs:  # [run, reach, where its trailing run starts]
            kept = len(chunk.rstrip(tail[0]))
            if kept:
                tail[2] = n + kept
            # Conditional expressions: ``min``/``max`` calls cost more on this per-delta path.
            at = tail[2] if tail[2] > end - tail[1] else end - tail[1]
            out = at if at < out else out
        return out

    @property
    def detectors_settled(self) -> int:
        """``Scanner.settled`` without the deny window, in stream positions (it may be lower
        than the scanner's own when a run reaches back before the text the caller kept: both
        are then at or before anything still held)."""
        n = self._n
        out = n
        for _, reach, start in self._runs:
            tail = n - reach if n - reach > start else start
            out = tail if tail < out else out
        return out

    def candidates(
        self, text: str, base: int, pos: int, limit: int, settled: int
    ) -> tuple[list[Span], list[tuple[int, int]]]:
        """What ``Scanner.find(text, pos, extents)`` returns, restricted to candidates that
        start before ``limit`` (at most the settled point): the resolved spans and the raw
        extents, in stream positions. ``text`` is the stream from ``base`` on, ``pos`` and
        ``limit`` are positions in ``text``, ``settled`` is ``detectors_settled``."""
        spans: list[Span] = []
        extents: list[tuple[int, int]] = []
        # A candidate holds a character ``_ANY`` finds (``find`` skips every detector
        # without one): when text[pos:] has none, no kept candidate is left either (they lie
        # in it) and there is nothing to scan; resuming at ``pos`` later scans nothing twice
        # that could match.
        if self._dets and _ANY.search(text, pos) is not None:
            self._detect(text, base, pos, limit, settled - base, found=(spans, extents))
        for label, pattern in self._extra:
            for m in pattern.finditer(text, pos):
                start, end = m.span()
                if start >= limit:
                    break
                if end > start:
                    spans.append(Span(base + start, base + end, label))
                    extents.append((base + start, base + end))
        if len(spans) > 1:
            spans.sort(key=_by_start)
            return _resolve(spans), extents
        return spans, extents

    def _detect(
        self,
        text: str,
        base: int,
        pos: int,
        limit: int,
        settled: int,
        *,
        found: tuple[list[Span], list[tuple[int, int]]],
    ) -> None:
        """The built-in detectors' part of ``candidates`` (``settled`` in ``text``), added to
        ``found``.

        Scans are skipped while they cannot find anything: the detectors without a trigger
        while no lead (``Detector.lead``) starts in the settled text they have not scanned
        (the attempts there failed and are decided: the scan would only move on), the others
        while no trigger occurs from ``pos`` on (no window to scan or grow). A stream of prose
        or of personal data spread thin then costs a few searches in C per batch."""
        spans, extents = found
        cands, resume, lead_index = self._cands, self._resume, self._lead_index
        starts, windows = self._what_to_scan(text, base, pos, settled)
        if not windows and not any(cands) and max(starts, default=-1) < 0:
            return
        floor = base + pos
        top = base + limit
        rest: str | None = None
        hints: dict[Callable[[str], bool], bool] = {}
        for i, det in enumerate(self._dets):
            kept = cands[i]
            if kept and kept[0][0] < floor:
                j = 1
                while j < len(kept) and kept[j][0] < floor:
                    j += 1
                del kept[:j]
            growing: list[_Candidate] = []
            if det.trigger is None:
                plain_at = starts[lead_index[i]]
                if plain_at >= 0:
                    at = resume[i] - base
                    at = at if at > plain_at else plain_at
                    if settled > at:
                        self._scan(i, det, text, base=base, at=at, settled=settled)
            elif windows:
                at = resume[i] - base
                at = at if at > pos else pos
                self._windows(i, det, text, base=base, at=at, into=growing)
            if not kept and not growing:
                continue
            hint = det.hint
            if hint is not None:  # as ``find``: a detector whose hint fails finds nothing
                ok = hints.get(hint)
                if ok is None:
                    if rest is None:
                        rest = text[pos:] if pos else text
                    ok = hints[hint] = hint(rest)
                if not ok:
                    continue
            for group in (kept, growing):
                for start, end, span in group:
                    if start >= top:
                        break
                    extents.append((start, end))
                    if span is not None:
                        spans.append(span)

    def _what_to_scan(self, text: str, base: int, pos: int, settled: int) -> tuple[list[int], bool]:
        """Per lead: where its detectors may resume (-1: no scan can find anything, since no
        match starts before the first lead; resuming there finds the same), and whether the
        detectors with a trigger have a window to scan."""
        starts: list[int] = []
        froms = self._lead_from
        for k, lead in enumerate(self._leads):
            lo = froms[k] - base
            lo = lo if lo > pos else pos
            at = -1
            if settled > lo:
                m = lead.search(text, lo)
                if m is None or m.start() >= settled:
                    froms[k] = base + settled
                else:
                    at = m.start()
            starts.append(at)
        if not self._triggers:
            return starts, False
        lo = self._trig_from - base
        lo = lo if lo > pos else pos
        for trigger in self._triggers:
            if trigger.search(text, lo) is not None:
                return starts, True
        # A trigger starting before this point lies in the text searched: none does.
        lo = len(text) - TRIGGER_WIDTH
        if lo > self._trig_from - base:
            self._trig_from = base + lo
        return starts, False

    def _scan(self, i: int, det: Detector, text: str, *, base: int, at: int, settled: int) -> None:
        """Scan a detector without markers from ``at``: candidates starting before the settled
        point are decided and kept; the next scan resumes after the last of them, or at the
        settled point (the attempts between failed, and are decided too). ``at`` is before
        the settled point."""
        kept = self._cands[i]
        end = at
        for m in det.pattern.finditer(text, at):
            start = m.start()
            if start >= settled:
                break
            got = det.validate(m)
            end = m.end()
            span = None if got is None else Span(base + got[0], base + got[1], det.entity)
            kept.append((base + start, base + end, span))
        self._resume[i] = base + (end if end > settled else settled)

    def _windows(
        self,
        i: int,
        det: Detector,
        text: str,
        *,
        base: int,
        at: int,
        into: list[_Candidate],
    ) -> None:
        """Scan a detector with markers from ``at``, window by window as ``find`` does: a
        window that ended is scanned once and kept; the last one, while its run reaches the
        end of the text, is scanned into ``growing`` and again next time."""
        trigger = det.trigger
        assert trigger is not None
        run, forward, kept, n = det.run, self._forward[i], self._cands[i], len(text)
        assert forward is not None
        growing = into
        while (t := trigger.search(text, at)) is not None:
            start = t.start()
            while start > at and text[start - 1] in run:
                start -= 1
            tail = forward.match(text, t.end())
            end = t.end() if tail is None else tail.end()
            into = kept if end < n else growing
            for m in det.pattern.finditer(text, start, end + 1):
                got = det.validate(m)
                into.append(
                    (
                        base + m.start(),
                        base + m.end(),
                        None if got is None else Span(base + got[0], base + got[1], det.entity),
                    )
                )
            if end >= n:
                break
            at = end + 1
            self._resume[i] = base + at


def _by_start(span: Span) -> tuple[int, int]:
    return span.start, -span.end
