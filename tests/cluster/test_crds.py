"""The generated CRDs (crds/*.yaml) against a real kube-apiserver: they install and become
Established, the examples apply, invalid objects are rejected with messages naming the field
(OpenAPI schema and CEL rules, including transition rules), printer columns, `kubectl explain`,
the `sluice` category, and the status subresource."""

from __future__ import annotations

import copy
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluice_cli.devcluster import Cluster
from sluice_operator.api.modelroute import Backend, ModelRouteSpec

from .conftest import Kubectl

pytestmark = pytest.mark.cluster

API_VERSION = "sluice.dev/v1alpha1"
REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "crds"
EXAMPLE_DIRS = sorted(p for p in (REPO / "examples").iterdir() if p.is_dir())

KINDS = {
    "PromptTemplate": "prompttemplates.sluice.dev",
    "ModelRoute": "modelroutes.sluice.dev",
    "Budget": "budgets.sluice.dev",
    "GuardrailPolicy": "guardrailpolicies.sluice.dev",
}

# An API key shape that the inline-key rule must catch (fake, never valid anywhere).
FAKE_KEY = "sk-" + "abcdefghijklmnopqrstuvwx"
# Long free text (prompt messages, mock replies) only gets the apiserver's cheap prefix check
# (the full regex exceeds the CEL cost budget there); these prefixes are what it looks for.
FAKE_PROJECT_KEY = "sk-proj-" + "abcdefghijklmnopqrstuvwx"
FAKE_GOOGLE_KEY = "AIza" + "SyAbcdefghijklmnopqrstuvwxyz012"
INLINE_KEY = "looks like an inline API key"


# --------------------------------------------------------------------------------------------
# CRD installation (once per module)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrdInstall:
    """Outcome of `kubectl apply --server-side -f crds/`: the CRDs that made it, and why any
    did not (the apiserver's own message), so each test fails on the CRD it needs."""

    result: subprocess.CompletedProcess[str]
    established: frozenset[str]

    def require(self, *kinds: str) -> None:
        missing = [KINDS[k] for k in kinds if KINDS[k] not in self.established]
        if missing:
            pytest.fail(
                f"CRD(s) {missing} not installed/Established; the apiserver said:\n"
                f"{self.result.stderr}",
                pytrace=False,
            )


def _established(cluster: Cluster, name: str) -> bool:
    got = cluster.kubectl("get", "crd", name, "-o", "json", check=False)
    if got.returncode != 0:
        return False
    conditions = json.loads(got.stdout).get("status", {}).get("conditions", [])
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> CrdInstall:
    result = cluster.kubectl("apply", "--server-side", "-f", str(CRD_DIR), check=False)
    deadline = time.monotonic() + 60
    established: set[str] = set()
    while time.monotonic() < deadline:
        established = {name for name in KINDS.values() if _established(cluster, name)}
        if established == set(KINDS.values()) or result.returncode != 0:
            # On a failed apply, the CRDs that were accepted still get a moment to settle.
            if result.returncode != 0:
                time.sleep(1)
                established = {n for n in KINDS.values() if _established(cluster, n)}
            break
        time.sleep(0.2)
    return CrdInstall(result, frozenset(established))


# --------------------------------------------------------------------------------------------
# Valid base objects, one per kind
# --------------------------------------------------------------------------------------------


def base(kind: str, name: str) -> dict[str, Any]:
    specs: dict[str, dict[str, Any]] = {
        "ModelRoute": {
            "strategy": "Failover",
            "backends": [
                {"name": "primary", "provider": "mock", "model": "mock-large", "priority": 0},
                {"name": "secondary", "provider": "mock", "model": "mock-small", "priority": 1},
            ],
            "timeouts": {"total": "10s"},
        },
        "PromptTemplate": {
            "versions": [
                {
                    "version": 1,
                    "messages": [
                        {"role": "system", "content": "You help with {{product}}."},
                        {"role": "user", "content": "{{question}}"},
                    ],
                    "variables": {"product": {"default": "Sluice"}, "question": {"required": True}},
                },
                {
                    "version": 2,
                    "messages": [{"role": "user", "content": "Briefly: {{question}}"}],
                    "params": {"temperature": 0.2},
                },
            ],
            "labels": {"production": 1, "canary": 2},
            "split": {"canary": 10},
        },
        "Budget": {
            "limits": [{"window": "Day", "usd": 5}],
            "alerts": {"thresholds": [50, 80, 100]},
            "onExceeded": {"action": "Block"},
        },
        "GuardrailPolicy": {
            "mode": "Enforce",
            "input": {
                "pii": {"entities": ["EMAIL"], "action": "Redact"},
                "promptInjection": {"action": "Block", "threshold": 0.7},
            },
        },
    }
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name},
        "spec": copy.deepcopy(specs[kind]),
    }


def dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj)


# --------------------------------------------------------------------------------------------
# Invalid objects: each must be rejected at create time, the error naming the field
# --------------------------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Invalid:
    id: str
    kind: str
    mutate: Mutation  # edits the spec in place
    expect: tuple[str, ...]  # substrings of kubectl's stderr: the field path, then the message


def _set(path: str, value: Any) -> Mutation:
    """Mutation that sets spec.<path> (dots; [n] list indexes) to value."""

    def mutate(spec: dict[str, Any]) -> None:
        node: Any = spec
        parts = path.replace("]", "").replace("[", ".").split(".")
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        last = parts[-1]
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def _delete(key: str) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        del spec[key]

    return mutate


def _all(*mutations: Mutation) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        for m in mutations:
            m(spec)

    return mutate


def _mock_backend(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "provider": "mock", "model": "m", **extra}


# fmt: off
INVALID: list[Invalid] = [
    # ---- ModelRoute
    Invalid("modelroute-zero-backends", "ModelRoute", _set("backends", []),
            ("spec.backends", "at least 1 item")),
    Invalid("modelroute-no-backends-field", "ModelRoute", _delete("backends"),
            ("spec.backends", "Required value")),
    Invalid("modelroute-duplicate-backend-names", "ModelRoute",
            _set("backends", [_mock_backend("a"), _mock_backend("a")]),
            ("spec.backends", "backend name a is used more than once")),
    Invalid("modelroute-weighted-without-weights", "ModelRoute",
            _all(_set("strategy", "Weighted"),
                 _set("backends", [_mock_backend("a", weight=3), _mock_backend("b")])),
            ("spec.backends", 'on every backend; without one: ["b"]')),
    Invalid("modelroute-inline-key-in-model", "ModelRoute", _set("backends[0].model", FAKE_KEY),
            ("spec.backends[0].model", INLINE_KEY)),
    Invalid("modelroute-inline-key-in-mock-reply", "ModelRoute",
            _set("backends[0].mock", {"reply": f"use {FAKE_PROJECT_KEY} please"}),
            ("spec.backends[0].mock.reply", INLINE_KEY)),
    Invalid("modelroute-unknown-strategy", "ModelRoute", _set("strategy", "RoundRobin"),
            ("spec.strategy", "Unsupported value")),
    Invalid("modelroute-unknown-provider", "ModelRoute", _set("backends[0].provider", "acme"),
            ("spec.backends[0].provider", "Unsupported value")),
    Invalid("modelroute-openai-without-credentials", "ModelRoute",
            _set("backends[0].provider", "openai"),
            ("spec.backends[0].credentials", "credentials.secretRef")),
    Invalid("modelroute-openai-compatible-without-baseurl", "ModelRoute",
            _set("backends[0].provider", "openai-compatible"),
            ("spec.backends[0].baseURL", "needs baseURL")),
    Invalid("modelroute-bad-duration", "ModelRoute", _set("timeouts.total", "10 seconds"),
            ("spec.timeouts.total", "should match")),
    Invalid("modelroute-weight-zero", "ModelRoute", _set("backends[0].weight", 0),
            ("spec.backends[0].weight", "greater than or equal to 1")),
    Invalid("modelroute-bad-backend-name", "ModelRoute", _set("backends[0].name", "Primary_1"),
            ("spec.backends[0].name", "should match")),
    Invalid("modelroute-unknown-field-apikey", "ModelRoute",
            _set("backends[0].apiKey", "hunter2"),
            ("spec.backends[0].apiKey", "unknown field")),
    Invalid("modelroute-failure-rate-above-1", "ModelRoute",
            _set("backends[0].mock", {"failureRate": 1.5}),
            ("spec.backends[0].mock.failureRate", "less than or equal to 1")),
    # ---- PromptTemplate (create-time; the transition rules are tested below)
    Invalid("prompttemplate-label-points-at-missing-version", "PromptTemplate",
            _set("labels", {"production": 7}),
            ("spec.labels", "label production points at version 7, which does not exist")),
    Invalid("prompttemplate-no-versions", "PromptTemplate", _set("versions", []),
            ("spec.versions", "at least 1 item")),
    Invalid("prompttemplate-duplicate-version-numbers", "PromptTemplate",
            _set("versions[1].version", 1),
            ("spec.versions[1]", "Duplicate value")),
    Invalid("prompttemplate-split-key-not-a-label", "PromptTemplate",
            _set("split", {"beta": 10}),
            ("spec.split", "split key beta is not a label")),
    Invalid("prompttemplate-split-above-100", "PromptTemplate", _set("split", {"canary": 150}),
            ("spec.split.canary", "less than or equal to 100")),
    Invalid("prompttemplate-inline-key-in-message", "PromptTemplate",
            _set("versions[0].messages[0].content", f"the key is {FAKE_GOOGLE_KEY}"),
            ("spec.versions[0].messages[0].content", INLINE_KEY)),
    Invalid("prompttemplate-unknown-role", "PromptTemplate",
            _set("versions[0].messages[0].role", "robot"),
            ("spec.versions[0].messages[0].role", "Unsupported value")),
    Invalid("prompttemplate-bad-variable-name", "PromptTemplate",
            _set("versions[1].variables", {"1st-var": {}}),
            ("spec.versions[1].variables", "every key must match")),
    Invalid("prompttemplate-bad-label-name", "PromptTemplate",
            _set("labels", {"Production": 1}),
            ("spec.labels", "every key must match")),
    # ---- Budget
    Invalid("budget-no-limits", "Budget", _all(_delete("limits"), _delete("alerts")),
            ("spec.limits", "at least one entry in limits")),
    Invalid("budget-empty-limits", "Budget", _set("limits", []),
            ("spec.limits", "at least one entry in limits")),
    Invalid("budget-limit-without-amount", "Budget", _set("limits", [{"window": "Day"}]),
            ("spec.limits[0]", "set at least one of usd, tokens or requests")),
    Invalid("budget-thresholds-not-ascending", "Budget", _set("alerts.thresholds", [80, 50]),
            ("spec.alerts.thresholds", "ascending order")),
    Invalid("budget-threshold-zero", "Budget", _set("alerts.thresholds", [0, 50]),
            ("spec.alerts.thresholds[0]", "greater than or equal to 1")),
    Invalid("budget-threshold-above-100", "Budget", _set("alerts.thresholds", [50, 101]),
            ("spec.alerts.thresholds[1]", "less than or equal to 100")),
    Invalid("budget-duplicate-thresholds", "Budget", _set("alerts.thresholds", [50, 50]),
            ("spec.alerts.thresholds[1]", "Duplicate value")),
    Invalid("budget-rolling-without-duration", "Budget",
            _set("limits", [{"window": "Rolling", "usd": 1}]),
            ("spec.limits[0].duration", "required for a Rolling window")),
    Invalid("budget-day-with-duration", "Budget",
            _set("limits", [{"window": "Day", "duration": "1h", "usd": 1}]),
            ("spec.limits[0].duration", "only allowed there")),
    Invalid("budget-downgrade-without-route", "Budget",
            _set("onExceeded", {"action": "Downgrade"}),
            ("spec.onExceeded.route", "action Downgrade needs route")),
    Invalid("budget-zero-usd", "Budget", _set("limits", [{"window": "Day", "usd": 0}]),
            ("spec.limits[0].usd", "greater than 0")),
    Invalid("budget-unknown-window", "Budget", _set("limits", [{"window": "Year", "usd": 1}]),
            ("spec.limits[0].window", "Unsupported value")),
    # ---- GuardrailPolicy
    Invalid("guardrailpolicy-no-stages", "GuardrailPolicy", _delete("input"),
            ("spec", "set input or output checks")),
    Invalid("guardrailpolicy-redact-prompt-injection", "GuardrailPolicy",
            _set("input.promptInjection.action", "Redact"),
            ("spec.input.promptInjection.action", "cannot be redacted")),
    Invalid("guardrailpolicy-empty-entities", "GuardrailPolicy",
            _set("input.pii.entities", []),
            ("spec.input.pii.entities", "at least 1 item")),
    Invalid("guardrailpolicy-unknown-entity", "GuardrailPolicy",
            _set("input.pii.entities", ["SHOE_SIZE"]),
            ("spec.input.pii.entities[0]", "Unsupported value")),
    Invalid("guardrailpolicy-unknown-mode", "GuardrailPolicy", _set("mode", "Yolo"),
            ("spec.mode", "Unsupported value")),
    Invalid("guardrailpolicy-inline-key-in-external-url", "GuardrailPolicy",
            _set("output", {"external": {"url": f"https://127.0.0.1/check?key={FAKE_KEY}"}}),
            ("spec.output.external.url", INLINE_KEY)),
    Invalid("guardrailpolicy-threshold-above-1", "GuardrailPolicy",
            _set("input.promptInjection.threshold", 2),
            ("spec.input.promptInjection.threshold", "less than or equal to 1")),
]
# fmt: on


def test_enough_invalid_cases_across_all_kinds() -> None:
    assert len(INVALID) >= 25
    assert {c.kind for c in INVALID} == set(KINDS)
    assert len({c.id for c in INVALID}) == len(INVALID)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_base_objects_are_valid(
    kind: str, crds: CrdInstall, kubectl: Kubectl, namespace: str
) -> None:
    """The controls: every invalid case is one edit away from an object the apiserver takes."""
    crds.require(kind)
    kubectl("create", "-n", namespace, "-f", "-", input=dump(base(kind, "valid")))


@pytest.mark.parametrize("case", INVALID, ids=[c.id for c in INVALID])
def test_invalid_object_is_rejected_naming_the_field(
    case: Invalid, crds: CrdInstall, kubectl: Kubectl, namespace: str
) -> None:
    crds.require(case.kind)
    obj = base(case.kind, "invalid")
    case.mutate(obj["spec"])
    got = kubectl("create", "-n", namespace, "-f", "-", input=dump(obj), check=False)
    assert got.returncode != 0, f"accepted: {json.dumps(obj['spec'])}"
    for fragment in case.expect:
        assert fragment in got.stderr, f"{fragment!r} not in the apiserver's error:\n{got.stderr}"
    # Nothing was stored.
    assert kubectl("get", case.kind.lower(), "invalid", "-n", namespace, check=False).returncode


# --------------------------------------------------------------------------------------------
# PromptTemplate transition rules (need an existing object)
# --------------------------------------------------------------------------------------------


def _replace(
    kubectl: Kubectl, namespace: str, obj: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    return kubectl("replace", "-n", namespace, "-f", "-", input=dump(obj), check=False)


def test_prompttemplate_existing_version_is_immutable(
    crds: CrdInstall, kubectl: Kubectl, namespace: str
) -> None:
    crds.require("PromptTemplate")
    obj = base("PromptTemplate", "support")
    kubectl("create", "-n", namespace, "-f", "-", input=dump(obj))

    edited = copy.deepcopy(obj)
    edited["spec"]["versions"][0]["messages"][0]["content"] = "You help with anything."
    got = _replace(kubectl, namespace, edited)
    assert got.returncode != 0
    assert "spec.versions[0]" in got.stderr, got.stderr
    assert "version 1 is immutable; add a new version instead" in got.stderr, got.stderr

    params_edit = copy.deepcopy(obj)
    params_edit["spec"]["versions"][1]["params"] = {"temperature": 0.9}
    got = _replace(kubectl, namespace, params_edit)
    assert got.returncode != 0
    assert "spec.versions[1]" in got.stderr, got.stderr
    assert "version 2 is immutable" in got.stderr, got.stderr


def test_prompttemplate_versions_cannot_be_removed(
    crds: CrdInstall, kubectl: Kubectl, namespace: str
) -> None:
    crds.require("PromptTemplate")
    obj = base("PromptTemplate", "support")
    kubectl("create", "-n", namespace, "-f", "-", input=dump(obj))
    removed = copy.deepcopy(obj)
    removed["spec"]["versions"] = removed["spec"]["versions"][1:]
    removed["spec"]["labels"] = {"production": 2, "canary": 2}
    got = _replace(kubectl, namespace, removed)
    assert got.returncode != 0
    assert "spec.versions" in got.stderr, got.stderr
    assert "existing versions cannot be removed: version 1 is missing" in got.stderr, got.stderr


def test_prompttemplate_append_version_and_move_label_is_allowed(
    crds: CrdInstall, kubectl: Kubectl, namespace: str
) -> None:
    """The transition rules must not block the normal workflow: add a version, move a label."""
    crds.require("PromptTemplate")
    obj = base("PromptTemplate", "support")
    kubectl("create", "-n", namespace, "-f", "-", input=dump(obj))
    grown = copy.deepcopy(obj)
    grown["spec"]["versions"].append(
        {"version": 3, "messages": [{"role": "user", "content": "v3: {{question}}"}]}
    )
    grown["spec"]["labels"] = {"production": 2, "canary": 3}
    got = _replace(kubectl, namespace, grown)
    assert got.returncode == 0, got.stderr
    stored = json.loads(
        kubectl("get", "prompttemplate", "support", "-n", namespace, "-o", "json").stdout
    )
    assert [v["version"] for v in stored["spec"]["versions"]] == [1, 2, 3]
    assert stored["spec"]["labels"] == {"production": 2, "canary": 3}


# --------------------------------------------------------------------------------------------
# Installation, examples, kubectl UX
# --------------------------------------------------------------------------------------------


def test_crds_apply_and_become_established(crds: CrdInstall, kubectl: Kubectl) -> None:
    assert crds.result.returncode == 0, crds.result.stderr
    assert crds.established == set(KINDS.values())
    files = sorted(p.name for p in CRD_DIR.glob("*.yaml"))
    assert files == sorted(f"{name}.yaml" for name in KINDS.values())
    # Re-applying is a no-op (idempotent), as `helm upgrade` and GitOps tools will do.
    again = kubectl("apply", "--server-side", "-f", str(CRD_DIR))
    assert again.returncode == 0


def _kubectl_apply_example(kubectl: Kubectl, namespace: str, folder: Path) -> None:
    got = kubectl("apply", "--server-side", "-n", namespace, "-f", str(folder), check=False)
    assert got.returncode == 0, f"{folder.name}:\n{got.stderr}"


@pytest.mark.parametrize("folder", EXAMPLE_DIRS, ids=[p.name for p in EXAMPLE_DIRS])
def test_example_folder_applies(
    folder: Path, crds: CrdInstall, kubectl: Kubectl, namespace: str
) -> None:
    crds.require(*KINDS)
    _kubectl_apply_example(kubectl, namespace, folder)
    # Everything in the folder is now stored.
    listed = kubectl("get", "-n", namespace, "-f", str(folder), "-o", "name").stdout.split()
    docs = [
        d for f in sorted(folder.glob("*.y*ml")) for d in yaml.safe_load_all(f.read_text()) if d
    ]
    assert len(listed) == len(docs)


def _printer_columns(kind: str) -> list[str]:
    crd = yaml.safe_load((CRD_DIR / f"{KINDS[kind]}.yaml").read_text())
    version = next(v for v in crd["spec"]["versions"] if v.get("served"))
    return [
        c["name"].upper()
        for c in version.get("additionalPrinterColumns", [])
        if c.get("priority", 0) == 0
    ]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_get_shows_printer_columns(
    kind: str, crds: CrdInstall, kubectl: Kubectl, namespace: str
) -> None:
    crds.require(kind)
    columns = _printer_columns(kind)
    assert columns, f"{kind} CRD declares no printer columns"
    kubectl("create", "-n", namespace, "-f", "-", input=dump(base(kind, "shown")))
    header, *rows = kubectl("get", kind.lower(), "-n", namespace).stdout.splitlines()
    assert header.split() == ["NAME", *columns]
    assert rows and rows[0].split()[0] == "shown"


def test_modelroute_printer_columns_show_values(
    crds: CrdInstall, kubectl: Kubectl, namespace: str
) -> None:
    crds.require("ModelRoute")
    kubectl("create", "-n", namespace, "-f", "-", input=dump(base("ModelRoute", "chat")))
    row = kubectl("get", "modelroute", "chat", "-n", namespace, "--no-headers").stdout
    assert "Failover" in row.split()


def test_explain_shows_field_descriptions(crds: CrdInstall, kubectl: Kubectl) -> None:
    crds.require("ModelRoute")
    out = kubectl("explain", "modelroute.spec.backends").stdout
    # Descriptions come from the pydantic models, the source of truth for the schema.
    backends_doc = ModelRouteSpec.model_fields["backends"].description
    assert backends_doc and backends_doc in out
    for field_name, alias in (("provider", "provider"), ("priority", "priority")):
        doc = Backend.model_fields[field_name].description
        assert alias in out
        assert doc and doc in " ".join(out.split()), f"{field_name}: {doc!r} missing:\n{out}"
    recursive = kubectl("explain", "modelroute.spec", "--recursive").stdout
    for field_name in ("backends", "strategy", "timeouts", "circuitBreaker"):
        assert field_name in recursive


def test_get_sluice_category_lists_all_four_kinds(
    crds: CrdInstall, kubectl: Kubectl, namespace: str
) -> None:
    crds.require(*KINDS)
    for kind in KINDS:
        kubectl("create", "-n", namespace, "-f", "-", input=dump(base(kind, "one")))
    names = set(kubectl("get", "sluice", "-n", namespace, "-o", "name").stdout.split())
    assert names == {f"{kind.lower()}.sluice.dev/one" for kind in KINDS}
    table = kubectl("get", "sluice", "-n", namespace).stdout
    for kind in KINDS:
        assert f"{kind.lower()}.sluice.dev/one" in table


# --------------------------------------------------------------------------------------------
# Status subresource
# --------------------------------------------------------------------------------------------

READY = {
    "type": "Ready",
    "status": "True",
    "reason": "Compiled",
    "message": "in effect",
    "lastTransitionTime": "2026-01-01T00:00:00Z",
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_status_subresource(kind: str, crds: CrdInstall, kubectl: Kubectl, namespace: str) -> None:
    """Status is written only through /status; spec writes ignore it and bump generation,
    status writes do not."""
    crds.require(kind)
    name = "with-status"
    kubectl("create", "-n", namespace, "-f", "-", input=dump(base(kind, name)))

    def get() -> dict[str, Any]:
        out = kubectl("get", kind.lower(), name, "-n", namespace, "-o", "json").stdout
        result: dict[str, Any] = json.loads(out)
        return result

    before = get()
    generation = before["metadata"]["generation"]
    status = {"observedGeneration": generation, "conditions": [READY]}
    kubectl(
        "patch", kind.lower(), name, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip
    after_status = get()
    assert after_status["status"]["conditions"][0]["reason"] == "Compiled"
    assert after_status["status"]["observedGeneration"] == generation
    assert after_status["metadata"]["generation"] == generation  # status writes don't bump it

    # A spec update that also carries a different status: spec changes, status is ignored.
    updated = copy.deepcopy(after_status)
    updated["status"] = {"observedGeneration": 99, "conditions": []}
    updated["metadata"].setdefault("labels", {})["touched"] = "yes"
    if kind == "ModelRoute":
        updated["spec"]["strategy"] = "LeastLatency"
    elif kind == "PromptTemplate":
        updated["spec"]["labels"]["production"] = 2
    elif kind == "Budget":
        updated["spec"]["limits"][0]["usd"] = 7
    else:
        updated["spec"]["mode"] = "Monitor"
    kubectl("replace", "-n", namespace, "-f", "-", input=dump(updated))
    final = get()
    assert final["status"] == after_status["status"]
    assert final["metadata"]["generation"] == generation + 1
    assert final["spec"] == updated["spec"]

    # And a spec-only patch through the main resource cannot set status either.
    kubectl(
        "patch", kind.lower(), name, "-n", namespace, "--type=merge",
        "-p", json.dumps({"status": {"observedGeneration": 42}}),
    )  # fmt: skip
    assert get()["status"]["observedGeneration"] == generation

    # Status is validated too.
    bad = kubectl(
        "patch", kind.lower(), name, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"conditions": [{**READY, "status": "Maybe"}]}}),
        check=False,
    )  # fmt: skip
    assert bad.returncode != 0
    assert "status.conditions[0].status" in bad.stderr, bad.stderr
