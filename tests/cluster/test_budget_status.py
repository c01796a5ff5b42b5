"""Budget spend on the real apiserver: a real sidecar process reports to the operator, the
Budget's status shows the spend, and an operator restart neither loses nor double-counts it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest

from sluice_cli.devcluster import Cluster

from . import operator_proc
from .operator_proc import start_operator
from .polling import eventually
from .sidecar_proc import SidecarProcess, start_sidecar
from .test_controlplane import pod_token

pytestmark = pytest.mark.cluster

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
                "mock": {"reply": "hello there"},
                "pricing": {"inputPerMTok": 1000.0, "outputPerMTok": 2000.0},
            }
        ]
    },
}
BUDGET = {
    "apiVersion": "sluice.dev/v1alpha1",
    "kind": "Budget",
    "metadata": {"name": "team"},
    "spec": {
        "limits": [{"window": "Day", "usd": 1.0}, {"window": "Month", "requests": 4}],
        "alerts": {"thresholds": [50, 80, 100]},
        "onExceeded": {"action": "AlertOnly"},
    },
}


def apply(cluster: Cluster, namespace: str, obj: dict[str, Any]) -> None:
    body = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(body))


def bound_token(cluster: Cluster, namespace: str, pod: str, tmp_path: Path) -> Path:
    apply(
        cluster,
        namespace,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app"}},
    )
    return pod_token(cluster, namespace, pod, tmp_path)


def ask(side: SidecarProcess) -> None:
    client = openai.OpenAI(base_url=side.base_url, api_key="unused", max_retries=0, timeout=10)
    with client:
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])


def status(cluster: Cluster, namespace: str) -> dict[str, Any]:
    got: dict[str, Any] = cluster.kubectl_json("get", "budget/team", "-n", namespace)
    return got.get("status") or {}


def test_sidecar_spend_reaches_budget_status_and_survives_an_operator_restart(
    cluster: Cluster,
    sluice_crds: list[str],
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    op = start_operator(cluster.kubeconfig, tmp_path)
    side: SidecarProcess | None = None
    try:
        apply(cluster, namespace, ROUTE)
        apply(cluster, namespace, BUDGET)
        cluster.kubectl("wait", "budget/team", "-n", namespace, "--for=condition=Ready")
        cm = cluster.kubectl_json("get", "configmap", "sluice-config", "-n", namespace)
        config = tmp_path / "config.json"
        config.write_text(cm["data"]["config.json"])
        token = bound_token(cluster, namespace, "p1", tmp_path)
        side = start_sidecar(
            config, tmp_path, control_plane=op.url, namespace=namespace, pod="p1", token_file=token
        )
        for _ in range(3):
            ask(side)

        def spent() -> dict[str, Any] | None:
            st = status(cluster, namespace)
            windows = st.get("windows") or []
            if len(windows) == 2 and windows[1]["requests"] == 3:
                return st
            return None

        st = eventually(spent, timeout=60, what="the sidecar's spend in Budget status")
        day, month = st["windows"]
        assert day["window"] == "Day/UTC" and day["spentUSD"] > 0 and day["resetsAt"]
        assert month["percent"] == 75.0 and st["state"] == "Ok"  # Warning from 80%
        assert st["spendByRoute"][0]["route"] == "chat"
        assert st["spendByRoute"][0]["model"] == "mock-1"
        assert st["spent"] and st["limit"] and st["resetsAt"]
        reached = {c["type"]: c for c in st["conditions"]}["ThresholdReached"]
        assert reached["status"] == "True"
        events = cluster.kubectl_json(
            "get", "events", "-n", namespace, "--field-selector=involvedObject.name=team"
        )
        reasons = [e["reason"] for e in events["items"]]
        assert reasons.count("BudgetThreshold") == 1  # 50% of the Month window

        # Restart the operator while the sidecar keeps reporting: nothing lost, nothing doubled
        # (SIGKILL: no graceful shutdown, so nothing is flushed on the way out).
        op.proc.kill()
        op.proc.wait()
        port = op.port  # the sidecar keeps its control-plane URL
        monkeypatch.setattr(operator_proc, "free_port", lambda: port)
        op = start_operator(cluster.kubeconfig, tmp_path)
        ask(side)
        eventually(
            lambda: (status(cluster, namespace).get("windows") or [{}, {}])[1].get("requests") == 4,
            timeout=60,
            what="the fourth request after the restart",
        )
        after = status(cluster, namespace)
        assert after["windows"][1]["requests"] == 4 and after["state"] == "Exhausted"
        assert after["windows"][1]["alerted"] == [50, 80, 100]
        events = cluster.kubectl_json(
            "get", "events", "-n", namespace, "--field-selector=involvedObject.name=team"
        )
        assert [e["reason"] for e in events["items"]].count("BudgetExhausted") == 1
    finally:
        if side is not None:
            side.stop()
        if op.proc.poll() is None:  # nothing left to flush: no graceful shutdown needed
            op.proc.kill()
            op.proc.wait()
