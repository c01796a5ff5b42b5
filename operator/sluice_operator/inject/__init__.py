"""The sidecar injector: a pure decision and patch, the admission protocol, a thin HTTPS service.

Layers, each importing only the ones above it:

* ``annotations``: the table of every ``sluice.dev/*`` key and its parsers;
* ``settings``: ``InjectorSettings`` (from the chart's environment);
* ``cache``: ``InjectionCache``: namespace labels and referenced Secrets, filled by watches;
* ``decide``: pod + namespace facts + settings → ``Decision(inject, reasons, code, warnings)``;
* ``patch``: pod + settings + Secrets + decision → RFC 6902 JSON patch (pure, idempotent);
* ``admission``: AdmissionReview v1 in → AdmissionReview out (pure);
* ``config``: the MutatingWebhookConfiguration (pure; the chart renders the same shape);
* ``webhook``: aiohttp app and TLS serving; the only IO in this package.

``inject_pod`` is the one entry point for anything that is not the webhook (a CLI, tests), so
every caller injects exactly the same way.
"""

# No `from __future__ import annotations` in this file: it would bind the package attribute
# `annotations` to the __future__ feature, and `from . import annotations` (the submodule) in the
# modules below would then silently get that feature instead of the table.
from collections.abc import Mapping, Sequence
from typing import Any

from . import decide as _decide
from . import patch as _patch
from .cache import InjectionCache, NamespaceConfig, NamespaceFacts, secret_mounts
from .decide import Decision
from .patch import JsonPatch
from .settings import InjectorSettings

__all__ = [
    "Decision",
    "InjectionCache",
    "InjectorSettings",
    "JsonPatch",
    "NamespaceConfig",
    "NamespaceFacts",
    "inject_pod",
    "secret_mounts",
]


def inject_pod(
    pod: Mapping[str, Any],
    namespace: str,
    facts: NamespaceFacts | None,
    secrets: Mapping[str, Sequence[str]],
    settings: InjectorSettings,
) -> tuple[Decision, JsonPatch]:
    """Decide about ``pod`` and build its patch. Pure."""
    decision = _decide.decide(pod, namespace, facts, settings)
    return decision, _patch.build_patch(pod, settings, secrets, decision)
