"""Audit records as ``sluice simulate`` reads them: the sidecar's JSON lines, checked by field.

Owns ``Record`` (the facts of one audit record the replay uses, with the file and line it came
from), ``load`` (every file's lines, blank lines skipped, sorted by the request's start) and
``BadRecordError`` (a line that is not an audit record: its message names the file, the line and
the field). The format is ``sluice_sidecar.metering.audit_record``'s (docs/sidecar.md, "Audit
record"); fields the replay does not read are not checked. Pure except for ``load``, which reads
the files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Error codes of requests the budget stage refused (a spent limit; a budget's rate limit).
BUDGET_CODES = frozenset({"budget_exceeded", "rate_limit_exceeded"})


class BadRecordError(ValueError):
    """A line that is not a usable audit record (the message names file, line and field)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One audit record: where it came from and what the replay needs of it."""

    file: str
    line: int
    request_id: str
    ts: float  # when the request finished (Unix seconds)
    duration: float  # seconds
    namespace: str | None
    pod: str | None
    operation: str
    model: str | None  # the requested virtual model; None when the route was unknown
    route: str | None
    backend: str | None
    backend_model: str | None
    status: int
    error_code: str | None
    attempts: int
    fallbacks: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cost_usd: float
    verdicts: tuple[Mapping[str, Any], ...]
    annotations: Mapping[str, Any]
    messages: list[Any] | None  # the prompt, only with --audit-prompts

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def start(self) -> float:
        """When the request arrived: admission happens here, settlement at ``ts``."""
        return self.ts - self.duration

    @property
    def has_usage(self) -> bool:
        return self.input_tokens + self.output_tokens + self.cached_input_tokens > 0

    @property
    def budget_refused(self) -> bool:
        """The recorded request was refused by a budget (429 before any try)."""
        return self.status == 429 and self.error_code in BUDGET_CODES and self.attempts == 0

    @property
    def budget_note(self) -> Mapping[str, Any]:
        note = self.annotations.get("budget")
        return note if isinstance(note, Mapping) else {}


def _field(obj: Mapping[str, Any], name: str, types: tuple[type, ...], where: str) -> Any:
    if name not in obj:
        raise BadRecordError(f"{where}: field {name!r} is missing")
    value = obj[name]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        raise BadRecordError(f"{where}: field {name!r} must be {want}, not {json.dumps(value)}")
    return value


def _count(obj: Mapping[str, Any], name: str, where: str) -> int:
    value = obj.get(name, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadRecordError(
            f"{where}: field {name!r} must be a non-negative integer, not {json.dumps(value)}"
        )
    return value


def parse(obj: Any, file: str, line: int) -> Record:
    """The ``Record`` of one decoded JSON line; ``BadRecordError`` naming the field if unusable."""
    where = f"{file}:{line}"
    if not isinstance(obj, dict):
        raise BadRecordError(f"{where}: an audit record is a JSON object")
    opt_str = (str, type(None))
    ts = float(_field(obj, "ts", (int, float), where))
    duration_ms = obj.get("durationMs", 0.0)
    if not isinstance(duration_ms, int | float) or isinstance(duration_ms, bool) or duration_ms < 0:
        raise BadRecordError(f"{where}: field 'durationMs' must be a non-negative number")
    verdicts = obj.get("guardrails") or []
    if not isinstance(verdicts, list) or not all(isinstance(v, dict) for v in verdicts):
        raise BadRecordError(f"{where}: field 'guardrails' must be a list of objects")
    annotations = obj.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise BadRecordError(f"{where}: field 'annotations' must be an object")
    messages = obj.get("promptMessages")
    if messages is not None and not isinstance(messages, list):
        raise BadRecordError(f"{where}: field 'promptMessages' must be a list of messages")
    cost = obj.get("costUSD") or 0.0
    if not isinstance(cost, int | float) or isinstance(cost, bool):
        raise BadRecordError(f"{where}: field 'costUSD' must be a number")
    rid = obj.get("requestId")
    return Record(
        file=file,
        line=line,
        request_id=rid if isinstance(rid, str) else f"{file}:{line}",
        ts=ts,
        duration=float(duration_ms) / 1000,
        namespace=_field(obj, "namespace", opt_str, where) if "namespace" in obj else None,
        pod=obj.get("pod") if isinstance(obj.get("pod"), str) else None,
        operation=str(obj.get("operation") or "chat"),
        model=_field(obj, "model", opt_str, where),
        route=_field(obj, "route", opt_str, where),
        backend=_field(obj, "backend", opt_str, where) if "backend" in obj else None,
        backend_model=obj.get("backendModel") if isinstance(obj.get("backendModel"), str) else None,
        status=_field(obj, "status", (int,), where),
        error_code=_field(obj, "errorCode", opt_str, where) if "errorCode" in obj else None,
        attempts=_count(obj, "attempts", where),
        fallbacks=_count(obj, "fallbacks", where),
        input_tokens=_count(obj, "inputTokens", where),
        output_tokens=_count(obj, "outputTokens", where),
        cached_input_tokens=_count(obj, "cachedInputTokens", where),
        cost_usd=float(cost),
        verdicts=tuple(verdicts),
        annotations=annotations,
        messages=messages,
    )


def load(paths: Sequence[str | Path]) -> list[Record]:
    """Every record of the files (``-`` is not supported: name a file), in start-time order
    (file order among equal starts). ``BadRecordError`` for a missing file or a bad line."""
    out: list[Record] = []
    for path in paths:
        name = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BadRecordError(f"{name}: cannot read the audit log ({exc})") from None
        for no, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except ValueError as exc:
                raise BadRecordError(f"{name}:{no}: not JSON ({exc})") from None
            out.append(parse(obj, name, no))
    out.sort(key=lambda r: r.start)
    return out
