"""Guards on the source layout that, if broken, break Python itself or the layering."""

from __future__ import annotations

import operator
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


SOURCE_ROOTS = {"operator": "sluice_operator", "sidecar": "sluice_sidecar", "cli": "sluice_cli"}


def test_source_roots_are_not_packages() -> None:
    # An operator/__init__.py would shadow the standard library's `operator` module.
    for root in SOURCE_ROOTS:
        assert not (REPO / root / "__init__.py").exists(), f"remove {root}/__init__.py"


def test_every_source_root_is_packaged_and_on_the_editable_path() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    build = project["tool"]["hatch"]["build"]
    wanted = {f"{root}/{package}" for root, package in SOURCE_ROOTS.items()}
    assert set(build["targets"]["wheel"]["packages"]) == wanted
    assert set(build["dev-mode-dirs"]) == set(SOURCE_ROOTS)
    assert set(project["tool"]["mypy"]["mypy_path"]) == set(SOURCE_ROOTS)
    assert set(project["tool"]["importlinter"]["root_packages"]) == set(SOURCE_ROOTS.values())
    assert project["project"]["scripts"]["sluice"] == "sluice_cli.main:main"


def test_no_test_folder_is_named_operator() -> None:
    assert not [p for p in (REPO / "tests").rglob("operator") if p.is_dir()]


def test_stdlib_operator_is_importable_from_the_repo_root() -> None:
    assert operator.__file__ is None or "site-packages" not in operator.__file__
    out = subprocess.run(
        [sys.executable, "-c", "import operator, sys; print(operator.itemgetter)"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "itemgetter" in out.stdout


def test_sidecar_base_import_pulls_no_operator_kopf_or_kubernetes() -> None:
    code = (
        "import sys, sluice_sidecar.contract;"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('kopf', 'kubernetes', 'sluice_operator')];"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_module_starts_with_a_docstring() -> None:
    import ast

    missing = []
    for root, package in SOURCE_ROOTS.items():
        for path in (REPO / root / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            if not ast.get_docstring(tree):
                missing.append(str(path.relative_to(REPO)))
    assert not missing, f"modules without a docstring: {missing}"


def test_the_configmap_name_and_key_are_spelled_in_one_module() -> None:
    import ast

    from sluice_operator import configmap

    spelled = {configmap.NAME, configmap.KEY}
    found = []
    for root, package in (("operator", "sluice_operator"), ("cli", "sluice_cli")):
        for path in (REPO / root / package).rglob("*.py"):
            if path == REPO / "operator" / "sluice_operator" / "configmap.py":
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            docstrings = {
                id(node.body[0].value)
                for node in ast.walk(tree)
                if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
                and node.body
                and isinstance(node.body[0], ast.Expr)
            }
            found += [
                f"{path.relative_to(REPO)}:{n.lineno}"
                for n in ast.walk(tree)
                if isinstance(n, ast.Constant) and n.value in spelled and id(n) not in docstrings
            ]
    assert not found, f"use sluice_operator.configmap.NAME / KEY instead of literals: {found}"
