"""What ``sluice simulate`` reports: the differences between two outcomes of the same records.

Owns ``Change`` (one request treated differently: its kind, the record, old and new), ``Report``
(the changes, spend per route on both sides, and what could not be replayed, counted by reason),
``compare`` (records, old outcomes, new outcomes → ``Report``) and its renderings: ``table``
for the terminal and ``as_json`` for ``--json``. Pure except for the writers' stream.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from .records import Record
from .replay import Outcome

#: Spend differences below this (USD, per route) are rounding.
EPSILON_USD = 1e-8
#: Change kinds, in the order they are reported.
KINDS = (
    ("budget", "refused", "budget: would be refused"),
    ("budget", "admitted", "budget: would no longer be refused"),
    ("budget", "downgraded", "budget: downgrade changes"),
    ("routing", "unknown", "routing: model would be unknown (404)"),
    ("routing", "known", "routing: model would now be served"),
    ("routing", "route", "routing: another route or backend"),
    ("guardrails", "verdict", "guardrails: input verdict changes"),
)


@dataclass(frozen=True)
class Change:
    kind: str  # budget | routing | guardrails
    what: str  # refused | admitted | downgraded | unknown | known | route | verdict
    record: Record
    old: str
    new: str
    at: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "change": self.what,
            "file": self.record.file,
            "line": self.record.line,
            "requestId": self.record.request_id,
            "at": iso(self.at if self.at is not None else self.record.start),
            "old": self.old,
            "new": self.new,
        }


@dataclass
class Report:
    records: int
    changes: list[Change] = field(default_factory=list)
    spend_old: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    spend_new: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    #: reason → records (or requests) that part of the replay could not cover.
    not_simulated: Counter[str] = field(default_factory=Counter)
    guard_replayed: int = 0

    def count(self, kind: str, what: str) -> int:
        return sum(1 for c in self.changes if c.kind == kind and c.what == what)

    def spend_rows(self) -> list[tuple[str, float, float]]:
        routes = sorted(set(self.spend_old) | set(self.spend_new))
        return [(r, round(self.spend_old[r], 8), round(self.spend_new[r], 8)) for r in routes]

    @property
    def spend_differs(self) -> bool:
        return any(abs(o - n) > EPSILON_USD for _, o, n in self.spend_rows())

    @property
    def differs(self) -> bool:
        return bool(self.changes) or self.spend_differs

    @property
    def requests_changed(self) -> int:
        return len({id(c.record) for c in self.changes})


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _served(o: Outcome) -> str:
    if o.refused is not None:
        return f"refused ({o.refused}{': ' + o.detail if o.detail else ''})"
    return "admitted"


def _where(o: Outcome) -> str:
    model = f" ({o.backend_model})" if o.backend_model else ""
    return f"{o.resolved}/{o.backend}{model}"


def compare(records: Sequence[Record], old: Sequence[Outcome], new: Sequence[Outcome]) -> Report:
    """Every difference between ``old`` and ``new`` outcomes of ``records`` (same order)."""
    rep = Report(len(records))
    for rec, o, n in zip(records, old, new, strict=True):
        skipped = n.skipped or o.skipped
        if skipped is not None:
            rep.not_simulated[f"not replayed: {skipped}"] += 1
            continue
        if o.route is not None and o.refused is None:
            rep.spend_old[o.route] += o.cost
        if n.route is not None and n.refused is None:
            rep.spend_new[n.route] += n.cost
        rep.changes += _routing(rec, o, n) + _budget(rec, o, n) + _guard(rec, o, n, rep)
        if n.output_checks:
            rep.not_simulated["output guardrails not re-checked: answers are never recorded"] += 1
        if n.undetermined is not None:
            rep.not_simulated[f"backend not decided: {n.undetermined}"] += 1
    return rep


def _routing(rec: Record, o: Outcome, n: Outcome) -> list[Change]:
    o_unknown, n_unknown = o.refused == "unknown model", n.refused == "unknown model"
    if o_unknown != n_unknown:
        what = "unknown" if n_unknown else "known"
        return [Change("routing", what, rec, _where(o) if not o_unknown else "404", n.detail)]
    if o_unknown:
        return []
    if o.resolved != n.resolved:
        return [Change("routing", "route", rec, _where(o), _where(n))]
    if n.undetermined is not None or o.undetermined is not None:
        return []
    if (
        o.downgraded_from is None
        and n.downgraded_from is None
        and o.backend is not None
        and (o.backend, o.backend_model) != (n.backend, n.backend_model)
    ):
        return [Change("routing", "route", rec, _where(o), _where(n))]
    return []


def _budget(rec: Record, o: Outcome, n: Outcome) -> list[Change]:
    o_ref, n_ref = o.refused == "budget", n.refused == "budget"
    if n_ref and not o_ref and o.refused is None:
        return [Change("budget", "refused", rec, _served(o), _served(n), n.at)]
    if o_ref and not n_ref and n.refused is None:
        return [Change("budget", "admitted", rec, _served(o), _served(n) + ", usage unknown")]
    if (
        not (o_ref or n_ref)
        and (o.downgraded_from, o.route) != (n.downgraded_from, n.route)
        and (o.downgraded_from is not None or n.downgraded_from is not None)
    ):
        return [Change("budget", "downgraded", rec, f"served by {o.route}", f"by {n.route}", n.at)]
    return []


def _guard(rec: Record, o: Outcome, n: Outcome, rep: Report) -> list[Change]:
    if n.guard is None or o.guard is None:
        reason = n.guard_unknown or o.guard_unknown
        if reason is not None:
            rep.not_simulated[f"guardrails not re-checked: {reason}"] += 1
        return []
    rep.guard_replayed += 1
    if (o.guard, o.guard_keys) == (n.guard, n.guard_keys):
        return []
    return [Change("guardrails", "verdict", rec, _verdict(o), _verdict(n))]


def _verdict(o: Outcome) -> str:
    keys = ", ".join(f"{p}.{c}={a}" for p, c, a in sorted(o.guard_keys))
    return o.guard + (f" [{keys}]" if keys else "") if o.guard else "-"


def _detail(changes: Sequence[Change]) -> str:
    if not changes:
        return ""
    top = Counter(f"{c.old} -> {c.new}" for c in changes).most_common(2)
    text = "; ".join(f"{k} ({v})" for k, v in top)
    times = [c.at for c in changes if c.at is not None]
    if times:
        text = f"{iso(min(times))} .. {iso(max(times))}; " + text
    return text


def table(rep: Report, out: TextIO, *, old_label: str, listed: int = 10) -> None:
    """The summary table, the spend table, the first ``listed`` changes and the verdict."""
    rows = [("change", "requests", "detail")]
    for kind, what, label in KINDS:
        mine = [c for c in rep.changes if c.kind == kind and c.what == what]
        rows.append((label, str(len(mine)), _detail(mine)[:110]))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    out.write(f"{rep.records} audit record(s) replayed against the manifests; old: {old_label}\n\n")
    for r in rows:
        out.write(f"{r[0].ljust(w0)}  {r[1].rjust(w1)}  {r[2]}".rstrip() + "\n")
    out.write(f"\nguardrails re-checked on {rep.guard_replayed} record(s) with prompt text\n")
    spend = rep.spend_rows()
    if spend:
        wr = max(len("route"), *(len(r) for r, _, _ in spend))
        out.write(f"\n{'route'.ljust(wr)}  {'old USD':>12}  {'new USD':>12}  {'change':>12}\n")
        for route, o, n in spend:
            out.write(f"{route.ljust(wr)}  {o:12.6f}  {n:12.6f}  {n - o:+12.6f}\n")
    if rep.not_simulated:
        out.write("\nnot simulated:\n")
        for reason, n in sorted(rep.not_simulated.items()):
            out.write(f"  {n} record(s): {reason}\n")
    if rep.changes:
        out.write(f"\nfirst {min(listed, len(rep.changes))} of {len(rep.changes)} change(s):\n")
        for c in sorted(rep.changes, key=lambda c: c.record.start)[:listed]:
            out.write(f"  {c.record.where} {c.record.request_id} {c.kind}: {c.old} -> {c.new}\n")
    refused = rep.count("budget", "refused")
    if rep.differs:
        head = f"\nDIFFERS: {rep.requests_changed} request(s) would be treated differently"
        if refused:
            head += f" ({refused} refused by a budget)"
        if rep.spend_differs:
            delta = sum(n - o for _, o, n in spend)
            head += f"; spend {delta:+.6f} USD"
        out.write(head + "\n")
    else:
        out.write("\nSAME: nothing would differ\n")


def as_json(
    rep: Report, *, manifests: Sequence[str], against: Sequence[str] | None
) -> dict[str, Any]:
    return {
        "differs": rep.differs,
        "records": rep.records,
        "manifests": list(manifests),
        "against": list(against) if against else None,
        "counts": {f"{k}.{w}": rep.count(k, w) for k, w, _ in KINDS},
        "requestsChanged": rep.requests_changed,
        "guardrailsReplayed": rep.guard_replayed,
        "spend": [
            {"route": r, "oldUSD": o, "newUSD": n, "changeUSD": round(n - o, 8)}
            for r, o, n in rep.spend_rows()
        ],
        "notSimulated": dict(sorted(rep.not_simulated.items())),
        "changes": [c.as_json() for c in sorted(rep.changes, key=lambda c: c.record.start)],
    }
