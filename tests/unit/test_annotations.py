"""The annotations table: complete (every key the code or chart spells is in it), used, parsed
correctly, and rendered into the docs."""

from __future__ import annotations

import ast
import re
from decimal import Decimal
from pathlib import Path

import pytest

from sluice_operator.inject import annotations as ann

REPO = Path(__file__).resolve().parents[2]
KEY_LITERAL = re.compile(r"^sluice\.dev/[A-Za-z0-9._-]+$")
# API groups/versions are not label or annotation keys
NOT_A_KEY = re.compile(r"^sluice\.dev/(v\d+((alpha|beta)\d+)?|sidecar-config|usage-report)$")


# keyword arguments whose values are names of things, not label or annotation keys
NOT_KEY_ARGUMENTS = {"reporting_component", "reportingComponent"}


def _code_literals() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for root in ("operator/sluice_operator", "sidecar/sluice_sidecar"):
        for path in (REPO / root).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            skip = {
                id(n.value)
                for n in ast.walk(tree)
                if isinstance(n, ast.keyword) and n.arg in NOT_KEY_ARGUMENTS
            }
            for node in ast.walk(tree):
                if id(node) in skip:
                    continue
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    value = node.value
                    if KEY_LITERAL.match(value) and not NOT_A_KEY.match(value):
                        found.setdefault(value, []).append(str(path.relative_to(REPO)))
    return found


def test_the_docs_are_current() -> None:
    stale = [
        str(path.relative_to(REPO))
        for path, text in ann.expected_docs(REPO).items()
        if path.read_text(encoding="utf-8") != text
    ]
    command = "python -m sluice_operator.inject.annotations --write"
    assert not stale, f"{', '.join(stale)} out of date; run `{command}`"


def test_every_key_the_code_spells_is_in_the_table() -> None:
    known = {k.key for k in ann.TABLE}
    unknown = {k: v for k, v in _code_literals().items() if k not in known}
    assert not unknown, f"add these keys to sluice_operator/inject/annotations.py TABLE: {unknown}"


def test_every_key_the_chart_spells_is_in_the_table() -> None:
    known = {k.key for k in ann.TABLE}
    spelled = set()
    for path in (REPO / "charts" / "sluice" / "templates").iterdir():
        spelled |= set(re.findall(r"sluice\.dev/[a-z0-9-]+", path.read_text(encoding="utf-8")))
    assert spelled - known == set()


def test_every_row_is_read_or_written_by_some_code() -> None:
    # The injector reads keys through the constants (ann.NAME or, inside annotations.py, NAME),
    # never through literals; keys the operator writes are spelled where it writes them.
    constants = {name: value for name, value in vars(ann).items() if isinstance(value, ann.Key)}
    assert set(constants.values()) == set(ann.TABLE)
    used: set[str] = set()
    for path in (REPO / "operator/sluice_operator/inject").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        used |= {
            n.attr
            for n in ast.walk(tree)
            if isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name)
            and n.value.id == "ann"
        }
    module = ast.parse((REPO / "operator/sluice_operator/inject/annotations.py").read_text())
    for fn in (n for n in module.body if isinstance(n, ast.FunctionDef)):
        used |= {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)}
    via_resources = {name for name, k in constants.items() if k.key in ann.RESOURCE_KEYS}
    spelled = set(_code_literals())
    via_literal = {name for name, k in constants.items() if k.key in spelled}
    unused = set(constants) - used - via_resources - via_literal
    assert not unused, f"table rows nothing reads or writes: {unused}"
    assert "merge_resources" in used


def test_table_rows_are_well_formed() -> None:
    keys = [k.key for k in ann.TABLE]
    assert len(keys) == len(set(keys))
    for k in ann.TABLE:
        assert k.key.startswith(ann.PREFIX)
        assert len(k.key.split("/", 1)[1]) <= 63
        assert k.doc.endswith(".")
        assert ann.by_key(k.key) is k
    assert ann.by_key("sluice.dev/nope") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("false", False), ("True", None), ("yes", None), ("", None), (None, None)],
)
def test_parse_bool_is_exact_like_label_selectors(text: str | None, expected: bool | None) -> None:
    assert ann.parse_bool(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4000", 4000), (" 8080 ", 8080), ("80", None), ("70000", None), ("x", None), ("-1", None)],
)
def test_parse_port(text: str, expected: int | None) -> None:
    assert ann.parse_port(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100m", Decimal("0.1")),
        ("1", Decimal(1)),
        ("1.5", Decimal("1.5")),
        ("128Mi", Decimal(128 * 2**20)),
        ("1Gi", Decimal(2**30)),
        ("2k", Decimal(2000)),
        ("1e3", Decimal(1000)),
        ("0.5Gi", Decimal(2**29)),
        (".5", Decimal("0.5")),
    ],
)
def test_parse_quantity(text: str, expected: Decimal) -> None:
    assert ann.parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "1MB", "-1", "1 Gi", "Mi", "1.2.3", "10mi"])
def test_parse_quantity_rejects(text: str) -> None:
    assert ann.parse_quantity(text) is None


def test_pod_overrides_parse_and_report_bad_values() -> None:
    overrides, problems = ann.parse_pod_overrides(
        {
            ann.PORT.key: "5000",
            ann.ADMIN_PORT.key: "5001",
            ann.NATIVE_SIDECAR.key: "false",
            ann.SET_BASE_URL.key: "nope",
            ann.CPU_LIMIT.key: "2",
            ann.MEMORY_REQUEST.key: "lots",
        }
    )
    assert overrides.port == 5000
    assert overrides.admin_port == 5001
    assert overrides.native_sidecar is False
    assert overrides.set_base_url is None
    assert overrides.resources == {"limits": {"cpu": "2"}}
    assert len(problems) == 2
    assert any(ann.SET_BASE_URL.key in p for p in problems)
    assert any(ann.MEMORY_REQUEST.key in p and "quantity" in p for p in problems)


def test_equal_ports_drop_the_admin_override() -> None:
    overrides, problems = ann.parse_pod_overrides(
        {ann.PORT.key: "5000", ann.ADMIN_PORT.key: "5000"}
    )
    assert overrides.port == 5000
    assert overrides.admin_port is None
    assert problems and ann.ADMIN_PORT.key in problems[0]


def test_merge_resources_keeps_requests_within_limits() -> None:
    defaults = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}
    merged, problems = ann.merge_resources(defaults, {"requests": {"memory": "1Gi", "cpu": "2"}})
    assert merged == {"requests": {"cpu": "2", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}
    assert len(problems) == 1
    assert ann.MEMORY_REQUEST.key in problems[0]
    assert "exceed" in problems[0]


@pytest.mark.parametrize("order", [("requests", "limits"), ("limits", "requests")])
def test_merge_resources_does_not_depend_on_order(order: tuple[str, str]) -> None:
    defaults = {"requests": {"memory": "64Mi"}, "limits": {"memory": "256Mi"}}
    both = {"requests": {"memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    merged, problems = ann.merge_resources(defaults, {k: both[k] for k in order})
    assert merged == both
    assert problems == []


def test_merge_resources_drops_both_overrides_of_a_bad_pair() -> None:
    defaults = {"requests": {"memory": "64Mi"}, "limits": {"memory": "256Mi"}}
    merged, problems = ann.merge_resources(
        defaults, {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}
    )
    assert merged == defaults
    assert len(problems) == 2


def test_the_rendered_table_has_every_row() -> None:
    table = ann.render_table()
    for k in ann.TABLE:
        assert f"`{k.key}`" in table
    assert table.count("\n") == len(ann.TABLE) + 2
    with pytest.raises(ValueError, match="markers"):
        ann.replace_section("no markers here")
