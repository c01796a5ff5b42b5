"""Guardrail verdicts counted per policy and entity in five-minute buckets: what a sidecar's usage
report carries (``UsageReport.guardrails``) and GuardrailPolicy status sums over the last hour.

Owns ``VerdictCounts`` and the mapping from a verdict record to what it counts:

* ``blocked`` — an enforced ``Block`` (the request or answer was stopped): 1 per entity found in
  the blocked text;
* ``redacted`` — an enforced ``Redact``: the number of matches replaced;
* ``flagged`` — findings that changed nothing: ``Log`` rules, and every finding of a ``Monitor``
  policy or a streamed ``Audit`` check (what would have been done).

Entities: the personal-data kinds (``EMAIL``, …), ``deny[i]`` (the policy's i-th deny rule),
``PROMPT_INJECTION``, ``MAX_CHARS``, ``EXTERNAL`` (the classifier flagged the text) and
``EXTERNAL_UNAVAILABLE`` (the classifier was down, slow or answered garbage: blocked under
``failureMode: Closed``, flagged under ``Open``, which let the text through). A verdict that
allowed (an injection score under the threshold, a classifier that said no) counts nothing.

The counts are gauges of this process (like the budget's settled spend): each report carries the
totals of every bucket of the last hour, so a lost or repeated report changes no total (the
operator keeps the highest ``seq`` of each ``instance``). Never any text: the verdict records
carry none. Pure: time is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from ..contract import GuardrailCount

BUCKET_SECONDS: Final = 300
#: Buckets older than this (their end) are dropped; the operator sums the same span.
KEEP_SECONDS: Final = 3600
#: Most rows one report carries (the newest buckets win): a bound on the report's size.
MAX_ROWS: Final = 2000

#: (policy, entity, bucket start) -> [blocked, redacted, flagged]
_Key = tuple[str, str, int]


def bucket(now: float) -> int:
    """The start (Unix seconds) of the bucket ``now`` falls in."""
    return int(now // BUCKET_SECONDS) * BUCKET_SECONDS


def counted(v: Mapping[str, Any]) -> Iterator[tuple[str, int, int, int]]:
    """What one verdict record counts: ``(entity, blocked, redacted, flagged)`` rows."""
    action = v.get("action")
    check = v.get("check")
    enforced = bool(v.get("enforced"))
    if check == "external" and v.get("failure"):
        blocked = action == "Block" and enforced
        yield "EXTERNAL_UNAVAILABLE", int(blocked), 0, int(not blocked)
        return
    if action not in ("Block", "Redact", "Log"):
        return
    for entity, n in _entities(v):
        if not enforced or action == "Log":
            yield entity, 0, 0, n
        elif action == "Block":
            yield entity, 1, 0, 0
        else:
            yield entity, 0, n, 0


def _entities(v: Mapping[str, Any]) -> Iterator[tuple[str, int]]:
    check = v.get("check")
    if check == "pii":
        found = v.get("entities")
        if isinstance(found, Mapping):
            for entity, n in found.items():
                if isinstance(n, int) and n > 0:
                    yield str(entity), n
    elif check == "deny":
        patterns = v.get("patterns")
        matches = v.get("matches")
        if isinstance(patterns, list) and patterns:
            # the matches are not split per pattern in the record: the first pattern carries
            # the rest, so the policy's total is right
            total = matches if isinstance(matches, int) and matches > 0 else len(patterns)
            for i, p in enumerate(patterns):
                yield f"deny[{p}]", (total - len(patterns) + 1) if i == 0 else 1
    elif check == "promptInjection":
        yield "PROMPT_INJECTION", 1
    elif check == "maxChars":
        yield "MAX_CHARS", 1
    elif check == "external":
        yield "EXTERNAL", 1


class VerdictCounts:
    """This process's verdict counts per policy, entity and bucket, for the usage report."""

    __slots__ = ("_rows",)

    def __init__(self) -> None:
        self._rows: dict[_Key, list[int]] = {}

    def record(self, verdicts: Iterable[Mapping[str, Any]], now: float) -> None:
        """Count the verdicts of one finished request (the ``on_finish`` hook: cheap, no IO)."""
        start = bucket(now)
        for v in verdicts:
            policy = str(v.get("policy"))
            for entity, blocked, redacted, flagged in counted(v):
                row = self._rows.get((policy, entity, start))
                if row is None:
                    row = self._rows[(policy, entity, start)] = [0, 0, 0]
                row[0] += blocked
                row[1] += redacted
                row[2] += flagged

    def report(self, now: float) -> tuple[GuardrailCount, ...]:
        """Every bucket of the last hour (older ones are forgotten), newest first when there
        are more than ``MAX_ROWS``."""
        oldest = bucket(now) - KEEP_SECONDS + BUCKET_SECONDS
        for key in [k for k in self._rows if k[2] < oldest]:
            del self._rows[key]
        keys = sorted(self._rows, key=lambda k: (-k[2], k[0], k[1]))[:MAX_ROWS]
        return tuple(
            GuardrailCount(
                policy=policy,
                entity=entity,
                start=start,
                blocked=self._rows[(policy, entity, start)][0],
                redacted=self._rows[(policy, entity, start)][1],
                flagged=self._rows[(policy, entity, start)][2],
            )
            for policy, entity, start in sorted(keys, key=lambda k: (k[2], k[0], k[1]))
        )
