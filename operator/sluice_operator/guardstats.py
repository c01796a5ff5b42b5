"""Guardrail verdict counts from the sidecars' reports, summed into GuardrailPolicy status.

Owns ``GuardStats``: it keeps, per sidecar process (``instance``; the pod when an older sidecar
sends none), the latest ``UsageReport.guardrails`` (gauges per policy, entity and five-minute
bucket: the highest ``seq`` of a process wins, so a lost, repeated or reordered report changes
no total) and sums them over the last hour into what ``GuardrailPolicy.status`` shows:
``blocked``, ``redacted`` and ``flagged`` totals, the same per entity, and per bucket. A process
that stopped reporting still counts until its buckets are older than the hour.

What each count means is the sidecar's (``sluice_sidecar.guardrails.stats``, through the
contract's ``GuardrailCount``): ``blocked`` requests and answers stopped, ``redacted`` matches
replaced, ``flagged`` findings that changed nothing (``Log``, ``Monitor``, ``Audit``, and a
classifier that was down under ``failureMode: Open``).

What is kept per process is the counts of the window as plain tuples (``Count``, names interned),
not the report's models: about 1 KB a row as models, a tenth of that as tuples (issue #12: 1,000
processes with 96 rows each held 100 MB as models).

A purely computational module; the caller passes the time and does the IO.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, Protocol

from sluice_sidecar.contract import GuardrailCount, UsageReport

BUCKET_SECONDS: Final = 300
WINDOW_SECONDS: Final = 3600
#: Most entities and buckets listed in one status (the rest still count in the totals).
MAX_ENTITIES: Final = 64
MAX_INSTANCES: Final = 1000  # per namespace: the oldest are forgotten first

_KEYS: Final = ("blocked", "redacted", "flagged")


class Count(NamedTuple):
    """One ``GuardrailCount`` as kept: the same fields, in a tuple."""

    policy: str
    entity: str
    start: float
    blocked: int
    redacted: int
    flagged: int


class _Counted(Protocol):
    """What ``summary`` reads of a row: a ``GuardrailCount`` or a ``Count``."""

    @property
    def entity(self) -> str: ...
    @property
    def start(self) -> float: ...
    @property
    def blocked(self) -> int: ...
    @property
    def redacted(self) -> int: ...
    @property
    def flagged(self) -> int: ...


def compact(rows: Iterable[GuardrailCount], now: float) -> tuple[Count, ...]:
    """The rows that can still count at ``now`` or later (their bucket is in the window)."""
    oldest = _bucket(now) - WINDOW_SECONDS + BUCKET_SECONDS
    return tuple(
        Count(sys.intern(r.policy), sys.intern(r.entity), r.start, r.blocked, r.redacted, r.flagged)
        for r in rows
        if int(r.start) >= oldest
    )


@dataclass(slots=True)
class _Instance:
    seq: int
    received: float
    rows: tuple[Count, ...]


@dataclass
class GuardStats:
    """The latest guardrail counts of every sidecar process, per namespace."""

    instances: dict[str, dict[tuple[str, str], _Instance]] = field(default_factory=dict)

    def add(self, report: UsageReport, now: float) -> bool:
        """Take a report's counts; True when they changed what some status shows."""
        ns = self.instances.setdefault(report.namespace, {})
        key = (report.pod, report.instance or report.pod)
        seen = ns.get(key)
        if seen is not None and report.seq <= seen.seq:
            return False
        if seen is None and not report.guardrails:
            return False  # nothing to count, nothing to remember
        rows = compact(report.guardrails, now)
        ns[key] = _Instance(report.seq, now, rows)
        if len(ns) > MAX_INSTANCES:
            oldest = min(ns, key=lambda k: ns[k].received)
            del ns[oldest]
        return seen is None or seen.rows != rows

    def prune(self, now: float) -> None:
        """Forget processes whose every bucket is older than the window."""
        for namespace, ns in list(self.instances.items()):
            for key in [k for k, i in ns.items() if now - i.received > WINDOW_SECONDS * 2]:
                del ns[key]
            if not ns:
                del self.instances[namespace]

    def status(self, namespace: str, policy: str, now: float) -> dict[str, Any]:
        """``blocked``, ``redacted``, ``flagged`` and ``verdicts`` for one GuardrailPolicy."""
        self.prune(now)
        rows = [
            r
            for inst in (self.instances.get(namespace) or {}).values()
            for r in inst.rows
            if r.policy == policy
        ]
        return summary(rows, now)


def summary(rows: Iterable[_Counted], now: float) -> dict[str, Any]:
    """The status fields from the counts of every process (pure)."""
    oldest = _bucket(now) - WINDOW_SECONDS + BUCKET_SECONDS
    entities: dict[str, dict[str, int]] = {}
    buckets: dict[int, dict[str, int]] = {}
    for r in rows:
        start = int(r.start)
        if start < oldest:
            continue
        for into in (
            entities.setdefault(r.entity, dict.fromkeys(_KEYS, 0)),
            buckets.setdefault(start, dict.fromkeys(_KEYS, 0)),
        ):
            into["blocked"] += r.blocked
            into["redacted"] += r.redacted
            into["flagged"] += r.flagged
    totals = {k: sum(e[k] for e in entities.values()) for k in _KEYS}
    return {
        **totals,
        "verdicts": {
            "window": "1h",
            "entities": [
                {"entity": name, **counts}
                for name, counts in sorted(entities.items(), key=_busiest)[:MAX_ENTITIES]
            ],
            "buckets": [{"start": _iso(start), **buckets[start]} for start in sorted(buckets)],
        },
    }


def _busiest(item: tuple[str, Mapping[str, int]]) -> tuple[int, str]:
    return -sum(item[1].values()), item[0]


def _bucket(now: float) -> int:
    return int(now // BUCKET_SECONDS) * BUCKET_SECONDS


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
