"""Redaction: detected spans → text with ``[EMAIL]``-style placeholders.

Owns how spans become placeholders: overlapping spans (of any kinds) merge into one placeholder,
labelled with the entity of the span that starts first (the longest of those that start
together); deny-pattern matches read ``[REDACTED]``; adjacent but not overlapping spans keep a
placeholder each. ``redact(text, scanner)`` is the unary reference the streaming redactor
(``holdback``) must reproduce for any split of the text. Pure: no IO.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Sequence

from .detectors import DENY_PREFIX, Scanner, Span


def placeholder(entity: str) -> str:
    return "[REDACTED]" if entity.startswith(DENY_PREFIX) else f"[{entity}]"


def merge(spans: Iterable[Span]) -> list[Span]:
    """Overlapping spans joined; sorted by start; the first span's entity labels the union."""
    out: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        if out and span.start < out[-1].end:
            last = out[-1]
            if span.end > last.end:
                out[-1] = Span(last.start, span.end, last.entity)
        else:
            out.append(span)
    return out


def apply(
    text: str,
    spans: Sequence[Span],
    offset: int = 0,
    name: Callable[[Span, str], str] | None = None,
) -> str:
    """``text`` with each merged span (positions minus ``offset``) replaced by its placeholder
    (or by ``name(span, original)``: the numbered placeholders of ``restore``)."""
    if not spans:
        return text
    parts: list[str] = []
    at = 0
    for span in merge(spans):
        start, end = span.start - offset, span.end - offset
        parts.append(text[at:start])
        parts.append(placeholder(span.entity) if name is None else name(span, text[start:end]))
        at = end
    parts.append(text[at:])
    return "".join(parts)


def redact(text: str, scanner: Scanner, labels: Container[str] | None = None) -> str:
    """``text`` with every match of ``scanner`` whose entity is in ``labels`` (all when None)
    replaced."""
    spans = scanner.find(text)
    if labels is not None:
        spans = [s for s in spans if s.entity in labels]
    return apply(text, spans)
