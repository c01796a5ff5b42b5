"""Reports of ``sluice eval``: the summary, the result table, ``--json`` and ``--junit`` files,
and the progress bar on a terminal.

Owns ``summarize`` (pass rate per run, its mean and spread over ``--repeat`` runs, cost and
latency) and the renderings of a summary. Pure except for the writers, which take a stream or a
path.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .runner import CaseResult, Plan


@dataclass(frozen=True)
class Summary:
    template: str
    version: int
    route: str
    threshold: float
    score: float  # mean pass rate over runs
    runs: list[float]  # pass rate of each run
    passed: bool
    cost_usd: float
    latency_p50_ms: float
    latency_mean_ms: float
    at: str
    results: Sequence[CaseResult]

    @property
    def spread(self) -> str:
        if len(self.runs) < 2:
            return ""
        return (
            f"{min(self.runs):.2f}..{max(self.runs):.2f} (stdev {statistics.pstdev(self.runs):.3f})"
        )

    def failed(self) -> list[str]:
        """``case[#run]: check detail`` for each failing case."""
        out = []
        for r in self.results:
            if r.passed:
                continue
            tag = r.case if len(self.runs) < 2 else f"{r.case}#{r.run}"
            why = r.error or "; ".join(f"{o.check} {o.detail}" for o in r.outcomes if not o.passed)
            out.append(f"{tag}: {why}"[:256])
        return out


def summarize(plan: Plan, threshold: float, results: Sequence[CaseResult], repeat: int) -> Summary:
    runs = []
    for r in range(1, repeat + 1):
        mine = [x for x in results if x.run == r]
        runs.append(sum(x.passed for x in mine) / len(mine) if mine else 0.0)
    score = statistics.fmean(runs) if runs else 0.0
    latencies = [r.latency_ms for r in results] or [0.0]
    return Summary(
        template=plan.template,
        version=plan.version,
        route=plan.route,
        threshold=threshold,
        score=round(score, 4),
        runs=[round(x, 4) for x in runs],
        passed=score >= threshold,
        cost_usd=round(sum(r.cost_usd for r in results), 8),
        latency_p50_ms=round(statistics.median(latencies), 1),
        latency_mean_ms=round(statistics.fmean(latencies), 1),
        at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        results=results,
    )


def table(summary: Summary, out: TextIO) -> None:
    """The result table (case, run, check, score, pass) and the verdict line."""
    rows = [("case", "run", "check", "score", "pass", "detail")]
    for r in summary.results:
        if r.error:
            rows.append((r.case, str(r.run), "request", "0.00", "FAIL", r.error[:60]))
        for o in r.outcomes:
            rows.append(
                (
                    r.case,
                    str(r.run),
                    o.check,
                    f"{o.score:.2f}",
                    "ok" if o.passed else "FAIL",
                    o.detail[:60],
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(5)]
        out.write(("  ".join(cells) + ("  " + row[5] if row[5] else "")).rstrip() + "\n")
    verdict = "PASS" if summary.passed else "FAIL"
    spread = f", spread {summary.spread}" if summary.spread else ""
    out.write(
        f"\n{verdict}: {summary.template}@{summary.version} via {summary.route}: score "
        f"{summary.score:.2f} (threshold {summary.threshold:.2f}, {len(summary.runs)} run(s)"
        f"{spread}); cost ${summary.cost_usd:.6f}, latency p50 {summary.latency_p50_ms:.0f} ms\n"
    )


def as_json(summary: Summary) -> dict[str, Any]:
    return {
        "template": summary.template,
        "version": summary.version,
        "route": summary.route,
        "threshold": summary.threshold,
        "score": summary.score,
        "passed": summary.passed,
        "runs": summary.runs,
        "spread": summary.spread or None,
        "costUSD": summary.cost_usd,
        "latencyP50Ms": summary.latency_p50_ms,
        "latencyMeanMs": summary.latency_mean_ms,
        "at": summary.at,
        "failed": summary.failed(),
        "cases": [
            {
                "case": r.case,
                "run": r.run,
                "passed": r.passed,
                "answer": r.answer,
                "error": r.error,
                "latencyMs": r.latency_ms,
                "costUSD": r.cost_usd,
                "checks": [
                    {"check": o.check, "score": o.score, "passed": o.passed, "detail": o.detail}
                    for o in r.outcomes
                ],
            }
            for r in summary.results
        ],
    }


def write_json(summary: Summary, path: Path) -> None:
    path.write_text(json.dumps(as_json(summary), indent=2, ensure_ascii=False) + "\n", "utf-8")


def write_junit(summary: Summary, path: Path) -> None:
    """One test case per (case, run); a failing check is a ``<failure>``."""
    name = f"sluice-eval.{summary.template}@{summary.version}"
    failures = sum(not r.passed for r in summary.results)
    suite = ET.Element(
        "testsuite",
        name=name,
        tests=str(len(summary.results)),
        failures=str(failures),
        errors="0",
        time=f"{sum(r.latency_ms for r in summary.results) / 1000:.3f}",
        timestamp=summary.at,
    )
    props = ET.SubElement(suite, "properties")
    for key, value in (
        ("route", summary.route),
        ("score", f"{summary.score:.4f}"),
        ("threshold", f"{summary.threshold:.4f}"),
        ("passed", str(summary.passed).lower()),
    ):
        ET.SubElement(props, "property", name=key, value=value)
    for r in summary.results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"{summary.template}.v{summary.version}",
            name=r.case if len(summary.runs) < 2 else f"{r.case}[run {r.run}]",
            time=f"{r.latency_ms / 1000:.3f}",
        )
        if not r.passed:
            why = r.error or "; ".join(f"{o.check}: {o.detail}" for o in r.outcomes if not o.passed)
            failure = ET.SubElement(case, "failure", message=why[:500], type="EvaluationFailed")
            failure.text = f"answer: {r.answer[:2000]}"
    root = ET.Element("testsuites", name="sluice eval")
    root.append(suite)
    ET.indent(root)
    path.write_bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n")


class Progress:
    """A one-line progress bar on a terminal (nothing when ``out`` is not one)."""

    def __init__(self, out: TextIO, width: int = 30) -> None:
        self._out = out
        self._width = width
        self._on = out.isatty()

    def __call__(self, done: int, total: int) -> None:
        if not self._on or total == 0:
            return
        filled = self._width * done // total
        bar = "#" * filled + "." * (self._width - filled)
        self._out.write(f"\r[{bar}] {done}/{total} cases")
        if done == total:
            self._out.write("\n")
        self._out.flush()
