#!/usr/bin/env python3
"""Sidecar benchmark: direct call vs the Sluice sidecar vs the LiteLLM proxy, in one run.

Everything runs on loopback: a fake OpenAI-compatible upstream (a raw asyncio protocol, so it is
never the bottleneck), the system under test in its own process, and the load generators (`wrk`
for saturation, a fixed-rate Python client for latency at 100 requests/s). For each target and
for non-streaming and streaming chat completions it measures throughput, throughput per CPU core
(requests / CPU-seconds of the target's whole process tree), CPU per request, latency at 100 rps
and at saturation (added latency = target minus direct), peak RSS and start-up time. Every load
run is bounded in time.

The targets:

* *direct* — the fake upstream itself (the latency baseline);
* *aiohttp floor* — the least any Python sidecar built like this one costs here: a bare aiohttp
  pass-through proxy (uvloop, the same client session settings, no routing, no metering).
  Sluice's cost above that floor is what its own code adds; the floor itself is aiohttp, the
  interpreter and this machine;
* *sluice (routing only)* — the sidecar with one route to the fake upstream and nothing else;
* *sluice (all features)* — the same route plus a PromptTemplate the requests name
  (``metadata.prompt``), a GuardrailPolicy with input and output checks (personal data redacted,
  prompt injection, a deny pattern; streams in Holdback mode) and a Budget on the route (a USD
  limit and rpm/tpm limits never reached in the run). Its requests carry personal data and a
  per-request counter (so every text is new to the guardrails' caches, as real traffic is), and
  its backend model makes the fake upstream answer with personal data too (a counter inside an
  email address), so the output checks redact in every answer;
* *litellm* — the LiteLLM proxy, when installed.

``--runs N`` (default 3) measures all targets N times, each run in a different (rotated) order
and with freshly started processes; the report gives per metric the median and the spread
(min to max) over the runs, and the ratios of issue 9 (Sluice CPU per request or per stream over
the floor's, each computed within one run, then the median over runs). After each Sluice run
the script reads the sidecar's audit log and reports what it did (statuses, prompt renderings,
guardrail verdicts, budget annotations), so a point that failed requests or skipped its features
shows up in the report rather than as a fast number. The sidecars run from a copy of the sidecar
package taken at start (the working tree's, or with ``--ref REF`` the one committed at REF), so
edits made to the tree during a run do not change what is measured; the report names it.

The shared development machines are noisy (other virtual machines run on the same cores), so
the script first waits until nothing else is busy (no pytest, etcd or kube-apiserver process,
load average under 0.5; at most --quiet-wait seconds) and times a fixed Python loop before each
run and after the last: the report states them, so a slow machine can be told from a slow
sidecar.

Results go to the "sidecar" section of docs/benchmarks.md (`report.write_section`; the other
sections of that file are kept).

Requirements (not needed by CI; benchmarks are not run there):
    apt-get install wrk
    python -m venv /tmp/litellm-venv && /tmp/litellm-venv/bin/pip install 'litellm[proxy]'

Run:  python bench/sidecar_bench.py [--runs 3] [--duration 8] [--ref HEAD] [--litellm PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from report import DOC, write_section

REPO = Path(__file__).resolve().parents[1]
SECTION = "sidecar"
#: The markers this section had before it used ``report.write_section``.
OLD_START, OLD_END = "<!-- sidecar-bench:start -->", "<!-- sidecar-bench:end -->"
CORES = os.cpu_count() or 1
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
DASH, TIMES = "\u2013", "\u00d7"  # for the report

DIRECT, FLOOR, SLUICE, SLUICE_ALL, LITELLM = (
    "direct",
    "aiohttp floor",
    "sluice (routing only)",
    "sluice (all features)",
    "litellm",
)

BODY = {
    "model": "bench",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Write one sentence about rivers and locks."},
    ],
    "max_tokens": 64,
}
STREAM_CHUNKS = 20

# --- the all-features operating point --------------------------------------------------------

#: Replaced by a per-request number in the all-features requests (wrk and the fixed-rate client).
COUNTER = "@@N@@"
#: The backend model of the all-features route: the fake upstream answers it with personal data.
PII_MODEL = "bench-model-pii"
#: Replaced by a per-answer number in those answers (same width, so lengths stay fixed).
ANSWER_COUNTER = b"NNNNNN"
PROMPT_NAME = "bench-support"
ALL_BODY = {
    "model": "bench",
    "messages": [
        {
            "role": "user",
            "content": f"Ticket {COUNTER}: my card 4111 1111 1111 1111 was charged twice. "
            f"Reply to jane.doe.{COUNTER}@example.com or call +1 415 555 0134. "
            "Which lock should I use at high tide?",
        }
    ],
    "max_tokens": 64,
    "metadata": {
        "prompt": f"{PROMPT_NAME}@production",
        "variables": {"product": "Sluice Locks", "customer": f"customer {COUNTER}"},
    },
}
PROMPT = {
    "name": PROMPT_NAME,
    "versions": [
        {
            "version": 1,
            "hash": "bench-support-v1",
            "messages": [
                {
                    "role": "system",
                    "content": "You are the support assistant of {{product}}, answering "
                    "{{customer}}. Answer in one sentence and never repeat personal data.",
                }
            ],
            "variables": {
                "product": {"required": True, "maxLength": 64},
                "customer": {"required": True, "maxLength": 64},
            },
            "params": {"temperature": 0.2},
        }
    ],
    "labels": {"production": 1},
}
GUARD_CHECKS = {
    "pii": {"entities": ["EMAIL", "PHONE", "CREDIT_CARD"], "action": "Redact"},
    "promptInjection": {"action": "Block", "threshold": 0.5},
    "deny": [{"regex": r"(?i)\b(?:drop\s+table|rm\s+-rf)\b", "action": "Block"}],
}
GUARDRAIL = {
    "name": "bench-guard",
    "mode": "Enforce",
    "input": GUARD_CHECKS,
    "output": GUARD_CHECKS,
    "streamingMode": "Holdback",
    "holdbackChars": 64,
}
BUDGET = {
    "name": "bench-budget",
    "selector": {"routes": ["bench"]},
    # About 2e-5 USD a request: a whole benchmark stays far below the limit and its alerts.
    "limits": [{"window": "Day", "usd": 1000.0}],
    "rateLimits": {"rpm": 100_000_000, "tpm": 10_000_000_000},
    "onExceeded": "Block",
}
#: The all-features answer, as 20 stream chunks (personal data split across chunks).
PII_PIECES = (
    " A sluice",
    " lifts boats",
    " between two",
    " water levels;",
    " for a slot",
    " write to",
    " keeper.",
    "NNNNNN@lo",
    "cks.exam",
    "ple.com",
    " or call",
    " +44 20",
    " 7946 0958.",
    " Card",
    " 4111 1111",
    " 1111 1111",
    " is on file;",
    " the gates",
    " open at",
    " noon.",
)

# --- the fake upstream (runs in its own process: `sidecar_bench.py --upstream PORT`) -----------


def _responses(content: str, pieces: Sequence[str]) -> tuple[bytes, bytes]:
    completion = json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1,
            "model": "bench-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 24, "completion_tokens": 20, "total_tokens": 44},
        }
    ).encode()
    unary = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(completion)).encode()
        + b"\r\n\r\n"
        + completion
    )
    events = []
    for piece in pieces:
        chunk = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "bench-model",
            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
        }
        events.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    last = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "bench-model",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    usage = dict(last, choices=[], usage={"prompt_tokens": 24, "completion_tokens": 20})
    events += [b"data: " + json.dumps(x).encode() + b"\n\n" for x in (last, usage)]
    events.append(b"data: [DONE]\n\n")
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"
    stream = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunked
    )
    return unary, stream


def run_upstream(port: int) -> None:
    unary, stream = _responses("A sluice lifts boats. " * 4, [f" word{i}" for i in range(20)])
    pii_unary, pii_stream = _responses("".join(PII_PIECES).strip(), PII_PIECES)
    assert len(PII_PIECES) == STREAM_CHUNKS
    length = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")
    pii_model = PII_MODEL.encode()
    answers = itertools.count()

    class Proto(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while True:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                m = length.search(self.buf, 0, end + 2)
                n = int(m.group(1)) if m else 0
                if len(self.buf) < end + 4 + n:
                    return
                body = self.buf[end + 4 : end + 4 + n]
                self.buf = self.buf[end + 4 + n :]
                is_stream = b'"stream":true' in body.replace(b" ", b"")
                if pii_model in body:
                    answer = pii_stream if is_stream else pii_unary
                    number = b"%06d" % (next(answers) % 1_000_000)
                    answer = answer.replace(ANSWER_COUNTER, number)
                else:
                    answer = stream if is_stream else unary
                self.t.write(answer)  # type: ignore[attr-defined]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Proto, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# --- the aiohttp floor (runs in its own process: `sidecar_bench.py --floor PORT UPSTREAM`) -------


def run_floor(port: int, upstream: int) -> None:
    """A bare aiohttp pass-through proxy: what any aiohttp sidecar costs before doing anything."""
    import aiohttp
    import uvloop
    from aiohttp import web

    async def main() -> None:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        url = f"http://127.0.0.1:{upstream}/v1/chat/completions"

        async def relay(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            headers = {"Content-Type": "application/json"}
            async with session.post(url, data=body, headers=headers) as r:
                if r.content_type != "text/event-stream":
                    return web.Response(body=await r.read(), content_type="application/json")
                resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
                await resp.prepare(request)
                async for chunk in r.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                return resp

        async def ready(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/v1/chat/completions", relay)
        app.router.add_get("/ready", ready)
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    uvloop.run(main())


# --- process helpers ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree(pid: int) -> list[int]:
    out = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for c in children:
        out += tree(int(c))
    return out


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def peak_rss_mb(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        m = re.search(r"VmHWM:\s+(\d+) kB", status)
        total += int(m.group(1)) if m else 0
    return total / 1024


def busy_processes() -> list[str]:
    """Other heavy work on this machine (test suites, local clusters) that would skew timings."""
    out = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmd = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "pytest" in cmd or "kube-apiserver" in cmd or "/etcd " in cmd:
            out.append(cmd[:80])
    return out


def wait_quiet(limit: float) -> str:
    """Wait (at most ``limit`` seconds) until the machine is idle; say how it was."""
    start = time.monotonic()
    while True:
        load = os.getloadavg()[0]
        busy = busy_processes()
        if load < 0.5 and not busy:
            return f"idle (load average {load:.2f})"
        if time.monotonic() - start > limit:
            what = f"; also running: {busy[0]}" if busy else ""
            return f"NOT idle after {limit:.0f} s of waiting (load average {load:.2f}{what})"
        print(f"waiting for a quiet machine (load {load:.2f}, busy: {len(busy)})", flush=True)
        time.sleep(15)


def speed_index() -> float:
    """Milliseconds this machine takes for a fixed pure-Python loop (lower is faster)."""
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def wait_http(url: str, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.monotonic() - start
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {timeout}s")


@dataclass
class Target:
    name: str
    url: str  # base URL ending in /v1
    proc: subprocess.Popen[bytes] | None = None
    startup_s: float | None = None
    #: Where a sidecar writes its audit log (read after the run: what the sidecar did).
    audit_log: Path | None = None
    results: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Failed requests: the first few error bodies, per mode.
    error_samples: dict[str, list[str]] = field(default_factory=dict)
    #: Why the measurement of this target ended early, if it did.
    failure: str | None = None
    #: What the sidecar's audit log says it did (``audit_summary``).
    audit: dict[str, Any] | None = None

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def sidecar_args(work: Path, port: int, admin: int) -> list[str]:
    """The sidecar's arguments for a bench run in ``work`` (config, secrets, ports, audit log)."""
    return [
        "--config",
        str(work / "sidecar.json"),
        "--secrets-dir",
        str(work / "secrets"),
        "--port",
        str(port),
        "--admin-port",
        str(admin),
        "--audit-log",
        str(work / "audit.jsonl"),
        "--log-level",
        "WARNING",
    ]


def spawn(
    cmd: list[str],
    env: dict[str, str] | None = None,
    log: Path | None = None,
    cwd: Path | None = None,
) -> Any:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(
        cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd
    )


# --- load ----------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}
#: First request number of each load run (all-features bodies): no two runs send the same text.
_BASES = itertools.count(1, 10_000_000)


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def payload(body: dict[str, Any], stream: bool) -> str:
    """The request body as JSON text; ``COUNTER`` in it becomes a per-request number."""
    text = json.dumps(dict(body, stream=True) if stream else body)
    assert text.isascii(), "the wrk script embeds the body as a Lua (ASCII) string"
    return text


def _wrk_script(body: str, base: int) -> str:
    head = (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        'wrk.headers["Authorization"] = "Bearer sk-bench"\n'
    )
    if COUNTER not in body:
        return head + f"wrk.body = {json.dumps(body)}\n"
    parts = ", ".join(json.dumps(p) for p in body.split(COUNTER))
    return head + (
        f"local parts = {{{parts}}}\n"
        f"local n = {base}\n"
        "request = function()\n"
        "  n = n + 1\n"
        "  return wrk.format(nil, nil, nil, table.concat(parts, tostring(n)))\n"
        "end\n"
    )


def run_wrk(url: str, body: str, seconds: int, conns: int) -> dict[str, float]:
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)  # noqa: SIM115
    with script:
        script.write(_wrk_script(body, next(_BASES)))
    cmd = [
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "5s",
        "-s",
        script.name,
        url + "/chat/completions",
    ]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=True)
    finally:
        os.unlink(script.name)
    text = out.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    lat = dict(re.findall(r"\s+(50|99)%\s+([\d.]+\w+)", text))
    return {
        "rps": rps,
        "requests": total,
        "errors": int(errors.group(1)) if errors else 0,
        "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
        "p50_ms": _ms(lat["50"]),
        "p99_ms": _ms(lat["99"]),
    }


@dataclass
class RateResult:
    latencies: list[float]
    errors: int = 0
    samples: list[str] = field(default_factory=list)


async def _fixed_rate(url: str, body: str, rate: int, seconds: float) -> RateResult:
    import aiohttp

    base = next(_BASES)
    varying = COUNTER in body
    fixed = body.encode()
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
    out = RateResult([])
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as s:

        async def one(i: int) -> None:
            data = body.replace(COUNTER, str(base + i)).encode() if varying else fixed
            t0 = time.perf_counter()
            async with s.post(url + "/chat/completions", data=data, headers=headers) as r:
                answer = await r.read()
                if r.status != 200:
                    out.errors += 1
                    if len(out.samples) < 3:
                        out.samples.append(
                            f"HTTP {r.status}: {answer[:400].decode(errors='replace')}"
                        )
            out.latencies.append((time.perf_counter() - t0) * 1000)

        for i in range(20):  # warm the connection pool
            await one(i)
        out.latencies.clear()
        out.errors = 0
        tasks = []
        start = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(100 + i)))
        await asyncio.wait_for(asyncio.gather(*tasks), seconds + 30)
    return out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))]


def probe(url: str, body: str, tries: int = 20) -> list[str]:
    """Up to three error answers (status and body) among ``tries`` sequential requests."""
    out: list[str] = []
    base = next(_BASES)
    for i in range(tries):
        data = body.replace(COUNTER, str(base + i)).encode()
        req = urllib.request.Request(
            url + "/chat/completions",
            data=data,
            headers={"Content-Type": "application/json", "Authorization": "Bearer sk-bench"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                r.read()
        except urllib.error.HTTPError as err:
            out.append(f"HTTP {err.code}: {err.read()[:400].decode(errors='replace')}")
        except OSError as err:
            out.append(f"no answer: {err!r}")
        if len(out) >= 3:
            break
    return out


def measure(target: Target, body: dict[str, Any], duration: int, conns: int) -> None:
    pid = target.proc.pid if target.proc else None
    for mode in ("unary", "stream"):
        text = payload(body, stream=mode == "stream")
        rate = asyncio.run(_fixed_rate(target.url, text, 100, duration))
        run_wrk(target.url, text, 2, conns)  # warm-up at saturation
        cpu0 = cpu_seconds(pid) if pid else 0.0
        sat = run_wrk(target.url, text, duration, conns)
        cpu = (cpu_seconds(pid) - cpu0) if pid else 0.0
        done = sat["requests"]
        lat = rate.latencies
        target.results[mode] = {
            "rate_p50": statistics.median(lat),
            "rate_p99": pct(lat, 99),
            "rate_errors": rate.errors,
            "sat_rps": sat["rps"],
            "sat_p50": sat["p50_ms"],
            "sat_p99": sat["p99_ms"],
            "sat_errors": sat["errors"] + sat["socket_errors"],
            "cpu_ms_per_req": cpu / done * 1000 if pid and done else 0.0,
            "rps_per_core": done / cpu if pid and cpu else 0.0,
            "cpu_cores_used": cpu / duration if pid else 0.0,
        }
        samples = rate.samples
        if not samples and (sat["errors"] or sat["socket_errors"]):
            samples = probe(target.url, text)  # wrk keeps no bodies: ask again
        if samples:
            target.error_samples[mode] = samples
        shown = {k: round(v, 3) for k, v in target.results[mode].items()}
        print(f"  {target.name:22} {mode:6} {shown}", flush=True)
        if rate.errors or sat["errors"] or sat["socket_errors"]:
            print(f"  !! failed requests; first bodies: {samples}", flush=True)
    if pid:
        target.results["rss"] = {"peak_mb": peak_rss_mb(pid)}


# --- targets ---------------------------------------------------------------------------------


def sidecar_config(upstream: int, all_features: bool) -> dict[str, Any]:
    """The sidecar's JSON config (the contract's camelCase field names)."""
    backend = {
        "name": "fake",
        "provider": "openai-compatible",
        "model": PII_MODEL if all_features else "bench-model",
        "baseUrl": f"http://127.0.0.1:{upstream}/v1",
        "credentials": {"secretName": "s", "key": "k", "file": "key"},
        "pricing": {"inputPerMtok": 0.15, "outputPerMtok": 0.6},
    }
    config: dict[str, Any] = {
        "namespace": "bench",
        "routes": [{"name": "bench", "source": "bench", "backends": [backend]}],
    }
    if all_features:
        config |= {"prompts": [PROMPT], "guardrails": [GUARDRAIL], "budgets": [BUDGET]}
    return config


def snapshot_sidecar(work: Path, ref: str | None) -> tuple[Path, str]:
    """A copy of the sidecar package that every run uses (others may edit the tree meanwhile):
    the working tree's, or the one committed at ``ref``. Returns its import root and a
    description for the report."""
    dest = work / "src"
    dest.mkdir(parents=True, exist_ok=True)

    def git(*cmd: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), *cmd], capture_output=True, text=True, check=True
        ).stdout.strip()

    if ref is not None:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", ref, "sidecar/sluice_sidecar"],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(
            ["tar", "-x", "-C", str(dest), "--strip-components=1"], input=archive, check=True
        )
        return dest, f"commit {git('rev-parse', '--short', ref)} (`--ref {ref}`)"
    shutil.copytree(
        REPO / "sidecar" / "sluice_sidecar",
        dest / "sluice_sidecar",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    dirty = git("status", "--porcelain", "--", "sidecar/sluice_sidecar")
    return dest, f"the working tree at commit {git('rev-parse', '--short', 'HEAD')}" + (
        " with uncommitted changes in sidecar/" if dirty else ""
    )


def compile_with_mypyc(src: Path, modules: Sequence[str]) -> str:
    """Compile ``modules`` (paths under ``sluice_sidecar/``, e.g. ``guardrails/holdback.py``)
    of the copy at ``src`` (``snapshot_sidecar``) with mypyc, in place: what compiling them
    would buy. Returns the words for the report."""
    subprocess.run(
        [sys.executable, "-m", "mypyc", *(f"sluice_sidecar/{m}" for m in modules)],
        cwd=src,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return f" with {', '.join(modules)} compiled by mypyc"


def start_sidecar(name: str, upstream: int, work: Path, all_features: bool, src: Path) -> Target:
    work.mkdir(parents=True, exist_ok=True)
    (work / "secrets").mkdir(exist_ok=True)
    (work / "secrets" / "key").write_text("sk-bench\n")
    (work / "sidecar.json").write_text(json.dumps(sidecar_config(upstream, all_features)))
    port, admin = free_port(), free_port()
    t0 = time.monotonic()
    proc = spawn(
        [
            sys.executable,
            "-m",
            "sluice_sidecar",
            *sidecar_args(work, port, admin),
        ],
        env=dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])
        ),
        log=work / "sidecar.log",
        cwd=work,
    )
    target = Target(name, f"http://127.0.0.1:{port}/v1", proc, audit_log=work / "audit.jsonl")
    try:
        wait_http(f"http://127.0.0.1:{admin}/readyz", 30)
    except RuntimeError as exc:
        ready = ""
        try:  # a config the sidecar refuses: 503 with the reason
            urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=2).close()
        except urllib.error.HTTPError as err:
            ready = f"; /readyz says {err.read()[:1000].decode(errors='replace')}"
        except OSError:
            pass
        target.stop()
        log = (work / "sidecar.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{exc}{ready}; sidecar log ends:\n{log}") from exc
    target.startup_s = time.monotonic() - t0
    return target


def start_floor(upstream: int) -> Target:
    port = free_port()
    t0 = time.monotonic()
    proc = spawn([sys.executable, __file__, "--floor", str(port), str(upstream)])
    target = Target(FLOOR, f"http://127.0.0.1:{port}/v1", proc)
    try:
        wait_http(f"http://127.0.0.1:{port}/ready", 30)
    except RuntimeError:
        target.stop()
        raise
    target.startup_s = time.monotonic() - t0
    return target


def start_litellm(binary: str, upstream: int, work: Path) -> Target:
    work.mkdir(parents=True, exist_ok=True)
    (work / "litellm.yaml").write_text(
        "model_list:\n"
        "  - model_name: bench\n"
        "    litellm_params:\n"
        "      model: openai/bench-model\n"
        f"      api_base: http://127.0.0.1:{upstream}/v1\n"
        "      api_key: sk-bench\n"
        "general_settings:\n"
        "  master_key: sk-bench\n"  # LiteLLM refuses to start without one
    )
    port = free_port()
    env = dict(os.environ)
    # Loopback-only machine: use the bundled price map instead of fetching it at start-up.
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    t0 = time.monotonic()
    proc = spawn(
        [
            binary,
            "--config",
            str(work / "litellm.yaml"),
            "--port",
            str(port),
            "--num_workers",
            str(CORES),
        ],
        env=env,
        log=work / "litellm.log",
    )
    target = Target(LITELLM, f"http://127.0.0.1:{port}/v1", proc)
    try:
        wait_http(f"http://127.0.0.1:{port}/health/liveliness", 180)
    except RuntimeError:
        target.stop()
        raise
    target.startup_s = time.monotonic() - t0
    return target


@dataclass
class Point:
    """One target as the runs see it: how to start it (None: the upstream itself) and the
    request it is sent."""

    name: str
    start: Callable[[Path], Target] | None
    body: dict[str, Any] = field(default_factory=lambda: BODY)


def audit_summary(path: Path) -> dict[str, Any]:
    """What a sidecar did, from its audit log: statuses, errors, prompt renderings, guardrail
    verdicts (per stage, check and action, with the entities found) and budget annotations."""
    records = 0
    status: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    disconnects = 0
    prompts: Counter[str] = Counter()
    verdicts: Counter[str] = Counter()
    entities: Counter[str] = Counter()
    budget = 0
    reserved: list[float] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            records += 1
            status[r.get("status", 0)] += 1
            if r.get("outcome") == "client_disconnected":
                disconnects += 1
            elif r.get("errorCode") or r.get("outcome") != "ok":
                kind = f"{r.get('errorType')}/{r.get('errorCode')}"
                errors[f"{r.get('status')} {r.get('outcome')} {kind}"] += 1
            if r.get("prompt"):
                prompts[f"{r['prompt']} v{r.get('promptVersion')}"] += 1
            for v in r.get("guardrails") or ():
                verdicts[f"{v.get('stage')} {v.get('check')} {v.get('action')}"] += 1
                for kind, n in (v.get("entities") or {}).items():
                    entities[f"{v.get('stage')} {kind}"] += n
            b = (r.get("annotations") or {}).get("budget")
            if b:
                budget += 1
                if len(reserved) < 1000:
                    reserved.append(b.get("reservedUSD", 0.0))
    return {
        "records": records,
        "status": dict(status),
        "errors": dict(errors.most_common(5)),
        "disconnects": disconnects,
        "prompts": dict(prompts),
        "verdicts": dict(verdicts),
        "entities": dict(entities),
        "budget": budget,
        "reserved_usd": statistics.median(reserved) if reserved else None,
    }


def run_point(point: Point, work: Path, duration: int, conns: int, up_port: int) -> Target:
    if point.start is None:
        target = Target(point.name, f"http://127.0.0.1:{up_port}/v1")
    else:
        try:
            target = point.start(work)
        except (RuntimeError, OSError, ValueError) as exc:
            print(f"  {point.name} did not start: {exc}", flush=True)
            return Target(point.name, "", failure=f"did not start: {exc}")
    print(
        f"measuring {target.name}"
        + (f" (ready in {target.startup_s:.2f}s)" if target.startup_s else ""),
        flush=True,
    )
    try:
        measure(target, point.body, duration, conns)
    except Exception as exc:  # one target's failure is reported, the others still run
        target.failure = repr(exc)
        print(f"  {target.name} failed: {exc!r}", flush=True)
    finally:
        died = target.proc.poll() if target.proc is not None else None
        target.stop()
    if died is not None:
        log = work / "sidecar.log"
        tail = log.read_text(errors="replace")[-1000:] if log.exists() else ""
        target.failure = f"{target.failure or ''} process exited with {died} during the run {tail}"
    if target.audit_log is not None and target.audit_log.exists():
        target.audit = audit_summary(target.audit_log)
        target.audit_log.unlink()  # tens of MB per run
        print(f"  audit: {target.audit}", flush=True)
    return target


# --- report ----------------------------------------------------------------------------------

Run = dict[str, Target]


def _result(run: Run, name: str, mode: str) -> dict[str, float] | None:
    t = run.get(name)
    return None if t is None or t.failure is not None else t.results.get(mode)


def _values(
    runs: Sequence[Run], name: str, mode: str, key: str, minus_direct: bool = False
) -> list[float]:
    out = []
    for run in runs:
        r = _result(run, name, mode)
        d = _result(run, DIRECT, mode)
        if r is None or (minus_direct and d is None):
            continue
        out.append(r[key] - d[key] if minus_direct and d is not None else r[key])
    return out


def _spread(values: Sequence[float], fmt: str, unit: str = "") -> str:
    """median (min to max) of ``values``."""
    if not values:
        return "-"
    med = format(statistics.median(values), fmt)
    if len(values) == 1:
        return f"{med}{unit}"
    return f"{med}{unit} ({format(min(values), fmt)}{DASH}{format(max(values), fmt)})"


def _ratio(run: Run, name: str, mode: str) -> float | None:
    r, f = _result(run, name, mode), _result(run, FLOOR, mode)
    if r is None or f is None or not f["cpu_ms_per_req"]:
        return None
    return r["cpu_ms_per_req"] / f["cpu_ms_per_req"]


def _rss(run: Run, name: str) -> float | None:
    t = run.get(name)
    if t is None or t.failure is not None:
        return None
    return t.results.get("rss", {}).get("peak_mb")


def _failed(run: Run, name: str, modes: Sequence[str] = ("unary", "stream")) -> int:
    t = run.get(name)
    if t is None:
        return 0
    return sum(
        int(t.results.get(m, {}).get("sat_errors", 0) + t.results.get(m, {}).get("rate_errors", 0))
        for m in modes
    )


def issue_targets(runs: Sequence[Run]) -> list[str]:
    """Issue 9's performance targets: ratios to the floor within each run, medians over runs."""
    n = len(runs)
    head = (
        "| measure | " + " | ".join(f"run {i + 1}" for i in range(n)) + " | median | target | met |"
    )
    lines = [
        "### Targets: Sluice over the aiohttp floor (issue 9)",
        "",
        "Each ratio is Sluice's CPU per request (or per stream) over the floor's, both measured "
        "in the same run; the median is over runs. A run where the point failed requests counts "
        "as not met.",
        "",
        head,
        "|---|" + "---|" * (n + 3),
    ]
    rows: list[tuple[str, str, str, float | None, Callable[[Run], float | None]]] = [
        (
            "routing only: CPU per request / floor's",
            "unary",
            f"≤ 1.25{TIMES}",
            1.25,
            lambda r: _ratio(r, SLUICE, "unary"),
        ),
        (
            "all features: CPU per request / floor's",
            "unary",
            f"≤ 1.5{TIMES}",
            1.5,
            lambda r: _ratio(r, SLUICE_ALL, "unary"),
        ),
        (
            f"routing only: CPU per stream of {STREAM_CHUNKS} chunks / floor's",
            "stream",
            f"≤ 1.6{TIMES}",
            1.6,
            lambda r: _ratio(r, SLUICE, "stream"),
        ),
        (
            f"all features: CPU per stream of {STREAM_CHUNKS} chunks / floor's",
            "stream",
            "-",
            None,
            lambda r: _ratio(r, SLUICE_ALL, "stream"),
        ),
    ]
    for label, mode, target, limit, get in rows:
        vals = [get(r) for r in runs]
        got = [v for v in vals if v is not None]
        name = SLUICE if label.startswith("routing") else SLUICE_ALL
        bad = [bool(_failed(r, name, (mode,))) for r in runs]
        cells = " | ".join(
            "-" if v is None else f"{v:.2f}{TIMES}" + (" (failed requests)" if b else "")
            for v, b in zip(vals, bad, strict=True)
        )
        med = statistics.median(got) if got else None
        failed = any(bad)
        if limit is None or med is None:
            met = "-" if limit is None else "**no** (no result)"
        else:
            met = "yes" if med <= limit and not failed else "**no**"
        shown = "-" if med is None else f"{med:.2f}{TIMES}"
        lines.append(f"| {label} | {cells} | {shown} | {target} | {met} |")
    rss = [_rss(r, SLUICE_ALL) for r in runs]
    got_rss = [v for v in rss if v is not None]
    med_rss = statistics.median(got_rss) if got_rss else None
    lines.append(
        "| all features: peak RSS under load | "
        + " | ".join("-" if v is None else f"{v:.1f} MB" for v in rss)
        + f" | {'-' if med_rss is None else f'{med_rss:.1f} MB'} | ≤ 60 MB | "
        + ("**no** (no result)" if med_rss is None else "yes" if med_rss <= 60 else "**no**")
        + " |"
    )
    lines += [
        "",
        "The issue states the streaming target without naming the point; it is judged on "
        'routing only (the figure the issue\'s "today 2.5x" matches), and the all-features '
        "streaming ratio is shown for reference.",
        "",
    ]
    return lines


def _load_tables(runs: Sequence[Run], names: Sequence[str]) -> list[str]:
    lines: list[str] = []
    for mode, title in (("unary", "Non-streaming"), ("stream", "Streaming")):
        lines += [
            f"### {title} chat completions",
            "",
            "| target | req/s at saturation | req/s per core | CPU ms/req | p50 @100rps | "
            "p99 @100rps | added p50 @100rps | added p99 @100rps | p50 / p99 at saturation | "
            "failed requests |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name in names:
            if not _values(runs, name, mode, "sat_rps"):
                lines.append(f"| {name} | failed | | | | | | | | |")
                continue
            proxy = name != DIRECT

            def v(key: str, fmt: str, unit: str = "", added: bool = False) -> str:
                return _spread(_values(runs, name, mode, key, added), fmt, unit)  # noqa: B023

            failed = sum(
                int(x)
                for key in ("sat_errors", "rate_errors")
                for x in _values(runs, name, mode, key)
            )
            lines.append(
                f"| {name} | {v('sat_rps', '.0f')} | "
                + (v("rps_per_core", ".0f") if proxy else "-")
                + " | "
                + (v("cpu_ms_per_req", ".3f") if proxy else "-")
                + f" | {v('rate_p50', '.2f', ' ms')} | {v('rate_p99', '.2f', ' ms')} | "
                + (v("rate_p50", ".2f", " ms", added=True) if proxy else "-")
                + " | "
                + (v("rate_p99", ".2f", " ms", added=True) if proxy else "-")
                + f" | {v('sat_p50', '.1f')} / {v('sat_p99', '.1f', ' ms')} | "
                + (f"**{failed}**" if failed else "0")
                + " |"
            )
        lines.append("")
    lines += ["### Memory and start-up", "", "| target | peak RSS | start-up to ready |"]
    lines += ["|---|---|---|"]
    for name in names:
        if name == DIRECT:
            continue
        rss = [x for x in (_rss(r, name) for r in runs) if x is not None]
        start = [t.startup_s for r in runs if (t := r.get(name)) and t.startup_s is not None]
        lines.append(f"| {name} | {_spread(rss, '.1f', ' MB')} | {_spread(start, '.2f', ' s')} |")
    lines.append("")
    return lines


def _counts(d: dict[str, int], prefix: str) -> str:
    got = [f"{k.split(' ', 1)[1]} {n}" for k, n in sorted(d.items()) if k.startswith(prefix)]
    return ", ".join(got) or "none"


def audit_tables(runs: Sequence[Run]) -> list[str]:
    lines = [
        "### What the Sluice sidecars did (their audit logs)",
        "",
        "Per run, from the sidecar's own audit log (every request of the run, warm-ups "
        "included): answers, prompt renderings, personal data found (and redacted) by the input "
        "and output guardrails, and requests with a budget reservation. *client gone*: "
        "requests whose client closed the connection before the answer ended (wrk closes its "
        f"connections when a load run ends: at most connections {TIMES} load runs per "
        "sidecar), not failures; *errors*: every other request that did not end ok, by "
        "status, outcome and error type/code.",
        "",
        "| point | run | requests | HTTP status | prompt rendered | input: entities redacted | "
        "output: entities redacted | budget reserved | client gone | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in (SLUICE, SLUICE_ALL):
        for i, run in enumerate(runs):
            t = run.get(name)
            a = t.audit if t is not None else None
            if a is None:
                lines.append(f"| {name} | {i + 1} | no audit log | | | | | | | |")
                continue
            statuses = ", ".join(f"{s}: {n}" for s, n in sorted(a["status"].items()))
            rendered = sum(a["prompts"].values())
            reserved = f" (median {a['reserved_usd']:.6f} USD each)" if a["reserved_usd"] else ""
            errors = "; ".join(f"{k}: {n}" for k, n in a["errors"].items()) or "none"
            lines.append(
                f"| {name} | {i + 1} | {a['records']} | {statuses} | {rendered} | "
                f"{_counts(a['entities'], 'input')} | {_counts(a['entities'], 'output')} | "
                f"{a['budget']}{reserved} | {a['disconnects']} | {errors} |"
            )
    lines.append("")
    return lines


def _code(text: str) -> str:
    """``text`` as one line of inline code."""
    return "`" + " ".join(text.replace("`", "'").split()) + "`"


def failures(runs: Sequence[Run]) -> list[str]:
    lines: list[str] = []
    for i, run in enumerate(runs):
        for t in run.values():
            if t.failure:
                lines.append(f"- run {i + 1}, {t.name}: measurement failed: {_code(t.failure)}")
            for mode, samples in t.error_samples.items():
                for s, n in Counter(samples).items():
                    times = f" ({n} of the samples)" if n > 1 else ""
                    lines.append(f"- run {i + 1}, {t.name}, {mode}{times}: {_code(s)}")
    if not lines:
        return []
    return ["### Failures", "", *lines, ""]


def earlier_targets(runs: Sequence[Run]) -> list[str]:
    cpu = _values(runs, SLUICE, "unary", "cpu_ms_per_req")
    if not cpu:
        return []
    p50 = _values(runs, SLUICE, "unary", "rate_p50", minus_direct=True)
    p99 = _values(runs, SLUICE, "unary", "rate_p99", minus_direct=True)
    rss = [x for x in (_rss(r, SLUICE) for r in runs) if x is not None]
    checks = [
        ("CPU per request at saturation ≤ 0.35 ms", cpu, 0.35, ".3f", " ms"),
        ("added p50 at 100 rps ≤ 1 ms", p50, 1.0, ".2f", " ms"),
        ("added p99 at 100 rps ≤ 2.5 ms", p99, 2.5, ".2f", " ms"),
        ("peak RSS ≤ 60 MB", rss, 60.0, ".1f", " MB"),
    ]
    lines = [
        "### Earlier targets (routing only, non-streaming, medians)",
        "",
        "| target | result | met |",
        "|---|---|---|",
    ]
    for label, vals, limit, fmt, unit in checks:
        if not vals:
            continue
        ok = statistics.median(vals) <= limit
        lines.append(f"| {label} | {_spread(vals, fmt, unit)} | {'yes' if ok else '**no**'} |")
    lite = _values(runs, LITELLM, "unary", "rps_per_core")
    mine = _values(runs, SLUICE, "unary", "rps_per_core")
    if lite and mine:
        ratio = statistics.median(mine) / max(1e-9, statistics.median(lite))
        ok = "yes" if ratio >= 20 else "**no**"
        lines.append(f"| throughput per core ≥ 20x LiteLLM | {ratio:.1f}x | {ok} |")
    floor = _values(runs, FLOOR, "unary", "cpu_ms_per_req")
    if floor:
        above = [
            s["cpu_ms_per_req"] - f["cpu_ms_per_req"]
            for r in runs
            if (s := _result(r, SLUICE, "unary")) and (f := _result(r, FLOOR, "unary"))
        ]
        lines += [
            "| (for reference) the aiohttp floor: CPU per request | "
            f"{_spread(floor, '.3f', ' ms')} | - |",
            "| (for reference) routing only above the floor: CPU per request | "
            f"{_spread(above, '.3f', ' ms')} | - |",
        ]
    return [*lines, ""]


def report(
    runs: Sequence[Run], names: Sequence[str], args: argparse.Namespace, machine: dict[str, Any]
) -> str:
    duration, conns = args.duration, args.connections
    speeds = ", ".join(machine["speed_runs"])
    loads = ", ".join(machine["load_runs"])
    lines = [
        "## Sidecar: direct vs Sluice vs LiteLLM (`bench/sidecar_bench.py`)",
        "",
        f"Produced by `python bench/sidecar_bench.py --runs {len(runs)} --duration {duration} "
        f"--quiet-wait {args.quiet_wait:g}"
        + (f" --ref {args.ref}" if args.ref else "")
        + f"` on {time.strftime('%Y-%m-%d')}, measuring the sidecar of {machine['sidecar']}: "
        f"{CORES} cores ({platform.processor() or platform.machine()}), Python "
        f"{platform.python_version()}, {duration} s per load run, wrk with 1 thread and "
        f"{conns} connections for saturation, a fixed-rate client at 100 requests/s for "
        "latency. The upstream is a fake OpenAI-compatible server on loopback answering at "
        f"once (streams: {STREAM_CHUNKS} content chunks + finish + usage + [DONE]). "
        "CPU is the target's whole process tree (user + system) over the saturation run; "
        "per-core throughput = requests / CPU-seconds. Load generator, upstream and target share "
        "the same cores, so absolute requests/s are lower than on a dedicated machine; the "
        "per-core and per-request figures are the comparable ones. The sidecar writes its audit "
        "log to a file. *aiohttp floor* is a bare aiohttp pass-through proxy (no routing, no "
        "metering): what the interpreter, aiohttp and this machine cost before Sluice does "
        "anything.",
        "",
        f"{len(runs)} runs: in each, every target is started afresh and measured once, in an "
        "order rotated from run to run (so slow minutes of the shared machine do not always "
        "fall on the same target). Each figure is the median over the runs, with the spread "
        f"(min{DASH}max) in parentheses.",
        "",
        f"*sluice (routing only)* has one route to the fake upstream and nothing else. "
        f"*sluice (all features)* has the same route plus a PromptTemplate that every request "
        f"names (`metadata.prompt: {PROMPT_NAME}@production` with two variables), a "
        "GuardrailPolicy in Enforce mode with input and output checks (pii EMAIL, PHONE, "
        "CREDIT_CARD → Redact; promptInjection → Block; one deny regex → Block; streams in "
        "Holdback mode, 64 characters) and a Budget on the route (1000 USD a day, rpm/tpm "
        "limits far above the load: never refused). Its requests carry an email address, a "
        "phone number and a card number and a per-request number (so no two texts are alike "
        "and the guardrails' caches do not hide the scan), and its backend model makes the fake "
        "upstream answer with personal data too (split across stream chunks), so the output "
        "checks redact in every answer; the audit-log table below shows that they did.",
        "",
        "While the machine is shared, `bench/cpu_probe.py` gives load-independent figures for "
        "the same operating points: `--valgrind` counts the instructions each target executes "
        "per request or stream (user space only: system calls are not in them), `--profile "
        "opcodes` the bytecodes per Python function, `--strace` the system calls.",
        "",
        f"Machine during the run: {machine['quiet']}; a fixed Python loop took {speeds} at the "
        f"start of each run and {machine['speed_after']} after the last (lower is faster; the "
        "shared machine's speed varies by up to half from one minute to the next, which moves "
        f"every CPU figure below with it); load average at the start of each run: {loads}.",
        "",
    ]
    lines += issue_targets(runs)
    lines += _load_tables(runs, names)
    lines += audit_tables(runs)
    lines += failures(runs)
    lines += earlier_targets(runs)
    noise = _values(runs, DIRECT, "unary", "rate_p99")
    if noise and statistics.median(noise) > 2.0:
        lines += [
            f"Note: the direct call's own p99 at 100 rps was {statistics.median(noise):.1f} ms. "
            "On this virtual machine tail latency is set by scheduling (waking idle virtual "
            "CPUs, other tenants of the host), not by the proxies, and every proxy adds two more "
            "such hand-offs between processes: the aiohttp floor's own added p99 is the "
            "environment's share. Added-p99 figures from this machine say little about Sluice "
            "itself.",
            "",
        ]
    return "\n".join(lines)


def write_doc(section: str, doc: Path = DOC) -> None:
    """Write the section; the first time, in the place of the block the old markers held."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else ""
    if OLD_START in text and OLD_END in text:
        head, rest = text.split(OLD_START, 1)
        placeholder = f"<!-- BEGIN {SECTION} -->\n<!-- END {SECTION} -->"
        doc.write_text(head + placeholder + rest.split(OLD_END, 1)[1], encoding="utf-8")
    write_section(SECTION, section, doc)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    p.add_argument("--floor", type=int, nargs=2, help=argparse.SUPPRESS)
    p.add_argument(
        "--runs", type=int, default=3, help="interleaved runs of all targets (default 3)"
    )
    p.add_argument("--duration", type=int, default=8, help="seconds per load run (default 8)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument(
        "--litellm",
        default="/tmp/litellm-venv/bin/litellm",
        help="litellm binary; skipped when missing",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=600,
        help="seconds to wait for an idle machine before measuring anyway (default 600)",
    )
    p.add_argument(
        "--ref",
        help="measure the sidecar as committed at this git ref (default: a copy of the working "
        "tree taken at start)",
    )
    p.add_argument("--no-doc", action="store_true", help="print, do not write docs/")
    args = p.parse_args()
    if args.upstream:
        run_upstream(args.upstream)
        return 0
    if args.floor:
        run_floor(*args.floor)
        return 0
    if shutil.which("wrk") is None:
        print("wrk is required: apt-get install wrk", file=sys.stderr)
        return 2
    if args.runs < 1:
        p.error("--runs must be at least 1")
    machine: dict[str, Any] = {
        "quiet": wait_quiet(args.quiet_wait),
        "speed_runs": [],
        "load_runs": [],
    }
    print(f"machine: {machine['quiet']}", flush=True)
    up_port = free_port()
    upstream = spawn([sys.executable, __file__, "--upstream", str(up_port)])
    work = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    src, machine["sidecar"] = snapshot_sidecar(work, args.ref)
    print(f"sidecar under test: {machine['sidecar']}", flush=True)
    points = [
        Point(DIRECT, None),
        Point(FLOOR, lambda _w: start_floor(up_port)),
        Point(SLUICE, lambda w: start_sidecar(SLUICE, up_port, w, False, src)),
        Point(SLUICE_ALL, lambda w: start_sidecar(SLUICE_ALL, up_port, w, True, src), ALL_BODY),
    ]
    if Path(args.litellm).exists():
        points.append(Point(LITELLM, lambda w: start_litellm(args.litellm, up_port, w)))
    else:
        print(f"litellm not found at {args.litellm}; skipped", flush=True)
    runs: list[Run] = []
    try:
        time.sleep(0.5)  # the upstream binds its port
        for i in range(args.runs):
            machine["speed_runs"].append(f"{speed_index():.0f} ms")
            machine["load_runs"].append(f"{os.getloadavg()[0]:.2f}")
            order = points[i % len(points) :] + points[: i % len(points)]
            print(
                f"=== run {i + 1}/{args.runs}: {', '.join(pt.name for pt in order)} "
                f"(loop {machine['speed_runs'][-1]}, load {machine['load_runs'][-1]})",
                flush=True,
            )
            run: Run = {}
            for pt in order:
                slug = re.sub(r"\W+", "-", pt.name).strip("-")
                run[pt.name] = run_point(
                    pt, work / f"run{i + 1}" / slug, args.duration, args.connections, up_port
                )
            runs.append(run)
    finally:
        if upstream.poll() is None:
            os.killpg(upstream.pid, signal.SIGTERM)
    machine["speed_after"] = f"{speed_index():.0f} ms"
    section = report(runs, [pt.name for pt in points], args, machine)
    print(section)
    if not args.no_doc:
        write_doc(section)
    print(f"logs: {work}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
