"""How GitOps tools read an object's health: Flux's kstatus (the program hack/kstatus builds,
``kstatus_bin`` in conftest) and the shipped Argo CD Lua health check."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from ..health import argo_health


def kstatus(binary: Path, obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) of kstatus ``status.Compute`` for one object."""
    out = subprocess.run(
        [str(binary)], input=json.dumps(obj), capture_output=True, text=True, check=True
    )
    verdict = json.loads(out.stdout)
    return str(verdict["status"]), str(verdict["message"])


def both(binary: Path, obj: dict[str, Any]) -> tuple[str, str]:
    """(kstatus, Argo CD health) of one object as the apiserver returns it."""
    return kstatus(binary, obj)[0], argo_health(obj)[0]
