"""Never fail open, never hold a namespace hostage.

Every invalid object - the fixtures in testdata/invalid (things only the sidecar used to notice: an
unknown time zone, a regex that does not compile, a zero timeout) and every invalid case of the
API model tests - must be refused by the operator naming the field, and the config the operator
compiles around it must load in the sidecar: with the object's last valid generation kept, and
with the object left out when it never had one. The rest of the namespace compiles either way.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluice_operator import manifests
from sluice_operator.compile import CompileResult, Held, compile_namespace
from sluice_operator.manifests import Resource
from sluice_sidecar import config_source, contract
from sluice_sidecar.budget import check_budgets
from sluice_sidecar.guardrails.policy import Engine

from .test_api_models import BASES, INVALID

FIXTURES = Path(__file__).parent / "testdata" / "invalid"
ERROR_PATH = "test.sluice.dev/error-path"


def _fixtures() -> list[Any]:
    out = []
    for path in sorted(FIXTURES.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        out.append(pytest.param(doc, doc["metadata"]["annotations"][ERROR_PATH], id=path.stem))
    return out


def _model_cases() -> list[Any]:
    out = []
    for case_id, kind, mutate, path, _ in INVALID:
        doc = copy.deepcopy(BASES[kind])
        mutate(doc)
        out.append(pytest.param(doc, path, id=case_id))
    return out


CASES = _fixtures() + _model_cases()


def res(doc: dict[str, Any]) -> Resource:
    parsed = manifests.parse_object(doc, "base")
    assert isinstance(parsed, Resource), parsed
    return parsed


def load_in_sidecar(result: CompileResult) -> contract.SidecarConfig:
    """What a sidecar does with the ConfigMap's text: it must accept it, all of it."""
    config = config_source.parse(result.config.canonical_json(), name="compiled")
    assert config.content_hash() == result.hash
    assert check_budgets(config.budgets) == []
    assert Engine(config.guardrails).problems == []
    return config


def others(kind: str) -> list[Resource]:
    """The rest of the namespace: the valid bases of the other kinds."""
    return [res(doc) for k, doc in sorted(BASES.items()) if k != kind]


def test_there_are_fixtures_for_what_only_the_sidecar_used_to_refuse() -> None:
    names = {p.stem for p in FIXTURES.glob("*.yaml")}
    assert {"budget-unknown-timezone", "guardrail-input-regex", "route-zero-timeout"} <= names
    assert len(CASES) >= 55


@pytest.mark.parametrize(("doc", "path"), CASES)
def test_operator_refuses_it_naming_the_field(doc: dict[str, Any], path: str) -> None:
    errors = manifests.parse_object(doc, "fixture")
    assert isinstance(errors, list) and errors, "the operator must refuse this object"
    assert path in [e.path for e in errors], [str(e) for e in errors]


@pytest.mark.parametrize(("doc", "path"), CASES)
def test_compiled_config_keeps_the_last_valid_generation_and_loads(
    doc: dict[str, Any], path: str
) -> None:
    kind, name = doc["kind"], doc["metadata"]["name"]
    before = compile_namespace("team-a", [*others(kind), res(BASES[kind])])
    load_in_sidecar(before)
    assert before.in_effect(kind, name)

    after = compile_namespace(
        "team-a", others(kind), held=[Held(kind, name)], previous=before.config
    )
    assert after.config == before.config, "the last valid generation must stay in force"
    assert after.keeps(kind, name)
    load_in_sidecar(after)


@pytest.mark.parametrize(("doc", "path"), CASES)
def test_object_never_valid_is_left_out_and_the_rest_loads(doc: dict[str, Any], path: str) -> None:
    kind, name = doc["kind"], doc["metadata"]["name"]
    result = compile_namespace("team-a", others(kind), held=[Held(kind, name)])
    assert not result.in_effect(kind, name)
    config = load_in_sidecar(result)
    expected = compile_namespace("team-a", others(kind)).config
    assert config == expected


def test_the_sidecar_does_refuse_what_the_operator_now_catches() -> None:
    """Why the checks above matter: without them, one Budget broke every sidecar's config."""
    config = contract.SidecarConfig(
        namespace="team-a",
        budgets=(
            contract.BudgetRule(
                name="daily",
                limits=(
                    contract.BudgetLimit(
                        window=contract.WindowKind.DAY, timezone="Mars/Olympus", usd=5
                    ),
                ),
            ),
        ),
    )
    with pytest.raises(config_source.ConfigError, match="time zone"):
        config_source.parse(config.canonical_json())
    zero = contract.SidecarConfig(
        namespace="team-a",
        routes=(
            contract.Route(
                name="chat",
                source="chat",
                backends=(
                    contract.Backend(name="m", provider=contract.Provider.MOCK, model="mock-1"),
                ),
                timeouts=contract.Timeouts(total=0.0),
            ),
        ),
    )
    with pytest.raises(config_source.ConfigError, match=r"timeouts\.total"):
        config_source.parse(zero.canonical_json())


def test_examples_and_valid_bases_load_in_the_sidecar() -> None:
    repo = Path(__file__).resolve().parents[2]
    for folder in sorted((repo / "examples").iterdir()):
        if not folder.is_dir():
            continue
        resources, errors = manifests.load_paths([folder])
        assert not errors, errors
        for namespace in {r.namespace for r in resources}:
            load_in_sidecar(compile_namespace(namespace, resources))
    load_in_sidecar(compile_namespace("team-a", [res(doc) for doc in BASES.values()]))
