"""Operator at scale: 1,000 ModelRoutes + 1,000 PromptTemplates across 100 namespaces.

Starts a local etcd + kube-apiserver (the test harness), applies the CRDs, starts the operator as
a child process, creates the objects, and measures: time until every object is Ready, the
operator's peak RSS, and write requests to the API per reconcile pass (from its /metrics).
Baseline measured in the same run: the apiserver's own time to accept the objects (the apply).
Targets: all Ready within 60 s, operator under 300 MB. Results go to docs/benchmarks.md.

    python bench/operator_scale.py [--namespaces 100] [--per-namespace 10]

``--simulated N`` measures instead where the operator's memory goes under N reporting sidecars
(issue #12; the chart's operator limit is 512Mi): the simulated pods of
``bench/budget_overshoot.py`` (a report per pod every second, ``--lease-every`` 0 or 10 s), its
figures (RSS median over the measured window, peak), and beside them the operator's
``/proc/<pid>/smaps_rollup`` (anonymous memory) and thread count, sampled every second. With
``--tracemalloc DIR`` a ``sitecustomize`` hook (bench-only, on the fleet's PYTHONPATH) makes the
operator start ``tracemalloc`` on its first SIGUSR1 and write its top allocations by line to
``DIR`` on every later one; the bench sends one when the fleet is ready and one every 30 s of
the warm-up and the measured window (not later: a dump stalls the operator for seconds). Extra
environment for the fleet (e.g. ``--env MALLOC_ARENA_MAX=2``) is passed with ``--env``; the
hook also reads two bench-only experiments from it: ``SLUICE_BENCH_UVLOOP=1`` (the operator's
event loop is uvloop's), ``SLUICE_BENCH_TLS_READ=BYTES`` (asyncio's per-connection TLS read
buffer, 256 KiB in the standard library) and ``SLUICE_BENCH_CPUS=N`` (``os.cpu_count()`` says N,
so thread pools are sized as on a node of N cores). Prints a
table (median and spread over ``--runs``) and writes nothing to the docs. ``--ref REF`` runs
the operator package as committed at REF (``git archive``) beside today's sidecar and CLI.
``--polls M`` also holds M config long polls open (a real sidecar holds one, and keeps one
connection alive between calls for its reports and lease requests: two connections; the
simulated pods hold one each).

    python bench/operator_scale.py --simulated 300 --runs 1 --warmup 20 --measure 40
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from report import write_section

REPO = Path(__file__).resolve().parents[1]
DASH = "\u2013"  # an en dash, as in the other sections
sys.path.insert(0, str(REPO / "tests"))

from cluster.operator_proc import start_operator  # noqa: E402
from sluice_cli import devcluster  # noqa: E402


def objects(namespaces: int, per_ns: int) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for n in range(namespaces):
        ns = f"scale-{n:03d}"
        out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for i in range(per_ns):
            out.append(
                {
                    "apiVersion": "sluice.dev/v1alpha1",
                    "kind": "ModelRoute",
                    "metadata": {"name": f"route-{i}", "namespace": ns},
                    "spec": {
                        "backends": [
                            {"name": "a", "provider": "mock", "model": "m-a"},
                            {"name": "b", "provider": "mock", "model": "m-b", "priority": 1},
                        ]
                    },
                }
            )
            out.append(
                {
                    "apiVersion": "sluice.dev/v1alpha1",
                    "kind": "PromptTemplate",
                    "metadata": {"name": f"prompt-{i}", "namespace": ns},
                    "spec": {
                        "versions": [
                            {
                                "version": 1,
                                "route": f"route-{i}",
                                "messages": [{"role": "user", "content": "Hi {{name}}"}],
                            }
                        ],
                        "labels": {"production": 1},
                    },
                }
            )
    return out


def ready_count(cluster: devcluster.Cluster) -> int:
    total = 0
    for kind in ("modelroutes", "prompttemplates"):
        items = cluster.kubectl_json("get", kind, "-A")["items"]
        for obj in items:
            conds = obj.get("status", {}).get("conditions", [])
            total += any(c["type"] == "Ready" and c["status"] == "True" for c in conds)
    return total


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


# --------------------------------------------------------------------------------------------
# --simulated: the operator's memory under N reporting sidecars
# --------------------------------------------------------------------------------------------

#: Installed as ``sitecustomize`` on the fleet's PYTHONPATH; acts in the operator only, and only
#: as the environment asks (``SLUICE_BENCH_*``): tracing starts on the first SIGUSR1.
HOOK = """\
import os, signal, sys, tracemalloc

_DIR = os.environ.get("SLUICE_BENCH_TRACEMALLOC")
_COUNT = [0]


def _dump(signum, frame):
    if not tracemalloc.is_tracing():
        tracemalloc.start(4)
        return
    _COUNT[0] += 1
    snap = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    stats = snap.statistics("lineno")
    total = sum(s.size for s in stats)
    path = os.path.join(_DIR, "operator-%d-%02d.txt" % (os.getpid(), _COUNT[0]))
    with open(path, "w") as out:
        out.write("traced %.1f MiB in %d blocks\\n" % (total / 2**20, sum(s.count for s in stats)))
        for s in stats[:40]:
            out.write("%s\\n" % s)
        out.write("\\n-- by traceback, top 6 --\\n")
        for s in snap.statistics("traceback")[:6]:
            out.write("%.1f MiB, %d blocks\\n" % (s.size / 2**20, s.count))
            out.write("\\n".join(s.traceback.format(limit=8)) + "\\n\\n")


if "sluice_operator" in " ".join(sys.orig_argv):
    if _DIR:
        signal.signal(signal.SIGUSR1, _dump)
    if os.environ.get("SLUICE_BENCH_UVLOOP"):
        import asyncio, uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if os.environ.get("SLUICE_BENCH_CPUS"):  # thread pools sized as on a node of N cores
        os.cpu_count = lambda: int(os.environ["SLUICE_BENCH_CPUS"])
    if os.environ.get("SLUICE_BENCH_TLS_READ"):
        import asyncio.sslproto

        asyncio.sslproto.SSLProtocol.max_size = int(os.environ["SLUICE_BENCH_TLS_READ"])
"""


def _proc_kb(pid: int, name: str, key: str) -> int:
    try:
        text = Path(f"/proc/{pid}/{name}").read_text()
    except OSError:
        return 0
    m = re.search(rf"^{key}:\s+(\d+)", text, re.M)
    return int(m.group(1)) if m else 0


class Sampler(threading.Thread):
    """Finds the operator of the fleet that ``budget_overshoot.simulated_point`` starts under
    ``root`` (its ready file), then samples its memory every second until it exits; with
    ``trace`` it sends SIGUSR1 when found (tracemalloc starts) and every 30 s after (a dump)."""

    def __init__(self, root: Path, trace: bool, dumps_until: float, polls: int) -> None:
        super().__init__(daemon=True)
        self.root, self.trace, self.dumps_until, self.polls = root, trace, dumps_until, polls
        self.samples: list[dict[str, float]] = []
        self.done = threading.Event()
        self.poll_answers: dict[str, int] = {}

    def run(self) -> None:
        pid = 0
        ready: dict[str, Any] = {}
        while not self.done.is_set() and not pid:
            for path in self.root.glob("simulated-*/ready.json"):
                try:
                    ready = json.loads(path.read_text())
                    pid = int(ready["operator"]["pid"])
                except (OSError, ValueError, KeyError):
                    continue
            time.sleep(0.5)
        if self.polls and ready:
            threading.Thread(target=self._hold, args=(ready,), daemon=True).start()
        t0 = time.monotonic()
        if self.trace:
            os.kill(pid, signal.SIGUSR1)
        next_dump = t0 + 30
        while not self.done.is_set() and Path(f"/proc/{pid}").exists():
            self.samples.append(
                {
                    "t": time.monotonic() - t0,
                    "rss_mb": _proc_kb(pid, "status", "VmRSS") / 1024,
                    "anon_mb": _proc_kb(pid, "smaps_rollup", "Anonymous") / 1024,
                    "threads": _proc_kb(pid, "status", "Threads"),
                }
            )
            if self.trace and time.monotonic() >= next_dump and next_dump - t0 <= self.dumps_until:
                os.kill(pid, signal.SIGUSR1)
                next_dump += 30
            time.sleep(1)

    def _hold(self, ready: dict[str, Any]) -> None:
        """``polls`` config long polls held open as sidecars hold them (``GET /v1/config`` with
        the hash they have, up to 60 s each, again at once), each on its own keep-alive
        connection from its own loopback address; one token (bound to pod ``memory-probe``)."""
        import asyncio
        import ssl

        import aiohttp

        from sluice_cli import devfleet

        ident = devfleet.pod_identity(devfleet.admin_of(ready), "bench", "memory-probe")
        url = f"{ready['operator']['url']}/v1/config/bench"
        context = ssl.create_default_context(cafile=ready["operator"]["ca"])
        headers = {"Authorization": f"Bearer {ident.token}"}

        async def one(index: int) -> None:
            await asyncio.sleep(index / 100)
            connector = aiohttp.TCPConnector(
                ssl=context, limit=1, local_addr=(f"127.3.{index // 250}.{index % 250 + 1}", 0)
            )
            known = ""
            async with aiohttp.ClientSession(connector=connector) as session:
                while not self.done.is_set():
                    try:
                        async with session.get(
                            url, params={"hash": known, "wait": "60"}, headers=headers
                        ) as r:
                            key = str(r.status)
                            if r.status == 200:
                                known = (await r.json())["hash"]
                            elif r.status != 304:
                                await asyncio.sleep(1)
                    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                        key = type(exc).__name__
                        await asyncio.sleep(1)
                    self.poll_answers[key] = self.poll_answers.get(key, 0) + 1

        async def main() -> None:
            tasks = [asyncio.create_task(one(i)) for i in range(self.polls)]
            await asyncio.to_thread(self.done.wait)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run(main())


def simulated(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(REPO / "bench"))
    import budget_overshoot as bo

    root = Path(tempfile.mkdtemp(prefix="operator-memory-"))
    manifests = bo.manifests_dir(root)
    bo.FLEET_ENV.update(bo.snapshot(root))
    if args.ref:  # the operator as committed at REF, beside today's sidecar and CLI
        shutil.rmtree(root / "src" / "sluice_operator")
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", args.ref, "operator/sluice_operator"],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(
            ["tar", "-x", "-C", str(root / "src"), "--strip-components=1"],
            input=archive,
            check=True,
        )
    for item in args.env:
        key, _, value = item.partition("=")
        bo.FLEET_ENV[key] = value
    hook = root / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    bo.FLEET_ENV["PYTHONPATH"] = f"{hook}{os.pathsep}{bo.FLEET_ENV['PYTHONPATH']}"
    if args.tracemalloc:
        args.tracemalloc.mkdir(parents=True, exist_ok=True)
        bo.FLEET_ENV["SLUICE_BENCH_TRACEMALLOC"] = str(args.tracemalloc.resolve())
    runs: list[dict[str, Any]] = []
    for _ in range(args.runs):
        for point_root in root.glob("simulated-*"):  # the previous run's ready file
            (point_root / "ready.json").unlink(missing_ok=True)
        sampler = Sampler(root, bool(args.tracemalloc), args.warmup + args.measure, args.polls)
        sampler.start()
        try:
            point = bo.simulated_point(
                manifests, args.simulated, args.warmup, args.measure, args.lease_every, root
            )
        finally:
            sampler.done.set()
            sampler.join()
        point.pop("timeline", None)
        point["anon_peak_mb"] = max((x["anon_mb"] for x in sampler.samples), default=0.0)
        point["threads_peak"] = max((x["threads"] for x in sampler.samples), default=0.0)
        point["samples"] = sampler.samples
        point["polls"], point["poll_answers"] = args.polls, sampler.poll_answers
        runs.append(point)
        print(json.dumps({k: v for k, v in point.items() if k != "samples"}), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"args": sys.argv[1:], "runs": runs}, indent=1))
    print(memory_table(runs, args))
    return 0


def memory_table(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    def cell(key: str, fmt: str) -> str:
        got = [float(r[key]) for r in runs if r.get(key) is not None]
        if not got:
            return "—"
        med = format(statistics.median(got), fmt)
        low, high = format(min(got), fmt), format(max(got), fmt)
        return med if len(got) == 1 else f"{med} ({low}{DASH}{high})"

    rows = [
        ("operator RSS (median over the measured window)", "rss_mb", ".0f"),
        ("operator peak RSS", "peak_rss_mb", ".0f"),
        ("operator peak anonymous memory (smaps_rollup)", "anon_peak_mb", ".0f"),
        ("operator threads (peak)", "threads_peak", ".0f"),
        ("operator CPU (% of one core)", "cpu_pct", ".0f"),
        ("reports answered 200 per second", "reports_per_s", ".0f"),
        ("lease requests per second", "leases_per_s", ".0f"),
        ("report latency p50 (ms)", "report_p50_ms", ".0f"),
        ("load average (1 min) at the start", "load_average", ".1f"),
    ]
    head = (
        f"{args.simulated} simulated sidecars, a report a second each"
        f"{f', a lease request every {args.lease_every:g} s' if args.lease_every else ''}; "
        f"{args.warmup:g} s warm-up, {args.measure:g} s measured, {len(runs)} run(s)"
        f"{'; env ' + ' '.join(args.env) if args.env else ''}"
        f"{f'; the operator at {args.ref}' if args.ref else ''}"
        f"{f'; {args.polls} config long polls held' if args.polls else ''}"
    )
    lines = [head, "", "| measure | result |", "|---|---|"]
    lines += [f"| {name} | {cell(key, fmt)} |" for name, key, fmt in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument("--per-namespace", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--simulated", type=int, default=0, help="N sidecars: memory instead")
    parser.add_argument("--runs", type=int, default=1, help="with --simulated")
    parser.add_argument("--warmup", type=float, default=30.0, help="with --simulated")
    parser.add_argument("--measure", type=float, default=60.0, help="with --simulated")
    parser.add_argument("--lease-every", type=float, default=0.0, help="with --simulated")
    parser.add_argument("--tracemalloc", type=Path, default=None, help="dump folder")
    parser.add_argument("--env", action="append", default=[], help="K=V for the fleet")
    parser.add_argument("--json", type=Path, default=None, help="raw results (--simulated)")
    parser.add_argument("--ref", default=None, help="with --simulated: the operator at this ref")
    parser.add_argument("--polls", type=int, default=0, help="with --simulated: long polls held")
    args = parser.parse_args()
    if args.simulated:
        return simulated(args)
    expected = 2 * args.namespaces * args.per_namespace

    work = Path(tempfile.mkdtemp(prefix="sluice-scale-"))
    cluster = devcluster.start(work, tools=devcluster.ensure_tools(REPO))
    try:
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        op = start_operator(cluster.kubeconfig, work)
        try:
            manifest = work / "objects.json"
            manifest.write_text(
                json.dumps(
                    {
                        "apiVersion": "v1",
                        "kind": "List",
                        "items": objects(args.namespaces, args.per_namespace),
                    }
                )
            )
            t0 = time.monotonic()
            cluster.kubectl("create", "-f", str(manifest), timeout=args.timeout)
            applied = time.monotonic() - t0
            ready = 0
            while time.monotonic() - t0 < args.timeout:
                ready = ready_count(cluster)
                if ready >= expected:
                    break
                time.sleep(1)
            all_ready = time.monotonic() - t0
            passes = metric(op.url, "sluice_operator_reconcile_passes")
            writes = metric(op.url, "sluice_operator_api_requests")
            rss = peak_rss_mb(op.proc.pid)
        finally:
            op.stop()
    finally:
        cluster.stop()

    ok_time = "✅" if ready >= expected and all_ready <= 60 else "❌"
    ok_mem = "✅" if rss <= 300 else "❌"
    n = args.namespaces * args.per_namespace
    per_pass = writes / max(passes, 1)
    per_object = writes / max(expected, 1)
    section = f"""## Operator at scale (`bench/operator_scale.py`)

{n} ModelRoutes + {n} PromptTemplates across {args.namespaces} namespaces, created with one
`kubectl create` against the local kube-apiserver; the operator runs standalone as one process.

| measure | result | target |
|---|---|---|
| objects Ready | {ready} / {expected} | all |
| apiserver accepted all objects (baseline: `kubectl create`) | {applied:.1f} s | — |
| time from create to all Ready | {all_ready:.1f} s | ≤ 60 s {ok_time} |
| operator peak RSS | {rss:.0f} MB | ≤ 300 MB {ok_mem} |
| reconcile passes | {passes:.0f} | — |
| API write requests | {writes:.0f} ({per_pass:.1f} per pass, {per_object:.2f} per object) | — |

Writes per pass stay small because a pass writes the ConfigMap only when the namespace's config
hash changed and patches a status only where it differs; the watch events our own status patches
cause end in passes that write nothing.
"""
    print(section)
    write_section("operator-scale", section)
    return 0 if ready >= expected else 1


if __name__ == "__main__":
    sys.exit(main())
