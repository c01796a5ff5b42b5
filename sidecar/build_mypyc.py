"""Hatchling build hook: the sidecar's text-scanning modules compiled to C with mypyc.

The guardrail modules scan every byte of every answer that a policy filters, in Python; mypyc
(part of mypy, which type-checks this code in strict mode already) compiles them, unchanged, to
C extension modules that run the same code with fewer interpreter steps (docs/benchmarks.md,
"Compiling with mypyc": a third less CPU for streamed filtering). The sidecar image is built
that way; every other build stays pure Python, so a development install needs no C compiler.

Enabled only on request, through hatchling's switch for this hook (``pyproject.toml`` sets
``enable-by-default = false``)::

    HATCH_BUILD_HOOK_ENABLE_CUSTOM=1 pip wheel --no-deps .

The modules come from ``compile`` in the hook's table in ``pyproject.toml`` (paths under
``sidecar/``). They are compiled in a copy of the ``sluice_sidecar`` package (mypyc writes next
to its sources; the checkout stays clean), and the extension modules go into the wheel beside
the ``.py`` files they were built from: Python's import system prefers an extension module to a
source file of the same name, and tracebacks can still show the source lines. Needs a C compiler
and Python's headers; an editable install (``pip install -e``) never compiles.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class MypycBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    """Compiles ``compile`` (paths under ``sidecar/``) into the wheel's extension modules."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        modules = self.config.get("compile")
        if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
            raise TypeError(
                "[tool.hatch.build.targets.wheel.hooks.custom] compile: a list of paths"
            )
        src = Path(self.root) / "sidecar"
        missing = [m for m in modules if not (src / m).is_file()]
        if missing:
            raise FileNotFoundError(f"mypyc build hook: no such module under sidecar/: {missing}")
        self._work = Path(tempfile.mkdtemp(prefix="sluice-mypyc-"))
        shutil.copytree(
            src / "sluice_sidecar",
            self._work / "sluice_sidecar",
            ignore=shutil.ignore_patterns("__pycache__", "*.so"),
        )
        out = subprocess.run(
            [sys.executable, "-m", "mypyc", *modules],
            cwd=self._work,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"mypyc failed (exit {out.returncode}):\n{out.stdout[-6000:]}")
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        built = [self._work / (m.removesuffix(".py") + suffix) for m in modules]
        absent = [p.name for p in built if not p.is_file()]
        if absent:
            raise RuntimeError(
                f"mypyc left no extension module for {absent}:\n{out.stdout[-3000:]}"
            )
        # The modules' code is in one shared library beside them, at the top of site-packages.
        built += self._work.glob(f"*__mypyc{suffix}")
        for path in built:
            build_data["force_include"][str(path)] = path.relative_to(self._work).as_posix()
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        work = getattr(self, "_work", None)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
