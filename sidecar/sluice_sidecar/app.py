"""The composition root: the two aiohttp applications of the sidecar, the API (127.0.0.1) and the
admin port, and the stages every request passes.

Owns wiring only. ``default_stages`` declares the stages and their order — the one place it is
declared: the prompt template is rendered first, the input guardrails check what will really be
sent, and the budget reserves last (so it prices the rendered, redacted request); the guardrails'
output phases see every answer. ``create_app`` builds the API app around a ``Gateway`` (config
source, clock, randomness, secrets, audit sink, upstream session and stages are passed in or
defaulted here — by default the same stages a pod runs; tests pass ``stages=`` to narrow them;
state lives in ``web.AppKey``s; the upstream session, config watcher and audit flusher start and
stop in ``cleanup_ctx``); ``api_runner`` is how it is served (handler cancellation, the
request-head timeout). ``create_admin_app`` serves ``/healthz``, ``/readyz`` and ``/metrics``
from the same gateway. Handlers are thin: the request path is ``gateway``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from . import config_source, errors, gateway, podinfo, routing, tracing, translate, validate
from .budget import BudgetStage
from .clock import Clock, SystemClock
from .contract import Provider, SidecarConfig
from .credentials import Credentials
from .exchange import Exchange
from .gateway import GATEWAY, Gateway
from .gateway.body import read_body
from .guardrails import GuardrailStage
from .metering import AuditSink, Metrics, NullAudit, StateCollector, who_from_env
from .prompts import PromptStage
from .stage import Stage, Stages
from .translate import anthropic_anthropic

SessionFactory = Callable[[], aiohttp.ClientSession]
FinishCallback = Callable[[Exchange], None]
USER_AGENT = "sluice-sidecar"
API_PATHS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/models",
)
#: Seconds a client connection may take to send a complete request head, counted from its
#: opening or from the end of its previous answer (so also the idle keep-alive time).
HEADER_TIMEOUT = 60.0
#: After refusing a request whose body did not fully arrive (408, 413), aiohttp reads and drops
#: what still comes for this long, so the client can read the refusal, then closes (its default
#: is 10 s; the client is on the same host).
LINGERING_TIME = 2.0
#: aiohttp's own body limit; the configured limit (limits.maxRequestBytes) is enforced by the
#: pipeline while reading, so that a config change applies without a restart.
_CLIENT_MAX_SIZE = 1 << 40


def default_session() -> aiohttp.ClientSession:
    """Keep-alive pool without a per-host cap, no cookies, no client-wide timeout (per try).

    The User-Agent is our own rather than aiohttp's; it is set as a default header instead of
    skipping aiohttp's (``skip_auto_headers`` makes aiohttp rebuild a header dict per request).
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=30, keepalive_timeout=60),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
        headers={"User-Agent": USER_AGENT},
    )


class _OnFinish(Stage):
    """Calls a plain callback at ``on_finish`` (e.g. the control-plane usage reporter)."""

    name = "report"

    def __init__(self, callback: FinishCallback) -> None:
        self._callback = callback

    def on_finish(self, ex: Exchange) -> None:
        self._callback(ex)


def default_stages(
    source: config_source.ConfigSource,
    clock: Clock,
    pod_labels: Mapping[str, str],
    *,
    rng: random.Random | None = None,
    on_finish: Sequence[FinishCallback] = (),
) -> list[Stage]:
    """The stages of a sidecar, in order: prompt, guardrails, budget, then ``on_finish``
    callbacks (which see the settled request)."""
    budget = BudgetStage((), pod_labels, clock, ())
    source.subscribe(budget.on_config)
    return [
        PromptStage(rng or random.Random()),  # noqa: S311 - traffic split, not secrets
        GuardrailStage(pod_labels),
        budget,
        *(_OnFinish(cb) for cb in on_finish),
    ]


def create_app(
    config: str | Path | SidecarConfig | config_source.ConfigSource,
    *,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    secrets_dir: str | Path | None = None,
    audit: AuditSink | None = None,
    session_factory: SessionFactory | None = None,
    stages: Sequence[Stage] | None = None,
    on_finish: Sequence[FinishCallback] = (),
    pod_labels: Mapping[str, str] | None = None,
    registry: CollectorRegistry | None = None,
    audit_flush_seconds: float = 1.0,
    tracer: tracing.Exporter | None = None,
    who: Mapping[str, str | None] | None = None,
    audit_prompts: bool = False,
) -> web.Application:
    """The API application. ``config`` is a file path, a ``SidecarConfig`` or a ``ConfigSource``.
    ``stages`` defaults to ``default_stages`` (with ``on_finish`` callbacks last); ``pod_labels``
    to the pod's labels (``podinfo.pod_labels``, read once here); ``who`` to the pod's identity
    from the environment (``metering.who_from_env``)."""
    clock = clock or SystemClock()
    rng = rng or random.Random()  # noqa: S311 - jitter and weights, not secrets
    source = config_source.source_from(config)
    labels = dict(pod_labels) if pod_labels is not None else podinfo.pod_labels()
    if stages is None:
        stages = default_stages(source, clock, labels, rng=rng, on_finish=on_finish)
    registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
    gw = Gateway(
        source=source,
        clock=clock,
        rng=rng,
        credentials=Credentials(secrets_dir, clock),
        metrics=Metrics(registry),
        audit=audit or NullAudit(),
        stages=Stages(stages),
        tracer=tracer or tracing.NullExporter(),
        who=who if who is not None else who_from_env(os.environ),
        audit_prompts=audit_prompts,
        pod_labels=labels,
    )
    registry.register(StateCollector(gw.health, gw.config_health))
    app = web.Application(client_max_size=_CLIENT_MAX_SIZE)
    app[GATEWAY] = gw
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/v1/embeddings", _embeddings)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_post("/v1/responses", _responses)
    app.router.add_post("/v1/messages", _messages)
    app.router.add_post("/v1/messages/count_tokens", _count_tokens)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/models/{id:.+}", _model)
    app.router.add_route("*", "/{tail:.*}", _not_found)
    app.cleanup_ctx.append(_lifecycle(session_factory or default_session, audit_flush_seconds))
    return app


def quota_keeper(gw: Gateway) -> routing.QuotaKeeper:
    """The provider quota shares of ``gw``'s routes (``routing.QuotaKeeper``), for the lease
    keeper to ask for: it walks the limited backends of the routes this pod serves."""

    def limiters(now: float) -> Iterator[tuple[str, str, routing.BackendLimiter]]:
        snap = gw.snapshot
        if snap is None:
            return
        for route in snap.routes.values():
            if not any(routing.limited(b) for b in route.backends):
                continue
            state = gw.route_state(route)
            for b in route.backends:
                lim = routing.limiter(state, b, now)
                if lim is not None:
                    yield route.name, b.name, lim

    return routing.QuotaKeeper(limiters)


def api_runner(
    app: web.Application, *, header_timeout: float = HEADER_TIMEOUT, shutdown_timeout: float = 10.0
) -> web.AppRunner:
    """The runner that serves the API app: a client that goes away cancels its handler (and so
    its upstream request); no access log (the audit record is the log); a connection that has
    not sent a complete request head within ``header_timeout`` seconds is closed, and one whose
    body was refused is closed at most ``LINGERING_TIME`` after the refusal.

    The head bound is aiohttp's keep-alive timer, which runs from a connection's opening (aiohttp
    3.14+) or the end of its previous answer until a whole request head has arrived, and so also
    ends connections idle for that long. aiohttp has no timer for request bodies: the pipeline
    bounds those (``limits.bodyTimeout``). On stop, requests in flight get ``shutdown_timeout``
    seconds to finish.
    """
    return _ApiRunner(
        app,
        shutdown_timeout=shutdown_timeout,
        handler_cancellation=True,
        access_log=None,
        keepalive_timeout=header_timeout,
        lingering_time=LINGERING_TIME,
    )


#: The longest request path echoed in an error message.
_ECHO = 120


def _echo(text: str) -> str:
    return text if len(text) <= _ECHO else text[:_ECHO] + "…"


class _ApiRequestHandler(RequestHandler):
    """aiohttp's connection handler with its own refusals (a bad request line, method or header,
    a head that is too large) answered in the API's error shape — Anthropic's for
    ``/v1/messages``, OpenAI's elsewhere — and logged in one debug line: a client's bad input is
    not the sidecar's error and must not flood the log with tracebacks."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            self.log_exception("Error handling request", exc_info=exc)
        else:
            self.logger.debug("refused a malformed request: %s", type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send the error")
        detail = errors.sanitise(message or (str(exc) if exc else "") or "malformed request")
        err: errors.SluiceError = errors.RequestError(
            f"The HTTP request could not be read: {_echo(detail)}."
        )
        err.status, err.code = status, "malformed_request"
        if status >= 500:
            err = errors.internal_error()
        api = translate.ANTHROPIC if request.path.startswith("/v1/messages") else translate.OPENAI
        resp = web.Response(
            status=status, body=api.error_body(err), content_type="application/json"
        )
        resp.force_close()
        return resp


class _ApiServer(Server):
    def __call__(self) -> RequestHandler:
        return _ApiRequestHandler(self, loop=self._loop, **self._kwargs)


class _ApiRunner(web.AppRunner):
    """An ``AppRunner`` whose connections are handled by ``_ApiRequestHandler``."""

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = _ApiServer
        return server


def _lifecycle(
    session_factory: SessionFactory, flush_every: float
) -> Callable[[web.Application], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        gw = app[GATEWAY]
        session = session_factory()
        gw.start(session)
        tasks = [
            asyncio.create_task(gw.source.run(), name="sluice-config-watch"),
            asyncio.create_task(_flush_audit(gw, flush_every), name="sluice-audit-flush"),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            gw.audit.flush()
            await asyncio.to_thread(gw.tracer.shutdown)  # flushes batched spans
            await session.close()

    return ctx


async def _flush_audit(gw: Gateway, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        gw.audit.flush()


async def _chat(request: web.Request) -> web.StreamResponse:
    return await gateway.handle(request.app[GATEWAY], request, "chat")


async def _embeddings(request: web.Request) -> web.StreamResponse:
    return await gateway.handle(request.app[GATEWAY], request, "embeddings")


async def _completions(request: web.Request) -> web.StreamResponse:
    return await gateway.handle(request.app[GATEWAY], request, "completions", translate.COMPLETIONS)


async def _messages(request: web.Request) -> web.StreamResponse:
    return await gateway.handle(request.app[GATEWAY], request, "chat", translate.ANTHROPIC)


async def _responses(request: web.Request) -> web.StreamResponse:
    return await gateway.handle(request.app[GATEWAY], request, "chat", translate.RESPONSES)


async def _count_tokens(request: web.Request) -> web.StreamResponse:
    """``POST /v1/messages/count_tokens``: passed through to the route's first backend when it is
    Anthropic's (``anthropic_anthropic.COUNT_TOKENS``), else the sidecar's estimate (characters
    / 4; the answer says so in ``x-sluice-estimated``). Free: no budget, no audit record."""
    gw = request.app[GATEWAY]
    api = translate.ANTHROPIC
    ex = Exchange(os.urandom(12).hex(), "chat", gw.clock.now(), client=api)
    try:
        snap = gw.snapshot
        if snap is None:
            raise errors.NotReady("The Sluice sidecar has no valid config yet.")
        ex.limits = snap.config.limits
        raw = await read_body(request, ex.limits.max_request_bytes, ex.limits.body_timeout)
        obj = validate.parse_object(raw)
        model = anthropic_anthropic.check_count(obj)
        route = snap.routes.get(model)
        if route is None:
            raise errors.UnknownModel(model, list(snap.routes))
        backend = min(route.backends, key=lambda b: b.priority)
        if backend.provider is not Provider.ANTHROPIC:
            body = anthropic_anthropic.estimate_count(obj)
            return web.Response(
                body=body, content_type="application/json", headers={"x-sluice-estimated": "true"}
            )
        ex.native, ex.route = obj, route
        ex.client_headers = {h: v for h in api.forward_headers if (v := request.headers.get(h))}
        call = gw.make_call(ex, route, backend)
        async with asyncio.timeout(route.timeouts.total):
            up = await gw.transports[Provider.ANTHROPIC].open(
                call, anthropic_anthropic.COUNT_TOKENS
            )
            body = await up.read()
        up.release()
        return web.Response(body=body, content_type="application/json")
    except TimeoutError:
        err: errors.SluiceError = errors.UpstreamTimeout("count_tokens timed out.")
    except errors.SluiceError as exc:
        err = exc
    return web.Response(
        status=api.error_status(err),
        body=api.error_body(err),
        content_type="application/json",
        headers=err.headers(),
    )


async def _model(request: web.Request) -> web.StreamResponse:
    """``GET /v1/models/{id}``: one model (a route name) of ``/v1/models``."""
    snap = request.app[GATEWAY].snapshot
    if snap is None:
        return _error(errors.NotReady("The Sluice sidecar has no valid config yet."))
    name = request.match_info["id"]
    if name not in snap.routes:
        return _error(errors.UnknownModel(name, list(snap.routes)))
    body = {"id": name, "object": "model", "created": 0, "owned_by": "sluice"}
    return web.json_response(body)


async def _models(request: web.Request) -> web.StreamResponse:
    snap = request.app[GATEWAY].snapshot
    if snap is None:
        return _error(errors.NotReady("The Sluice sidecar has no valid config yet."))
    return web.Response(body=snap.models_body, content_type="application/json")


async def _not_found(request: web.Request) -> web.StreamResponse:
    if request.path in API_PATHS:
        err = errors.RequestError(
            f"Method {_echo(request.method)} is not allowed on {request.path}."
        )
        err.status, err.code = 405, "method_not_allowed"
    else:
        err = errors.RequestError(
            f"Unknown endpoint {_echo(request.method)} {_echo(request.path)}; this sidecar serves "
            f"{', '.join(API_PATHS)}."
        )
        err.status, err.code = 404, "unknown_url"
    return _error(err)


def _error(err: errors.SluiceError) -> web.Response:
    return web.Response(
        status=err.status,
        body=errors.error_body(err),
        content_type="application/json",
        headers=err.headers(),
    )


# --- admin --------------------------------------------------------------------------------------


def create_admin_app(
    api: web.Application,
    registry: CollectorRegistry | None = None,
) -> web.Application:
    """Health, readiness and metrics for the gateway of ``api`` (a separate port)."""
    gw = api[GATEWAY]
    reg = registry if registry is not None else gw.metrics.registry
    admin = web.Application()
    admin[GATEWAY] = gw

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        snap = gw.snapshot
        body = {
            "ready": snap is not None,
            "configHash": snap.hash if snap else None,
            "configError": gw.source.error,
        }
        return web.Response(
            status=200 if snap is not None else 503,
            text=json.dumps(body),
            content_type="application/json",
        )

    async def metrics(request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(reg))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    admin.router.add_get("/healthz", healthz)
    admin.router.add_get("/readyz", readyz)
    admin.router.add_get("/metrics", metrics)
    return admin
