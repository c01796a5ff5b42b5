"""One Budget across replicas, on the real apiserver: three real sidecar processes, registered as
pods with bound tokens, hammer one Budget (Block, $0.25 a day) through the operator's leases.

Every request costs exactly what it reserves (a mock backend, output tokens only, ``max_tokens``
equal to the mock's answer), so the documented bound is the limit itself plus what a killed
sidecar settled and never reported. Each test checks what the clients saw (every 200 is one
settled request of $0.005), what ``Budget.status`` says, and, after a graceful stop, the audit
records. Leases live 3 s here (``SLUICE_LEASE_TTL``); the operator is restarted by SIGKILL (no
graceful shutdown). No timing asserts: waits are generous."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from sluice_cli.devcluster import Cluster

from . import operator_proc
from .operator_proc import OperatorProcess, start_operator
from .polling import eventually
from .sidecar_proc import SidecarProcess, start_sidecar
from .test_controlplane import pod_token

pytestmark = pytest.mark.cluster

COST = 0.005  # 5 output tokens at $1,000 per million
LIMIT = 0.25  # 50 requests
ROUTE = {
    "apiVersion": "sluice.dev/v1alpha1",
    "kind": "ModelRoute",
    "metadata": {"name": "chat"},
    "spec": {
        "backends": [
            {
                "name": "mock",
                "provider": "mock",
                "model": "mock-1",
                "mock": {"completionTokens": 5, "latency": "40ms"},
                "pricing": {"inputPerMTok": 0.0, "outputPerMTok": 1000.0},
            }
        ]
    },
}
BUDGET = {
    "apiVersion": "sluice.dev/v1alpha1",
    "kind": "Budget",
    "metadata": {"name": "team"},
    "spec": {"limits": [{"window": "Day", "usd": LIMIT}], "onExceeded": {"action": "Block"}},
}
BODY = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def apply(cluster: Cluster, namespace: str, obj: dict[str, Any]) -> None:
    body = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(body))


def status(cluster: Cluster, namespace: str) -> dict[str, Any]:
    got: dict[str, Any] = cluster.kubectl_json("get", "budget/team", "-n", namespace)
    return got.get("status") or {}


def spent(cluster: Cluster, namespace: str) -> float:
    windows = status(cluster, namespace).get("windows") or [{}]
    return float(windows[0].get("spentUSD") or 0.0)


@dataclass
class Load:
    """Worker threads that keep posting to some sidecars until stopped; counts what they saw."""

    ok: dict[str, int] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def worker(self, pod: str, url: str, gone: threading.Event) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set() and not gone.is_set():
                try:
                    r = client.post(f"{url}/chat/completions", json=BODY)
                except httpx.HTTPError:
                    if gone.is_set():
                        return
                    self.stop.wait(0.2)
                    continue
                with self.lock:
                    if r.status_code == 200:
                        self.ok[pod] = self.ok.get(pod, 0) + 1
                    elif r.status_code == 429:
                        self.refused.append(r.json()["error"]["message"])
                if r.status_code != 200:
                    self.stop.wait(0.2)

    def total(self) -> int:
        with self.lock:
            return sum(self.ok.values())


@dataclass
class Fleet:
    cluster: Cluster
    namespace: str
    tmp_path: Path
    op: OperatorProcess
    sides: dict[str, SidecarProcess] = field(default_factory=dict)
    gone: dict[str, threading.Event] = field(default_factory=dict)

    def start(self, pods: list[str]) -> None:
        cm = self.cluster.kubectl_json("get", "configmap", "sluice-config", "-n", self.namespace)
        config = self.tmp_path / "config.json"
        config.write_text(cm["data"]["config.json"])
        tokens = {p: pod_token(self.cluster, self.namespace, p, self.tmp_path) for p in pods}

        def one(pod: str) -> SidecarProcess:
            return start_sidecar(
                config,
                self.tmp_path,
                control_plane=self.op.url,
                namespace=self.namespace,
                pod=pod,
                token_file=tokens[pod],
                audit_log=self.tmp_path / f"audit-{pod}.jsonl",
            )

        with ThreadPoolExecutor(len(pods)) as pool:
            for pod, side in zip(pods, pool.map(one, pods), strict=True):
                self.sides[pod] = side
                self.gone[pod] = threading.Event()

    def stop(self) -> None:
        for side in self.sides.values():  # all at once: each gives its slices back as it stops
            if side.proc.poll() is None:
                side.proc.terminate()
        for side in self.sides.values():
            side.stop()

    def audit_usd(self) -> float:
        """The cost of every audit record (read after the sidecars stopped: flushed)."""
        total = 0.0
        for pod in self.sides:
            for line in (self.tmp_path / f"audit-{pod}.jsonl").read_text().splitlines():
                total += float(json.loads(line).get("costUSD") or 0.0)
        return total


@contextmanager
def fleet(cluster: Cluster, namespace: str, tmp_path: Path, pods: list[str]) -> Iterator[Fleet]:
    op = start_operator(cluster.kubeconfig, tmp_path, env={"SLUICE_LEASE_TTL": "3"})
    f = Fleet(cluster, namespace, tmp_path, op)
    try:
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": "app", "namespace": namespace},
                }
            ),
        )
        apply(cluster, namespace, ROUTE)
        apply(cluster, namespace, BUDGET)
        cluster.kubectl("wait", "budget/team", "-n", namespace, "--for=condition=Ready")
        f.start(pods)
        yield f
    finally:
        f.stop()
        kill(f.op)  # nothing to flush: the tests read what the status says before this


def kill(op: OperatorProcess) -> None:
    """End the operator at once (SIGKILL: no graceful shutdown, the harshest restart)."""
    if op.proc.poll() is None:
        op.proc.kill()
        op.proc.wait()


@contextmanager
def hammering(f: Fleet, workers: int = 4) -> Iterator[Load]:
    load = Load()
    threads = [
        threading.Thread(target=load.worker, args=(pod, side.base_url, f.gone[pod]), daemon=True)
        for pod, side in f.sides.items()
        for _ in range(workers)
    ]
    for t in threads:
        t.start()
    try:
        yield load
    finally:
        load.stop.set()
        for t in threads:
            t.join(timeout=30)


def exhausted(f: Fleet) -> bool:
    return status(f.cluster, f.namespace).get("state") == "Exhausted"


PODS = ["lease-a", "lease-b", "lease-c"]


def test_three_sidecars_hammering_one_budget_spend_the_limit_and_no_more(
    cluster: Cluster, sluice_crds: list[str], namespace: str, tmp_path: Path
) -> None:
    with fleet(cluster, namespace, tmp_path, PODS) as f:
        with hammering(f) as load:
            eventually(lambda: exhausted(f), timeout=50, what="the Budget exhausted by 3 sidecars")
        served = load.total()
        # Requests cost exactly what they reserve: the bound is the limit itself.
        assert served * COST <= LIMIT + 1e-9
        assert served == round(LIMIT / COST)
        assert len([p for p, n in load.ok.items() if n]) >= 2  # the limit was shared
        assert all("Budget 'team'" in m for m in load.refused)
        # Settled spend in status is what the clients were served ...
        eventually(
            lambda: abs(spent(cluster, namespace) - served * COST) < 1e-9,
            timeout=30,
            what="status.windows[0].spentUSD equal to the served requests",
        )
        f.stop()
        # ... and what the audit records say.
        assert abs(f.audit_usd() - spent(cluster, namespace)) < 1e-6


def test_a_sidecar_killed_mid_load_leaves_no_phantom_spend(
    cluster: Cluster, sluice_crds: list[str], namespace: str, tmp_path: Path
) -> None:
    with fleet(cluster, namespace, tmp_path, PODS) as f:
        victim = f.sides["lease-c"]
        with hammering(f) as load:
            eventually(lambda: load.ok.get("lease-c", 0) >= 3, timeout=40, what="c serving")
            f.gone["lease-c"].set()
            victim.proc.send_signal(signal.SIGKILL)  # requests in flight, reservations held
            victim.proc.wait()
            # Once c's lease expires (3 s + skew) its unused slice returns: a and b spend it.
            eventually(lambda: exhausted(f), timeout=50, what="the Budget exhausted without c")
        survivors = load.ok.get("lease-a", 0) + load.ok.get("lease-b", 0)
        seen_c = load.ok.get("lease-c", 0)
        final = spent(cluster, namespace)
        assert abs(final - LIMIT) < 1e-9  # Exhausted: the operator counts the whole limit
        # What the operator counts for c: between nothing and what c could have settled (the
        # requests its clients saw, plus at most one per worker in flight when it died). Its
        # reservations in flight were never spend, and its unused slice came back once its lease
        # expired: a and b spent it (else the Budget would never have been exhausted).
        c_counted = final - survivors * COST
        assert -1e-9 <= c_counted <= (seen_c + 4) * COST + 1e-9
        # The bound: beyond the limit only what c settled and never reported.
        over = (survivors + seen_c) * COST - LIMIT
        assert over <= max(0.0, seen_c * COST - c_counted) + 1e-9


def test_an_operator_restart_mid_load_loses_nothing_and_counts_nothing_twice(
    cluster: Cluster,
    sluice_crds: list[str],
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with fleet(cluster, namespace, tmp_path, PODS) as f:
        with hammering(f) as load:
            eventually(lambda: load.total() >= 15, timeout=40, what="15 requests served")
            port = f.op.port  # the sidecars keep their control-plane URL
            kill(f.op)  # mid-load, with status writes and lease answers pending
            monkeypatch.setattr(operator_proc, "free_port", lambda: port)
            f.op = start_operator(cluster.kubeconfig, tmp_path, env={"SLUICE_LEASE_TTL": "3"})
            eventually(lambda: exhausted(f), timeout=55, what="the Budget exhausted after restart")
        served = load.total()
        assert served * COST <= LIMIT + 1e-9
        eventually(
            lambda: abs(spent(cluster, namespace) - served * COST) < 1e-9,
            timeout=30,
            what="status equal to the served requests after the restart",
        )
        f.stop()
        assert abs(f.audit_usd() - served * COST) < 1e-6
        assert served == round(LIMIT / COST)
