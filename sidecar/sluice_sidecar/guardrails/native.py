"""The optional native scanner (``sluice_native``, built from ``native/``; the sidecar image has
it): owns whether the guardrails use it. ``module()`` is the extension module when it is
installed and not turned off with ``SLUICE_NATIVE_SCAN=0`` (read at each call), else None;
``scanning()`` says which implementation scans, for the sidecar's start-up line. Every user
keeps its Python path as the reference and the fallback."""

from __future__ import annotations

import os
from types import ModuleType

_module: ModuleType | None
try:
    import sluice_native as _imported

    _module = _imported
except ImportError:  # pragma: no cover - the pure-Python path
    _module = None


def module() -> ModuleType | None:
    """``sluice_native``, or None (not installed, or ``SLUICE_NATIVE_SCAN=0``)."""
    if _module is None or os.environ.get("SLUICE_NATIVE_SCAN", "1") == "0":
        return None
    return _module


def scanning() -> str:
    """``native (sluice_native 0.1.0)``, or ``Python`` and why."""
    if _module is None:
        return "Python (the native scanner sluice_native is not installed)"
    if module() is None:
        return "Python (SLUICE_NATIVE_SCAN=0)"
    return f"native (sluice_native {_module.__version__})"
