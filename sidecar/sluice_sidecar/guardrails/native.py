"""The optional native scanner (``sluice_native``, built from ``native/``; the sidecar image has
it): owns whether the guardrails use it, and when it is loaded. ``module()`` is the extension
module when it is installed and not turned off with ``SLUICE_NATIVE_SCAN=0`` (read at each
call), else None; ``scanning()`` says which implementation scans, for the sidecar's start-up
line. Every user keeps its Python path as the reference and the fallback.

The extension is loaded on the first ``module()`` call, that is when a guardrail policy first
builds a scanner, never at import: loading it maps about 0.6 MB of code, which a sidecar with
no guardrail policy (or with ``SLUICE_NATIVE_SCAN=0``) has no use for. An installed extension
that fails to load is logged once, and Python scans."""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import sys
from types import ModuleType

log = logging.getLogger("sluice.guardrails")

_NAME = "sluice_native"


def _turned_off() -> bool:
    return os.environ.get("SLUICE_NATIVE_SCAN", "1") == "0"


@functools.cache
def _installed() -> bool:
    return importlib.util.find_spec(_NAME) is not None


@functools.cache
def _load() -> ModuleType | None:
    if not _installed():
        return None
    try:
        import sluice_native
    except ImportError as exc:
        log.warning(
            "the native scanner %s is installed but does not load (%s); guardrails scan text "
            "in Python. Reinstall the sluice-native wheel built for this machine.",
            _NAME,
            exc,
        )
        return None
    return sluice_native


def module() -> ModuleType | None:
    """``sluice_native``, or None (not installed, does not load, or ``SLUICE_NATIVE_SCAN=0``).
    The first call that finds it on loads it."""
    if _turned_off():
        return None
    return _load()


def _tried() -> bool:
    """Whether this process has loaded the extension or tried to (a policy needed it)."""
    return _NAME in sys.modules or _load.cache_info().currsize > 0


def scanning() -> str:
    """``native (sluice_native 0.1.0)``, or ``Python`` and why. Never loads the extension: one
    that is installed but not yet needed by a policy is reported as such."""
    if _turned_off():
        return "Python (SLUICE_NATIVE_SCAN=0)"
    if not _installed():
        return "Python (the native scanner sluice_native is not installed)"
    if _tried():
        ext = _load()
        if ext is None:
            return "Python (the native scanner sluice_native does not load; see the warning)"
        return f"native ({_NAME} {ext.__version__})"
    from importlib import metadata  # only here: the start-up line

    try:
        version = f" {metadata.version('sluice-native')}"
    except metadata.PackageNotFoundError:  # pragma: no cover - installed without metadata
        version = ""
    return f"native ({_NAME}{version}, loaded when a guardrail policy first needs it)"
