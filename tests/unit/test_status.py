"""Status computation: conditions, observedGeneration, kind fields, minimal patches."""

from __future__ import annotations

import copy
from typing import Any

from sluice_operator import manifests, status
from sluice_operator.compile import compile_namespace
from sluice_operator.manifests import Resource

from .test_api_models import PROMPT, ROUTE

T0 = "2026-11-27T10:00:00Z"
T1 = "2026-11-27T11:00:00Z"


def res(doc: dict[str, Any]) -> Resource:
    r = manifests.parse_object(doc, "t")
    assert isinstance(r, Resource)
    return r


def cond(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in st["conditions"] if c["type"] == type_)


def test_ready_true_when_compiled_without_problems() -> None:
    obj = copy.deepcopy(ROUTE)
    obj["metadata"]["generation"] = 3
    result = compile_namespace("team-a", [res(obj)])
    st = status.desired_status("ModelRoute", obj, [], result, T0)
    assert st["observedGeneration"] == 3
    ready = cond(st, "Ready")
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == (
        "True",
        "Compiled",
        3,
    )
    assert cond(st, "ResolvedRefs")["status"] == "True"
    assert st["model"] == "chat"
    assert st["rollout"]["configHash"] == result.hash


def test_dangling_reference_makes_ready_false_with_reason_and_fix_restores() -> None:
    obj = copy.deepcopy(PROMPT)
    broken = compile_namespace("team-a", [res(obj)])
    st = status.desired_status("PromptTemplate", obj, [], broken, T0)
    ready = cond(st, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RouteNotFound")
    assert "spec.versions[0].route" in ready["message"]
    obj["status"] = st
    fixed = compile_namespace("team-a", [res(obj), res(ROUTE)])
    st2 = status.desired_status("PromptTemplate", obj, [], fixed, T1)
    ready2 = cond(st2, "Ready")
    assert (ready2["status"], ready2["reason"], ready2["lastTransitionTime"]) == (
        "True",
        "Compiled",
        T1,
    )
    change = status.ready_changed(st, st2)
    assert change is not None and change.status


def test_transition_time_kept_while_status_unchanged() -> None:
    obj = copy.deepcopy(ROUTE)
    result = compile_namespace("team-a", [res(obj)])
    first = status.desired_status("ModelRoute", obj, [], result, T0)
    obj["status"] = first
    second = status.desired_status("ModelRoute", obj, [], result, T1)
    assert cond(second, "Ready")["lastTransitionTime"] == T0
    assert status.status_patch(first, second) is None
    assert status.ready_changed(first, second) is None


def test_invalid_spec_sets_valid_false() -> None:
    st = status.desired_status("ModelRoute", ROUTE, ["spec.backends: boom"], None, T0)
    assert cond(st, "Valid")["status"] == "False"
    assert cond(st, "Ready")["reason"] == "InvalidSpec"
    assert "spec.backends: boom" in cond(st, "Ready")["message"]


def test_prompt_status_has_versions_and_label_history() -> None:
    obj = copy.deepcopy(PROMPT)
    result = compile_namespace("team-a", [res(obj), res(ROUTE)])
    st = status.desired_status("PromptTemplate", obj, [], result, T0)
    assert st["productionVersion"] == 1
    assert [v["version"] for v in st["versions"]] == [1, 2]
    assert all(v["firstSeen"] == T0 and len(v["hash"]) == 12 for v in st["versions"])
    assert {(h["label"], h["version"]) for h in st["labelHistory"]} == {
        ("production", 1),
        ("canary", 2),
    }
    # Move production to 2: history grows by one entry, firstSeen is kept.
    obj["status"] = st
    obj["spec"]["labels"]["production"] = 2
    result2 = compile_namespace("team-a", [res(obj), res(ROUTE)])
    st2 = status.desired_status("PromptTemplate", obj, [], result2, T1)
    assert st2["labelHistory"][-1] == {"label": "production", "version": 2, "at": T1}
    assert len(st2["labelHistory"]) == 3
    assert all(v["firstSeen"] == T0 for v in st2["versions"])


def test_foreign_conditions_are_kept() -> None:
    obj = copy.deepcopy(ROUTE)
    obj["status"] = {"conditions": [{"type": "Custom", "status": "True", "reason": "X"}]}
    result = compile_namespace("team-a", [res(obj)])
    st = status.desired_status("ModelRoute", obj, [], result, T0)
    assert "Custom" in {c["type"] for c in st["conditions"]}
