"""kopf glue only: wire watch events and the operator's lifecycle to the reconciler.

Every Sluice object's watch event goes to ``Reconciler.observe``; the reconciler (a background
task started here) compiles and writes. kopf keeps its own bookkeeping in annotations
(``kopf.sluice.dev/*``), never in ``status`` - a strict CRD schema would prune it there.
Start-up also opens the control-plane endpoint for sidecars. With peering, only the leader
handles events; the control plane keeps serving on every replica.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
from aiohttp import web

from . import controlplane, kube, metrics
from .api import GROUP, KINDS, VERSION
from .reconcile import Reconciler
from .settings import OperatorOptions

log = logging.getLogger(__name__)
STORAGE_PREFIX = "kopf.sluice.dev"


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=STORAGE_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=STORAGE_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.connect_timeout = 30
    settings.watching.server_timeout = 300
    options: OperatorOptions = memo["options"]

    writer = kube.Kube(kube.load_client())
    board = controlplane.ConfigBoard()
    reconciler = Reconciler(writer=writer, publish=board.publish)
    memo["kube"] = writer
    memo["reconciler"] = reconciler
    memo["task"] = asyncio.create_task(reconciler.run(), name="sluice-reconciler")

    app = controlplane.create_app(
        board, controlplane.Auth(review=writer.review_token), reconciler.take_report
    )
    registry = metrics.build_registry(
        passes=lambda: reconciler.passes,
        api_requests=lambda: writer.requests,
        namespaces=lambda: len(reconciler.results),
        objects=lambda: len(reconciler.objects),
        problems=lambda: sum(len(r.problems) for r in reconciler.results.values()),
        sidecars=lambda: len(reconciler.reports.pods),
    )
    app.router.add_get("/metrics", metrics.handler(registry))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, options.controlplane_host, options.controlplane_port).start()
    memo["runner"] = runner
    log.info(
        "control plane for sidecars on http://%s:%d",
        options.controlplane_host,
        options.controlplane_port,
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("task")
    if isinstance(task, asyncio.Task):
        task.cancel()
    runner = memo.get("runner")
    if isinstance(runner, web.AppRunner):
        await runner.cleanup()


async def on_sluice_event(
    *, type: str | None, body: kopf.Body, resource: kopf.Resource, memo: Any, **_: Any
) -> None:
    reconciler: Reconciler = memo["reconciler"]
    reconciler.observe(resource.plural, type, body)


for _kind in KINDS:
    kopf.on.event(GROUP, VERSION, _kind.plural, id=f"observe-{_kind.plural}")(on_sluice_event)
