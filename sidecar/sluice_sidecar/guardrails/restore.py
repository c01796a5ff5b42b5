"""``Redact`` with ``restore: true``: typed placeholders out, the originals back in the answer.

Owns ``Placeholders`` (one request's mapping: the same original always gets the same numbered,
typed placeholder, ``[EMAIL_1]``, ``[EMAIL_2]``, ``[PHONE_1]``), ``restore_text`` (a whole
answer: every known placeholder replaced by its original) and ``Restorer`` (the same over a
stream of text deltas: a trailing ``[`` that could still grow into a known placeholder is held
back until it either completes or cannot). For any split of a text into deltas, what
``Restorer`` releases joins to ``restore_text`` of the whole (property-tested).

Only originals that are safe to put back anywhere are restorable: no ``"``, ``\\``, brackets
or control characters (so a restored value never breaks the JSON text of tool-call arguments
and never forms a placeholder itself); the detectors' entities never contain them, anything
else keeps its plain ``[EMAIL]`` placeholder. The mapping lives only in memory for the life of
one request; it is never logged or audited. Pure: no IO.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from .detectors import Span
from .redact import placeholder

_UNSAFE: Final = re.compile(r'["\\\[\]\x00-\x1f\x7f]')
_TOKEN: Final = re.compile(r"\[[A-Z][A-Z_]*_[0-9]+\]")


class Placeholders:
    """One request's originals and their placeholders."""

    __slots__ = ("_counts", "_names", "originals")

    def __init__(self) -> None:
        self._names: dict[str, str] = {}  # original -> placeholder
        self._counts: dict[str, int] = {}
        #: placeholder -> original
        self.originals: dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self.originals)

    def name(self, span: Span, original: str) -> str:
        """The placeholder of ``original`` (found as ``span``); a new one on first sight."""
        got = self._names.get(original)
        if got is not None:
            return got
        if _UNSAFE.search(original) or not span.entity.isupper():
            return placeholder(span.entity)
        n = self._counts.get(span.entity, 0) + 1
        self._counts[span.entity] = n
        got = self._names[original] = f"[{span.entity}_{n}]"
        self.originals[got] = original
        return got


def restore_text(text: str, originals: Mapping[str, str]) -> str:
    """``text`` with every known placeholder replaced by its original."""
    if not originals or "[" not in text:
        return text
    return _TOKEN.sub(lambda m: originals.get(m.group(), m.group()), text)


class Restorer:
    """``restore_text`` over a stream: ``feed`` each delta and send what it returns, then
    ``finish`` once. Holds back at most the longest placeholder's length."""

    __slots__ = ("_held", "_originals", "_prefixes")

    def __init__(self, originals: Mapping[str, str]) -> None:
        self._originals = originals
        self._prefixes = frozenset(p[:i] for p in originals for i in range(1, len(p)))
        self._held = ""

    @property
    def blocked(self) -> None:
        return None

    def feed(self, text: str) -> str:
        buf = self._held + text if self._held else text
        cut = buf.rfind("[")
        if cut < 0 or buf[cut:] not in self._prefixes:
            self._held = ""
            return restore_text(buf, self._originals)
        self._held = buf[cut:]
        return restore_text(buf[:cut], self._originals)

    def finish(self) -> str:
        rest, self._held = self._held, ""
        return restore_text(rest, self._originals)
