"""One provider quota across replicas, on the real apiserver: three real sidecar processes,
registered as pods with bound tokens, hammer a route whose first backend has ``limits.rpm``; the
operator shares the quota out through the leases, so all three together send the backend what
one bucket of that quota allows (its capacity plus what it refills while they hammer), where
three per-pod buckets would send three times as much. The rest goes to the route's second
backend. Leases live 3 s here (``SLUICE_LEASE_TTL``). No timing asserts: the bound grows with
however long the hammering took."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sluice_cli.devcluster import Cluster

from .operator_proc import OperatorProcess, start_operator
from .polling import eventually
from .sidecar_proc import SidecarProcess, start_sidecar
from .test_budget_leases import apply, kill
from .test_controlplane import pod_token

pytestmark = pytest.mark.cluster

RPM = 30
ROUTE = {
    "apiVersion": "sluice.dev/v1alpha1",
    "kind": "ModelRoute",
    "metadata": {"name": "chat"},
    "spec": {
        "backends": [
            {
                "name": "quota",
                "provider": "mock",
                "model": "mock-1",
                "limits": {"rpm": RPM},
                "mock": {"completionTokens": 5, "latency": "10ms"},
            },
            {
                "name": "spare",
                "provider": "mock",
                "model": "mock-2",
                "priority": 1,
                "mock": {"completionTokens": 5, "latency": "10ms"},
            },
        ]
    },
}
BODY = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
PODS = ["quota-a", "quota-b", "quota-c"]


def lease_answers(metrics: str) -> float:
    line = 'sluice_operator_controlplane_requests_total{code="200",path="/v1/leases"} '
    for row in metrics.splitlines():
        if row.startswith(line):
            return float(row[len(line) :])
    return 0.0


def quota_metrics(op: OperatorProcess, namespace: str) -> dict[str, float]:
    """The operator's ``sluice_quota_*`` gauges of the ``quota`` backend's rpm."""
    with op.open(f"{op.url}/metrics") as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    wanted = {"namespace": namespace, "backend": "quota"}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = {k: s.labels.get(k) for k in wanted}
            if labels == wanted and s.labels.get("metric", "rpm") == "rpm":
                out[s.name.removeprefix("sluice_quota_").removesuffix("_per_minute")] = s.value
    return out


def hammer(url: str, until: threading.Event, served: list[int]) -> None:
    with httpx.Client(timeout=10) as client:
        while not until.is_set():
            r = client.post(f"{url}/chat/completions", json=BODY)
            assert r.status_code == 200, r.text  # what the quota's share does not cover: spare
            served.append(1)


def test_three_sidecars_send_a_backend_one_quota_not_three(
    cluster: Cluster, sluice_crds: list[str], namespace: str, tmp_path: Path
) -> None:
    op = start_operator(cluster.kubeconfig, tmp_path, env={"SLUICE_LEASE_TTL": "3"})
    sides: dict[str, SidecarProcess] = {}
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
        cluster.kubectl("wait", "modelroute/chat", "-n", namespace, "--for=condition=Ready")
        cm = cluster.kubectl_json("get", "configmap", "sluice-config", "-n", namespace)
        config = tmp_path / "config.json"
        config.write_text(cm["data"]["config.json"])
        for pod in PODS:
            sides[pod] = start_sidecar(
                config,
                tmp_path,
                control_plane=op.url,
                namespace=namespace,
                pod=pod,
                token_file=pod_token(cluster, namespace, pod, tmp_path),
                audit_log=tmp_path / f"audit-{pod}.jsonl",
            )

        def answered() -> bool:
            with op.open(f"{op.url}/metrics") as r:
                return lease_answers(r.read().decode()) >= 4 * len(PODS)

        # Every sidecar holds a share (a renewal each second) before the load starts: until its
        # first answer a sidecar enforces the whole quota alone (docs/modelroute.md).
        eventually(answered, timeout=30, what="lease answers to every sidecar")
        stop = threading.Event()
        served: dict[str, list[int]] = {pod: [] for pod in PODS}
        threads = [
            threading.Thread(target=hammer, args=(sides[p].base_url, stop, served[p]), daemon=True)
            for p in PODS
            for _ in range(3)
        ]
        started = time.monotonic()
        for t in threads:
            t.start()
        eventually(
            lambda: all(len(s) >= 120 for s in served.values()),
            timeout=60,
            what="120 requests served by every sidecar",
        )
        stop.set()
        for t in threads:
            t.join(timeout=30)
        took = time.monotonic() - started
        # What the operator shows of the shares: all three hold one, within the quota.
        got = quota_metrics(op, namespace)
        assert got["limit"] == RPM and got["holders"] == len(PODS), got
        assert 0 < got["granted"] <= RPM, got

        def quota_status() -> dict[str, Any] | None:
            route = cluster.kubectl_json("get", "modelroute", "chat", "-n", namespace)
            backends = (route.get("status") or {}).get("backends") or []
            quota = next((b.get("quota") for b in backends if b["name"] == "quota"), None)
            return quota if quota and quota.get("holders") == len(PODS) else None

        quota = eventually(quota_status, timeout=30, what="status.backends[quota].quota")
        assert quota["rpm"] == RPM and 0 < quota["grantedRpm"] <= RPM, quota
        assert "tpm" not in quota
    finally:
        for side in sides.values():
            side.stop()  # flushes the audit records
        kill(op)
    to_quota: dict[str, int] = {}
    for pod in PODS:
        records: list[dict[str, Any]] = [
            json.loads(line) for line in (tmp_path / f"audit-{pod}.jsonl").read_text().splitlines()
        ]
        to_quota[pod] = sum(1 for r in records if r.get("backend") == "quota")
    total = sum(to_quota.values())
    # One bucket's worth: its capacity plus its refill while they hammered (and a little for
    # shares moving between renewals); three per-pod buckets would allow three times that.
    bound = RPM + RPM * took / 60 + RPM / 10
    assert total <= bound, (to_quota, took)
    assert total < 3 * RPM
    assert all(n > 0 for n in to_quota.values()), to_quota  # each sidecar got a share
