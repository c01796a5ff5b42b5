"""What the sidecar tells about each request: Prometheus metrics, response headers, audit records.

Owns the metric definitions (one ``CollectorRegistry`` per app, no globals), their names
(OpenTelemetry GenAI semantic conventions where one exists: ``gen_ai_client_operation_duration``,
``gen_ai_client_token_usage``, ``gen_ai_server_time_to_first_token``; ``sluice_*`` for the rest),
cost arithmetic and the JSON-lines audit record (one per request: who, what, how much, which
verdicts, which config; never a secret, and never any prompt or answer text unless the operator
of the sidecar switched prompts on). State that only matters when scraped (breaker states,
config health) is read by a custom collector at scrape time, so the hot path does not pay for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .contract import Backend, BackendState
from .exchange import Exchange, Try
from .providers.base import Usage

DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
_GENAI = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "sluice_backend")
_STATE_VALUES = {BackendState.HEALTHY: 0, BackendState.COOLING_DOWN: 1, BackendState.EJECTED: 2}


def cost_usd(backend: Backend, usage: Usage) -> float:
    """USD for ``usage`` at ``backend``'s prices. A pure function."""
    p = backend.pricing
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    return (
        (usage.input_tokens - cached) * p.input_per_mtok
        + cached * p.cached_input_per_mtok
        + usage.output_tokens * p.output_per_mtok
    ) / 1_000_000


def headers(ex: Exchange) -> dict[str, str]:
    """The ``x-sluice-*`` response headers for ``ex``."""
    out = {"x-request-id": ex.request_id}
    if ex.route is not None:
        out["x-sluice-route"] = ex.route.name
    if ex.backend is not None:
        out["x-sluice-backend"] = ex.backend.name
    if ex.attempts:
        out["x-sluice-attempts"] = str(ex.attempts)
    return out


def who_from_env(env: Mapping[str, str]) -> dict[str, str | None]:
    """Who the sidecar serves, from the injector's downward-API variables."""
    return {
        "namespace": env.get("POD_NAMESPACE") or None,
        "pod": env.get("POD_NAME") or None,
        "serviceAccount": env.get("POD_SERVICE_ACCOUNT") or None,
    }


def _try_record(t: Try) -> dict[str, Any]:
    return {
        "backend": t.backend.name,
        "provider": str(t.backend.provider),
        "model": t.backend.model,
        "result": t.result,
        "status": t.status if t.result != "ok" else 200,
        "reason": t.reason,
        "latencyMs": round(t.duration * 1000, 3),
    }


def audit_record(
    ex: Exchange,
    *,
    now_wall: float,
    now: float,
    config_hash: str | None,
    who: Mapping[str, str | None] | None = None,
    include_prompt: bool = False,
) -> dict[str, Any]:
    """The audit record of a finished request. A pure function; no prompt or answer text
    unless ``include_prompt``, and never a key (error reasons are codes, not messages)."""
    usage = ex.usage
    err = ex.error
    who = who or {}
    record = {
        "ts": round(now_wall, 3),
        "requestId": ex.request_id,
        "traceId": ex.trace.trace_id if ex.trace is not None else None,
        "namespace": who.get("namespace"),
        "pod": who.get("pod"),
        "serviceAccount": who.get("serviceAccount"),
        "api": ex.dialect.name if ex.dialect is not None else "openai",
        "operation": ex.operation,
        "model": ex.model if ex.route is not None else None,
        "route": ex.route.name if ex.route is not None else None,
        "routeSource": ex.route.source if ex.route is not None else None,
        "backend": ex.backend.name if ex.backend is not None else None,
        "provider": str(ex.backend.provider) if ex.backend is not None else None,
        "backendModel": ex.backend.model if ex.backend is not None else None,
        "stream": ex.stream,
        "status": ex.status,
        "outcome": ex.outcome,
        "errorType": err.type if err is not None else None,
        "errorCode": err.code if err is not None else None,
        "attempts": ex.attempts,
        "retries": ex.retries,
        "fallbacks": ex.fallbacks,
        "tries": [_try_record(t) for t in ex.tries],
        "prompt": ex.prompt_ref,
        "promptVersion": ex.prompt_version,
        "guardrails": ex.verdicts,
        "inputTokens": usage.input_tokens if usage else 0,
        "outputTokens": usage.output_tokens if usage else 0,
        "cachedInputTokens": usage.cached_input_tokens if usage else 0,
        "usageSource": usage.source if usage else None,
        "costUSD": round(cost_usd(ex.backend, usage), 8) if usage and ex.backend else 0.0,
        "durationMs": round((now - ex.started) * 1000, 3),
        "ttftMs": round(ex.ttft * 1000, 3) if ex.ttft is not None else None,
        "bytesIn": ex.bytes_in,
        "configHash": config_hash,
        **({"annotations": ex.annotations} if ex.annotations else {}),
    }
    if include_prompt:
        record["promptMessages"] = ex.body.get("messages")
    return record


class AuditSink(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...

    def flush(self) -> None: ...


class JsonLinesAudit:
    """Writes one compact JSON object per line to a text stream; flushed by the app's ticker."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, record: dict[str, Any]) -> None:
        self._stream.write(json.dumps(record, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        self._stream.flush()


class MemoryAudit:
    """Keeps records in a list (tests, embedding)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def flush(self) -> None:
        pass


class NullAudit:
    def write(self, record: dict[str, Any]) -> None:
        pass

    def flush(self) -> None:
        pass


@dataclass(slots=True)
class _Series:
    duration: Any
    tokens_in: Any
    tokens_out: Any
    ttft: Any
    cost: Any


#: (route, backend name, state) for every backend, read at scrape time.
HealthSource = Callable[[], Iterable[tuple[str, str, BackendState, int]]]


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "GenAI operation duration as the app sees it (sidecar in to sidecar out).",
            [*_GENAI, "error_type"],
            registry=registry,
            buckets=DURATION_BUCKETS,
        )
        self.tokens = Histogram(
            "gen_ai_client_token_usage",
            "Tokens used per operation, by gen_ai_token_type.",
            [*_GENAI, "gen_ai_token_type"],
            registry=registry,
            buckets=TOKEN_BUCKETS,
        )
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to the first streamed token (first frame) as measured by the sidecar.",
            _GENAI,
            registry=registry,
            buckets=TTFT_BUCKETS,
        )
        self.requests = Counter(
            "sluice_requests",
            "Client requests by route and final HTTP status.",
            ["route", "code", "outcome"],
            registry=registry,
        )
        self.attempts = Counter(
            "sluice_upstream_attempts",
            "Tries sent to backends, by result (ok or failure class).",
            ["route", "backend", "result"],
            registry=registry,
        )
        self.retries = Counter(
            "sluice_retries",
            "Extra tries against the same backend.",
            ["route", "backend"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "sluice_fallbacks",
            "Moves from a failed backend to the next one.",
            ["route", "from_backend", "to_backend", "reason"],
            registry=registry,
        )
        self.budget_exhausted = Counter(
            "sluice_retry_budget_exhausted",
            "Retries refused because the retry budget was spent.",
            ["route"],
            registry=registry,
        )
        self.ejections = Counter(
            "sluice_breaker_ejections",
            "Circuit breaker openings (backend ejected).",
            ["route", "backend"],
            registry=registry,
        )
        self.cost = Counter(
            "sluice_cost_usd",
            "Spend in USD at the configured prices.",
            ["route", "backend"],
            registry=registry,
        )
        self.stream_failures = Counter(
            "sluice_stream_failures",
            "Streams ended by an error after the first byte.",
            ["route", "backend", "reason"],
            registry=registry,
        )
        self.disconnects = Counter(
            "sluice_client_disconnects",
            "Requests the client abandoned before the answer ended.",
            ["route"],
            registry=registry,
        )
        self._series: dict[tuple[str, str, str, str], _Series] = {}
        self._children: dict[tuple[object, ...], Any] = {}

    def child(self, metric: Counter, *labels: str) -> Any:
        """``metric.labels(*labels)``, memoised: the hot path skips prometheus' label checks."""
        key = (metric, *labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c

    def series(self, op: str, provider: str, route: str, backend: str) -> _Series:
        key = (op, provider, route, backend)
        s = self._series.get(key)
        if s is None:
            s = self._series[key] = _Series(
                duration=self.duration.labels(op, provider, route, backend, ""),
                tokens_in=self.tokens.labels(op, provider, route, backend, "input"),
                tokens_out=self.tokens.labels(op, provider, route, backend, "output"),
                ttft=self.ttft.labels(op, provider, route, backend),
                cost=self.cost.labels(route, backend),
            )
        return s

    def finish(self, ex: Exchange, now: float) -> None:
        """Record a finished request."""
        route = ex.route.name if ex.route is not None else "unknown"
        self.child(self.requests, route, str(ex.status), ex.outcome).inc()
        if ex.outcome == "client_disconnected":
            self.disconnects.labels(route).inc()
        b = ex.backend
        if b is None or ex.route is None:
            return
        elapsed = now - ex.started
        if ex.error is not None:
            self.duration.labels(
                ex.operation, str(b.provider), route, b.name, ex.error.code or ex.error.type
            ).observe(elapsed)
            s = None
        else:
            s = self.series(ex.operation, str(b.provider), route, b.name)
            s.duration.observe(elapsed)
            if ex.ttft is not None and ex.stream:
                s.ttft.observe(ex.ttft)
        usage = ex.usage
        if usage is not None:
            if s is None:
                s = self.series(ex.operation, str(b.provider), route, b.name)
            s.tokens_in.observe(usage.input_tokens)
            if ex.operation == "chat":
                s.tokens_out.observe(usage.output_tokens)
            cost = cost_usd(b, usage)
            if cost:
                s.cost.inc(cost)


class StateCollector(Collector):
    """Scrape-time gauges: backend breaker states and config health."""

    def __init__(self, health: HealthSource, config: Callable[[], tuple[bool, bool, int, str]]):
        self._health = health
        self._config = config

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "sluice_backend_state",
            "Backend state: 0 Healthy, 1 CoolingDown (429), 2 Ejected (breaker open).",
            labels=["route", "backend"],
        )
        failures = GaugeMetricFamily(
            "sluice_backend_consecutive_failures",
            "Consecutive failures counted by the breaker.",
            labels=["route", "backend"],
        )
        for route, backend, st, consecutive in self._health():
            state.add_metric([route, backend], _STATE_VALUES[st])
            failures.add_metric([route, backend], consecutive)
        yield state
        yield failures
        loaded, valid, reload_failures, config_hash = self._config()
        yield GaugeMetricFamily(
            "sluice_config_loaded", "1 when a valid config is being served.", value=int(loaded)
        )
        yield GaugeMetricFamily(
            "sluice_config_valid",
            "0 when the latest config file could not be used (last good config kept).",
            value=int(valid),
        )
        yield CounterMetricFamily(
            "sluice_config_reload_failures",
            "Config files rejected since start.",
            value=reload_failures,
        )
        info = GaugeMetricFamily("sluice_config_info", "The config being served.", labels=["hash"])
        info.add_metric([config_hash], 1)
        yield info
