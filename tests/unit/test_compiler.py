"""The pure compiler: resources of a namespace → SidecarConfig, a stable hash, and problems."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from sluice_operator import manifests
from sluice_operator.compile import Held, compile_namespace
from sluice_operator.manifests import Resource
from sluice_sidecar import contract

from .test_api_models import BUDGET, GUARD, PROMPT, ROUTE

REPO = Path(__file__).resolve().parents[2]


def res(doc: dict[str, Any]) -> Resource:
    result = manifests.parse_object(doc, "test")
    assert isinstance(result, Resource), result
    return result


def cheap_route() -> dict[str, Any]:
    doc = copy.deepcopy(ROUTE)
    doc["metadata"]["name"] = "cheap"
    return doc


def test_quickstart_compiles_without_problems() -> None:
    resources, errors = manifests.load_paths([REPO / "examples" / "01-quickstart"])
    assert not errors
    result = compile_namespace("default", resources)
    assert result.problems == ()
    config = result.config
    assert [r.name for r in config.routes] == ["chat"]
    assert [b.name for b in config.routes[0].backends] == ["primary", "secondary"]
    assert config.routes[0].timeouts.total == 10.0
    assert config.routes[0].retry.backoff_base == 0.05
    assert config.routes[0].backends[0].mock is not None
    assert config.routes[0].backends[0].mock.latency_ms == 20.0
    assert [p.name for p in config.prompts] == ["support-answer"]
    assert config.prompts[0].labels == {"production": 1, "canary": 2}
    assert [b.name for b in config.budgets] == ["team-daily"]
    assert [g.name for g in config.guardrails] == ["default-filters"]


def test_full_route_compiles_with_credentials_as_file_references_only() -> None:
    result = compile_namespace("team-a", [res(ROUTE)])
    backend = result.config.routes[0].backends[0]
    assert backend.credentials == contract.CredentialRef(
        secret_name="openai", key="api-key", file="openai/api-key"
    )
    # Built-in price table fills in prices for a well-known model.
    assert backend.pricing.input_per_mtok > 0
    assert result.config.routes[0].timeouts.total == 60.0
    assert result.config.routes[0].workload_selector == {"app": "web"}


def test_hash_is_stable_and_order_independent() -> None:
    a = compile_namespace("team-a", [res(ROUTE), res(PROMPT), res(GUARD)])
    b = compile_namespace("team-a", [res(GUARD), res(PROMPT), res(ROUTE)])
    assert a.hash == b.hash
    assert a.config.canonical_json() == b.config.canonical_json()


def test_hash_changes_when_content_changes() -> None:
    changed = copy.deepcopy(ROUTE)
    changed["spec"]["retry"]["attempts"] = 4
    assert (
        compile_namespace("team-a", [res(ROUTE)]).hash
        != compile_namespace("team-a", [res(changed)]).hash
    )


def test_other_namespaces_are_ignored() -> None:
    other = copy.deepcopy(ROUTE)
    other["metadata"]["namespace"] = "team-b"
    result = compile_namespace("team-a", [res(other)])
    assert result.config.routes == ()


def test_prompt_naming_unknown_route_is_a_problem() -> None:
    result = compile_namespace("team-a", [res(PROMPT)])
    (problem,) = result.problems
    assert (problem.kind, problem.name, problem.path, problem.reason) == (
        "PromptTemplate",
        "support",
        "spec.versions[0].route",
        "RouteNotFound",
    )
    assert 'ModelRoute "chat" not found in namespace "team-a"' in problem.message
    # The template still compiles: one dangling default does not take traffic down.
    assert [p.name for p in result.config.prompts] == ["support"]
    # Fixing it (creating the route) clears the problem.
    assert compile_namespace("team-a", [res(PROMPT), res(ROUTE)]).problems == ()


def test_budget_selecting_only_missing_routes_selects_nothing() -> None:
    result = compile_namespace("team-a", [res(BUDGET)])
    reasons = {(p.path, p.reason) for p in result.problems}
    # One SelectsNothing for the selector (as docs/budget.md says), not a RouteNotFound per route.
    assert reasons == {
        ("spec.selector.routes", "SelectsNothing"),
        ("spec.onExceeded.route", "RouteNotFound"),
    }
    assert result.problems[0].reason == "SelectsNothing"
    assert "limits nothing" in result.problems[0].message
    fixed = compile_namespace("team-a", [res(BUDGET), res(ROUTE), res(cheap_route())])
    assert fixed.problems == ()


def test_two_routes_claiming_one_model_name_conflict() -> None:
    second = cheap_route()
    second["spec"]["model"] = "chat"
    result = compile_namespace("team-a", [res(ROUTE), res(second)])
    (problem,) = result.problems
    assert (problem.name, problem.reason, problem.path) == ("cheap", "ModelConflict", "spec.model")
    assert [r.source for r in result.config.routes] == ["chat"]


def created(doc: dict[str, Any], name: str, at: str) -> dict[str, Any]:
    """``doc`` renamed, with a creation time; a route keeps serving the model name "chat"."""
    out = copy.deepcopy(doc)
    out["metadata"]["name"] = name
    out["metadata"]["creationTimestamp"] = at
    if out["kind"] == "ModelRoute":
        out["spec"]["model"] = "chat"
    return out


def test_the_oldest_route_keeps_a_model_name_even_when_a_newer_one_sorts_first() -> None:
    old = created(ROUTE, "zeta", "2026-01-01T00:00:00Z")
    new = created(ROUTE, "alpha", "2026-02-01T00:00:00Z")  # sorts first, but is newer
    result = compile_namespace("team-a", [res(new), res(old)])
    assert [r.source for r in result.config.routes] == ["zeta"]
    (problem,) = result.problems
    assert (problem.name, problem.reason) == ("alpha", "ModelConflict")
    assert 'already served by ModelRoute "zeta" (created 2026-01-01T00:00:00Z)' in problem.message


def test_routes_created_in_the_same_second_fall_back_to_name_order() -> None:
    a = created(ROUTE, "b-route", "2026-01-01T00:00:00Z")
    b = created(ROUTE, "a-route", "2026-01-01T00:00:00Z")
    result = compile_namespace("team-a", [res(a), res(b)])
    assert [r.source for r in result.config.routes] == ["a-route"]


def test_guardrail_selecting_only_unknown_routes_selects_nothing() -> None:
    doc = copy.deepcopy(GUARD)
    doc["spec"]["selector"] = {"routes": ["nope"]}
    result = compile_namespace("team-a", [res(doc)])
    assert [(p.path, p.reason) for p in result.problems] == [
        ("spec.selector.routes", "SelectsNothing")
    ]


def test_selector_with_some_unknown_routes_names_each_missing_one() -> None:
    doc = copy.deepcopy(GUARD)
    doc["spec"]["selector"] = {"routes": ["chat", "nope"]}
    result = compile_namespace("team-a", [res(doc), res(ROUTE)])
    assert [(p.path, p.reason) for p in result.problems] == [
        ("spec.selector.routes[1]", "RouteNotFound")
    ]


# --- an invalid edit keeps the last valid generation in force -----------------------------------


def test_held_objects_keep_their_previous_compiled_form() -> None:
    before = compile_namespace("team-a", [res(ROUTE), res(PROMPT), res(BUDGET), res(GUARD)])
    held = [
        Held("ModelRoute", "chat"),
        Held("PromptTemplate", "support"),
        Held("Budget", "daily"),
        Held("GuardrailPolicy", "filters"),
    ]
    after = compile_namespace("team-a", [], held=held, previous=before.config)
    assert after.config == before.config
    assert after.hash == before.hash
    assert set(after.kept) == {(h.kind, h.name) for h in held}


def test_held_object_without_a_valid_past_is_left_out_and_the_rest_compiles() -> None:
    before = compile_namespace("team-a", [res(ROUTE)])
    after = compile_namespace(
        "team-a",
        [res(ROUTE), res(BUDGET)],
        held=[Held("GuardrailPolicy", "filters")],
        previous=before.config,
    )
    assert after.config.guardrails == ()
    assert [b.name for b in after.config.budgets] == ["daily"]
    assert not after.keeps("GuardrailPolicy", "filters")


def test_deleting_a_held_object_removes_its_rules() -> None:
    before = compile_namespace("team-a", [res(GUARD)])
    after = compile_namespace("team-a", [], previous=before.config)  # gone: not held
    assert after.config.guardrails == ()


def test_held_route_still_counts_for_references_and_for_the_oldest_claim() -> None:
    old = created(ROUTE, "chat", "2026-01-01T00:00:00Z")
    before = compile_namespace("team-a", [res(old)])
    newer = created(ROUTE, "alpha", "2026-02-01T00:00:00Z")
    after = compile_namespace(
        "team-a",
        [res(newer), res(PROMPT)],
        held=[Held("ModelRoute", "chat", "2026-01-01T00:00:00Z")],
        previous=before.config,
    )
    assert [r.source for r in after.config.routes] == ["chat"]
    assert [(p.name, p.reason) for p in after.problems] == [("alpha", "ModelConflict")]


def test_previous_config_of_another_namespace_is_ignored() -> None:
    before = compile_namespace("team-b", [res(created(GUARD, "filters", ""))])
    other = contract.SidecarConfig(namespace="team-b", guardrails=before.config.guardrails)
    after = compile_namespace(
        "team-a", [], held=[Held("GuardrailPolicy", "filters")], previous=other
    )
    assert after.config.guardrails == ()


def test_config_round_trips_through_json() -> None:
    result = compile_namespace("team-a", [res(ROUTE), res(PROMPT), res(BUDGET), res(GUARD)])
    again = contract.SidecarConfig.model_validate_json(result.config.canonical_json())
    assert again == result.config
    assert again.content_hash() == result.hash
