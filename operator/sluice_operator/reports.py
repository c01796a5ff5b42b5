"""Aggregation of sidecar usage reports into what ModelRoute status shows.

Owns: accepting ``UsageReport``s idempotently (a repeated or older ``seq`` from the same pod is
ignored), keeping each pod's reports of the last ``WINDOW`` seconds, forgetting pods that stopped
reporting, and summing them into per-backend counters (over the window), health and the rollout
every kind's status shows (pods, pods on the current config hash, ``applied/pods``, and for a
ModelRoute each pod's hash and last report - to the minute, so an idle fleet costs at most one
status write a minute - from each pod's latest report).
A purely computational module; the caller passes the time and does the IO.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sluice_sidecar.contract import BackendState, UsageReport

STALE_AFTER = 60.0  # seconds without a report before a pod no longer counts
WINDOW = 300.0  # seconds of reports summed into the counters status shows


@dataclass
class _Pod:
    seq: int
    received: float
    report: UsageReport
    history: list[tuple[float, UsageReport]] = field(default_factory=list)


@dataclass
class Reports:
    """Latest report per (namespace, pod)."""

    pods: dict[tuple[str, str], _Pod] = field(default_factory=dict)

    def add(self, report: UsageReport, now: float) -> bool:
        """Record a report; False when it is a duplicate or older than one already seen."""
        key = (report.namespace, report.pod)
        seen = self.pods.get(key)
        if seen is not None and report.seq <= seen.seq:
            return False
        history = [(t, r) for t, r in (seen.history if seen else []) if now - t <= WINDOW]
        history.append((now, report))
        self.pods[key] = _Pod(report.seq, now, report, history)
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
        """``backends`` and ``rollout`` for the route whose virtual model name is ``route``."""
        pods = self._live_pods(namespace, now)
        reports = [p.report for p in pods]
        window = [r for p in pods for t, r in p.history if now - t <= WINDOW]
        users = [p for p in pods if any(h.route == route for h in p.report.health)] or pods
        rollout = _rollout(users, config_hash, sidecars=True)
        backends: dict[str, dict[str, Any]] = {}
        latencies: dict[str, list[float]] = {}
        ttfts: dict[str, list[float]] = {}
        for report in window:
            for u in report.usage:
                if u.route != route:
                    continue
                b = backends.setdefault(u.backend, _empty(u.backend))
                b["requests"] += u.requests
                b["errors"] += u.errors
                b["fallbacks"] += u.fallbacks
                if u.latency_p50_ms is not None:
                    latencies.setdefault(u.backend, []).append(u.latency_p50_ms)
                if u.ttft_p50_ms is not None:
                    ttfts.setdefault(u.backend, []).append(u.ttft_p50_ms)
        for report in reports:
            for h in report.health:
                if h.route != route:
                    continue
                b = backends.setdefault(h.backend, _empty(h.backend))
                # The worst state any pod sees wins: one ejecting pod is worth knowing about.
                if _rank(h.state) > _rank(BackendState(b["state"])):
                    b["state"] = h.state.value
                    b["until"] = _iso(h.until) if h.until else None
        for name, b in backends.items():
            if name in latencies:
                b["p50LatencyMs"] = round(statistics.median(latencies[name]), 1)
            if name in ttfts:
                b["p50TTFTMs"] = round(statistics.median(ttfts[name]), 1)
        return {"backends": [backends[k] for k in sorted(backends)], "rollout": rollout}


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
