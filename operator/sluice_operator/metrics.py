"""Prometheus metrics of the operator process, served on the control-plane port at ``/metrics``.

Owns the registry and the metric definitions; values are read from the reconciler and the API
writer when scraped (callbacks), so the hot paths only bump plain integers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest


def build_registry(
    *,
    passes: Callable[[], float],
    api_requests: Callable[[], float],
    namespaces: Callable[[], float],
    objects: Callable[[], float],
    problems: Callable[[], float],
    sidecars: Callable[[], float],
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    for name, doc, fn in [
        ("sluice_operator_reconcile_passes", "Namespace reconcile passes run.", passes),
        (
            "sluice_operator_api_requests",
            "Write requests sent to the Kubernetes API.",
            api_requests,
        ),
        ("sluice_operator_namespaces", "Namespaces with Sluice resources.", namespaces),
        ("sluice_operator_objects", "Sluice objects watched.", objects),
        ("sluice_operator_problems", "Unresolved reference problems across namespaces.", problems),
        ("sluice_operator_reporting_sidecars", "Sidecars that reported recently.", sidecars),
    ]:
        Gauge(name, doc, registry=registry).set_function(fn)
    return registry


def handler(registry: CollectorRegistry) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def metrics(_: web.Request) -> web.StreamResponse:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return metrics
