"""The generated CRDs: current on disk, structural, and carrying the rules the issue asks for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sluice_operator import crdgen
from sluice_operator.api import KINDS

REPO = Path(__file__).resolve().parents[2]


def test_checked_in_crds_equal_the_generator_output() -> None:
    rendered = crdgen.render_all()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in (REPO / "crds").glob("*.yaml")}
    stale = sorted(n for n in rendered.keys() | on_disk.keys() if rendered.get(n) != on_disk.get(n))
    assert not stale, f"crds/ is out of date ({', '.join(stale)}); run `sluice crds --write`"


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, value in node.get("properties", {}).items():
            out.extend(_walk(value, f"{path}.{key}"))
        if isinstance(node.get("items"), dict):
            out.extend(_walk(node["items"], f"{path}[]"))
        if isinstance(node.get("additionalProperties"), dict):
            out.extend(_walk(node["additionalProperties"], f"{path}{{}}"))
    return out


def _schema(kind: str) -> dict[str, Any]:
    crd = next(c for c in map(crdgen.crd_for, KINDS) if c["spec"]["names"]["kind"] == kind)
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_schemas_are_structural() -> None:
    forbidden = {"$ref", "anyOf", "allOf", "oneOf", "title", "const", "propertyNames"}
    for kind in KINDS:
        for path, node in _walk(_schema(kind.kind)):
            assert not forbidden & node.keys(), f"{kind.kind}{path}: {forbidden & node.keys()}"
            assert node.get("additionalProperties") is not False, f"{kind.kind}{path}"
            assert "type" in node, f"{kind.kind}{path} has no type"
            assert not isinstance(node.get("exclusiveMinimum"), int | float) or isinstance(
                node["exclusiveMinimum"], bool
            )


def test_every_spec_field_has_a_description() -> None:
    for kind in KINDS:
        spec = _schema(kind.kind)["properties"]["spec"]
        for path, node in _walk(spec, "spec"):
            if path.endswith(("[]", "{}")) or path == "spec":
                continue
            assert node.get("description"), f"{kind.kind} {path} has no description"


def _rules(kind: str) -> list[str]:
    return [
        v["rule"]
        for _, node in _walk(_schema(kind))
        for v in node.get("x-kubernetes-validations", [])
    ]


def test_cel_rules_cover_the_cross_field_checks() -> None:
    route = " ".join(_rules("ModelRoute"))
    assert "exists_one(c, c.name == b.name)" in route
    assert "'Weighted'" in route
    prompt = _rules("PromptTemplate")
    assert "self == oldSelf" in prompt
    assert any("oldSelf.versions" in r for r in prompt)
    assert any("self.labels" in r and "versions.exists" in r for r in prompt)
    budget = " ".join(_rules("Budget"))
    assert "isSorted()" in budget
    for kind in KINDS:
        assert any("sk-" in r for r in _rules(kind.kind)) or kind.kind == "Budget"


def test_crd_names_columns_and_category() -> None:
    for kind in KINDS:
        crd = crdgen.crd_for(kind)
        names = crd["spec"]["names"]
        assert names["categories"] == ["sluice"]
        assert names["shortNames"]
        version = crd["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        assert any(c["name"] == "Ready" for c in version["additionalPrinterColumns"])


def test_stream_is_valid_multi_document_yaml() -> None:
    docs = list(yaml.safe_load_all(crdgen.render_stream()))
    assert [d["metadata"]["name"] for d in docs] == [k.crd_name for k in KINDS]


def test_docs_field_references_are_current() -> None:
    from sluice_operator import docgen

    stale = []
    for kind in KINDS:
        page = REPO / "docs" / f"{kind.singular}.md"
        text = page.read_text(encoding="utf-8")
        if docgen.splice(text, kind) != text:
            stale.append(page.name)
    command = "python -m sluice_cli.maintainer docs --write"
    assert not stale, f"docs out of date ({', '.join(stale)}); run `{command}`"


def test_short_names_do_not_clash_with_well_known_kinds() -> None:
    # `route` is OpenShift's Route; `kubectl get route` must keep meaning that there.
    taken = {"route", "routes", "po", "svc", "deploy", "cm", "ns", "ing", "pv", "pvc", "sa", "ev"}
    names = {n for kind in KINDS for n in kind.short_names}
    assert not names & taken
    assert "mroute" in next(k for k in KINDS if k.kind == "ModelRoute").short_names


def test_prompttemplate_columns_name_no_particular_label() -> None:
    kind = next(k for k in KINDS if k.kind == "PromptTemplate")
    paths = [c.json_path for c in kind.columns]
    assert ".status.labelsSummary" in paths
    assert not any(".spec.labels." in p for p in paths)
