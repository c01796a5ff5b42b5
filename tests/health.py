"""What GitOps tools say about an object: the shipped Argo CD Lua health check, run by Lua 5.1 (the
language of Argo CD's gopher-lua) through ``lupa``. Flux's kstatus is the real Go library, built
by hack/build-kstatus.sh and run by the cluster tests (``tests/cluster/conftest.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa.lua51 as lua51

REPO = Path(__file__).resolve().parents[1]
ARGO_SCRIPT = REPO / "charts" / "sluice" / "health" / "sluice.lua"


def argo_health(obj: dict[str, Any], script: str | None = None) -> tuple[str, str]:
    """(hs.status, hs.message) of the Argo CD health check for ``obj`` (a plain JSON object)."""
    lua = lua51.LuaRuntime()
    lua.globals().obj = lua.table_from(obj, recursive=True)
    hs = lua.execute(script if script is not None else ARGO_SCRIPT.read_text(encoding="utf-8"))
    return str(hs["status"]), str(hs["message"])
