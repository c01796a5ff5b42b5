"""The pure compiler: resources of a namespace → SidecarConfig, a stable hash, and problems."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from sluice_operator import manifests
from sluice_operator.compile import compile_namespace
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
    assert ("spec.selector.routes", "SelectsNothing") in reasons
    assert ("spec.selector.routes[0]", "RouteNotFound") in reasons
    assert ("spec.onExceeded.route", "RouteNotFound") in reasons
    fixed = compile_namespace("team-a", [res(BUDGET), res(ROUTE), res(cheap_route())])
    assert fixed.problems == ()


def test_two_routes_claiming_one_model_name_conflict() -> None:
    second = cheap_route()
    second["spec"]["model"] = "chat"
    result = compile_namespace("team-a", [res(ROUTE), res(second)])
    (problem,) = result.problems
    assert (problem.name, problem.reason, problem.path) == ("cheap", "ModelConflict", "spec.model")
    assert [r.source for r in result.config.routes] == ["chat"]


def test_guardrail_selecting_unknown_route_is_a_problem() -> None:
    doc = copy.deepcopy(GUARD)
    doc["spec"]["selector"] = {"routes": ["nope"]}
    result = compile_namespace("team-a", [res(doc)])
    assert [p.path for p in result.problems] == ["spec.selector.routes[0]"]


def test_config_round_trips_through_json() -> None:
    result = compile_namespace("team-a", [res(ROUTE), res(PROMPT), res(BUDGET), res(GUARD)])
    again = contract.SidecarConfig.model_validate_json(result.config.canonical_json())
    assert again == result.config
    assert again.content_hash() == result.hash
