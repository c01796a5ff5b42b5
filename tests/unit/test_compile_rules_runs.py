"""The API and compile step of routing rules (ModelRoute spec.routingRules) and per-run budget
limits (Budget spec.perRun): validation messages and the compiled contract."""

from __future__ import annotations

import copy
from typing import Any

from sluice_operator import manifests
from sluice_operator.compile import compile_namespace
from sluice_operator.manifests import Resource
from sluice_sidecar import contract

from .test_api_models import BUDGET, ROUTE


def parse(doc: dict[str, Any]) -> Resource | Any:
    return manifests.parse_object(doc, "test")


def with_rules(rules: list[dict[str, Any]]) -> dict[str, Any]:
    doc = copy.deepcopy(ROUTE)
    doc["spec"]["routingRules"] = rules
    return doc


RULE = {
    "name": "simple",
    "match": {"maxPromptTokens": 500, "tools": False, "headers": {"X-Tier": "cheap"}},
    "backends": ["local"],
}


def test_routing_rules_compile_in_order_with_lower_case_header_names() -> None:
    tagged = {"name": "tagged", "match": {"metadata": {"tier": "cheap"}}, "backends": ["local"]}
    res = parse(with_rules([RULE, tagged]))
    assert isinstance(res, Resource)
    route = compile_namespace("team-a", [res]).config.routes[0]
    assert [r.name for r in route.rules] == ["simple", "tagged"]
    assert route.rules[0].match == contract.RuleMatch(
        max_prompt_tokens=500, tools=False, headers={"x-tier": "cheap"}
    )
    assert route.rules[1].backends == ("local",)


def test_a_rule_must_name_existing_backends_and_rule_names_are_unique() -> None:
    bad = parse(with_rules([{**RULE, "backends": ["nope"]}]))
    assert not isinstance(bad, Resource)
    assert "every backend a routing rule names" in str(bad)
    dup = parse(with_rules([RULE, RULE]))
    assert not isinstance(dup, Resource)
    assert "routing rule names must be unique" in str(dup)


def test_a_route_without_rules_hashes_as_before() -> None:
    res = parse(ROUTE)
    assert isinstance(res, Resource)
    config = compile_namespace("team-a", [res]).config
    assert '"rules"' not in config.canonical_json()


def test_per_run_limits_compile_and_may_stand_alone() -> None:
    doc = copy.deepcopy(BUDGET)
    doc["spec"] = {"perRun": {"usd": 2, "maxSteps": 50}}
    res = parse(doc)
    assert isinstance(res, Resource)
    budget = compile_namespace("team-a", [res]).config.budgets[0]
    assert budget.per_run == contract.RunLimits(usd=2, max_steps=50)
    doc["spec"] = {"perRun": {}}
    assert "set at least one of usd, tokens, requests or maxSteps" in str(parse(doc))
    plain = parse(BUDGET)
    assert isinstance(plain, Resource)
    assert '"perRun"' not in compile_namespace("team-a", [plain]).config.canonical_json()
