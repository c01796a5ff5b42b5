"""Aggregation of sidecar usage reports into what ModelRoute status shows.

Owns: accepting ``UsageReport``s idempotently (a repeated or older ``seq`` from the same pod is
ignored), keeping each pod's latest window, forgetting pods that stopped reporting, and summing
them into per-backend health and counters and a rollout count (pods, and pods on the current
config hash). A purely computational module; the caller passes the time and does the IO.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sluice_sidecar.contract import BackendState, UsageReport

STALE_AFTER = 60.0  # seconds without a report before a pod no longer counts


@dataclass
class _Pod:
    seq: int
    received: float
    report: UsageReport


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
        self.pods[key] = _Pod(report.seq, now, report)
        return True

    def live(self, namespace: str, now: float) -> list[UsageReport]:
        self.pods = {k: p for k, p in self.pods.items() if now - p.received <= STALE_AFTER}
        return [p.report for (ns, _), p in sorted(self.pods.items()) if ns == namespace]

    def route_status(
        self, namespace: str, route: str, config_hash: str | None, now: float
    ) -> dict[str, Any]:
        """``backends`` and ``rollout`` for the route whose virtual model name is ``route``."""
        reports = self.live(namespace, now)
        users = [r for r in reports if any(u.route == route for u in r.usage)] or reports
        rollout = {
            "configHash": config_hash,
            "pods": len(users),
            "applied": sum(1 for r in users if r.config_hash == config_hash),
        }
        backends: dict[str, dict[str, Any]] = {}
        latencies: dict[str, list[float]] = {}
        ttfts: dict[str, list[float]] = {}
        for report in reports:
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
