"""The operator against the real apiserver: ConfigMap, statuses, Events, broken and fixed refs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sluice_cli.devcluster import Cluster

from .operator_proc import OperatorProcess, start_operator
from .polling import eventually

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, sluice_crds: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    op = start_operator(cluster.kubeconfig, tmp_path_factory.mktemp("operator"))
    try:
        yield op
    finally:
        op.stop()


def condition(cluster: Cluster, ns: str, kind: str, name: str, type_: str = "Ready") -> Any:
    obj = cluster.kubectl_json("get", kind, name, "-n", ns)
    for c in obj.get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return c
    return None


def test_examples_compile_into_configmap_and_become_ready(
    cluster: Cluster, namespace: str, operator: OperatorProcess, repo_root: Path
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(repo_root / "examples" / "01-quickstart"))

    def config() -> Any:
        out = cluster.kubectl("get", "configmap", "sluice-config", "-n", namespace, check=False)
        if out.returncode:
            return None
        cm = cluster.kubectl_json("get", "configmap", "sluice-config", "-n", namespace)
        return cm if "chat" in cm["data"]["config.json"] else None

    cm = eventually(config, what="ConfigMap sluice-config")
    cfg = json.loads(cm["data"]["config.json"])
    assert cfg["namespace"] == namespace
    assert [r["name"] for r in cfg["routes"]] == ["chat"]
    assert [p["name"] for p in cfg["prompts"]] == ["support-answer"]
    assert cm["metadata"]["annotations"]["sluice.dev/config-hash"]

    for kind, name in [
        ("modelroute", "chat"),
        ("prompttemplate", "support-answer"),
        ("budget", "team-daily"),
        ("guardrailpolicy", "default-filters"),
    ]:
        cluster.kubectl(
            "wait", f"{kind}/{name}", "-n", namespace, "--for=condition=Ready", "--timeout=30s"
        )
        obj = cluster.kubectl_json("get", kind, name, "-n", namespace)
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        # kopf keeps its own state in annotations, never in status
        assert "kopf" not in obj["status"]

    route = cluster.kubectl_json("get", "modelroute", "chat", "-n", namespace)
    assert route["status"]["model"] == "chat"
    prompt = cluster.kubectl_json("get", "prompttemplate", "support-answer", "-n", namespace)
    assert prompt["status"]["productionVersion"] == 1
    printed = cluster.kubectl("get", "modelroutes", "-n", namespace).stdout
    assert "True" in printed.splitlines()[1]


def test_broken_reference_goes_not_ready_and_fixing_it_recovers(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    prompt = {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "PromptTemplate",
        "metadata": {"name": "greet", "namespace": namespace},
        "spec": {
            "versions": [
                {"version": 1, "route": "later", "messages": [{"role": "user", "content": "hi"}]}
            ]
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(prompt))
    ready = eventually(
        lambda: (c := condition(cluster, namespace, "prompttemplate", "greet")) and c, what="Ready"
    )
    assert (ready["status"], ready["reason"]) == ("False", "RouteNotFound")
    assert 'ModelRoute "later" not found' in ready["message"]
    events = cluster.kubectl_json(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=greet"
    )
    assert any(e["reason"] == "RouteNotFound" for e in events["items"])

    route = {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": "later", "namespace": namespace},
        "spec": {"backends": [{"name": "m", "provider": "mock", "model": "mock-1"}]},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(route))
    cluster.kubectl(
        "wait", "prompttemplate/greet", "-n", namespace, "--for=condition=Ready", "--timeout=30s"
    )
    fixed = condition(cluster, namespace, "prompttemplate", "greet")
    assert fixed["reason"] == "Compiled"


def test_spec_change_bumps_observed_generation_and_config(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    route = {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": "r", "namespace": namespace},
        "spec": {"backends": [{"name": "m", "provider": "mock", "model": "mock-1"}]},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(route))
    cluster.kubectl("wait", "modelroute/r", "-n", namespace, "--for=condition=Ready")

    def hash_now() -> str:
        cm = cluster.kubectl_json("get", "configmap", "sluice-config", "-n", namespace)
        return str(cm["metadata"]["annotations"]["sluice.dev/config-hash"])

    before = hash_now()
    cluster.kubectl(
        "patch",
        "modelroute",
        "r",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"retry": {"attempts": 4}}}),
    )
    eventually(
        lambda: (
            cluster.kubectl_json("get", "modelroute", "r", "-n", namespace)["status"].get(
                "observedGeneration"
            )
            == 2
        ),
        what="observedGeneration 2",
    )
    eventually(lambda: hash_now() != before, what="new config hash")
