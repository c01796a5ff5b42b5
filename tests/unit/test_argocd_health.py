"""The shipped Argo CD health check (charts/sluice/health/sluice.lua), run by Lua 5.1, reads the
status the operator computes right in every state: fresh, observed, ready, broken, stale,
recovered. (The cluster tests run it, and Flux's kstatus, against the real objects.)"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from sluice_operator import manifests, status
from sluice_operator.api import KINDS
from sluice_operator.compile import Held, compile_namespace
from sluice_operator.manifests import Resource

from ..health import ARGO_SCRIPT, REPO, argo_health
from .test_api_models import GUARD, PROMPT, ROUTE

T0, T1 = "2026-11-27T10:00:00Z", "2026-11-27T11:00:00Z"
README = REPO / "charts" / "sluice" / "README.md"


def res(doc: dict[str, Any]) -> Resource:
    r = manifests.parse_object(doc, "t")
    assert isinstance(r, Resource)
    return r


def at(doc: dict[str, Any], generation: int, st: dict[str, Any] | None = None) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out["metadata"]["generation"] = generation
    if st is not None:
        out["status"] = st
    return out


def test_the_readme_ships_the_script_verbatim_for_every_kind() -> None:
    readme = README.read_text(encoding="utf-8")
    block = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    data = yaml.safe_load(block)["data"]
    scripts = {data[f"resource.customizations.health.sluice.dev_{k.kind}"] for k in KINDS}
    assert scripts == {ARGO_SCRIPT.read_text(encoding="utf-8")}


def test_fresh_object_is_progressing_before_the_operator_saw_it() -> None:
    # What the apiserver returns for a new object: the CRD defaults status.observedGeneration to 0.
    assert argo_health(at(ROUTE, 1, {"observedGeneration": 0}))[0] == "Progressing"
    assert argo_health(at(ROUTE, 1))[0] == "Progressing"  # no status at all (older CRDs)


def test_ready_object_is_healthy_and_an_unobserved_edit_is_progressing() -> None:
    obj = at(GUARD, 1)
    result = compile_namespace("team-a", [res(obj)])
    obj["status"] = status.desired_status("GuardrailPolicy", obj, [], result, T0)
    assert argo_health(obj) == ("Healthy", "Compiled: In effect in the namespace's sidecar config.")
    edited = at(GUARD, 2, obj["status"])  # the operator has not seen generation 2 yet: stale
    health, message = argo_health(edited)
    assert health == "Progressing"
    assert "generation 2" in message


def test_invalid_edit_is_degraded_and_says_what_is_still_enforced_then_recovers() -> None:
    good = at(GUARD, 1)
    first = compile_namespace("team-a", [res(good)])
    good["status"] = status.desired_status("GuardrailPolicy", good, [], first, T0)
    bad = at(GUARD, 2, good["status"])
    bad["spec"]["input"]["deny"] = [{"regex": "([unclosed"}]
    held = compile_namespace(
        "team-a", [], held=[Held("GuardrailPolicy", "filters")], previous=first.config
    )
    errors = ["spec.input.deny[0].regex: not a valid regular expression"]
    bad["status"] = status.desired_status("GuardrailPolicy", bad, errors, held, T1)
    health, message = argo_health(bad)
    assert health == "Degraded"
    assert message.startswith("InvalidRegex: spec.input.deny[0].regex")
    assert "Still enforcing generation 1" in message

    fixed = at(GUARD, 3, bad["status"])
    again = compile_namespace("team-a", [res(fixed)])
    fixed["status"] = status.desired_status("GuardrailPolicy", fixed, [], again, T1)
    assert argo_health(fixed)[0] == "Healthy"


@pytest.mark.parametrize("doc", [PROMPT], ids=["dangling-route"])
def test_dangling_reference_is_degraded(doc: dict[str, Any]) -> None:
    obj = at(doc, 1)
    result = compile_namespace("team-a", [res(obj)])
    obj["status"] = status.desired_status("PromptTemplate", obj, [], result, T0)
    health, message = argo_health(obj)
    assert health == "Degraded"
    assert message.startswith("RouteNotFound: ")


def test_conditions_from_an_older_generation_are_not_trusted() -> None:
    obj = at(ROUTE, 2, {"observedGeneration": 2})
    obj["status"]["conditions"] = [
        {"type": "Ready", "status": "True", "reason": "Compiled", "observedGeneration": 1}
    ]
    assert argo_health(obj)[0] == "Progressing"


def test_reconciling_is_progressing_and_unknown_ready_is_progressing() -> None:
    obj = at(ROUTE, 1, {"observedGeneration": 1})
    obj["status"]["conditions"] = [
        {"type": "Reconciling", "status": "True", "reason": "RollingOut", "message": "1 of 2"},
        {"type": "Ready", "status": "True", "reason": "Compiled"},
    ]
    assert argo_health(obj) == ("Progressing", "RollingOut: 1 of 2")
    obj["status"]["conditions"] = [{"type": "Ready", "status": "Unknown", "reason": "X"}]
    assert argo_health(obj)[0] == "Progressing"
