"""The injector's HTTPS service: a thin aiohttp shell around ``admission.review``.

Owns the routes (``POST /mutate-pods``, ``GET /healthz``, ``GET /readyz``), the TLS context and its
reload when the mounted certificate Secret changes (rotation without a restart), and the hand-off
of each non-dry-run outcome to an optional recorder (the operator turns those into logs, metrics
or Events later, off the admission path). It makes no Kubernetes API calls: everything it needs is
in the ``InjectionCache`` passed in. It must not grow logic; decisions live in ``decide``, patches
in ``patch``, the protocol in ``admission``.

``/readyz`` is 503 until the cache is synced, so a fresh replica takes no admission traffic (the
Service only routes to ready pods) before it knows the namespaces' labels and Secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from . import admission
from .admission import Outcome
from .cache import InjectionCache
from .settings import InjectorSettings

PATH = "/mutate-pods"
#: A pod is at most ~1.5 MB in etcd; a review carries it (and may carry the old object) as JSON.
MAX_BODY_BYTES = 4 * 1024 * 1024

Recorder = Callable[[Outcome], None]
logger = logging.getLogger("sluice.injector")


@dataclass(frozen=True)
class _State:
    settings: InjectorSettings
    cache: InjectionCache
    recorder: Recorder | None


STATE = web.AppKey("sluice_injector_state", _State)


async def _mutate(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        return web.Response(status=400, text=f"the body is not JSON: {exc}\n")
    try:
        answer, outcome = admission.review(body, state.settings, state.cache)
    except admission.MalformedReviewError as exc:
        return web.Response(status=400, text=f"not an AdmissionReview v1 request: {exc}\n")
    _log(outcome)
    if state.recorder is not None and not outcome.dry_run:
        try:
            state.recorder(outcome)
        except Exception:
            logger.exception("the decision recorder failed (the answer is unaffected)")
    return web.json_response(answer)


def _log(outcome: Outcome) -> None:
    where = f"{outcome.namespace}/{outcome.pod}" + (" (dry run)" if outcome.dry_run else "")
    if outcome.error is not None:
        verdict = "admitted unchanged" if outcome.allowed else "denied"
        logger.error("injector error for %s: %s; %s", where, outcome.error, verdict)
    elif outcome.decision is not None:
        level = logging.INFO if outcome.decision.inject else logging.DEBUG
        logger.log(level, "%s: %s (%d ops)", where, outcome.decision.summary, len(outcome.patch))


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    if request.app[STATE].cache.synced:
        return web.Response(text="ok\n")
    return web.Response(status=503, text="namespace cache not synced yet\n")


def create_webhook_app(
    settings: InjectorSettings,
    cache: InjectionCache,
    *,
    recorder: Recorder | None = None,
) -> web.Application:
    """The webhook application. ``recorder`` sees every outcome except dry runs'."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[STATE] = _State(settings, cache, recorder)
    app.router.add_post(PATH, _mutate)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    return app


# ----------------------------------------------------------------------------------------------
# Serving over TLS
# ----------------------------------------------------------------------------------------------


def ssl_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A server context (TLS 1.2+) with the certificate loaded."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


def _stamp(*paths: str) -> tuple[tuple[int, int, int], ...]:
    out = []
    for path in paths:
        st = os.stat(path)  # follows the kubelet's ..data symlink swap
        out.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


@dataclass
class WebhookServer:
    """A running webhook: its bound port, and ``close()``."""

    runner: web.AppRunner
    context: ssl.SSLContext
    port: int
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.runner.cleanup()


async def _reload_certs(ctx: ssl.SSLContext, certfile: str, keyfile: str, interval: float) -> None:
    """Reload the certificate into the live context when the files change; new handshakes use
    the new one, open connections keep theirs. A half-written pair is retried next round."""
    try:
        seen = _stamp(certfile, keyfile)
    except OSError:
        seen = ()
    while True:
        await asyncio.sleep(interval)
        try:
            now = _stamp(certfile, keyfile)
            if now == seen:
                continue
            ctx.load_cert_chain(certfile, keyfile)
            seen = now
            logger.info("reloaded the webhook certificate from %s", certfile)
        except (OSError, ssl.SSLError) as exc:
            logger.warning("could not reload the webhook certificate (keeping the old): %s", exc)


async def start_webhook(
    app: web.Application,
    host: str,
    port: int,
    certfile: str,
    keyfile: str,
    *,
    reload_interval: float = 30.0,
) -> WebhookServer:
    """Start serving ``app`` over HTTPS; ``port=0`` picks a free port (see ``.port``)."""
    ctx = ssl_context(certfile, keyfile)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ctx)
    await site.start()
    bound = port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            bound = int(address[1])
            break
    server = WebhookServer(runner=runner, context=ctx, port=bound)
    server._tasks.append(
        asyncio.create_task(_reload_certs(ctx, certfile, keyfile, reload_interval))
    )
    logger.info("injector webhook listening on https://%s:%d%s", host, bound, PATH)
    return server
