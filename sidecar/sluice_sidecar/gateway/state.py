"""The sidecar's live state: the current config snapshot, routing state, stages, transports, sinks.

Owns ``Gateway``, the one object the request path reads (it lives in the app under a
``web.AppKey``; there are no module globals), and ``Snapshot``, the derived, immutable view of a
config that is swapped in whole when the config changes, so a request sees one config from start
to end. Routing state (breakers, EWMAs, retry budgets) survives config swaps per route and backend
name. ``Gateway.finish`` is where every request ends: metrics, the stages' ``on_finish``, the
audit record and the spans.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from .. import errors, podinfo, routing, tracing, translate
from ..clock import Clock
from ..config_source import ConfigSource
from ..contract import Backend, BackendState, Provider, Route, SidecarConfig
from ..credentials import Credentials
from ..exchange import Exchange
from ..metering import AuditSink, JsonLinesAudit, Metrics, NullAudit, audit_line, audit_record
from ..stage import Stages
from ..translate import Call, Translator
from ..upstream import Transport
from ..upstream.http import HttpTransport
from ..upstream.mock import MockTransport
from ..upstream.scrub import Scrubber

log = logging.getLogger("sluice.gateway")


@dataclass(frozen=True, slots=True)
class Snapshot:
    config: SidecarConfig
    hash: str
    routes: Mapping[str, Route]
    models_body: bytes


def snapshot_of(config: SidecarConfig, pod_labels: Mapping[str, str] | None = None) -> Snapshot:
    """The request-time view of ``config`` for a pod with ``pod_labels``: routes whose
    ``workloadSelector`` the pod does not match are not offered (unknown model). Pure."""
    labels = pod_labels or {}
    usable = [r for r in config.routes if podinfo.matches(r.workload_selector, labels)]
    routes = {r.name: r for r in usable}
    models = {
        "object": "list",
        "data": [
            {"id": r.name, "object": "model", "created": 0, "owned_by": "sluice"} for r in usable
        ],
    }
    return Snapshot(config, config.content_hash(), routes, json.dumps(models).encode())


@dataclass(slots=True)
class _RouteEntry:
    retry_key: tuple[float, float]
    state: routing.RouteState


@dataclass
class Gateway:
    source: ConfigSource
    clock: Clock
    rng: random.Random
    credentials: Credentials
    metrics: Metrics
    audit: AuditSink
    #: The stages, in their declared order (``app.default_stages``); a request passes those of
    #: its config (``Stages.live``: without the stages idle for it).
    stages: Stages = field(default_factory=lambda: Stages(()))
    #: Span export (``tracing``); off unless an OTLP endpoint is configured.
    tracer: tracing.Exporter = field(default_factory=tracing.NullExporter)
    #: Who this sidecar serves (namespace, pod, serviceAccount): stamped on every audit record.
    who: Mapping[str, str | None] = field(default_factory=dict)
    #: Put the prompt's messages in the audit record (off: never any prompt text).
    audit_prompts: bool = False
    #: The pod's labels (downward API): routes' ``workloadSelector`` is matched against them.
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    snapshot: Snapshot | None = None
    transports: dict[Provider, Transport] = field(default_factory=dict)
    #: Gemini thought signatures behind the short tool-call ids clients see.
    signatures: translate.SignatureStore = field(default_factory=translate.SignatureStore)
    _routes: dict[str, _RouteEntry] = field(default_factory=dict)
    _auditing: bool = field(default=True, init=False)
    #: The event loop that serves the requests (set by ``start``), so the request path need not
    #: ask ``asyncio.get_running_loop`` (a ``getpid`` system call each time) per request.
    loop: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._auditing = not isinstance(self.audit, NullAudit)
        self.source.subscribe(self._on_config)

    def _on_config(self, config: SidecarConfig) -> None:
        snap = snapshot_of(config, self.pod_labels)
        for route in config.routes:
            key = (route.retry.budget_ratio, route.retry.budget_min_per_second)
            entry = self._routes.get(route.name)
            if entry is None or entry.retry_key != key:
                state = routing.new_state(route)
                if entry is not None:  # backends' health and quota buckets (with the share the
                    # operator leased them) outlive a new retry budget; a limiter whose limits
                    # changed is rebuilt when next used (``routing``)
                    names = {b.name for b in route.backends}
                    old = entry.state
                    state.health.update({k: v for k, v in old.health.items() if k in names})
                    state.limiters.update({k: v for k, v in old.limiters.items() if k in names})
                self._routes[route.name] = _RouteEntry(key, state)
        for name in list(self._routes):
            if name not in snap.routes:
                del self._routes[name]
        self.stages.live(config)  # worked out now, not by the first request of the config
        self.snapshot = snap

    def start(self, session: aiohttp.ClientSession) -> None:
        with contextlib.suppress(RuntimeError):  # started outside a loop: the path asks asyncio
            self.loop = asyncio.get_running_loop()
        http = HttpTransport(session, self.clock, Scrubber(self.credentials.known))
        self.transports = {p: http for p in Provider if p is not Provider.MOCK}
        self.transports[Provider.MOCK] = MockTransport(self.clock, self.rng)

    def route_state(self, route: Route) -> routing.RouteState:
        entry = self._routes.get(route.name)
        if entry is None:  # a route from a snapshot that was swapped out mid-request
            entry = self._routes[route.name] = _RouteEntry(
                (route.retry.budget_ratio, route.retry.budget_min_per_second),
                routing.new_state(route),
            )
        return entry.state

    def resolve(self, snap: Snapshot, ex: Exchange) -> Route:
        """The route of ``ex.model``: 404 when there is none, 400 when none of its backends can
        serve the operation (embeddings on a route of chat-only providers)."""
        route = snap.routes.get(ex.model)
        if route is None:
            raise errors.UnknownModel(ex.model, list(snap.routes))
        if ex.operation != "chat" and not any(
            (tr := translate.pick(ex.client, b.provider, native=False)) is not None
            and ex.operation in tr.backend.operations
            for b in route.backends
        ):
            raise errors.InvalidField(
                "model",
                f"route '{route.name}' has no backend that serves {ex.operation} (its providers: "
                f"{', '.join(sorted({str(b.provider) for b in route.backends}))})",
            )
        return route

    def translator(self, ex: Exchange, backend: Backend) -> Translator:
        """The translator for a try of ``ex`` against ``backend``."""
        tr = translate.pick(ex.client, backend.provider, native=ex.native is not None)
        if tr is None or backend.provider not in self.transports:
            raise errors.UnsupportedProvider(
                f"Backend '{backend.name}' uses provider '{backend.provider}', which "
                "this sidecar version cannot speak yet.",
                backend=backend.name,
            )
        return tr

    def make_call(
        self, ex: Exchange, route: Route, backend: Backend, span_id: str | None = None
    ) -> Call:
        key = (
            self.credentials.get(backend.credentials, backend.name)
            if backend.credentials is not None
            else None
        )
        limits = ex.limits
        return Call(
            ex.operation,
            route,
            backend,
            ex.body,
            ex.stream,
            ex.client_wants_usage,
            key,
            ex.request_id,
            limits.default_max_tokens,
            ex.native,
            tracing.upstream_headers(ex.trace, span_id) if ex.trace is not None else {},
            limits.max_response_bytes,
            ex.client_headers,
            self.signatures,
        )

    def finish(self, ex: Exchange) -> None:
        """The stages' ``on_finish`` (budget settlement, run totals, the guardrail verdicts of
        classifiers never asked), then the metrics, the audit record and the spans of a finished
        request, which all see what the stages added. Never raises: each part runs whatever the
        others did, a failure is logged in one line (never with the exchange's or the config's
        repr), and an audit record that cannot be built is replaced by a minimal one. The
        stages are those the request passed: those of its config (``Stages.live``)."""
        now = self.clock.now()
        now_wall = self.clock.wall()
        config_hash = self.snapshot.hash if self.snapshot else None
        for stage in self.stages.live(ex.config).finish:
            try:
                stage.on_finish(ex)
            except Exception as exc:  # a stage must never fail a request's finish
                _failed(f"stage {stage.name}", ex, exc)
        cost = None
        try:
            cost = self.metrics.finish(ex, now)
        except Exception as exc:
            _failed("metrics", ex, exc)
        if self._auditing:
            try:
                self._audit(ex, now_wall, now, config_hash, cost)
            except Exception as exc:
                _failed("audit record", ex, exc)
                with contextlib.suppress(Exception):
                    self.audit.write(_minimal_record(ex, now_wall, config_hash))
        if self.tracer.enabled:
            try:
                self.tracer.export(
                    tracing.spans(ex, now_wall=now_wall, now=now, config_hash=config_hash)
                )
            except Exception as exc:  # an exporter must never fail a request
                _failed("span export", ex, exc)

    def _audit(
        self,
        ex: Exchange,
        now_wall: float,
        now: float,
        config_hash: str | None,
        cost: float | None = None,
    ) -> None:
        audit = self.audit
        if isinstance(audit, JsonLinesAudit):
            audit.write_line(
                audit_line(
                    ex,
                    now_wall=now_wall,
                    now=now,
                    config_hash=config_hash,
                    who=self.who,
                    include_prompt=self.audit_prompts,
                    cost=cost,
                )
            )
        else:
            audit.write(
                audit_record(
                    ex,
                    now_wall=now_wall,
                    now=now,
                    config_hash=config_hash,
                    who=self.who,
                    include_prompt=self.audit_prompts,
                )
            )

    def health(self) -> Iterator[tuple[str, str, BackendState, int]]:
        snap = self.snapshot
        if snap is None:
            return
        now = self.clock.now()
        for route in snap.routes.values():
            state = self.route_state(route)
            for backend, st, h in routing.health_report(route, state, now):
                yield route.name, backend.name, st, h.consecutive_failures

    def config_health(self) -> tuple[bool, bool, int, str]:
        s = self.source
        return (self.snapshot is not None, s.error is None, s.reload_failures, s.current_hash or "")


def _failed(what: str, ex: Exchange, exc: Exception) -> None:
    log.error("%s failed for request %s: %s", what, ex.request_id, type(exc).__name__, exc_info=exc)


def _minimal_record(ex: Exchange, now_wall: float, config_hash: str | None) -> dict[str, Any]:
    """The audit record of a request whose full record could not be built."""
    return {
        "ts": round(now_wall, 3),
        "requestId": ex.request_id,
        "route": ex.route.name if ex.route is not None else None,
        "backend": ex.backend.name if ex.backend is not None else None,
        "status": ex.status,
        "outcome": ex.outcome,
        "errorCode": ex.error.code if ex.error is not None else None,
        "auditIncomplete": True,
        "configHash": config_hash,
    }


GATEWAY: web.AppKey[Gateway] = web.AppKey("sluice_gateway", Gateway)
