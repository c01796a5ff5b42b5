"""The evaluation gate against the real apiserver: `sluice eval --record` results move a gated
label only when its version passed; a failure keeps the old version serving with
Ready=False reason=EvaluationFailed and an Event; rollback is never gated; admission refuses an
evaluation without cases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluice_cli.devcluster import Cluster
from sluice_cli.main import main

from .operator_proc import OperatorProcess, start_operator
from .polling import eventually

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, sluice_crds: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    op = start_operator(cluster.kubeconfig, tmp_path_factory.mktemp("operator-eval"))
    try:
        yield op
    finally:
        op.stop()


def version(n: int, text: str) -> dict[str, Any]:
    return {
        "version": n,
        "route": "chat",
        "messages": [{"role": "user", "content": f"{text} {{{{question}}}}"}],
        "variables": {"question": {"required": True}},
    }


def docs(namespace: str, versions: list[dict[str, Any]], labels: dict[str, int]) -> str:
    # Each mock route answers with a fixed reply: "chat" mentions reset (the case passes),
    # "vague" does not (a version routed there fails); "judge" is the scripted judge.
    routes = [
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "ModelRoute",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "backends": [
                    {"name": "m", "provider": "mock", "model": "m", "mock": {"reply": reply}}
                ]
            },
        }
        for name, reply in (
            ("chat", "Open Settings and choose Reset."),
            ("vague", "Please contact support."),
            ("judge", '{"score": 5, "reason": "fine"}'),
        )
    ]
    template = {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "PromptTemplate",
        "metadata": {"name": "support", "namespace": namespace},
        "spec": {
            "versions": versions,
            "labels": labels,
            "evaluation": {
                "dataset": {
                    "cases": [
                        {"name": "reset", "variables": {"question": "Reset?"}, "expect": "reset"}
                    ]
                },
                "checks": [{"type": "contains"}, {"type": "judge"}],
                "judge": {"route": "judge", "rubric": "Correct?", "scale": 5},
                "threshold": 1.0,
                "gate": ["canary->production"],
            },
        },
    }
    return yaml.safe_dump_all([*routes, template])


def get(cluster: Cluster, ns: str) -> dict[str, Any]:
    out: dict[str, Any] = cluster.kubectl_json("get", "prompttemplate", "support", "-n", ns)
    return out


def ready(obj: dict[str, Any]) -> dict[str, Any]:
    return next(
        (c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Ready"), {}
    )


def when(obj: dict[str, Any], key: str, value: str) -> dict[str, Any] | None:
    """``obj`` when its Ready condition's ``key`` is ``value`` (for ``eventually``)."""
    return obj if ready(obj).get(key) == value else None


def served(cluster: Cluster, ns: str) -> dict[str, int] | None:
    out = cluster.kubectl("get", "configmap", "sluice-config", "-n", ns, check=False)
    if out.returncode:
        return None
    cm = cluster.kubectl_json("get", "configmap", "sluice-config", "-n", ns)
    prompts = json.loads(cm["data"]["config.json"])["prompts"]
    labels: dict[str, int] | None = prompts[0]["labels"] if prompts else None
    return labels


def evaluate(cluster: Cluster, path: Path, ns: str, n: int) -> int:
    return main(
        [
            "eval",
            str(path),
            "--template",
            "support",
            "--version",
            str(n),
            "--record",
            "--kubeconfig",
            str(cluster.kubeconfig),
        ]
    )


def test_gated_label_moves_only_after_a_recorded_pass(
    cluster: Cluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    ns = namespace
    path = tmp_path / "support.yaml"
    v1 = version(1, "v1")
    v2 = {**version(2, "v2"), "route": "vague"}  # answers without "reset": fails
    v3 = version(3, "v3")

    def apply(versions: list[dict[str, Any]], labels: dict[str, int]) -> None:
        path.write_text(docs(ns, versions, labels), encoding="utf-8")
        cluster.kubectl("apply", "-f", str(path))

    apply([v1, v2], {"production": 1, "canary": 2})
    eventually(lambda: served(cluster, ns) == {"production": 1, "canary": 2}, what="first config")

    # production -> 2 without any result: waits, version 1 keeps serving
    apply([v1, v2], {"production": 2, "canary": 2})
    obj = eventually(
        lambda: when(get(cluster, ns), "reason", "EvaluationPending"),
        what="EvaluationPending",
    )
    assert "no evaluation result yet" in ready(obj)["message"]
    assert served(cluster, ns) == {"production": 1, "canary": 2}

    # the recorded failure: EvaluationFailed naming the case, an Event, still version 1
    assert evaluate(cluster, path, ns, 2) == 1
    obj = eventually(
        lambda: when(get(cluster, ns), "reason", "EvaluationFailed"),
        what="EvaluationFailed",
    )
    assert "reset: contains" in ready(obj)["message"]
    evaluation = next(v for v in obj["status"]["versions"] if v["version"] == 2)["evaluation"]
    assert evaluation["passed"] is False and evaluation["score"] == 0.0
    assert evaluation["failed"][0].startswith("reset: contains")
    assert served(cluster, ns) == {"production": 1, "canary": 2}
    events = eventually(
        lambda: [
            e
            for e in cluster.kubectl_json("get", "events", "-n", ns)["items"]
            if e.get("reason") == "EvaluationFailed"
        ],
        what="EvaluationFailed Event",
    )
    assert events[0]["involvedObject"]["name"] == "support"

    # a new version that passes: recorded, then production moves to it
    apply([v1, v2, v3], {"production": 3, "canary": 3})
    assert evaluate(cluster, path, ns, 3) == 0
    eventually(lambda: served(cluster, ns) == {"production": 3, "canary": 3}, what="moved to 3")
    obj = eventually(
        lambda: when(get(cluster, ns), "status", "True"),
        what="Ready again",
    )
    moves = [(m["label"], m["version"]) for m in obj["status"]["labelHistory"]]
    assert ("production", 1) in moves and moves[-2:] == [("canary", 3), ("production", 3)]
    assert all(m["at"] for m in obj["status"]["labelHistory"])
    assert next(v for v in obj["status"]["versions"] if v["version"] == 3)["evaluation"]["passed"]

    # rollback to 1 (served before) is never gated
    apply([v1, v2, v3], {"production": 1, "canary": 3})
    eventually(lambda: served(cluster, ns) == {"production": 1, "canary": 3}, what="rollback")
    assert ready(get(cluster, ns))["status"] == "True"


def test_evaluation_without_cases_is_refused_at_admission(
    cluster: Cluster, namespace: str, sluice_crds: list[str]
) -> None:
    body = yaml.safe_load(docs(namespace, [version(1, "v1")], {"production": 1}).split("---")[-1])
    body["spec"]["evaluation"]["dataset"] = {"cases": []}
    out = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(body), check=False)
    assert out.returncode != 0
    assert "an evaluation needs cases" in out.stderr
