"""``sluice dev fleet`` as a user runs it: the real command, a subprocess, two sidecars.

The command starts its own etcd + kube-apiserver, the operator and the sidecars (pods of the
namespace, tokens bound to them); the test reads only what the command prints (stdout lines and
the ``--ready-file``), talks to each sidecar with the official ``openai`` SDK, and sees the
operator's view through the printed kubeconfig: the ModelRoute's rollout lists both pods, the
requests are counted in the backend status, and the Budget's ledger carries both pods' spend.
With ``--count-calls`` the sidecars' control-plane calls pass through the fleet's counter, which
counts them. Then SIGINT: every child is gone and the command exits 0 without a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from sluice_cli import devcluster

from .polling import eventually

pytestmark = pytest.mark.cluster

STARTUP_SECONDS = 240  # a loaded 2-core machine: the cluster, the operator, two sidecars


@dataclass
class RunningFleet:
    proc: subprocess.Popen[str]
    ready: dict[str, Any]
    stdout_lines: list[str]
    stderr_path: Path
    kubectl: Path

    def get(self, *args: str) -> Any:
        out = subprocess.run(
            [str(self.kubectl), f"--kubeconfig={self.ready['kubeconfig']}", "get", *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return json.loads(out.stdout)


def sluice(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.pop("KUBECONFIG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "sluice_cli", *args], env=env, text=True, **kwargs
    )


@pytest.fixture
def fleet(repo_root: Path, tmp_path: Path) -> Iterator[RunningFleet]:
    tools = devcluster.ensure_tools(repo_root)
    ready_file = tmp_path / "ready.json"
    stdout_path, stderr_path = tmp_path / "stdout", tmp_path / "stderr"
    with stdout_path.open("w") as out, stderr_path.open("w") as err:
        proc = sluice(
            "dev",
            "fleet",
            str(repo_root / "examples" / "01-quickstart"),
            "--replicas=2",
            "--namespace=shop",
            f"--workdir={tmp_path / 'fleet'}",
            f"--ready-file={ready_file}",
            "--report-interval=1",
            "--count-calls",
            stdout=out,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not ready_file.exists():
            assert proc.poll() is None, f"exited {proc.returncode}: {stderr_path.read_text()}"
            assert time.monotonic() < deadline, f"not up in time: {stderr_path.read_text()}"
            time.sleep(0.5)
        ready = json.loads(ready_file.read_text())
        lines = stdout_path.read_text().splitlines()
        yield RunningFleet(proc, ready, lines, stderr_path, tools.kubectl)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def ask(url: str) -> str:
    with openai.OpenAI(base_url=url, api_key="unused", max_retries=2, timeout=30) as client:
        out = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "How do I rotate a key?"}]
        )
    return out.choices[0].message.content or ""


def first_answer(url: str) -> str | None:
    try:
        return ask(url)
    except openai.RateLimitError:
        return None


def test_two_sidecars_serve_and_report_to_the_operator_then_stop_cleanly(
    fleet: RunningFleet,
) -> None:
    ready = fleet.ready
    # stdout: one line per sidecar and the kubeconfig, as documented
    sidecar_lines = [line.split() for line in fleet.stdout_lines if line.startswith("sidecar ")]
    assert [(w[1], w[2]) for w in sidecar_lines] == [
        (s["pod"], s["url"]) for s in ready["sidecars"]
    ]
    assert [w[1] for w in sidecar_lines] == ["fleet-0", "fleet-1"]
    assert all(w[2].startswith("http://127.0.0.1:") and w[2].endswith("/v1") for w in sidecar_lines)
    assert f"kubeconfig {ready['kubeconfig']}" in fleet.stdout_lines
    assert ready["namespace"] == "shop"

    for side in ready["sidecars"]:
        # the first answer may wait for the sidecar's first budget lease from the operator
        url: str = side["url"]
        eventually(functools.partial(first_answer, url), timeout=60, what="first answer")
        for _ in range(2):
            assert ask(side["url"])

    # the pods exist (Pending: no kubelet) and carry the label `sluice status` lists them by
    pods = fleet.get("pods", "-n", "shop", "-l", "sluice.dev/injected=true", "-o", "json")
    assert sorted(p["metadata"]["name"] for p in pods["items"]) == ["fleet-0", "fleet-1"]

    def route_status() -> Any:
        st = fleet.get("modelroute", "chat", "-n", "shop", "-o", "json").get("status") or {}
        rollout = st.get("rollout") or {}
        served = sum(b.get("requests", 0) for b in st.get("backends", []))
        done = rollout.get("pods") == 2 and rollout.get("applied") == 2 and served >= 6
        return st if done else None

    st = eventually(route_status, timeout=120, what="rollout 2/2 and 6 requests in status")
    assert [s["pod"] for s in st["rollout"]["sidecars"]] == ["fleet-0", "fleet-1"]
    assert {s["configHash"] for s in st["rollout"]["sidecars"]} == {st["rollout"]["configHash"]}

    def budget_ledger() -> Any:
        got = fleet.get("budget", "team-daily", "-n", "shop", "-o", "json").get("status") or {}
        pods = {e.get("pod") for e in got.get("ledger") or [] if e.get("windows")}
        return got if pods == {"fleet-0", "fleet-1"} else None

    budget = eventually(budget_ledger, timeout=120, what="both pods' spend in the Budget")
    assert budget["rollout"]["summary"] == "2/2"

    # --count-calls: the sidecars' control-plane calls went through the counter, and worked
    context = ssl.create_default_context(cafile=ready["operator"]["ca"])
    with urllib.request.urlopen(ready["controlPlane"]["calls"], context=context) as r:
        counted = json.load(r)
    assert counted["calls"]["POST /v1/reports"] >= 2
    assert counted["calls"]["GET /v1/config/{ns}"] >= 2  # one long-poll held per sidecar
    assert counted["statuses"]["POST /v1/reports 200"] >= 2

    # stop: SIGINT, every child gone, exit 0, no traceback
    pids = [ready["operator"]["pid"], *(s["pid"] for s in ready["sidecars"])]
    fleet.proc.send_signal(signal.SIGINT)
    assert fleet.proc.wait(timeout=60) == 0, fleet.stderr_path.read_text()
    stderr = fleet.stderr_path.read_text()
    assert "Traceback" not in stderr, stderr
    assert stderr.rstrip().endswith("stopped."), stderr
    for pid in pids:
        assert not _alive(pid), f"process {pid} survived the stop"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes; only the parent (the command, now exited) could reap it
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_bad_manifests_fail_with_one_line_before_starting_anything(tmp_path: Path) -> None:
    bad = tmp_path / "route.yaml"
    bad.write_text(
        "apiVersion: sluice.dev/v1alpha1\nkind: ModelRoute\nmetadata: {name: chat}\n"
        "spec: {backends: [{name: a, provider: nosuch, model: m}]}\n"
    )
    for args, expected in [
        ([str(bad)], "spec.backends[0].provider"),
        ([str(tmp_path / "absent.yaml")], "no such file or directory"),
    ]:
        proc = sluice("dev", "fleet", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, err
        assert out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
