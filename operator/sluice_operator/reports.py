"""Aggregation of sidecar usage reports into what ModelRoute and Budget status show.

Owns: accepting ``UsageReport``s idempotently (a repeated or older ``seq`` from the same pod is
ignored), keeping each pod's latest report and its usage counters of the last ``WINDOW`` seconds
(summed per ``BUCKET`` seconds: a bounded number of entries per pod, whatever its report rate),
forgetting pods that stopped reporting, and summing them into per-backend counters (over the
window), health, the pods that cannot read a backend's API key, and the rollout
every kind's status shows (pods, pods on the current config hash, ``applied/pods``, and for a
ModelRoute each pod's hash and last report - to the minute, so an idle fleet costs at most one
status write a minute - from each pod's latest report).
``BudgetSpend`` sums the sidecars' settled spend per Budget window (see the section below) into
``Budget.status`` and finds the alert thresholds crossed.
A purely computational module; the caller passes the time and does the IO.
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
from array import array
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sluice_sidecar.contract import BackendState, BudgetLimit, BudgetRule, UsageReport, WindowKind

STALE_AFTER = 60.0  # seconds without a report before a pod no longer counts
WINDOW = 300.0  # seconds of reports summed into the counters status shows
#: A pod's reports within this many seconds of the first one of a bucket are summed into it (at
#: the default report interval of 10 s, one report a bucket). A bucket counts while its latest
#: report is in the window, so a report may count up to ``BUCKET`` seconds longer than ``WINDOW``.
BUCKET = 10.0
#: Most buckets a pod keeps: they start at least ``BUCKET`` apart and all end in the window.
MAX_BUCKETS = int(WINDOW // BUCKET) + 2
#: Per-report latency medians kept per bucket and backend (the first ones; every one at a report
#: interval of 0.625 s or more), of which the status shows the median over the window.
MAX_SAMPLES = 16


@dataclass(slots=True)
class _Counts:
    """One backend's counters summed over the reports of a bucket."""

    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    latencies: array[float] = field(default_factory=lambda: array("d"))
    ttfts: array[float] = field(default_factory=lambda: array("d"))


@dataclass(slots=True)
class _Bucket:
    start: float  # when its first report arrived
    last: float  # when its latest report arrived
    counts: dict[tuple[str, str], _Counts] = field(default_factory=dict)  # (route, backend)


@dataclass(slots=True)
class _Pod:
    seq: int
    received: float
    #: The latest, for its health, config hash and pod name; without what ``buckets`` (usage),
    #: ``BudgetSpend`` and ``GuardStats`` keep their own way (``_lean``).
    report: UsageReport
    buckets: deque[_Bucket] = field(default_factory=deque)

    def take(self, report: UsageReport, now: float) -> None:
        """Sum the usage of ``report`` (received ``now``) into the current bucket; drop buckets
        out of the window."""
        self.seq, self.received, self.report = report.seq, now, _lean(report)
        while self.buckets and now - self.buckets[0].last > WINDOW:
            self.buckets.popleft()
        if not self.buckets or now - self.buckets[-1].start >= BUCKET:
            self.buckets.append(_Bucket(now, now))
            while len(self.buckets) > MAX_BUCKETS:  # only when the clock went back
                self.buckets.popleft()
        bucket = self.buckets[-1]
        bucket.last = max(bucket.last, now)
        for u in report.usage:
            key = (sys.intern(u.route), sys.intern(u.backend))
            counts = bucket.counts.get(key)
            if counts is None:
                counts = bucket.counts[key] = _Counts()
            counts.requests += u.requests
            counts.errors += u.errors
            counts.fallbacks += u.fallbacks
            if u.latency_p50_ms is not None and len(counts.latencies) < MAX_SAMPLES:
                counts.latencies.append(u.latency_p50_ms)
            if u.ttft_p50_ms is not None and len(counts.ttfts) < MAX_SAMPLES:
                counts.ttfts.append(u.ttft_p50_ms)


def _lean(report: UsageReport) -> UsageReport:
    """``report`` without its usage, budget spend and guardrail counts (a guardrail row alone is
    about 1 KB as a model, and a sidecar sends one per policy, entity and bucket of the hour)."""
    if not (report.usage or report.budgets or report.budget_routes or report.guardrails):
        return report
    return report.model_copy(
        update={"usage": (), "budgets": (), "budget_routes": (), "guardrails": ()}
    )


@dataclass
class Reports:
    """Latest report per (namespace, pod), and the pod's usage of the window in buckets."""

    pods: dict[tuple[str, str], _Pod] = field(default_factory=dict)

    def add(self, report: UsageReport, now: float) -> bool:
        """Record a report; False when it is a duplicate or older than one already seen."""
        key = (report.namespace, report.pod)
        seen = self.pods.get(key)
        if seen is not None and report.seq <= seen.seq:
            return False
        if seen is None:
            seen = self.pods[key] = _Pod(report.seq, now, report)
        seen.take(report, now)
        return True

    def _live_pods(self, namespace: str, now: float) -> list[_Pod]:
        self.pods = {k: p for k, p in self.pods.items() if now - p.received <= STALE_AFTER}
        return [p for (ns, _), p in sorted(self.pods.items()) if ns == namespace]

    def live(self, namespace: str, now: float) -> list[UsageReport]:
        """The latest report of every pod of ``namespace`` that still reports."""
        return [p.report for p in self._live_pods(namespace, now)]

    def rollout(self, namespace: str, config_hash: str | None, now: float) -> dict[str, Any]:
        """``rollout`` of a namespace-wide kind: every pod of ``namespace`` that reports."""
        return _rollout(self._live_pods(namespace, now), config_hash, sidecars=False)

    def route_status(
        self, namespace: str, route: str, config_hash: str | None, now: float
    ) -> dict[str, Any]:
        """``backends`` and ``rollout`` for the route whose virtual model name is ``route``, and
        ``keys``: how many live sidecars report the route, and per backend the pods that cannot
        read its API key."""
        pods = self._live_pods(namespace, now)
        reports = [p.report for p in pods]
        window = [b for p in pods for b in p.buckets if now - b.last <= WINDOW]
        users = [p for p in pods if any(h.route == route for h in p.report.health)] or pods
        rollout = _rollout(users, config_hash, sidecars=True)
        backends: dict[str, dict[str, Any]] = {}
        latencies: dict[str, list[float]] = {}
        ttfts: dict[str, list[float]] = {}
        for bucket in window:
            for (on, backend), c in bucket.counts.items():
                if on != route:
                    continue
                b = backends.setdefault(backend, _empty(backend))
                b["requests"] += c.requests
                b["errors"] += c.errors
                b["fallbacks"] += c.fallbacks
                latencies.setdefault(backend, []).extend(c.latencies)
                ttfts.setdefault(backend, []).extend(c.ttfts)
        missing: dict[str, list[str]] = {}
        for report in reports:
            for h in report.health:
                if h.route != route:
                    continue
                b = backends.setdefault(h.backend, _empty(h.backend))
                if h.credentials_missing:
                    b["credentials"] = "Missing"
                    missing.setdefault(h.backend, []).append(report.pod)
                # The worst state any pod sees wins: one ejecting pod is worth knowing about.
                if _rank(h.state) > _rank(BackendState(b["state"])):
                    b["state"] = h.state.value
                    b["until"] = _iso(h.until) if h.until else None
        for name, b in backends.items():
            if latencies.get(name):
                b["p50LatencyMs"] = round(statistics.median(latencies[name]), 1)
            if ttfts.get(name):
                b["p50TTFTMs"] = round(statistics.median(ttfts[name]), 1)
        return {
            "backends": [backends[k] for k in sorted(backends)],
            "rollout": rollout,
            # Not status fields: what ``status.KeysSeen`` is made of.
            "keys": {
                "pods": sum(1 for r in reports if any(h.route == route for h in r.health)),
                "missing": missing,
            },
        }


MAX_SIDECARS = 100


def _rollout(pods: list[_Pod], config_hash: str | None, *, sidecars: bool) -> dict[str, Any]:
    applied = sum(1 for p in pods if p.report.config_hash == config_hash)
    out: dict[str, Any] = {
        "configHash": config_hash,
        "pods": len(pods),
        "applied": applied,
        "summary": f"{applied}/{len(pods)}",
    }
    if sidecars:
        out["sidecars"] = [
            {
                "pod": p.report.pod,
                "configHash": p.report.config_hash,
                "lastReport": _iso(p.received - p.received % 60),
            }
            for p in sorted(pods, key=lambda p: p.report.pod)[:MAX_SIDECARS]
        ]
    return out


def _empty(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "state": BackendState.HEALTHY.value,
        "requests": 0,
        "errors": 0,
        "fallbacks": 0,
    }


def _rank(state: BackendState) -> int:
    return {BackendState.HEALTHY: 0, BackendState.COOLING_DOWN: 1, BackendState.EJECTED: 2}[state]


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_route_status(status: Mapping[str, Any], observed: Mapping[str, Any]) -> dict[str, Any]:
    """``status`` with the report-derived fields replaced."""
    out = dict(status)
    out["backends"] = observed["backends"]
    out["rollout"] = observed["rollout"]
    return out


# --- Budget spend ---------------------------------------------------------------------------------
#
# Each sidecar process (``UsageReport.instance``) reports, per window of each Budget limit, what it
# settled there since it started: a gauge. The operator keeps, per (pod, instance) and window key
# ``(window, start)``, the value of the highest ``seq`` that carried it, and the Budget's spend is
# the sum over instances. A lost report is covered by the next one; a repeated, late or reordered
# one changes nothing (a lower seq never replaces a higher one), so any order and duplication of
# the same reports gives the same totals. A restarted sidecar is a new instance that starts from
# zero beside its predecessor's last value. The per-instance values are written to
# ``Budget.status.ledger`` and merged back (by the same max-seq rule) when the operator starts, so
# an operator restart loses nothing and counts nothing twice.

PICO = 10**12
#: An instance silent this long is folded into one anonymous entry (its identity is dropped, so the
#: status stays small under pod churn); it must not report the same window again after that.
FOLD_AFTER = 3600.0
#: Instances kept per Budget before the stalest are folded regardless of age.
MAX_INSTANCES = 200
FOLDED = ("", "folded")

_Values = tuple[int, int, int]  # picodollars, tokens, requests


@dataclass
class _Spend:
    seq: int
    resets_at: float
    values: _Values


@dataclass
class _Instance:
    last: float  # wall time of the latest report taken
    windows: dict[tuple[str, float], _Spend] = field(default_factory=dict)
    routes: dict[tuple[str, str, float], _Spend] = field(default_factory=dict)


@dataclass(frozen=True)
class Crossing:
    """An alert threshold newly reached in one window."""

    window: str
    start: float
    threshold: int
    percent: float
    message: str


@dataclass
class BudgetSpend:
    """Settled spend per Budget, from the sidecars' reports (pure; time is passed in)."""

    budgets: dict[tuple[str, str], dict[tuple[str, str], _Instance]] = field(default_factory=dict)
    #: Budgets whose ``status.ledger`` was read back (once: a later watch event may carry a
    #: status written before an instance was folded, which must not come back beside the fold).
    seeded: set[tuple[str, str]] = field(default_factory=set)

    def add(self, report: UsageReport, now: float) -> set[tuple[str, str]]:
        """Take a report's budget spend; the (namespace, budget)s whose totals may have changed."""
        changed: set[tuple[str, str]] = set()
        who = (report.pod, report.instance or report.pod)
        for w in report.budgets:
            inst = self._instance(report.namespace, w.budget, who, now)
            # A rolling window moves with every report: one gauge per instance, not per start.
            key = (w.window, 0.0 if w.window.startswith("Rolling/") else w.start)
            seen = inst.windows.get(key)
            if _newer(seen, report.seq):
                values = (w.pusd, w.tokens, w.requests)
                if seen is not None and key[1]:  # a calendar gauge only grows (lease requests)
                    values = _top(seen.values, values)
                inst.windows[key] = _Spend(report.seq, w.resets_at, values)
                changed.add((report.namespace, w.budget))
        for r in report.budget_routes:
            inst = self._instance(report.namespace, r.budget, who, now)
            rkey = (r.route, r.model, r.start)
            if _newer(inst.routes.get(rkey), report.seq):
                inst.routes[rkey] = _Spend(report.seq, 0.0, (r.pusd, r.tokens, r.requests))
                changed.add((report.namespace, r.budget))
        return changed

    def lease_spend(
        self,
        namespace: str,
        budget: str,
        who: tuple[str, str],
        *,
        window: tuple[str, float, float],
        values: _Values,
        now: float,
    ) -> bool:
        """A calendar window's settled spend as a lease request carried it (``leases``): it
        raises the process's gauge (``window``: name, start, resetsAt), never lowers it, so the
        status learns at the lease rate what a process that then vanishes had settled."""
        inst = self._instance(namespace, budget, (who[0], who[1] or who[0]), now)
        key = (window[0], window[1])
        seen = inst.windows.get(key)
        if seen is not None and _top(seen.values, values) == seen.values:
            return False
        top = values if seen is None else _top(seen.values, values)
        inst.windows[key] = _Spend(seen.seq if seen else 0, window[2], top)
        return True

    def _instance(self, namespace: str, budget: str, who: tuple[str, str], now: float) -> _Instance:
        table = self.budgets.setdefault((namespace, budget), {})
        inst = table.get(who)
        if inst is None:
            inst = table[who] = _Instance(now)
        inst.last = max(inst.last, now)
        return inst

    def forget(self, namespace: str, budget: str) -> None:
        self.budgets.pop((namespace, budget), None)
        self.seeded.discard((namespace, budget))

    def seed(self, namespace: str, budget: str, ledger: Any) -> None:
        """Merge ``status.ledger`` as written before, once per Budget (max seq per key wins;
        unreadable entries are skipped)."""
        if (namespace, budget) in self.seeded:
            return
        self.seeded.add((namespace, budget))
        if not isinstance(ledger, list):
            return
        for row in ledger:
            try:
                who = (str(row["pod"]), str(row["instance"]))
                last = _epoch(row.get("lastReport")) or 0.0
                table = self.budgets.setdefault((namespace, budget), {})
                inst = table.setdefault(who, _Instance(last))
                inst.last = max(inst.last, last)
                for w in row.get("windows") or []:
                    key = (str(w["window"]), float(w["start"]))
                    if _newer(inst.windows.get(key), int(w["seq"])) or who == FOLDED:
                        inst.windows[key] = _Spend(int(w["seq"]), float(w["resetsAt"]), _vals(w))
                for r in row.get("routes") or []:
                    rkey = (str(r["route"]), str(r["model"]), float(r["start"]))
                    if _newer(inst.routes.get(rkey), int(r["seq"])) or who == FOLDED:
                        inst.routes[rkey] = _Spend(int(r["seq"]), 0.0, _vals(r))
            except (KeyError, TypeError, ValueError):
                continue

    def prune(self, namespace: str, budget: str, now: float, keep: float) -> None:
        """Drop windows that reset before ``now - keep`` and fold silent instances."""
        table = self.budgets.get((namespace, budget))
        if not table:
            return
        newest = max((k[2] for i in table.values() for k in i.routes if k[2] <= now), default=0.0)
        for who in list(table):
            inst = table[who]
            inst.routes = {k: v for k, v in inst.routes.items() if k[2] >= newest}
            inst.windows = {
                k: v
                for k, v in inst.windows.items()
                if v.resets_at > now - keep or k[0].startswith("Rolling/")
            }
            if not inst.windows and not inst.routes and who != FOLDED:
                del table[who]
        live = sorted((w for w in table if w != FOLDED), key=lambda w: table[w].last)
        stale = [w for w in live if now - table[w].last > FOLD_AFTER]
        stale += live[len(stale) : max(len(stale), len(live) - MAX_INSTANCES)]
        for who in stale:
            _fold(table.setdefault(FOLDED, _Instance(0.0)), table.pop(who))

    def status(
        self,
        namespace: str,
        rule: BudgetRule,
        old: Mapping[str, Any],
        now: float,
    ) -> tuple[dict[str, Any], list[Crossing]]:
        """``Budget.status`` fields from the summed spend, and the thresholds crossed since
        ``old`` (the status written before; each threshold is reported once per window)."""
        longest = max(
            (window_seconds(lim) for lim in rule.limits), default=0.0
        )  # keep a closed window a little, for late reports
        self.prune(namespace, rule.name, now, keep=min(longest, 3600.0))
        table = self.budgets.get((namespace, rule.name), {})
        alerted = {
            (w.get("window"), w.get("start")): list(w.get("alerted") or [])
            for w in old.get("windows") or []
        }
        warn = max((t for t in rule.alert_thresholds if t < 100), default=80)
        windows: list[dict[str, Any]] = []
        crossings: list[Crossing] = []
        for lim in rule.limits:
            wid = lim.window_id()
            start, resets, totals = _current(table, wid, lim, now)
            pct = _percent(lim, totals)
            start_iso = _iso(start) if start is not None else None
            fired = alerted.get((wid, start_iso), []) if start_iso else []
            for th in rule.alert_thresholds:
                if pct >= th and th not in fired and start is not None:
                    fired = sorted([*fired, th])
                    crossings.append(
                        Crossing(
                            wid,
                            start,
                            th,
                            pct,
                            f"Budget {rule.name!r} reached {th}% of its {wid} limit "
                            f"({_limit_text(lim, totals)}); the window resets at "
                            f"{_iso(resets) if resets else 'a rolling boundary'}.",
                        )
                    )
            windows.append(
                {
                    "window": wid,
                    "start": start_iso,
                    "resetsAt": _iso(resets) if resets is not None else None,
                    "spentUSD": round(totals[0] / PICO, 6),
                    "tokens": totals[1],
                    "requests": totals[2],
                    "percent": round(pct, 2),
                    "limit": _limit_text(lim),
                    "alerted": fired,
                }
            )
        top = max(windows, key=lambda w: w["percent"], default=None)
        worst = top["percent"] if top else 0.0
        out: dict[str, Any] = {
            "state": "Exhausted" if worst >= 100 else "Warning" if worst >= warn else "Ok",
            "windows": windows,
            "spent": _money(top) if top else None,
            "limit": top["limit"] if top else None,
            "resetsAt": top["resetsAt"] if top else None,
            "spendByRoute": _by_route(table, rule, now),
            "ledger": _ledger(table),
        }
        return out, crossings


def _newer(seen: _Spend | None, seq: int) -> bool:
    return seen is None or seq > seen.seq


def _vals(row: Mapping[str, Any]) -> _Values:
    return (int(row.get("pusd", 0)), int(row.get("tokens", 0)), int(row.get("requests", 0)))


def _top(a: _Values, b: _Values) -> _Values:
    return (max(a[0], b[0]), max(a[1], b[1]), max(a[2], b[2]))


def _add(a: _Values, b: _Values) -> _Values:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def _fold(into: _Instance, inst: _Instance) -> None:
    into.last = max(into.last, inst.last)
    for key, s in inst.windows.items():
        have = into.windows.get(key)
        into.windows[key] = _Spend(
            0, s.resets_at, _add(have.values, s.values) if have else s.values
        )
    for rkey, s in inst.routes.items():
        had = into.routes.get(rkey)
        into.routes[rkey] = _Spend(0, 0.0, _add(had.values, s.values) if had else s.values)


def window_seconds(lim: BudgetLimit) -> float:
    """A window's length in seconds (a month counts 31 days)."""
    if lim.window is WindowKind.ROLLING:
        return lim.rolling_seconds or 0.0
    return {WindowKind.DAY: 86400.0, WindowKind.WEEK: 7 * 86400.0}.get(lim.window, 31 * 86400.0)


def _current(
    table: Mapping[tuple[str, str], _Instance], wid: str, lim: BudgetLimit, now: float
) -> tuple[float | None, float | None, _Values]:
    """(start, resetsAt, totals) of the window of ``lim`` that is current at ``now`` (the
    operator's clock decides which reported window that is)."""
    totals: _Values = (0, 0, 0)
    if lim.window is WindowKind.ROLLING:
        span = lim.rolling_seconds or 0.0
        for inst in table.values():
            # A rolling window's gauge is the instance's latest; a silent one has left it.
            latest = max(
                ((k, s) for k, s in inst.windows.items() if k[0] == wid),
                key=lambda ks: ks[1].seq,
                default=None,
            )
            if latest is not None and now - inst.last <= span:
                totals = _add(totals, latest[1].values)
        minute = now - now % 60
        return minute - span, None, totals
    starts = {
        (k[1], s.resets_at)
        for inst in table.values()
        for k, s in inst.windows.items()
        if k[0] == wid and k[1] <= now < s.resets_at
    }
    if not starts:
        return None, None, totals
    start, resets = max(starts)
    for inst in table.values():
        s = inst.windows.get((wid, start))
        if s is not None:
            totals = _add(totals, s.values)
    return start, resets, totals


def _percent(lim: BudgetLimit, totals: _Values) -> float:
    shares = [
        100.0 * value / cap
        for value, cap in (
            (totals[0], round(lim.usd * PICO) if lim.usd else None),
            (totals[1], lim.tokens),
            (totals[2], lim.requests),
        )
        if cap
    ]
    return max(shares, default=0.0)


def _limit_text(lim: BudgetLimit, totals: _Values | None = None) -> str:
    """``25.00 USD, 1000 tokens``, or with ``totals`` ``3.10 of 25.00 USD, …``."""
    parts = []
    for i, (cap, unit) in enumerate(
        ((lim.usd, "USD"), (lim.tokens, "tokens"), (lim.requests, "requests"))
    ):
        if cap is None:
            continue
        limit = f"{cap:.2f}" if i == 0 else str(cap)
        if totals is None:
            parts.append(f"{limit} {unit}")
        else:
            used = f"{totals[0] / PICO:.2f}" if i == 0 else str(totals[i])
            parts.append(f"{used} of {limit} {unit}")
    return ", ".join(parts)


def _money(window: Mapping[str, Any]) -> str:
    return f"{window['spentUSD']:.2f} USD"


def _by_route(
    table: Mapping[tuple[str, str], _Instance], rule: BudgetRule, now: float
) -> list[dict[str, Any]]:
    latest = max(
        (k[2] for inst in table.values() for k in inst.routes if k[2] <= now), default=None
    )
    sums: dict[tuple[str, str], _Values] = {}
    for inst in table.values():
        for (route, model, start), s in inst.routes.items():
            if start == latest:
                sums[(route, model)] = _add(sums.get((route, model), (0, 0, 0)), s.values)
    rows = [
        {
            "route": route,
            "model": model,
            "usd": round(v[0] / PICO, 6),
            "tokens": v[1],
            "requests": v[2],
            "since": _iso(latest) if latest is not None else None,
        }
        for (route, model), v in sums.items()
    ]
    rows.sort(
        key=lambda r: (
            -float(r["usd"] or 0),
            -int(r["tokens"] or 0),
            str(r["route"]),
            str(r["model"]),
        )
    )
    return rows[:MAX_ROUTE_ROWS]


MAX_ROUTE_ROWS = 20


def _ledger(table: Mapping[tuple[str, str], _Instance]) -> list[dict[str, Any]]:
    return [
        {
            "pod": who[0],
            "instance": who[1],
            "lastReport": _iso(inst.last),
            "windows": [
                {"window": k[0], "start": k[1], "resetsAt": s.resets_at, **_amount(s)}
                for k, s in sorted(inst.windows.items())
            ],
            "routes": [
                {"route": k[0], "model": k[1], "start": k[2], **_amount(s)}
                for k, s in sorted(inst.routes.items())
            ],
        }
        for who, inst in sorted(table.items())
    ]


def _amount(s: _Spend) -> dict[str, int]:
    return {"seq": s.seq, "pusd": s.values[0], "tokens": s.values[1], "requests": s.values[2]}


def _epoch(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None
