"""Guards on the source layout that, if broken, break Python itself or the layering."""

from __future__ import annotations

import operator
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_source_roots_are_not_packages() -> None:
    # An operator/__init__.py would shadow the standard library's `operator` module.
    for root in ("operator", "sidecar"):
        assert not (REPO / root / "__init__.py").exists(), f"remove {root}/__init__.py"


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
    for root in ("operator/sluice_operator", "sidecar/sluice_sidecar"):
        for path in (REPO / root).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            if not ast.get_docstring(tree):
                missing.append(str(path.relative_to(REPO)))
    assert not missing, f"modules without a docstring: {missing}"
