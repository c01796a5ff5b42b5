"""The compiled build the sidecar image ships: the guardrail modules compiled by mypyc.

sidecar/Dockerfile builds the wheel with the mypyc build hook on (sidecar/build_mypyc.py, the
modules listed in pyproject.toml); development installs stay pure Python, so the rest of the
suite runs the interpreted modules. This file builds the same wheel on this machine, checks
what is in it, and runs the guardrail tests against it: compiled code can differ where mypy's
types and the values met at run time disagree (mypyc checks them where the interpreter does
not), so both builds must pass the same tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMPILED = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["hatch"]["build"][
    "targets"
]["wheel"]["hooks"]["custom"]["compile"]
#: The guardrail tests, unit and through a running sidecar (real sockets on loopback).
GUARDRAIL_TESTS = [
    *sorted(str(p.relative_to(REPO)) for p in (REPO / "tests/unit").glob("test_guardrail*.py")),
    "tests/unit/test_holdback_incremental.py",
    # the native scanner against the compiled Python path (the image runs both)
    "tests/unit/test_native_scan.py",
    "tests/unit/test_injection_fast_paths.py",
    "tests/unit/test_injection_model.py",
    "tests/sidecar/test_guardrail_paths.py",
    "tests/sidecar/test_guardrail_external_output.py",
]

#: The build sidecar/Dockerfile runs (with HATCH_BUILD_HOOK_ENABLE_CUSTOM=1), as a wheel.
PIP_WHEEL = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
PIP_WHEEL += ["--disable-pip-version-check"]

#: Run in the test process: proves which files the modules were imported from, then runs pytest.
_RUN = """
import importlib, sys
modules = sys.argv[1].split(",")
for name in modules:
    path = importlib.import_module(name).__file__
    assert path.startswith(sys.argv[2]) and path.endswith(".so"), (name, path)
print("compiled:", len(modules), "modules", flush=True)
import pytest
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[3:]]))
"""


def test_guardrail_tests_pass_against_the_compiled_wheel(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [*PIP_WHEEL, "-w", str(wheels), str(REPO)],
        env={**os.environ, "HATCH_BUILD_HOOK_ENABLE_CUSTOM": "1"},
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = wheels.glob("*.whl")
    # A platform wheel (CPython 3.11 ABI), not py3-none-any.
    assert "-cp311-cp311-" in wheel.name, wheel.name
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "site")
    for module in COMPILED:
        stem = module.removesuffix(".py")
        assert stem + suffix in names, f"{module} not compiled"
        assert module in names, f"{module}'s source is not beside its extension module"
    assert [n for n in names if n.endswith(f"__mypyc{suffix}") and "/" not in n], "no shared lib"
    # Nothing else is compiled: the rest of the wheel is the same as a pure-Python build's.
    extensions = {n for n in names if n.endswith(suffix) and "/" in n}
    assert extensions == {m.removesuffix(".py") + suffix for m in COMPILED}

    site = str(tmp_path / "site")
    names_csv = ",".join(m.removesuffix(".py").replace("/", ".") for m in COMPILED)
    run = subprocess.run(
        [sys.executable, "-c", _RUN, names_csv, site, *GUARDRAIL_TESTS],
        cwd=REPO,
        # PYTHONPATH comes before site-packages, where the editable install points at the
        # sources: the wheel's modules are the ones imported (the script asserts it).
        env={**os.environ, "PYTHONPATH": site},
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert f"compiled: {len(COMPILED)} modules" in run.stdout
    assert " passed" in run.stdout and " failed" not in run.stdout, run.stdout[-2000:]
