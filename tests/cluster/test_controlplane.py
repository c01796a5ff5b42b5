"""Operator ↔ sidecar over the real control plane: push, reports in status, operator down.

The local apiserver has no kubelet, so a ConfigMap change never reaches a file here: a sidecar
that serves a changed route got it through the operator's long-poll push.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from sluice_cli.devcluster import Cluster

from .operator_proc import OperatorProcess, start_operator
from .polling import eventually
from .sidecar_proc import SidecarProcess, start_sidecar

pytestmark = pytest.mark.cluster


def route(namespace: str, reply: str) -> dict[str, Any]:
    return {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": "chat", "namespace": namespace},
        "spec": {
            "backends": [
                {"name": "mock", "provider": "mock", "model": "mock-1", "mock": {"reply": reply}}
            ]
        },
    }


def ask(side: SidecarProcess) -> str:
    client = openai.OpenAI(base_url=side.base_url, api_key="unused", max_retries=0, timeout=10)
    with client:
        out = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
    return out.choices[0].message.content or ""


@pytest.fixture
def setup(
    cluster: Cluster,
    sluice_crds: list[str],
    namespace: str,
    tmp_path: Path,
) -> Iterator[tuple[OperatorProcess, Path, Path]]:
    op = start_operator(cluster.kubeconfig, tmp_path)
    try:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(route(namespace, "version one")))
        cluster.kubectl("wait", "modelroute/chat", "-n", namespace, "--for=condition=Ready")
        cm = cluster.kubectl_json("get", "configmap", "sluice-config", "-n", namespace)
        config = tmp_path / "config.json"
        config.write_text(cm["data"]["config.json"])
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
        token = cluster.kubectl(
            "create", "token", "app", "-n", namespace, "--audience=sluice"
        ).stdout.strip()
        token_file = tmp_path / "token"
        token_file.write_text(token)
        yield op, config, token_file
    finally:
        op.stop()


def test_route_change_reaches_a_running_sidecar_by_push(
    cluster: Cluster, namespace: str, tmp_path: Path, setup: tuple[OperatorProcess, Path, Path]
) -> None:
    op, config, token = setup
    side = start_sidecar(
        config, tmp_path, control_plane=op.url, namespace=namespace, pod="p1", token_file=token
    )
    try:
        assert ask(side) == "version one"
        cluster.kubectl("apply", "-f", "-", input=json.dumps(route(namespace, "version two")))
        eventually(lambda: ask(side) == "version two", what="pushed config served")
        # The file on disk never changed: the push did it.
        assert "version one" in config.read_text()
    finally:
        side.stop()


def test_reports_from_two_sidecars_show_in_status_and_operator_down_keeps_serving(
    cluster: Cluster, namespace: str, tmp_path: Path, setup: tuple[OperatorProcess, Path, Path]
) -> None:
    op, config, token = setup
    sides = [
        start_sidecar(
            config, tmp_path, control_plane=op.url, namespace=namespace, pod=p, token_file=token
        )
        for p in ("pod-a", "pod-b")
    ]
    try:
        for side in sides:
            for _ in range(3):
                assert ask(side) == "version one"

        def status() -> Any:
            st = cluster.kubectl_json("get", "modelroute", "chat", "-n", namespace)["status"]
            rollout = st.get("rollout", {})
            backends = {b["name"]: b for b in st.get("backends", [])}
            done = (
                rollout.get("pods") == 2
                and rollout.get("applied") == 2
                and backends.get("mock", {}).get("requests", 0) >= 6
            )
            return st if done else None

        st = eventually(status, timeout=60, what="rollout 2/2 and request counts in status")
        assert st["backends"][0]["state"] == "Healthy"
        rollout = st["rollout"]
        assert rollout["summary"] == "2/2"
        assert [s["pod"] for s in rollout["sidecars"]] == ["pod-a", "pod-b"]
        assert {s["configHash"] for s in rollout["sidecars"]} == {rollout["configHash"]}
        assert all(s["lastReport"].endswith(":00Z") for s in rollout["sidecars"])
        # kubectl get shows APPLIED as applied/total
        table = cluster.kubectl("get", "modelroute", "chat", "-n", namespace).stdout
        assert "APPLIED" in table.splitlines()[0] and " 2/2 " in table.splitlines()[1]

        # every kind carries the namespace's rollout: a Budget applied now gets it too
        budget = {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "Budget",
            "metadata": {"name": "cap", "namespace": namespace},
            "spec": {"limits": [{"window": "Day", "usd": 5}]},
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(budget))

        def budget_rollout() -> Any:
            got = cluster.kubectl_json("get", "budget", "cap", "-n", namespace)
            out = got.get("status", {}).get("rollout") or {}
            return out if out.get("pods") == 2 else None

        # the new config reaches both sidecars by push; then both report the new hash
        got = eventually(
            lambda: (r := budget_rollout()) and r["applied"] == 2 and r,
            timeout=60,
            what="the Budget's rollout 2/2 on the new config",
        )
        assert got["summary"] == "2/2"
        assert "sidecars" not in got

        # A sidecar from another namespace's token is refused (403), not served.
        # (covered in unit tests) -- here: the operator goes away, the sidecars keep serving.
        op.stop()
        for side in sides:
            assert ask(side) == "version one"
    finally:
        for side in sides:
            side.stop()
