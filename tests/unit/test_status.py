"""Status computation: conditions, observedGeneration, kind fields, minimal patches."""

from __future__ import annotations

import copy
from typing import Any

from sluice_operator import manifests, status
from sluice_operator.compile import Held, compile_namespace
from sluice_operator.manifests import Resource

from ..health import argo_health
from .test_api_models import GUARD, PROMPT, ROUTE

T0 = "2026-11-27T10:00:00Z"
T1 = "2026-11-27T11:00:00Z"
T1_3M = "2026-11-27T11:03:00Z"  # T1 + status.KEYS_GRACE


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


def test_invalid_spec_sets_valid_false_and_stalled_with_a_reason_naming_the_field() -> None:
    st = status.desired_status("ModelRoute", ROUTE, ["spec.backends: boom"], None, T0)
    assert cond(st, "Valid")["status"] == "False"
    assert cond(st, "Ready")["reason"] == "InvalidBackends"
    assert "spec.backends: boom" in cond(st, "Ready")["message"]
    assert (cond(st, "Stalled")["status"], cond(st, "Stalled")["reason"]) == (
        "True",
        "InvalidBackends",
    )
    assert cond(st, "Reconciling")["status"] == "False"
    # What was not checked is Unknown, not False.
    assert cond(st, "ResolvedRefs")["status"] == "Unknown"
    assert "Not in effect" in cond(st, "Ready")["message"]
    assert st["enforcedGeneration"] is None


def test_invalid_reason_names_the_field() -> None:
    assert status.invalid_reason(["spec.limits[0].timezone: unknown"]) == "InvalidTimezone"
    assert status.invalid_reason(["spec.input.deny[2].regex: bad"]) == "InvalidRegex"
    assert status.invalid_reason(["spec.backends[1]: x"]) == "InvalidBackends"
    assert status.invalid_reason(["spec: required field is missing"]) == "InvalidSpec"
    assert status.invalid_reason(["no path at all"]) == "InvalidSpec"


def test_ready_object_reads_ready_not_stalled_not_reconciling() -> None:
    obj = copy.deepcopy(GUARD)
    obj["metadata"]["generation"] = 2
    result = compile_namespace("team-a", [res(obj)])
    st = status.desired_status("GuardrailPolicy", obj, [], result, T0)
    got = {c["type"]: (c["status"], c["observedGeneration"]) for c in st["conditions"]}
    assert got == {
        "Valid": ("True", 2),
        "ResolvedRefs": ("True", 2),
        "Ready": ("True", 2),
        "Stalled": ("False", 2),
        "Reconciling": ("False", 2),
    }
    assert st["enforcedGeneration"] == 2


def test_invalid_edit_says_which_generation_is_still_enforced() -> None:
    good = copy.deepcopy(GUARD)
    good["metadata"]["generation"] = 4
    first = compile_namespace("team-a", [res(good)])
    good["status"] = status.desired_status("GuardrailPolicy", good, [], first, T0)
    bad = copy.deepcopy(good)
    bad["metadata"]["generation"] = 5
    errors = ["spec.input.deny[0].regex: not a valid regular expression"]
    held = compile_namespace(
        "team-a", [], held=[Held("GuardrailPolicy", "filters")], previous=first.config
    )
    st = status.desired_status("GuardrailPolicy", bad, errors, held, T1)
    ready = cond(st, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidRegex")
    assert "spec.input.deny[0].regex" in ready["message"]
    assert "Still enforcing generation 4" in ready["message"]
    assert (st["observedGeneration"], st["enforcedGeneration"]) == (5, 4)
    assert cond(st, "Stalled")["status"] == "True"
    # A Warning Event is due: Ready went from True to False.
    change = status.event_worthy(good["status"], st)
    assert change is not None and not change.ok


def test_route_with_secret_refs_says_credentials_are_unknown() -> None:
    result = compile_namespace("team-a", [res(ROUTE)])
    st = status.desired_status("ModelRoute", ROUTE, [], result, T0)
    creds = cond(st, "CredentialsAvailable")
    assert (creds["status"], creds["reason"]) == ("Unknown", "CheckedBySidecar")
    assert "Secret openai key api-key" in creds["message"]
    mock_only = copy.deepcopy(ROUTE)
    mock_only["spec"]["backends"] = [ROUTE["spec"]["backends"][1]]
    result = compile_namespace("team-a", [res(mock_only)])
    st = status.desired_status("ModelRoute", mock_only, [], result, T0)
    assert cond(st, "CredentialsAvailable")["status"] == "True"


def test_a_key_the_sidecars_cannot_read_makes_the_route_wait_for_it() -> None:
    """The sidecars report the keys they cannot read: CredentialsAvailable=False naming the
    Secret, key and pods, Ready=False and in progress (kstatus InProgress, Argo Progressing) for
    KEYS_GRACE (a Secret often comes a moment later), then Stalled (Failed, Degraded)."""
    result = compile_namespace("team-a", [res(ROUTE)])
    ready_before = status.desired_status(
        "ModelRoute", ROUTE, [], result, T0, keys=status.KeysSeen(pods=3)
    )
    creds = cond(ready_before, "CredentialsAvailable")
    assert (creds["status"], creds["reason"]) == ("True", "ReadBySidecars")
    assert cond(ready_before, "Ready")["status"] == "True"

    obj = {**copy.deepcopy(ROUTE), "status": ready_before}
    keys = status.KeysSeen(
        pods=5, missing={"primary": ["p5", "p1", "p2", "p3", "p4"], "local": ["p1"]}
    )
    st = status.desired_status("ModelRoute", obj, [], result, T1, keys=keys)
    creds = cond(st, "CredentialsAvailable")
    assert (creds["status"], creds["reason"]) == ("False", "CredentialsMissing")
    message = creds["message"]
    assert "backend primary: 5 of 5 sidecar(s) (p1, p2, p3, ...)" in message
    assert "Secret openai key api-key" in message
    assert "kubectl create secret generic openai -n team-a --from-literal=api-key=" in message
    assert "local" not in message  # a mock backend reads no key: a stale report is ignored
    ready = cond(st, "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", *creds_of(creds))
    assert (cond(st, "Reconciling")["status"], cond(st, "Stalled")["status"]) == ("True", "False")
    assert argo_health({**obj, "status": st})[0] == "Progressing"
    change = status.event_worthy(ready_before, st)
    assert change is not None and (change.status, change.reason) == ("False", "CredentialsMissing")

    # Still missing after KEYS_GRACE: Stalled (kstatus Failed, Argo CD Degraded).
    later = status.desired_status("ModelRoute", {**obj, "status": st}, [], result, T1_3M, keys=keys)
    assert cond(later, "CredentialsAvailable")["lastTransitionTime"] == T1
    assert cond(later, "Ready")["reason"] == "CredentialsMissing"
    assert (cond(later, "Stalled")["status"], cond(later, "Reconciling")["status"]) == (
        "True",
        "False",
    )
    assert argo_health({**obj, "status": later})[0] == "Degraded"

    # The Secret appears, the kubelet updates the pods, their next reports clear it.
    healed = status.desired_status(
        "ModelRoute", {**obj, "status": later}, [], result, T1_3M, keys=status.KeysSeen(pods=5)
    )
    assert cond(healed, "Ready")["status"] == "True"
    assert argo_health({**obj, "status": healed})[0] == "Healthy"
    recovered = status.event_worthy(later, healed)
    assert recovered is not None and recovered.ok


def creds_of(creds: dict[str, Any]) -> tuple[str, str]:
    return creds["reason"], creds["message"]


def test_route_that_lost_its_model_name_is_not_in_effect() -> None:
    older = copy.deepcopy(ROUTE)
    newer = copy.deepcopy(ROUTE)
    older["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    newer["metadata"].update(name="newer", creationTimestamp="2026-02-01T00:00:00Z")
    newer["spec"]["model"] = "chat"
    result = compile_namespace("team-a", [res(older), res(newer)])
    st = status.desired_status("ModelRoute", newer, [], result, T0)
    ready = cond(st, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ModelConflict")
    assert ready["message"].endswith("Not in effect.")
    assert cond(st, "Stalled")["status"] == "True"
    assert cond(st, "ResolvedRefs")["status"] == "True"  # a conflict is not a dangling reference
    assert st["enforcedGeneration"] is None


def test_prompt_status_has_versions_and_label_history() -> None:
    obj = copy.deepcopy(PROMPT)
    result = compile_namespace("team-a", [res(obj), res(ROUTE)])
    st = status.desired_status("PromptTemplate", obj, [], result, T0)
    assert st["productionVersion"] == 1
    assert st["labelsSummary"] == "production=1,canary=2"
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


def test_labels_summary_puts_production_first_then_names() -> None:
    assert status.labels_summary({"canary": 4, "beta": 2, "production": 3}) == (
        "production=3,beta=2,canary=4"
    )
    assert status.labels_summary({}) is None
