#!/usr/bin/env python3
"""Budget overshoot across replicas, and the control plane under 1,000 reporting sidecars.

Two measurements, both on ``sluice dev fleet`` (a real etcd + kube-apiserver, the operator out of
cluster with its control plane on loopback over HTTPS, and sidecar processes registered as pods):

* **Overshoot.** One Budget (a USD limit per day, ``onExceeded: Block``) on one route of the mock
  provider (a fixed reply, so every request costs the same), served by 1, 3 and 10 sidecars. A
  load generator hammers every sidecar at once (``--concurrency`` requests in flight per sidecar)
  until the fleet is blocked: every sidecar has answered only 429 for ``--blocked-seconds``. Then
  the spend settles (the sidecars' audit records, summed, and the Budget's
  ``status.windows[].spentUSD``, which must agree), and the report gives total settled spend
  against the limit (overshoot in % and in $), requests allowed, and the control-plane traffic
  per allowed request: reports (the sum of the report sequence numbers in the Budget's ledger: one
  per report a sidecar process sent) and lease requests (from the operator's or the sidecars'
  metrics when they expose a count, else said to be unavailable).
* **1,000 simulated sidecars.** One process posts a usage report every second (and a lease request
  every ``--lease-every`` seconds, the sidecar's renewal cadence of a third of the TTL) for each
  of 1,000 pod identities (a Pod object each and a token bound to it, from distinct loopback
  source addresses as distinct pods have), directly to the operator's control plane. The
  operator's CPU (user + system, % of one core) and RSS are read from /proc over a window after a
  warm-up, with the achieved rates and the answers' status codes.

``--runs N`` repeats each point N times with a fresh fleet; the report gives the median and the
spread (min to max). Results go to the "budget-overshoot" section of docs/benchmarks.md.

Run:  python bench/budget_overshoot.py [--runs 3] [--sizes 1,3,10] [--simulated 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop
from report import write_section

from sluice_cli import devfleet
from sluice_sidecar.contract import (
    BackendHealth,
    BackendState,
    BudgetRouteSpend,
    BudgetWindowSpend,
    UsageEntry,
    UsageReport,
)

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "bench"
LIMIT_USD = 20.0
INPUT_PER_MTOK = 1000.0
OUTPUT_PER_MTOK = 2000.0
MAX_TOKENS = 8
DASH = "\u2013"  # an en dash, as in the other sections

ROUTE = f"""\
apiVersion: sluice.dev/v1alpha1
kind: ModelRoute
metadata:
  name: chat
spec:
  backends:
    - name: mock
      provider: mock
      model: mock-1
      mock:
        latency: 20ms
        reply: "one two three four five six seven eight"
      pricing:
        inputPerMTok: {INPUT_PER_MTOK}
        outputPerMTok: {OUTPUT_PER_MTOK}
"""
BUDGET = f"""\
apiVersion: sluice.dev/v1alpha1
kind: Budget
metadata:
  name: team
spec:
  limits:
    - window: Day
      usd: {LIMIT_USD}
  onExceeded:
    action: Block
"""
BODY = json.dumps(
    {
        "model": "chat",
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": "Count to eight."}],
    }
).encode()


# --------------------------------------------------------------------------------------------
# The fleet, as a user starts it
# --------------------------------------------------------------------------------------------


@dataclass
class FleetRun:
    proc: subprocess.Popen[bytes]
    ready: dict[str, Any]
    kubectl: str

    def get_json(self, *args: str) -> Any:
        out = subprocess.run(
            [self.kubectl, f"--kubeconfig={self.ready['kubeconfig']}", "get", *args, "-o", "json"],
            capture_output=True,
            check=True,
            timeout=60,
        )
        return json.loads(out.stdout)

    def operator_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ready["operator"]["ca"])

    def operator_metrics(self) -> str:
        url = self.ready["operator"]["metrics"]
        with urllib.request.urlopen(url, context=self.operator_context(), timeout=10) as r:
            return str(r.read().decode())


def snapshot(root: Path) -> dict[str, str]:
    """Copy the three packages as they are now and return the environment that runs them: the
    fleets of this run measure one code base even while the working tree changes."""
    src = root / "src"
    for package in PACKAGES:
        shutil.copytree(
            REPO / package,
            src / Path(package).name,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    path = os.pathsep.join(p for p in (str(src), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "SLUICE_REPO": str(REPO)}


PACKAGES = ("operator/sluice_operator", "sidecar/sluice_sidecar", "cli/sluice_cli")
#: The environment of the fleets (``snapshot``); empty: the working tree as installed.
FLEET_ENV: dict[str, str] = {}


@contextlib.contextmanager
def fleet(
    manifests: Path, replicas: int, workdir: Path, report_interval: float | None
) -> Iterator[FleetRun]:
    from sluice_cli import devcluster

    kubectl = str(devcluster.ensure_tools().kubectl)
    ready_file = workdir / "ready.json"
    log = (workdir / "fleet.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sluice_cli",
            "dev",
            "fleet",
            str(manifests),
            f"--replicas={replicas}",
            f"--namespace={NAMESPACE}",
            f"--workdir={workdir / 'fleet'}",
            f"--ready-file={ready_file}",
            *([f"--report-interval={report_interval}"] if report_interval else []),
            "--count-calls",
            "--timeout=600",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **FLEET_ENV},
    )
    try:
        deadline = time.monotonic() + 600
        while not ready_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sluice dev fleet did not start: {workdir / 'fleet.log'}")
            time.sleep(0.5)
        yield FleetRun(proc, json.loads(ready_file.read_text()), kubectl)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def manifests_dir(root: Path) -> Path:
    d = root / "manifests"
    d.mkdir(parents=True, exist_ok=True)
    (d / "route.yaml").write_text(ROUTE)
    (d / "budget.yaml").write_text(BUDGET)
    return d


# --------------------------------------------------------------------------------------------
# Overshoot
# --------------------------------------------------------------------------------------------


@dataclass
class Hammer:
    allowed: int = 0
    refused: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    last_allowed: float = 0.0
    #: (monotonic time, the counter's calls) every half second during the load
    samples: list[tuple[float, Counter[str]]] = field(default_factory=list)

    def calls_until_last_allowed(self) -> Counter[str]:
        """The calls counted at the first sample after the last allowed request."""
        after = [c for t, c in self.samples if t >= self.last_allowed]
        return after[0] if after else (self.samples[-1][1] if self.samples else Counter())


async def hammer(
    urls: Sequence[str], concurrency: int, blocked_seconds: float, calls_url: str, ca: str
) -> Hammer:
    """Every sidecar at once, ``concurrency`` requests in flight each, until each has answered
    only 429 for ``blocked_seconds`` (a 429 is retried after its Retry-After, at most 1 s);
    meanwhile the fleet's call counter is read every half second."""
    out = Hammer()
    last_ok = {u: time.monotonic() for u in urls}
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=0)
    context = ssl.create_default_context(cafile=ca)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:

        async def sampler() -> None:
            while True:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(calls_url, ssl=context) as r:
                        got = Counter((await r.json())["calls"])
                    out.samples.append((time.monotonic(), got))
                await asyncio.sleep(0.5)

        async def worker(url: str) -> None:
            while time.monotonic() - last_ok[url] < blocked_seconds:
                try:
                    async with session.post(
                        f"{url}/chat/completions", data=BODY, headers=headers
                    ) as r:
                        await r.read()
                        if r.status == 200:
                            out.allowed += 1
                            last_ok[url] = out.last_allowed = time.monotonic()
                            continue
                        if r.status == 429:
                            out.refused += 1
                            wait = float(r.headers.get("Retry-After") or 0.2)
                            await asyncio.sleep(min(1.0, max(0.05, wait)))
                            continue
                        out.errors[str(r.status)] += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    out.errors[type(exc).__name__] += 1
                await asyncio.sleep(0.1)

        sampling = asyncio.create_task(sampler())
        await asyncio.gather(*(worker(u) for u in urls for _ in range(concurrency)))
        await asyncio.sleep(0.6)  # one sample after the last answer
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
    return out


def audit_spend(ready: dict[str, Any]) -> tuple[float, int]:
    """Settled spend and answered requests, from every sidecar's audit records."""
    usd, n = 0.0, 0
    for side in ready["sidecars"]:
        path = Path(side["auditLog"])
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("status") == 200:
                usd += float(rec.get("costUSD") or 0.0)
                n += 1
    return usd, n


def status_spend(run: FleetRun) -> tuple[float | None, int]:
    """The Budget's Day window spentUSD, and the reports in its ledger (the sum over sidecar
    processes of their highest report sequence number)."""
    st = run.get_json("budget", "team", "-n", NAMESPACE).get("status") or {}
    windows = st.get("windows") or []
    spent = float(windows[0]["spentUSD"]) if windows else None
    reports = 0
    for entry in st.get("ledger") or []:
        seqs = [w.get("seq", 0) for w in entry.get("windows") or []]
        reports += max(seqs, default=0)
    return spent, reports


def calls(run: FleetRun) -> Counter[str]:
    """The sidecars' control-plane calls so far, by route (``sluice dev fleet --count-calls``)."""
    url = run.ready["controlPlane"]["calls"]
    with urllib.request.urlopen(url, context=run.operator_context(), timeout=10) as r:
        return Counter(json.load(r)["calls"])


def overshoot_point(
    manifests: Path, replicas: int, concurrency: int, blocked_seconds: float, root: Path
) -> dict[str, Any]:
    load = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix=f"overshoot-{replicas}-", dir=root))
    with fleet(manifests, replicas, work, report_interval=None) as run:
        urls = [s["url"] for s in run.ready["sidecars"]]
        before = calls(run)
        started = time.monotonic()
        calls_url, ca = run.ready["controlPlane"]["calls"], run.ready["operator"]["ca"]
        got = asyncio.run(hammer(urls, concurrency, blocked_seconds, calls_url, ca))
        spending = got.calls_until_last_allowed() - before
        spending_seconds = got.last_allowed - started
        load_seconds = time.monotonic() - started - blocked_seconds
        # settle: audit lines are flushed every second; status follows the next reports
        audit_usd, audit_n = audit_spend(run.ready)
        deadline = time.monotonic() + 60
        spent, reports = status_spend(run)
        while time.monotonic() < deadline:
            time.sleep(2)
            audit_usd, audit_n = audit_spend(run.ready)
            spent, reports = status_spend(run)
            if spent is not None and abs(spent - audit_usd) < 1e-6 and audit_n == got.allowed:
                break
        settled_at = time.monotonic()
        during = calls(run) - before
    return {
        "replicas": replicas,
        "load_average": load,
        "allowed": got.allowed,
        "refused": got.refused,
        "errors": dict(got.errors),
        "audit_usd": audit_usd,
        "audit_requests": audit_n,
        "status_usd": spent,
        "overshoot_usd": audit_usd - LIMIT_USD,
        "overshoot_pct": 100 * (audit_usd - LIMIT_USD) / LIMIT_USD,
        "reports_in_ledger": reports,
        "calls": dict(during),
        "calls_while_spending": dict(spending),
        "spending_seconds": spending_seconds,
        "reports": spending["POST /v1/reports"],
        "leases": spending["POST /v1/leases"],
        "configs": spending["GET /v1/config/{ns}"],
        "leases_total": during["POST /v1/leases"],
        "load_seconds": load_seconds,
        "measured_seconds": settled_at - started,
    }


# --------------------------------------------------------------------------------------------
# 1,000 simulated sidecars
# --------------------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> tuple[float, float]:
    status = Path(f"/proc/{pid}/status").read_text()

    def kb(key: str) -> float:
        m = re.search(rf"^{key}:\s+(\d+) kB", status, re.M)
        return int(m.group(1)) / 1024 if m else 0.0

    return kb("VmRSS"), kb("VmHWM")


def _pid_of_port(port: int) -> int:
    """The kube-apiserver's pid: the process listening on ``port`` (from /proc, no tools)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(proc.name)
    raise RuntimeError(f"no process listens on port {port}")


def _source_address(index: int) -> str:
    """A distinct loopback address per simulated pod (Linux routes all of 127/8 to lo)."""
    return f"127.1.{index // 250}.{index % 250 + 1}"


@dataclass
class Simulated:
    pod: str
    token: str
    instance: str
    seq: int = 0
    lease_seq: int = 0
    doc: dict[str, Any] | None = None


@dataclass
class SimStats:
    reports: Counter[int] = field(default_factory=Counter)
    leases: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    #: (sent, seconds, path, status) of every answer, for the per-10-second table in the JSON
    timeline: list[tuple[float, float, str, int]] = field(default_factory=list)


def _report(sim: Simulated, windows: list[dict[str, Any]], config_hash: str) -> bytes:
    """The next report of ``sim``: the contract's document made once (``_report_doc``), then
    only its counters changed, so the simulator spends its CPU on the wire, not on pydantic."""
    now = time.time()
    sim.seq += 1
    n = sim.seq  # a steady request a second each, $0.00001 each: far from the limit
    if sim.doc is None:
        sim.doc = _report_doc(sim, windows, config_hash)
    doc = sim.doc
    doc.update(seq=n, windowStart=now - 1, windowEnd=now)
    for spend in (*doc["budgets"], *doc["budgetRoutes"]):
        spend.update(pusd=n * 10_000_000, tokens=13 * n, requests=n)
    return orjson.dumps(doc)


def _report_doc(sim: Simulated, windows: list[dict[str, Any]], config_hash: str) -> dict[str, Any]:
    requests, pusd = 0, 0
    report = UsageReport(
        namespace=NAMESPACE,
        pod=sim.pod,
        config_hash=config_hash,
        seq=0,
        window_start=0,
        window_end=0,
        instance=sim.instance,
        usage=(
            UsageEntry(
                route="chat",
                backend="mock",
                requests=1,
                input_tokens=5,
                output_tokens=8,
                cost_usd=0.00001,
                latency_p50_ms=21.0,
            ),
        ),
        health=(BackendHealth(route="chat", backend="mock", state=BackendState.HEALTHY),),
        budgets=tuple(
            BudgetWindowSpend(
                budget=w["budget"],
                window=w["window"],
                start=w["start"],
                resets_at=w["resetsAt"],
                pusd=pusd,
                tokens=13 * requests,
                requests=requests,
            )
            for w in windows
        ),
        budget_routes=tuple(
            BudgetRouteSpend(
                budget=w["budget"],
                route="chat",
                model="mock-1",
                start=w["start"],
                pusd=pusd,
                tokens=13 * requests,
                requests=requests,
            )
            for w in windows[:1]
        ),
    )
    return report.model_dump(mode="json", by_alias=True)


def _lease_request(sim: Simulated, windows: list[dict[str, Any]]) -> bytes | None:
    try:
        from sluice_sidecar.contract import LeaseAmount, LeaseAsk, LeaseRequest
    except ImportError:
        return None
    sim.lease_seq += 1
    request = LeaseRequest(
        namespace=NAMESPACE,
        pod=sim.pod,
        instance=sim.instance,
        seq=sim.lease_seq,
        asks=tuple(
            LeaseAsk(
                budget=w["budget"],
                window=w["window"],
                start=w["start"],
                spent=LeaseAmount(pusd=sim.seq * 10_000_000, tokens=13 * sim.seq, requests=sim.seq),
                want=LeaseAmount(pusd=20_000_000, tokens=26, requests=2),
            )
            for w in windows
        ),
    )
    return request.model_dump_json(by_alias=True).encode()


async def simulate(
    url: str,
    ca: str,
    sims: list[Simulated],
    windows: list[dict[str, Any]],
    config_hash: str,
    seconds: float,
    lease_every: float,
    stats: SimStats,
) -> None:
    """Each identity: a report every second and a lease request every ``lease_every`` seconds,
    over its own keep-alive connection from its own source address."""
    context = ssl.create_default_context(cafile=ca)
    stop = time.monotonic() + seconds

    async def one(index: int, sim: Simulated) -> None:
        connector = aiohttp.TCPConnector(
            ssl=context, limit=1, local_addr=(_source_address(index), 0)
        )
        headers = {"Authorization": f"Bearer {sim.token}", "Content-Type": "application/json"}
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=30)
        ) as session:
            await asyncio.sleep(index / len(sims))  # spread over the first second
            never = lease_every <= 0
            next_lease = float("inf") if never else time.monotonic() + index % int(lease_every)
            while time.monotonic() < stop:
                tick = time.monotonic()
                posts: list[tuple[str, bytes, Counter[int]]] = [
                    ("reports", _report(sim, windows, config_hash), stats.reports)
                ]
                if tick >= next_lease:
                    body = _lease_request(sim, windows)
                    if body is not None:
                        posts.append(("leases", body, stats.leases))
                    next_lease = tick + lease_every
                for path, body, counter in posts:
                    t0 = time.monotonic()
                    try:
                        async with session.post(
                            f"{url}/v1/{path}", data=body, headers=headers
                        ) as r:
                            await r.read()
                            counter[r.status] += 1
                            if path == "reports" and r.status == 200:
                                stats.latencies.append(time.monotonic() - t0)
                            stats.timeline.append((t0, time.monotonic() - t0, path, r.status))
                            if r.status == 429:
                                await asyncio.sleep(float(r.headers.get("Retry-After") or 1))
                    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                        stats.failures[type(exc).__name__] += 1
                await asyncio.sleep(max(0.0, tick + 1.0 - time.monotonic()))

    await asyncio.gather(*(one(i, s) for i, s in enumerate(sims)))


def simulated_point(
    manifests: Path, count: int, warmup: float, measure: float, lease_every: float, root: Path
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="simulated-", dir=root))
    with fleet(manifests, 1, work, report_interval=1) as run:
        ready = run.ready
        admin = devfleet.admin_of(ready)
        # a real sidecar's windows and config hash: the simulated reports use the same keys
        side = ready["sidecars"][0]
        deadline = time.monotonic() + 60
        windows: list[dict[str, Any]] = []
        while not windows and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(
                    urllib.request.Request(
                        f"{side['url']}/chat/completions",
                        data=BODY,
                        headers={"Content-Type": "application/json"},
                    ),
                    timeout=10,
                ).read()
            st = run.get_json("budget", "team", "-n", NAMESPACE).get("status") or {}
            for entry in st.get("ledger") or []:
                windows = [
                    {"budget": "team", **{k: w[k] for k in ("window", "start", "resetsAt")}}
                    for w in entry.get("windows") or []
                ]
            time.sleep(1)
        if not windows:
            raise RuntimeError("the real sidecar's budget windows never showed in the status")
        config_hash = run.get_json("modelroute", "chat", "-n", NAMESPACE)["status"]["rollout"][
            "configHash"
        ]

        t0 = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            idents = list(
                pool.map(
                    lambda i: devfleet.pod_identity(admin, NAMESPACE, f"sim-{i:04d}"),
                    range(count),
                )
            )
        setup_seconds = time.monotonic() - t0
        sims = [Simulated(i.pod, i.token, os.urandom(8).hex()) for i in idents]
        stats = SimStats()
        pid = int(ready["operator"]["pid"])
        apiserver = _pid_of_port(int(str(ready["apiserver"]).rsplit(":", 1)[1]))
        result: dict[str, Any] = {
            "pods": count,
            "setup_seconds": setup_seconds,
            "load_average": os.getloadavg()[0],
        }

        async def measured() -> None:
            task = asyncio.create_task(
                simulate(
                    ready["operator"]["url"],
                    ready["operator"]["ca"],
                    sims,
                    windows,
                    config_hash,
                    warmup + measure,
                    lease_every,
                    stats,
                )
            )
            await asyncio.sleep(warmup)
            cpu0, wall0 = _cpu_seconds(pid), time.monotonic()
            own0, api0 = time.process_time(), _cpu_seconds(apiserver)
            rep0, lease0 = sum(stats.reports.values()), sum(stats.leases.values())
            stats.latencies.clear()
            samples: list[float] = []
            while time.monotonic() - wall0 < measure:
                await asyncio.sleep(1)
                samples.append(_rss_mb(pid)[0])
            cpu1, wall1 = _cpu_seconds(pid), time.monotonic()
            elapsed = wall1 - wall0
            result.update(
                cpu_pct=100 * (cpu1 - cpu0) / elapsed,
                simulator_cpu_pct=100 * (time.process_time() - own0) / elapsed,
                apiserver_cpu_pct=100 * (_cpu_seconds(apiserver) - api0) / elapsed,
                rss_mb=statistics.median(samples),
                peak_rss_mb=_rss_mb(pid)[1],
                reports_per_s=(sum(stats.reports.values()) - rep0) / elapsed,
                leases_per_s=(sum(stats.leases.values()) - lease0) / elapsed,
                report_p50_ms=1000 * statistics.median(stats.latencies)
                if stats.latencies
                else None,
                report_p99_ms=1000 * statistics.quantiles(stats.latencies, n=100)[98]
                if len(stats.latencies) >= 100
                else None,
            )
            await task

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(measured())
        metrics = run.operator_metrics()
        m = re.search(r"^sluice_operator_reporting_sidecars\s+([0-9.e+]+)$", metrics, re.M)
        begin = min((t for t, *_ in stats.timeline), default=0.0)
        buckets: dict[int, list[tuple[float, float, str, int]]] = {}
        for item in stats.timeline:
            buckets.setdefault(int((item[0] - begin) // 10), []).append(item)
        result["timeline"] = [
            {
                "second": 10 * b,
                "reports_200": sum(1 for i in items if i[2] == "reports" and i[3] == 200),
                "answers_429": sum(1 for i in items if i[3] == 429),
                "p50_ms": round(1000 * statistics.median(i[1] for i in items), 1),
            }
            for b, items in sorted(buckets.items())
        ]
        result.update(
            report_statuses=dict(stats.reports),
            lease_statuses=dict(stats.leases),
            failures=dict(stats.failures),
            reporting_sidecars=float(m.group(1)) if m else None,
        )
    return result


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _spread(values: Sequence[float | None], fmt: str, unit: str = "") -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "—"
    med = format(statistics.median(got), fmt)
    if len(got) == 1:
        return f"{med}{unit}"
    return f"{med}{unit} ({format(min(got), fmt)}{DASH}{format(max(got), fmt)})"


def render(
    overshoot: dict[int, list[dict[str, Any]]],
    simulated: dict[str, list[dict[str, Any]]],
    args: argparse.Namespace,
    commit: str,
    leases_wired: bool,
) -> str:
    lines = [
        "## Budget overshoot across replicas (`bench/budget_overshoot.py`)",
        "",
        f"Produced by `python bench/budget_overshoot.py --runs {args.runs} --sizes "
        f"{args.sizes} --simulated {args.simulated}` on {time.strftime('%Y-%m-%d')} at commit "
        f"{commit}, on `sluice dev fleet` (real etcd + kube-apiserver, the operator out of "
        "cluster with its control plane on loopback over HTTPS, sidecar processes registered "
        "as pods with bound tokens). One Budget of "
        f"${LIMIT_USD:.2f} a day (`onExceeded: Block`) on one route of the mock provider (20 ms, "
        f"a fixed 8-token reply, `max_tokens: {MAX_TOKENS}`, priced so that one request costs "
        "the same every time). The load generator keeps "
        f"{args.concurrency} requests in flight per sidecar until every sidecar has answered "
        f"only 429 for {args.blocked_seconds:g} s. Settled spend is the sum of the sidecars' "
        "audit records (`costUSD` of every answered request); the Budget's "
        "`status.windows[0].spentUSD` is shown next to it. Control-plane calls are counted by "
        "`sluice dev fleet --count-calls` (a pass-through between the sidecars and the operator) "
        "from the start of the load until the last request allowed (read every 0.5 s), and "
        "divided by the requests allowed; the sidecars report at their default interval (10 s) "
        "and renew their leases every third of the TTL (30 s) and whenever a slice runs low or "
        "a request is refused (at most every 0.2 s), so part of that traffic is per sidecar and "
        "second rather than per request (the calls per second over that time are shown too). "
        "The lease design's bound (`sluice_operator.leases`): granted slices plus settled spend "
        "never exceed the limit, except what a request settles above what it reserved; here a "
        "request reserves for `max_tokens`, so no request settles above its reservation and "
        "the bound is the limit itself. Median over "
        f"{args.runs} runs with the spread (min{DASH}max); a fresh fleet for every run.",
        "",
    ]
    if not leases_wired:
        lines += [
            "**Leases were not wired in when this ran**: each sidecar enforced the whole limit "
            "on its own, so N replicas may spend about N limits; the overshoot below is that "
            "state, not the lease design's bound.",
            "",
        ]
    lines += [
        "| sidecars | settled spend | overshoot | overshoot $ | requests allowed | "
        "status spentUSD | lease requests / allowed | reports / allowed | control-plane "
        "calls / s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for size, runs in sorted(overshoot.items()):

        def per(key: str, rs: list[dict[str, Any]] = runs) -> list[float | None]:
            return [r[key] / r["allowed"] if r["allowed"] else None for r in rs]

        per_second = [
            (r["reports"] + r["leases"] + r["configs"]) / r["spending_seconds"]
            if r["spending_seconds"] > 0
            else None
            for r in runs
        ]
        lines.append(
            f"| {size} | {_spread([r['audit_usd'] for r in runs], '.2f', ' USD')} "
            f"| {_spread([r['overshoot_pct'] for r in runs], '+.1f', ' %')} "
            f"| {_spread([r['overshoot_usd'] for r in runs], '+.2f', ' USD')} "
            f"| {_spread([r['allowed'] for r in runs], '.0f')} "
            f"| {_spread([r['status_usd'] for r in runs], '.2f', ' USD')} "
            f"| {_spread(per('leases'), '.3f')} | {_spread(per('reports'), '.3f')} "
            f"| {_spread(per_second, '.1f')} |"
        )
    errors = Counter[str]()
    for runs in overshoot.values():
        for r in runs:
            errors.update(r["errors"])
    lines += [
        "",
        f"Other answers than 200 and 429 during the load: {dict(errors) or 'none'}. Load "
        "average (1 min) of the shared machine when each run started: "
        + ", ".join(f"{r['load_average']:.1f}" for runs in overshoot.values() for r in runs)
        + ".",
        "",
    ]
    if any(simulated.values()):
        a, b = simulated["reports"], simulated["reports+leases"]

        def row(name: str, key: str, fmt: str, unit: str = "") -> str:
            return (
                f"| {name} | {_spread([r[key] for r in a], fmt, unit)} "
                f"| {_spread([r[key] for r in b], fmt, unit)} |"
            )

        def answers(runs: list[dict[str, Any]]) -> str:
            parts = [
                f"{what} " + ", ".join(f"{k}: {v}" for k, v in _sum_counts(runs, key).items())
                for what, key in (("reports", "report_statuses"), ("leases", "lease_statuses"))
                if _sum_counts(runs, key)
            ]
            failures = _sum_counts(runs, "failures")
            return "; ".join(parts) + f"; transport failures {failures or 'none'}"

        lines += [
            f"### Control plane with {args.simulated} simulated sidecars",
            "",
            f"One process posts, for each of {args.simulated} pod identities (a Pod object and a "
            "bound token each, from its own loopback source address), a usage report every "
            "second (the shape a real sidecar sends: one route entry, backend health, the "
            "Budget's window spend and route spend), and in the second column also a lease "
            f"request every {args.lease_every:g} s (the sidecar's renewal cadence: a third of the "
            "30 s TTL), directly to the operator's control plane (HTTPS; a TokenReview per "
            "token, cached 60 s; at most 50 new reviews a second). Each identity waits for its "
            "answer before the next post (as a sidecar does), so a slow answer lowers the rate "
            "achieved. The operator's CPU (user + system, % of one core) and RSS are read from "
            f"/proc over {args.measure:g} s after {args.warmup:g} s of warm-up (the first "
            "TokenReviews). The simulator shares the 2 cores with the operator, the apiserver "
            "and etcd; its own CPU is shown.",
            "",
            "| measure | reports only | reports + lease requests |",
            "|---|---|---|",
            row("operator CPU (% of one core)", "cpu_pct", ".0f", " %"),
            row("operator RSS", "rss_mb", ".0f", " MB"),
            row("operator peak RSS", "peak_rss_mb", ".0f", " MB"),
            row(
                "reports answered 200 per second (offered: one per pod a second)",
                "reports_per_s",
                ".0f",
            ),
            row("lease requests per second", "leases_per_s", ".0f"),
            row("report latency p50", "report_p50_ms", ".0f", " ms"),
            row("report latency p99", "report_p99_ms", ".0f", " ms"),
            row("simulator CPU", "simulator_cpu_pct", ".0f", " %"),
            row("kube-apiserver CPU", "apiserver_cpu_pct", ".0f", " %"),
            row("sidecars the operator counts as reporting", "reporting_sidecars", ".0f"),
            row(f"creating the {args.simulated} pods and tokens", "setup_seconds", ".0f", " s"),
            "",
            f"Answers, reports only: {answers(a)}. With leases: {answers(b)}.",
            "",
            "Load average (1 min) of the shared machine when each simulated run started: "
            + ", ".join(f"{r['load_average']:.1f}" for r in (*a, *b))
            + ".",
        ]
    return "\n".join(lines)


def _sum_counts(runs: Sequence[dict[str, Any]], key: str) -> dict[str, int]:
    total: Counter[str] = Counter()
    for r in runs:
        total.update({str(k): int(v) for k, v in r[key].items()})
    return dict(sorted(total.items()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="1,3,10", help="sidecar counts, comma-separated")
    parser.add_argument("--concurrency", type=int, default=4, help="in flight per sidecar")
    parser.add_argument("--blocked-seconds", type=float, default=12.0)
    parser.add_argument("--simulated", type=int, default=1000, help="0: skip")
    parser.add_argument("--simulated-runs", type=int, default=None, help="default: --runs")
    parser.add_argument("--warmup", type=float, default=30.0)
    parser.add_argument("--measure", type=float, default=60.0)
    parser.add_argument("--lease-every", type=float, default=10.0)
    parser.add_argument("--no-write", action="store_true", help="print, do not write the doc")
    parser.add_argument("--keep", action="store_true", help="keep the fleets' folders (logs)")
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="measure nothing: render (and write) the results a --json run saved",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write raw results here")
    args = parser.parse_args(argv)

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    ).stdout.strip()
    leases_wired = "/v1/leases" in (REPO / "operator/sluice_operator/controlplane.py").read_text()
    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text())
        text = render(
            {int(k): v for k, v in saved["overshoot"].items()},
            saved["simulated"],
            args,
            saved.get("commit", commit),
            leases_wired,
        )
        print(text)
        if not args.no_write:
            write_section("budget-overshoot", text)
        return 0
    root = Path(tempfile.mkdtemp(prefix="budget-overshoot-"))
    manifests = manifests_dir(root)
    FLEET_ENV.update(snapshot(root))
    dirty = subprocess.run(
        ["git", "status", "--porcelain", *PACKAGES],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    ).stdout.strip()
    commit += " (with uncommitted changes)" if dirty else ""
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    overshoot: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}
    simulated: dict[str, list[dict[str, Any]]] = {"reports": [], "reports+leases": []}
    for run in range(args.runs if sizes else 0):
        for n in sizes[run % len(sizes) :] + sizes[: run % len(sizes)]:  # rotated order
            point = overshoot_point(manifests, n, args.concurrency, args.blocked_seconds, root)
            overshoot[n].append(point)
            print(json.dumps(point), file=sys.stderr, flush=True)
    for run in range(args.simulated_runs if args.simulated_runs is not None else args.runs):
        if args.simulated <= 0:
            break
        modes = [("reports", 0.0), ("reports+leases", args.lease_every)]
        for mode, lease_every in modes[run % 2 :] + modes[: run % 2]:  # alternated order
            point = simulated_point(
                manifests, args.simulated, args.warmup, args.measure, lease_every, root
            )
            point["mode"] = mode
            simulated[mode].append(point)
            print(json.dumps({k: v for k, v in point.items() if k != "timeline"}), file=sys.stderr)
    if args.json:
        saved = {"overshoot": overshoot, "simulated": simulated, "commit": commit}
        args.json.write_text(json.dumps(saved, indent=1))
    text = render(overshoot, simulated, args, commit, leases_wired)
    print(text)
    if not args.no_write:
        write_section("budget-overshoot", text)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
