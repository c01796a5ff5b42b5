"""GitOps health against the real apiserver: every kind, in every state, read by Flux's kstatus
library (``status.Compute``, built from hack/kstatus) and by the shipped Argo CD Lua health check.

States: fresh (the operator has not seen the object), ready, broken (an invalid edit, whose last
valid generation stays in the config; a route that lost its model name to an older one), broken
across an operator restart, stale (edited while the operator is down) and recovered.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sluice_cli.devcluster import Cluster

from .kstatus import both, kstatus
from .operator_proc import OperatorProcess, start_operator
from .polling import eventually

pytestmark = pytest.mark.cluster

API = "sluice.dev/v1alpha1"
# (kind, name, spec): one valid object of each kind, referring to each other.
VALID: list[tuple[str, str, dict[str, Any]]] = [
    ("ModelRoute", "chat", {"backends": [{"name": "m", "provider": "mock", "model": "mock-1"}]}),
    (
        "PromptTemplate",
        "support",
        {
            "versions": [
                {"version": 1, "route": "chat", "messages": [{"role": "user", "content": "hi"}]}
            ],
            "labels": {"production": 1},
        },
    ),
    (
        "Budget",
        "daily",
        {
            "selector": {"routes": ["chat"]},
            "limits": [{"window": "Day", "timezone": "Europe/Berlin", "usd": 5}],
        },
    ),
    (
        "GuardrailPolicy",
        "filters",
        {"input": {"deny": [{"regex": "(?i)internal only", "action": "Block"}]}},
    ),
]
# Edits the CRD admits but the operator refuses (the sidecar would have refused them too).
BREAK: dict[str, Any] = {
    "PromptTemplate": {
        "evaluation": {"dataset": {"cases": [{"expect": "sk-abcdefghijklmnopqrstuvwx"}]}}
    },
    "Budget": {"limits": [{"window": "Day", "timezone": "Mars/Olympus", "usd": 5}]},
    "GuardrailPolicy": {"input": {"deny": [{"regex": "([unclosed", "action": "Block"}]}},
}
FIELD = {
    "PromptTemplate": ("InvalidExpect", "spec.evaluation.dataset.cases[0].expect"),
    "Budget": ("InvalidTimezone", "spec.limits[0].timezone"),
    "GuardrailPolicy": ("InvalidRegex", "spec.input.deny[0].regex"),
}


def doc(kind: str, name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def apply(cluster: Cluster, *docs: dict[str, Any]) -> None:
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(docs)}),
    )


def get(cluster: Cluster, kind: str, name: str, namespace: str) -> dict[str, Any]:
    obj: dict[str, Any] = cluster.kubectl_json("get", kind.lower(), name, "-n", namespace)
    return obj


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in obj.get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return dict(c)
    return {}


def observed(obj: dict[str, Any]) -> bool:
    return bool(obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"])


def seen(cluster: Cluster, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    """The object once the operator has observed its generation, else None."""
    obj = get(cluster, kind, name, namespace)
    return obj if observed(obj) else None


def config(cluster: Cluster, namespace: str) -> dict[str, Any]:
    cm = cluster.kubectl_json("get", "configmap", "sluice-config", "-n", namespace)
    data: dict[str, Any] = json.loads(cm["data"]["config.json"])
    return data


@pytest.fixture
def operators(cluster: Cluster, tmp_path: Path) -> Iterator[list[OperatorProcess]]:
    """Operators this test starts (and stops); all stopped at the end."""
    started: list[OperatorProcess] = []
    yield started
    for op in started:
        op.stop()


def test_every_kind_reads_right_in_every_state_under_kstatus_and_argo_cd(
    cluster: Cluster,
    sluice_crds: list[str],
    namespace: str,
    kstatus_bin: Path,
    operators: list[OperatorProcess],
    tmp_path: Path,
) -> None:
    ns = namespace
    apply(cluster, *(doc(k, n, ns, s) for k, n, s in VALID))

    # Fresh: nobody has looked at the objects yet. The CRD defaults observedGeneration to 0.
    for kind, name, _ in VALID:
        obj = get(cluster, kind, name, ns)
        assert obj["status"]["observedGeneration"] == 0, obj.get("status")
        assert both(kstatus_bin, obj) == ("InProgress", "Progressing"), kind

    # Ready.
    operators.append(start_operator(cluster.kubeconfig, tmp_path))
    for kind, name, _ in VALID:
        cluster.kubectl(
            "wait", f"{kind.lower()}/{name}", "-n", ns, "--for=condition=Ready", "--timeout=60s"
        )
        obj = get(cluster, kind, name, ns)
        assert both(kstatus_bin, obj) == ("Current", "Healthy"), (kind, obj["status"])
        assert condition(obj, "Stalled")["status"] == "False"
        assert condition(obj, "Reconciling")["status"] == "False"
    good = config(cluster, ns)
    printed = cluster.kubectl("get", "prompttemplates", "-n", ns).stdout
    assert "LABELS" in printed.splitlines()[0] and "production=1" in printed
    assert cluster.kubectl("get", "mroute", "chat", "-n", ns).returncode == 0

    # Broken: an invalid edit of three kinds, and a newer route claiming the live model name.
    apply(
        cluster,
        *(doc(k, n, ns, {**s, **BREAK[k]}) for k, n, s in VALID if k in BREAK),
        doc("ModelRoute", "a-newcomer", ns, {**VALID[0][2], "model": "chat"}),
    )

    def broken_everywhere() -> bool:
        objs = [get(cluster, k, n, ns) for k, n, _ in VALID if k in BREAK]
        objs.append(get(cluster, "ModelRoute", "a-newcomer", ns))
        return all(observed(o) and condition(o, "Stalled").get("status") == "True" for o in objs)

    eventually(broken_everywhere, timeout=60, what="Stalled=True on every broken object")

    def check_broken() -> None:
        for kind, name, _ in VALID:
            obj = get(cluster, kind, name, ns)
            if kind not in BREAK:  # the route is untouched and keeps its name
                assert both(kstatus_bin, obj) == ("Current", "Healthy"), kind
                continue
            assert both(kstatus_bin, obj) == ("Failed", "Degraded"), (kind, obj["status"])
            reason, path = FIELD[kind]
            ready = condition(obj, "Ready")
            assert (ready["status"], ready["reason"]) == ("False", reason)
            assert path in ready["message"]
            assert "Still enforcing generation 1" in ready["message"]
            assert (obj["status"]["observedGeneration"], obj["status"]["enforcedGeneration"]) == (
                2,
                1,
            )
            assert kstatus(kstatus_bin, obj)[1] == ready["message"]
        loser = get(cluster, "ModelRoute", "a-newcomer", ns)
        assert both(kstatus_bin, loser) == ("Failed", "Degraded")
        assert condition(loser, "Ready")["reason"] == "ModelConflict"
        assert 'already served by ModelRoute "chat"' in condition(loser, "Ready")["message"]
        # Never fail open: the sidecars keep the last valid rules of the broken objects.
        now = config(cluster, ns)
        for key in ("prompts", "budgets", "guardrails", "routes"):
            assert now[key] == good[key], key

    check_broken()
    events = cluster.kubectl_json(
        "get", "events", "-n", ns, "--field-selector", "involvedObject.name=daily"
    )
    assert any(e["reason"] == "InvalidTimezone" and e["type"] == "Warning" for e in events["items"])

    # Broken across a restart: the new process finds the last valid rules in the ConfigMap.
    operators[-1].stop()
    operators.append(start_operator(cluster.kubeconfig, tmp_path))
    cluster.kubectl("annotate", "modelroute", "chat", "-n", ns, "poke=1")  # a pass, for sure
    eventually(lambda: "poke" in get(cluster, "ModelRoute", "chat", ns)["metadata"]["annotations"])
    eventually(lambda: config(cluster, ns)["routes"] == good["routes"], what="config after restart")
    check_broken()

    # Stale: edited while the operator is down (fixed, and the newcomer renamed).
    operators[-1].stop()
    fixed = copy.deepcopy(VALID)
    fixed[2][2]["limits"][0]["usd"] = 7
    apply(
        cluster,
        *(doc(k, n, ns, s) for k, n, s in fixed),
        doc("ModelRoute", "a-newcomer", ns, {**VALID[0][2], "model": "chat-2"}),
    )
    for kind, name, _ in [*VALID, ("ModelRoute", "a-newcomer", {})]:
        obj = get(cluster, kind, name, ns)
        if kind in BREAK or name == "a-newcomer":
            assert not observed(obj)
            assert both(kstatus_bin, obj) == ("InProgress", "Progressing"), kind

    # Recovered.
    operators.append(start_operator(cluster.kubeconfig, tmp_path))
    for kind, name, _ in [*VALID, ("ModelRoute", "a-newcomer", {})]:

        def current(kind: str = kind, name: str = name) -> bool:
            obj = get(cluster, kind, name, ns)
            return both(kstatus_bin, obj) == ("Current", "Healthy")

        eventually(current, timeout=60, what=f"{kind} {name} Current and Healthy")
        obj = get(cluster, kind, name, ns)
        assert obj["status"]["enforcedGeneration"] == obj["metadata"]["generation"]
    now = config(cluster, ns)
    assert now["budgets"][0]["limits"][0]["usd"] == 7
    assert sorted(r["name"] for r in now["routes"]) == ["chat", "chat-2"]


def test_references_selectors_and_secrets_read_honestly(
    cluster: Cluster,
    sluice_crds: list[str],
    namespace: str,
    kstatus_bin: Path,
    operators: list[OperatorProcess],
    tmp_path: Path,
) -> None:
    ns = namespace
    keyed = {
        "backends": [
            {
                "name": "openai",
                "provider": "openai",
                "model": "gpt-4o-mini",
                "credentials": {"secretRef": {"name": "no-such-secret", "key": "api-key"}},
            }
        ]
    }
    operators.append(start_operator(cluster.kubeconfig, tmp_path))
    apply(
        cluster,
        *(doc(k, n, ns, s) for k, n, s in VALID[:2]),
        doc("Budget", "nothing", ns, {**VALID[2][2], "selector": {"routes": ["gone"]}}),
        doc("ModelRoute", "keyed", ns, keyed),
    )
    cluster.kubectl("wait", "prompttemplate/support", "-n", ns, "--for=condition=Ready")

    # A Budget that selects only missing routes limits nothing: SelectsNothing, and Failed.
    budget = eventually(lambda: seen(cluster, "Budget", "nothing", ns))
    assert condition(budget, "Ready")["reason"] == "SelectsNothing"
    assert condition(budget, "ResolvedRefs")["reason"] == "SelectsNothing"
    assert both(kstatus_bin, budget) == ("Failed", "Degraded")

    # The operator cannot read Secrets: the credentials condition says Unknown, not True.
    route = eventually(lambda: seen(cluster, "ModelRoute", "keyed", ns))
    creds = condition(route, "CredentialsAvailable")
    assert (creds["status"], creds["reason"]) == ("Unknown", "CheckedBySidecar")
    assert "no-such-secret" in creds["message"]

    # Deleting a route that a template uses: the template says so, with a Warning Event.
    cluster.kubectl("delete", "modelroute", "chat", "-n", ns)

    def dangling() -> dict[str, Any] | None:
        obj = get(cluster, "PromptTemplate", "support", ns)
        return obj if condition(obj, "Ready").get("reason") == "RouteNotFound" else None

    prompt = eventually(dangling, what="RouteNotFound on the template")
    assert 'ModelRoute "chat" not found' in condition(prompt, "Ready")["message"]
    assert both(kstatus_bin, prompt) == ("Failed", "Degraded")
    events = cluster.kubectl_json(
        "get", "events", "-n", ns, "--field-selector", "involvedObject.name=support"
    )
    assert any(e["reason"] == "RouteNotFound" and e["type"] == "Warning" for e in events["items"])
