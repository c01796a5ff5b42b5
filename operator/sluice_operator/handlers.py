"""kopf glue only: wire watch events and the lifecycle to the reconciler and the injector.

Every Sluice object's watch event goes to ``Reconciler.observe``; the reconciler (a background
task started here) compiles and writes. Namespace events and each compiled config feed the
injector's in-memory cache, so the admission webhook never calls the API. kopf keeps its own
bookkeeping in annotations (``kopf.sluice.dev/*``), never in ``status`` - a strict CRD schema
would prune it there.
Start-up also opens the control-plane endpoint for sidecars and, unless ``--standalone``, starts
the leader election (``leader``): every replica watches, compiles and serves configs and the
webhook from its own caches; only the leader writes, takes reports and grants leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import kopf
from aiohttp import web

from . import controlplane, kube, leader, metrics
from .api import GROUP, KINDS, VERSION
from .compile import CompileResult
from .inject import InjectionCache, InjectorSettings
from .inject import decide as injection
from .inject import webhook as injector
from .leases import LeaseDesk, lease_ttl
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

    writer = kube.Kube(kube.load_client(kubeconfig_only=options.out_of_cluster))
    board = controlplane.ConfigBoard()
    cache = InjectionCache()

    def publish(namespace: str, result: CompileResult) -> None:
        board.publish(namespace, result)
        cache.set_config(namespace, result.config)

    reconciler = Reconciler(
        writer=writer,
        publish=publish,
        stored_config=writer.read_config,
        # Leases granted before this start are unknown: see LeaseDesk's grace.
        leases=LeaseDesk(ttl=lease_ttl(os.environ)),
    )
    memo["kube"] = writer
    memo["reconciler"] = reconciler
    memo["cache"] = cache
    memo["injector_settings"] = InjectorSettings.from_env(
        os.environ, operator_namespace=options.namespace, **_controlplane_ca(options)
    )
    memo["missed"] = set()
    # Until elected, a replica compiles and serves but writes nothing (``leader``).
    reconciler.leading = options.standalone
    await _initial_sync(writer, reconciler, cache)
    memo["task"] = asyncio.create_task(reconciler.run(), name="sluice-reconciler")
    await _start_webhook(options, cache, memo)

    auth = controlplane.Auth(review=writer.review_token)
    app = controlplane.create_app(board, auth, reconciler.take_report, reconciler.answer_leases)
    registry = metrics.build_registry(
        passes=lambda: reconciler.passes,
        api_requests=lambda: writer.requests,
        namespaces=lambda: len(reconciler.results),
        objects=lambda: len(reconciler.objects),
        problems=lambda: sum(len(r.problems) for r in reconciler.results.values()),
        sidecars=lambda: len(reconciler.reports.pods),
        token_reviews=lambda: auth.reviews,
        denials=lambda: auth.denials,
        requests=lambda: auth.requests,
        leader=lambda: float(reconciler.leading),
    )
    metrics.register_budgets(
        registry, lambda: reconciler.budget_windows, lambda: reconciler.crossings
    )
    metrics.register_quotas(registry, reconciler.quota_views)
    app.router.add_get("/metrics", metrics.handler(registry))
    # Sidecars hold long polls open here: a stop must not wait out aiohttp's default 60 s for
    # them (the sidecars reconnect, to this replica's successor, as after any network cut), and
    # the poll of a sidecar that went away ends with its connection, not 30 s later (handler
    # cancellation; reports and lease requests are idempotent, so a cancelled one costs nothing).
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0, handler_cancellation=True)
    await runner.setup()
    tls = None
    if options.controlplane_cert_dir:
        # The webhook's approach: files mounted from a Secret, reloaded into the live context
        # when the kubelet swaps them (new handshakes get the new certificate, no restart).
        certs = Path(options.controlplane_cert_dir)
        crt, key = str(certs / "tls.crt"), str(certs / "tls.key")
        tls = injector.ssl_context(crt, key)
        memo["controlplane_certs"] = asyncio.create_task(
            injector._reload_certs(tls, crt, key, 30.0), name="sluice-controlplane-certs"
        )
    elif not options.controlplane_insecure_http:
        raise kopf.PermanentError("the control plane needs --controlplane-cert-dir")
    else:
        log.warning("control plane in plain HTTP (--controlplane-insecure-http): development only")
    await web.TCPSite(
        runner, options.controlplane_host, options.controlplane_port, ssl_context=tls
    ).start()
    reconciler.leases.open(reconciler.wall())
    memo["runner"] = runner
    if not options.standalone:
        elector = leader.Elector(
            writer,
            options.namespace,
            options.leader_lease,
            on_lead=reconciler.lead,
            on_follow=reconciler.follow,
            duration=options.leader_lease_seconds,
        )
        memo["elector"] = asyncio.create_task(elector.run(), name="sluice-leader-election")
    log.info(
        "control plane for sidecars on %s://%s:%d",
        "https" if tls else "http",
        options.controlplane_host,
        options.controlplane_port,
    )


def _controlplane_ca(options: OperatorOptions) -> dict[str, str]:
    """The CA bundle injected sidecars trust for the control plane (``ca.crt`` of its cert dir)."""
    if not options.controlplane_cert_dir:
        return {}
    try:
        return {"control_plane_ca": (Path(options.controlplane_cert_dir) / "ca.crt").read_text()}
    except OSError as exc:
        log.warning("no ca.crt for injected sidecars (they will trust the system CAs): %s", exc)
        return {}


async def _initial_sync(writer: kube.Kube, reconciler: Reconciler, cache: InjectionCache) -> None:
    """List everything once and compile every namespace before the webhook says it is ready.

    kopf's watches deliver the same objects again right after; observing them twice is harmless.
    """
    for name, labels in await writer.list_namespaces():
        cache.upsert_namespace(name, labels)
    for kind in KINDS:
        for obj in await writer.list_objects(kind.plural):
            reconciler.observe(kind.plural, None, obj)
    for namespace in sorted({key[1] for key in reconciler.objects}):
        await reconciler.reconcile(namespace)
    cache.mark_synced()


async def _start_webhook(options: OperatorOptions, cache: InjectionCache, memo: Any) -> None:
    if not options.webhook_cert_dir:
        log.info("no --webhook-cert-dir: the injector webhook is off")
        return
    certs = Path(options.webhook_cert_dir)
    app = injector.create_webhook_app(memo["injector_settings"], cache)
    server = await injector.start_webhook(
        app,
        options.webhook_host,
        options.webhook_port,
        str(certs / "tls.crt"),
        str(certs / "tls.key"),
    )
    memo["webhook"] = server
    log.info("injector webhook on https://%s:%d/mutate-pods", options.webhook_host, server.port)


@kopf.on.event("", "v1", "namespaces", id="observe-namespaces")
async def on_namespace(*, type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    cache: InjectionCache = memo["cache"]
    name = str(body.get("metadata", {}).get("name"))
    if type == "DELETED":
        cache.remove_namespace(name)
    else:
        cache.upsert_namespace(name, dict(body.get("metadata", {}).get("labels") or {}))


@kopf.on.event("", "v1", "pods", id="observe-pods")
async def on_pod(*, type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    """An Event on each pod the webhook skipped (with the decision's reason), and on opted-in
    pods that were admitted without the sidecar (webhook down + Ignore). The leader's job."""
    reconciler: Reconciler = memo["reconciler"]
    if type not in (None, "ADDED") or not reconciler.leading:
        return
    meta = body.get("metadata", {})
    namespace, uid = str(meta.get("namespace")), str(meta.get("uid"))
    if uid in memo["missed"]:
        return
    cache: InjectionCache = memo["cache"]
    facts, settings = cache.namespace(namespace), memo["injector_settings"]
    writer: kube.Kube = memo["kube"]
    # Only for pods created while we run (the webhook that skipped them is ours): the start-up
    # listing (type None) would repeat the Events on every restart.
    skip = injection.skipped(body, namespace, facts, settings) if type == "ADDED" else None
    if skip is not None:
        memo["missed"].add(uid)
        await writer.event(body, "Warning", skip[0], skip[1])
        return
    reason = injection.missed(body, namespace, facts, settings)
    if reason is None:
        return
    memo["missed"].add(uid)
    await writer.event(body, "Warning", "NotInjected", reason)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    elector = memo.get("elector")
    if isinstance(elector, asyncio.Task):  # first: the Lease is given up while the API is there
        elector.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await elector
    for name in ("task", "controlplane_certs"):
        task = memo.get(name)
        if isinstance(task, asyncio.Task):
            task.cancel()
    server = memo.get("webhook")
    if isinstance(server, injector.WebhookServer):
        await server.close()
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
