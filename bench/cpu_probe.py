"""Load-independent cost of one request: the sidecar's operating points against the aiohttp floor.

`sidecar_bench.py` measures CPU seconds under saturation, which a busy shared machine moves by up
to half. This probe sends a fixed number of requests (the same bodies as the bench, over a few
keep-alive connections) and reports, per request or stream, what the target process spent:

* ``--valgrind``: instructions executed in user space (callgrind, counted only during the
  measured requests). Stable to about 1 % whatever else runs on the machine; system time
  (socket calls) is not in it.
* otherwise: CPU time of the process (user + system, from /proc), noisier under load.

Each target also reports its peak RSS after the requests (``VmHWM``; under valgrind this figure
is meaningless and is left out).

    python bench/cpu_probe.py --requests 2000                  # CPU ms per request
    python bench/cpu_probe.py --valgrind --requests 300        # instructions per request
    python bench/cpu_probe.py --points floor,all --modes stream

Not a replacement for the bench: no latency, no saturation; a tool for working on the hot path.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import itertools
import json
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sidecar_bench as bench

POINTS = {"floor": bench.FLOOR, "routing": bench.SLUICE, "all": bench.SLUICE_ALL}


def _request(path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer sk-bench\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> int:
    writer.write(data)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    if m:
        await reader.readexactly(int(m.group(1)))
        return status
    while True:  # chunked
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        await reader.readexactly(size + 2)
        if size == 0:
            return status


async def _load(port: int, path: str, body: str, n: int, conns: int, base: int) -> int:
    """Send ``n`` requests over ``conns`` connections; the number of non-200 answers."""
    numbers = itertools.count(base)
    bad = 0

    async def worker(share: int) -> None:
        nonlocal bad
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(share):
            text = body.replace(bench.COUNTER, str(next(numbers)))
            if await _one(reader, writer, _request(path, text.encode())) != 200:
                bad += 1
        writer.close()

    shares = [n // conns + (1 if i < n % conns else 0) for i in range(conns)]
    await asyncio.gather(*(worker(s) for s in shares if s))
    return bad


def _callgrind(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


#: ``--profile``: the target under cProfile (or, with ``--profile opcodes``, counting the
#: bytecodes each Python function executes: a load-independent measure of interpreted work),
#: switched on by SIGUSR1 and dumped by SIGUSR2.
_PROFILED = """
import cProfile, collections, json, runpy, signal, sys
out, what = sys.argv[1], sys.argv[2]
if out.endswith(".mem"):
    import tracemalloc

    def on(*_):
        tracemalloc.start(3)

    def off(*_):
        snap = tracemalloc.take_snapshot()
        with open(out, "w") as f:
            for st in snap.statistics("traceback")[:25]:
                f.write(f"{st.size / 1024:.0f} KiB in {st.count} blocks\\n")
                f.write("\\n".join(st.traceback.format()) + "\\n")
elif out.endswith(".json"):
    counts = collections.Counter()

    def local(frame, event, arg):
        if event == "opcode":
            code = frame.f_code
            name = code.co_qualname
            if code.co_filename == "<string>" and "self" in frame.f_locals:
                name += f" of {type(frame.f_locals['self']).__qualname__}"  # a dataclass's
            counts[code.co_filename, name] += 1
        return local

    def call(frame, event, arg):
        frame.f_trace_opcodes = True
        return local

    def on(*_):
        sys.settrace(call)

    def off(*_):
        sys.settrace(None)
        rows = sorted(counts.items(), key=lambda kv: -kv[1])
        with open(out, "w") as f:
            json.dump([[f, q, n] for (f, q), n in rows], f)
else:
    prof = cProfile.Profile()

    def on(*_):
        prof.enable()

    def off(*_):
        prof.disable()
        prof.dump_stats(out)
signal.signal(signal.SIGUSR1, on)
signal.signal(signal.SIGUSR2, off)
sys.argv = [what, *sys.argv[3:]]
if what.endswith(".py"):
    sys.path.insert(0, what.rpartition("/")[0])
    runpy.run_path(what, run_name="__main__")
else:
    runpy.run_module(what, run_name="__main__", alter_sys=True)
"""


def start(
    point: str, up_port: int, work: Path, src: Path, valgrind: bool, profile: str | None = None
) -> tuple[Any, int, int]:
    """Start a target; its process, port and the pid to measure."""
    port = bench.free_port()
    wrap = (
        [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={work}/callgrind.%p.out",
        ]
        if valgrind
        else []
    )
    work.mkdir(parents=True, exist_ok=True)
    if point == "floor":
        entry = ["-c", _PROFILED, profile, bench.__file__] if profile else [bench.__file__]
        cmd = [*wrap, sys.executable, *entry, "--floor", str(port), str(up_port)]
        proc = bench.spawn(cmd, log=work / "floor.log")
        ready = f"http://127.0.0.1:{port}/ready"
        env = None
    else:
        all_features = point == "all"
        (work / "secrets").mkdir(exist_ok=True)
        (work / "secrets" / "key").write_text("sk-bench\n")
        config = bench.sidecar_config(up_port, all_features)
        (work / "sidecar.json").write_text(json.dumps(config))
        admin = bench.free_port()
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])
        )
        entry = (
            ["-c", _PROFILED, profile, "sluice_sidecar"] if profile else ["-m", "sluice_sidecar"]
        )
        cmd = [
            *wrap,
            sys.executable,
            *entry,
            *bench.sidecar_args(work, port, admin),
        ]
        proc = bench.spawn(cmd, env=env, log=work / "sidecar.log", cwd=work)
        ready = f"http://127.0.0.1:{admin}/readyz"
    bench.wait_http(ready, 300 if valgrind else 30)
    return proc, port, proc.pid


def measure(
    point: str, mode: str, up_port: int, work: Path, src: Path, args: argparse.Namespace
) -> dict[str, float]:
    suffix = {"opcodes": "json", "memory": "mem"}.get(args.profile, "out")
    profile = str(work / f"profile.{suffix}") if args.profile else None
    proc, port, pid = start(point, up_port, work, src, args.valgrind, profile)
    body = bench.payload(bench.ALL_BODY if point == "all" else bench.BODY, mode == "stream")
    path = "/v1/chat/completions"
    out: dict[str, float] = {}
    if not args.valgrind:
        out["rss_ready_mb"] = bench.peak_rss_mb(pid)
    try:
        if args.valgrind:
            _callgrind(pid, "-i", "on")
        bad = asyncio.run(_load(port, path, body, args.warmup, args.conns, 1))
        if args.valgrind:
            _callgrind(pid, "-z")
        if profile:
            os.kill(pid, signal.SIGUSR1)
        tracer = None
        if args.strace:
            log = work / "strace.txt"
            tracer = subprocess.Popen(["strace", "-c", "-f", "-o", str(log), "-p", str(pid)])
            time.sleep(1)
        cpu0 = bench.cpu_seconds(pid)
        t0 = time.monotonic()
        bad += asyncio.run(_load(port, path, body, args.requests, args.conns, 10_000_000))
        wall = time.monotonic() - t0
        cpu = bench.cpu_seconds(pid) - cpu0
        if tracer is not None:
            tracer.send_signal(signal.SIGINT)
            tracer.wait()
            print(log.read_text())
        if profile:
            os.kill(pid, signal.SIGUSR2)
            for _ in range(120):  # the dump may take a while (tracemalloc snapshots)
                time.sleep(0.5)
                if Path(profile).exists() and Path(profile).stat().st_size:
                    time.sleep(0.5)
                    break
            if args.profile == "memory":
                print(Path(profile).read_text())
            elif args.profile == "opcodes":
                rows = json.loads(Path(profile).read_text())
                out["opcodes_per_req"] = sum(n for _, _, n in rows) / args.requests
                for f, q, n in rows[:60]:
                    print(f"{n / args.requests:9.1f} {q} ({f.rpartition('site-packages/')[2]})")
            else:
                pstats.Stats(profile).sort_stats(args.profile).print_stats(40)
        if bad:
            raise RuntimeError(f"{point} {mode}: {bad} requests did not answer 200")
        if args.valgrind:
            _callgrind(pid, "-d")
            time.sleep(0.5)
            files = sorted(glob.glob(f"{work}/callgrind.{pid}.out*"), key=os.path.getmtime)
            text = Path(files[-1]).read_text()
            m = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.M)
            assert m, files[-1]
            out["Minstr_per_req"] = int(m.group(1)) / args.requests / 1e6
        else:
            out["cpu_ms_per_req"] = cpu / args.requests * 1000
            out["rss_mb"] = bench.peak_rss_mb(pid)
        out["wall_s"] = wall
    finally:
        bench.Target(point, "", proc).stop()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--points", default="floor,routing,all", help="floor,routing,all")
    p.add_argument("--modes", default="unary,stream", help="unary,stream")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--conns", type=int, default=8)
    p.add_argument("--valgrind", action="store_true", help="count instructions (callgrind)")
    p.add_argument(
        "--patch",
        nargs=3,
        action="append",
        default=[],
        metavar=("FILE", "OLD", "NEW"),
        help="an experiment: replace OLD by NEW in FILE (under sluice_sidecar/) of the copy",
    )
    p.add_argument("--overlay-from", help="take the --overlay files from this git ref instead")
    p.add_argument("--strace", action="store_true", help="count the targets' system calls")
    p.add_argument("--profile", help="cProfile the sidecars, print the top by this sort key")
    p.add_argument("--ref", help="measure the sidecar as committed at this git ref")
    p.add_argument(
        "--overlay",
        nargs="*",
        default=[],
        help="with --ref: files of sidecar/sluice_sidecar/ taken from the working tree instead "
        "(measure your own changes against a fixed base while others edit the tree)",
    )
    p.add_argument(
        "--mypyc",
        nargs="+",
        default=[],
        metavar="MODULE",
        help="compile these modules of the copy with mypyc first (paths under sluice_sidecar/, "
        "e.g. gateway/handle.py): what compiling the hot path would buy",
    )
    args = p.parse_args()
    up_port = bench.free_port()
    upstream = bench.spawn([sys.executable, bench.__file__, "--upstream", str(up_port)])
    work = Path(tempfile.mkdtemp(prefix="sluice-probe-"))
    src, what = bench.snapshot_sidecar(work, args.ref)
    for path in args.overlay:
        rel = Path(path).resolve().relative_to(bench.REPO / "sidecar")
        if args.overlay_from:
            blob = f"{args.overlay_from}:sidecar/{rel}"
            text = subprocess.run(
                ["git", "-C", str(bench.REPO), "show", blob], capture_output=True, check=True
            ).stdout
            (src / rel).write_bytes(text)
        else:
            shutil.copyfile(bench.REPO / "sidecar" / rel, src / rel)
        what += f" + {rel} from {args.overlay_from or 'the working tree'}"
    for rel, old, new in args.patch:
        target = src / "sluice_sidecar" / rel
        text = target.read_text()
        if text.count(old) != 1:
            p.error(f"--patch: {old!r} is not once in {rel}")
        target.write_text(text.replace(old, new))
        what += f" with {rel}: {old!r} -> {new!r}"
    if args.mypyc:
        what += bench.compile_with_mypyc(src, args.mypyc)
    print(f"sidecar under test: {what}", flush=True)
    results: dict[tuple[str, str], dict[str, float]] = {}
    try:
        time.sleep(0.5)
        for mode in args.modes.split(","):
            for point in args.points.split(","):
                r = measure(point, mode, up_port, work / f"{point}-{mode}", src, args)
                results[point, mode] = r
                print(f"{point:8} {mode:6} {r}", flush=True)
    finally:
        bench.Target("upstream", "", upstream).stop()
    key = "Minstr_per_req" if args.valgrind else "cpu_ms_per_req"
    for mode in args.modes.split(","):
        floor = results.get(("floor", mode))
        for point in args.points.split(","):
            r = results[point, mode]
            ratio = f"{r[key] / floor[key]:.2f}x floor" if floor else ""
            rss = f"  rss {r['rss_mb']:.1f} MB" if "rss_mb" in r else ""
            print(f"{point:8} {mode:6} {key} {r[key]:.4f}  {ratio}{rss}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
