"""What the sidecar tells about each request: Prometheus metrics, response headers, audit records.

Owns the metric definitions (one ``CollectorRegistry`` per app, no globals), their names
(OpenTelemetry GenAI semantic conventions where one exists: ``gen_ai_client_operation_duration``,
``gen_ai_client_token_usage``, ``gen_ai_server_time_to_first_token``; ``sluice_*`` for the rest),
the JSON-lines audit record (one per request: who, what, how much, which
verdicts, which config; never a secret, and never any prompt or answer text unless the operator
of the sidecar switched prompts on). State that only matters when scraped (breaker states,
config health) is read by a custom collector at scrape time, so the hot path does not pay for it.
The metrics every request touches (the GenAI histograms, requests, attempts, cost) are
``LoopHistogram`` / ``LoopCounter``: plain arithmetic on the event loop's thread, no locks and no
label validation per update, turned into Prometheus families when scraped (the admin app runs on
the same loop). Building the audit record is skipped when its sink is ``NullAudit``; the JSON-lines
sink gets its lines straight from a template (``audit_line``) instead of an encoded dict.
"""

from __future__ import annotations

import json
import math
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import IO, Any, Protocol

from prometheus_client import CollectorRegistry, Counter
from prometheus_client import utils as prometheus_utils
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .contract import Backend, BackendState, Route
from .errors import SluiceError
from .exchange import Exchange, Try
from .model import cost_usd

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


_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


def headers(ex: Exchange) -> dict[str, str]:
    """The ``x-sluice-*`` response headers for ``ex``."""
    out = {"x-request-id": ex.request_id}
    if ex.route is not None:
        out["x-sluice-route"] = ex.route.name
    if ex.backend is not None:
        out["x-sluice-backend"] = ex.backend.name
    if ex.attempts:
        out["x-sluice-attempts"] = str(ex.attempts)
    if ex.prompt_ref is not None and ex.prompt_version is not None:
        out["x-sluice-prompt-version"] = f"{ex.prompt_ref.partition('@')[0]}@{ex.prompt_version}"
    return out


def who_from_env(env: Mapping[str, str]) -> dict[str, str | None]:
    """Who the sidecar serves, from the injector's downward-API variables."""
    return {
        "namespace": env.get("POD_NAMESPACE") or None,
        "pod": env.get("POD_NAME") or None,
        "serviceAccount": env.get("POD_SERVICE_ACCOUNT") or None,
    }


def _try_record(t: Try) -> dict[str, Any]:
    b = t.backend
    ok = t.result == "ok"
    return {
        "backend": b.name,
        "provider": str(b.provider),
        "model": b.model,
        "result": t.result,
        "status": 200 if ok else t.status,
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
    route = ex.route
    b = ex.backend
    who = who or {}
    record = {
        "ts": round(now_wall, 3),
        "requestId": ex.request_id,
        "traceId": ex.trace.trace_id if ex.trace is not None else None,
        "namespace": who.get("namespace"),
        "pod": who.get("pod"),
        "serviceAccount": who.get("serviceAccount"),
        "api": ex.client.name,
        "operation": ex.operation,
        "model": ex.model if route is not None else None,
        "route": route.name if route is not None else None,
        "routeSource": route.source if route is not None else None,
        "backend": b.name if b is not None else None,
        "provider": str(b.provider) if b is not None else None,
        "backendModel": b.model if b is not None else None,
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
        "costUSD": round(cost_usd(b, usage), 8) if usage and b is not None else 0.0,
        "durationMs": round((now - ex.started) * 1000, 3),
        "ttftMs": round(ex.ttft * 1000, 3) if ex.ttft is not None else None,
        "bytesIn": ex.bytes_in,
        "configHash": config_hash,
    }
    if ex.annotations:
        record["annotations"] = ex.annotations
    if include_prompt:
        record["promptMessages"] = ex.body.get("messages")
    return record


_ESC = encode_basestring_ascii  # json's own string escaping (C)
#: The fields from ``namespace`` to ``backendModel``, which depend only on who, the client API,
#: the operation, the model asked for, the route and the backend.
_WHERE = (
    '"namespace":%s,"pod":%s,"serviceAccount":%s,"api":%s,"operation":%s,"model":%s,'
    '"route":%s,"routeSource":%s,"backend":%s,"provider":%s,"backendModel":%s,'
)
#: Those fields, formatted, by their inputs (route and backend by identity: the frozen config
#: objects, kept in the value so their ids stay theirs); and the head of a try's record by
#: its backend (alone, and with the fields of a try that worked). Cleared when full (a config
#: swap brings new objects).
_WHERE_MEMO: dict[tuple[Any, ...], tuple[Route | None, Backend | None, str]] = {}
_TRY_MEMO: dict[int, tuple[Backend, str, str]] = {}
_MEMO_SIZE = 512


def _js(value: str | None) -> str:
    return "null" if value is None else _ESC(value)


def _jn(value: float | None) -> str:
    return "null" if value is None else repr(value)


def _r3(value: float) -> str:
    """``repr(round(value, 3))``, several times cheaper: ``%.3f`` rounds exactly as ``round``
    does (both are correctly rounded), and a number of at most 15 significant digits is its
    own shortest repr once the trailing zeros are gone. Anything else takes ``round``."""
    if -1e11 < value < 1e11:
        text = (_F3 % value).rstrip("0")
        return text + "0" if text[-1] == "." else text
    return repr(round(value, 3))


_F3 = "%.3f"


def _try_line(t: Try) -> str:
    b = t.backend
    hit = _TRY_MEMO.get(id(b))
    if hit is None or hit[0] is not b:
        head = f'{{"backend":{_ESC(b.name)},"provider":{_ESC(b.provider)},"model":{_ESC(b.model)},'
        if len(_TRY_MEMO) >= _MEMO_SIZE:
            _TRY_MEMO.clear()
        hit = _TRY_MEMO[id(b)] = (b, head, head + '"result":"ok","status":200,"reason":null,')
    result = t.result
    if result == "ok" and t.reason is None:
        return f'{hit[2]}"latencyMs":{_r3(t.duration * 1000)}}}'
    status = "200" if result == "ok" else _jn(t.status)
    return (
        f'{hit[1]}"result":{_ESC(result)},"status":{status},"reason":{_js(t.reason)},'
        f'"latencyMs":{_r3(t.duration * 1000)}}}'
    )


def _where(
    ex: Exchange, route: Route | None, b: Backend | None, who: Mapping[str, str | None]
) -> str:
    """The ``_WHERE`` fields of ``ex``'s record."""
    namespace, pod, account = who.get("namespace"), who.get("pod"), who.get("serviceAccount")
    key = (namespace, pod, account, ex.client.name, ex.operation, ex.model, id(route), id(b))
    hit = _WHERE_MEMO.get(key)
    if hit is not None and hit[0] is route and hit[1] is b:
        return hit[2]
    text = _WHERE % (
        _js(namespace),
        _js(pod),
        _js(account),
        _ESC(ex.client.name),
        _ESC(ex.operation),
        _ESC(ex.model) if route is not None else "null",
        _ESC(route.name) if route is not None else "null",
        _ESC(route.source) if route is not None else "null",
        _ESC(b.name) if b is not None else "null",
        _ESC(b.provider) if b is not None else "null",
        _ESC(b.model) if b is not None else "null",
    )
    if len(_WHERE_MEMO) >= _MEMO_SIZE:
        _WHERE_MEMO.clear()
    _WHERE_MEMO[key] = (route, b, text)
    return text


def audit_line(
    ex: Exchange,
    *,
    now_wall: float,
    now: float,
    config_hash: str | None,
    who: Mapping[str, str | None] | None = None,
    include_prompt: bool = False,
    cost: float | None = None,
) -> str:
    """``audit_record`` as one compact JSON line (``json.dumps(audit_record(…),
    separators=(",", ":"))``), written straight from the exchange into one f-string: the
    record has a fixed shape, and this is several times cheaper than building and encoding the
    dict. The fields that only depend on the route and backend (``_where``), the head of
    each try's record, and the fields from ``stream`` to ``fallbacks`` of a request that worked
    at its first try (``_OUTCOMES``) are formatted once and remembered; ``cost`` is
    ``cost_usd(backend, usage)`` when the caller has it already. A test keeps the two equal. A
    pure function (its memo only saves work). The integer fields are ``int`` (an ``Exchange``
    holds no other)."""
    usage = ex.usage
    err = ex.error
    route = ex.route
    b = ex.backend
    tail = ""
    if ex.annotations:
        tail = ',"annotations":' + _ENCODE(ex.annotations)
    if include_prompt:
        tail += ',"promptMessages":' + _ENCODE(ex.body.get("messages"))
    tries = ex.tries
    ttft = ex.ttft
    if usage is not None:
        tokens_in, tokens_out = usage.input_tokens, usage.output_tokens
        cached, source = usage.cached_input_tokens, _ESC(usage.source)
        usd = 0.0 if b is None else round(cost_usd(b, usage) if cost is None else cost, 8)
    else:
        tokens_in = tokens_out = cached = 0
        source, usd = "null", 0.0
    trace_id = _js(ex.trace.trace_id) if ex.trace is not None else "null"
    where = _where(ex, route, b, who or _NOBODY)
    records = _try_line(tries[0]) if len(tries) == 1 else ",".join([_try_line(t) for t in tries])
    if err is None and ex.attempts == 1 and not ex.retries and not ex.fallbacks:
        key = (ex.stream, ex.status, ex.outcome)
        outcome = _OUTCOMES.get(key)
        if outcome is None:
            outcome = _outcome(ex, None)
            if len(_OUTCOMES) < _MEMO_SIZE:
                _OUTCOMES[key] = outcome
    else:
        outcome = _outcome(ex, err)
    if ex.prompt_ref is None and ex.prompt_version is None and not ex.verdicts:
        prompt = _NO_PROMPT
    else:
        verdicts = _ENCODE(ex.verdicts) if ex.verdicts else "[]"
        prompt = (
            f'"prompt":{_js(ex.prompt_ref)},"promptVersion":{_jn(ex.prompt_version)},'
            f'"guardrails":{verdicts},'
        )
    return (
        f'{{"ts":{_r3(now_wall)},"requestId":{_ESC(ex.request_id)},"traceId":{trace_id},'
        f'{where}{outcome}"tries":[{records}],{prompt}'
        f'"inputTokens":{tokens_in},"outputTokens":{tokens_out},"cachedInputTokens":{cached},'
        f'"usageSource":{source},"costUSD":{usd!r},"durationMs":{_r3((now - ex.started) * 1000)},'
        f'"ttftMs":{_r3(ttft * 1000) if ttft is not None else "null"},"bytesIn":{ex.bytes_in},'
        f'"configHash":{_js(config_hash)}{tail}}}'
    )


_NOBODY: Mapping[str, str | None] = {}
_NO_PROMPT = '"prompt":null,"promptVersion":null,"guardrails":[],'
#: The fields from ``stream`` to ``fallbacks`` of a request that worked at its first try, by
#: (stream, status, outcome).
_OUTCOMES: dict[tuple[bool, int, str], str] = {}


def _outcome(ex: Exchange, err: SluiceError | None) -> str:
    """The fields from ``stream`` to ``fallbacks`` of ``ex``'s record."""
    error_type = _ESC(err.type) if err is not None else "null"
    error_code = _js(err.code) if err is not None else "null"
    return (
        f'"stream":{"true" if ex.stream else "false"},"status":{ex.status},'
        f'"outcome":{_ESC(ex.outcome)},"errorType":{error_type},"errorCode":{error_code},'
        f'"attempts":{ex.attempts},"retries":{ex.retries},"fallbacks":{ex.fallbacks},'
    )


class AuditSink(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...

    def flush(self) -> None: ...


class JsonLinesAudit:
    """Writes one compact JSON object per line to a text stream. Lines are collected and
    written in batches (``batch`` lines or ``batch_chars`` characters, whichever comes first,
    and whatever is pending at each ``flush``: the app's ticker calls it every second, and at
    shutdown). The character bound keeps a batch small next to the stream's own buffer: a
    batch is held three times while it is written (the lines, their join, its encoding), and
    256 records with guardrail verdicts are about 300 KB. The gateway hands it ready lines
    (``audit_line``) through ``write_line``."""

    def __init__(self, stream: IO[str], batch: int = 256, batch_chars: int = 1 << 14) -> None:
        self._stream = stream
        self._batch = batch
        self._batch_chars = batch_chars
        self._lines: list[str] = []
        self._chars = 0

    def write(self, record: dict[str, Any]) -> None:
        self.write_line(_ENCODE(record))

    def write_line(self, line: str) -> None:
        lines = self._lines
        lines.append(line)
        self._chars += len(line)
        if self._chars >= self._batch_chars or len(lines) >= self._batch:
            self._write_pending()

    def _write_pending(self) -> None:
        lines = self._lines
        if lines:
            self._stream.write("\n".join(lines) + "\n")
            lines.clear()
            self._chars = 0

    def flush(self) -> None:
        self._write_pending()
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
    """Drops records (``--audit-log none``); the gateway does not even build them."""

    def write(self, record: dict[str, Any]) -> None:
        pass

    def flush(self) -> None:
        pass


class _HistogramChild:
    """One labelled histogram: ``counts[i]`` observations in bucket ``i`` (``bounds[i]`` its
    upper bound), not cumulative. ``Metrics.finish`` inlines ``observe``."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class _CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class _LoopMetric(Collector):
    """A labelled metric updated from one event loop: its children are plain objects that are
    read at scrape time (which runs on the same loop, so no lock is needed)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)

    def _check(self, values: tuple[str, ...]) -> None:
        if len(values) != len(self.labelnames) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"{self.name}: expected string values for {self.labelnames}")


class LoopHistogram(_LoopMetric):
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self._bounds = (*(float(b) for b in buckets), math.inf)
        go_string: Callable[[float], str] = prometheus_utils.floatToGoString
        self._les = tuple(go_string(b) for b in self._bounds)  # as prometheus_client writes them
        self._children: dict[tuple[str, ...], _HistogramChild] = {}
        registry.register(self)

    def labels(self, *values: str) -> _HistogramChild:
        child = self._children.get(values)
        if child is None:
            self._check(values)
            child = self._children[values] = _HistogramChild(self._bounds)
        return child

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._children.items():
            total = 0
            buckets = []
            for le, n in zip(self._les, child.counts, strict=True):
                total += n
                buckets.append((le, total))
            family.add_metric(list(values), buckets, child.sum)
        yield family


class LoopCounter(_LoopMetric):
    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self._children: dict[tuple[str, ...], _CounterChild] = {}
        registry.register(self)

    def labels(self, *values: str) -> _CounterChild:
        child = self._children.get(values)
        if child is None:
            self._check(values)
            child = self._children[values] = _CounterChild()
        return child

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._children.items():
            family.add_metric(list(values), child.value)
        yield family


@dataclass(slots=True)
class _Series:
    duration: _HistogramChild
    tokens_in: _HistogramChild
    tokens_out: _HistogramChild
    ttft: _HistogramChild
    cost: _CounterChild


_RUN_LIMITS = frozenset(("maxSteps", "usd", "tokens", "requests"))
_VERDICTS = {"Block": "blocked", "Redact": "redacted", "Log": "flagged", "Allow": "allowed"}
#: Verdict shapes remembered with their counters (one per policy, check, stage, action and
#: entity set; bounded all the same).
_VERDICT_MEMO = 1024
_ENTITY = re.compile(r"[A-Z][A-Z0-9_]{0,31}")
_NAME = re.compile(r"[A-Za-z]{1,32}")

#: (route, backend name, state) for every backend, read at scrape time.
HealthSource = Callable[[], Iterable[tuple[str, str, BackendState, int]]]


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.duration = LoopHistogram(
            "gen_ai_client_operation_duration_seconds",
            "GenAI operation duration as the app sees it (sidecar in to sidecar out).",
            [*_GENAI, "error_type"],
            DURATION_BUCKETS,
            registry,
        )
        self.tokens = LoopHistogram(
            "gen_ai_client_token_usage",
            "Tokens used per operation, by gen_ai_token_type.",
            [*_GENAI, "gen_ai_token_type"],
            TOKEN_BUCKETS,
            registry,
        )
        self.ttft = LoopHistogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to the first streamed token (first frame) as measured by the sidecar.",
            _GENAI,
            TTFT_BUCKETS,
            registry,
        )
        self.requests = LoopCounter(
            "sluice_requests",
            "Client requests by route and final HTTP status.",
            ["route", "code", "outcome"],
            registry,
        )
        self.attempts = LoopCounter(
            "sluice_upstream_attempts",
            "Tries sent to backends, by result (ok or failure class).",
            ["route", "backend", "result"],
            registry,
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
        self.retry_budget_exhausted = Counter(
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
        self.cost = LoopCounter(
            "sluice_cost_usd",
            "Spend in USD at the configured prices.",
            ["route", "backend"],
            registry,
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
        self.usage_invalid = Counter(
            "sluice_upstream_usage_invalid",
            "Answers whose provider-reported usage was out of range (negative, absurd): the "
            "sidecar counted the tokens from the text instead.",
            ["route", "backend"],
            registry=registry,
        )
        self.guardrail_verdicts = LoopCounter(
            "sluice_guardrail_verdicts",
            "Guardrail verdicts by policy, stage, check, entity kind (pii) and verdict "
            "(blocked, redacted, flagged, allowed); mode Monitor counts what would have been "
            "done. Labels come from the config and a fixed vocabulary, never from text.",
            ["policy", "stage", "check", "entity", "verdict", "mode"],
            registry,
        )
        self.run_steps = LoopCounter(
            "sluice_run_steps",
            "Requests that named an agent run (x-sluice-run or metadata.run) and were admitted, "
            "by route; each request's run totals are in its audit record.",
            ["route"],
            registry,
        )
        self.run_refusals = LoopCounter(
            "sluice_run_refusals",
            "Agent-run steps refused by a Budget's perRun limits, by route and limit (maxSteps: "
            "the loop breaker; usd, tokens, requests: the run's envelope).",
            ["route", "limit"],
            registry,
        )
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._requests: dict[tuple[str, int, str], _CounterChild] = {}
        self._verdict_memo: dict[tuple[Any, ...], tuple[_CounterChild, ...]] = {}

    def _run(self, route: str, run: Mapping[str, Any]) -> None:
        refused = run.get("refused")
        if isinstance(refused, str):
            limit = refused.rpartition(":")[2]
            self.run_refusals.labels(route, limit if limit in _RUN_LIMITS else "other").inc()
        elif "step" in run:
            self.run_steps.labels(route).inc()

    def child(self, metric: LoopCounter, *labels: str) -> _CounterChild:
        """``metric.labels(*labels)`` (kept for callers; loop metrics memoise their children)."""
        return metric.labels(*labels)

    def series(self, op: str, b: Backend, route: str) -> _Series:
        key = (op, route, b.name)
        s = self._series.get(key)
        if s is None:
            provider, backend = b.provider.value, b.name
            s = self._series[key] = _Series(
                duration=self.duration.labels(op, provider, route, backend, ""),
                tokens_in=self.tokens.labels(op, provider, route, backend, "input"),
                tokens_out=self.tokens.labels(op, provider, route, backend, "output"),
                ttft=self.ttft.labels(op, provider, route, backend),
                cost=self.cost.labels(route, backend),
            )
        return s

    def _verdict(self, v: Mapping[str, Any]) -> None:
        """Count one guardrail verdict record (``_verdict_series``). The counters of a verdict
        whose names are strings, as the engine writes them, are looked up once and remembered:
        every request of a policy says the same."""
        action, check, stage, policy = (
            v.get("action"),
            v.get("check"),
            v.get("stage"),
            v.get("policy"),
        )
        series = None
        key: tuple[Any, ...] | None = None
        if (
            type(action) is str
            and type(check) is str
            and type(stage) is str
            and type(policy) is str
        ):
            try:
                key = (
                    action,
                    check,
                    stage,
                    not v.get("enforced"),
                    policy,
                    tuple(v.get("entities") or ()),
                )
                series = self._verdict_memo.get(key)
            except TypeError:  # entities that cannot be a key
                key = None
        if series is None:
            series = self._verdict_series(v)
            if key is not None:
                if len(self._verdict_memo) >= _VERDICT_MEMO:
                    self._verdict_memo.clear()
                self._verdict_memo[key] = series
        for child in series:
            child.value += 1.0

    def _verdict_series(self, v: Mapping[str, Any]) -> tuple[_CounterChild, ...]:
        """The counters one guardrail verdict record counts in. Policy names and entity kinds
        are the config's (the engine only acts on listed kinds); check, stage, action are a
        fixed vocabulary, and anything else (an external classifier's categories) is never a
        label."""
        verdict = _VERDICTS.get(str(v.get("action")))
        check, stage = str(v.get("check")), str(v.get("stage"))
        if verdict is None or not _NAME.fullmatch(check) or stage not in ("input", "output"):
            return ()
        mode = "Enforce" if v.get("enforced") else "Monitor"
        policy = str(v.get("policy"))[:253]
        entities = v.get("entities")
        kinds = [k for k in entities if _ENTITY.fullmatch(str(k))] if entities else [""]
        return tuple(
            self.guardrail_verdicts.labels(policy, stage, check, kind, verdict, mode)
            for kind in kinds or [""]
        )

    def finish(self, ex: Exchange, now: float) -> float | None:
        """Record a finished request; the request's cost when it worked it out (the audit
        record has the same)."""
        route = ex.route.name if ex.route is not None else "unknown"
        key = (route, ex.status, ex.outcome)
        requests = self._requests.get(key)
        if requests is None:
            requests = self._requests[key] = self.requests.labels(route, str(ex.status), ex.outcome)
        requests.value += 1.0
        for v in ex.verdicts:
            self._verdict(v)
        annotations = ex.annotations
        if annotations:
            run = annotations.get("run")
            if isinstance(run, dict):
                self._run(route, run)
            if annotations.get("usageInvalid") and ex.backend is not None and ex.route is not None:
                self.usage_invalid.labels(route, ex.backend.name).inc()
        if ex.outcome == "client_disconnected":
            self.disconnects.labels(route).inc()
        b = ex.backend
        if b is None or ex.route is None:
            return None
        elapsed = now - ex.started
        s = None
        if ex.error is not None:
            self.duration.labels(
                ex.operation, b.provider.value, route, b.name, ex.error.code or ex.error.type
            ).observe(elapsed)
        else:
            s = self.series(ex.operation, b, route)
            h = s.duration
            h.counts[bisect_left(h.bounds, elapsed)] += 1
            h.sum += elapsed
            if ex.ttft is not None and ex.stream:
                s.ttft.observe(ex.ttft)
        usage = ex.usage
        if usage is not None:
            if s is None:
                s = self.series(ex.operation, b, route)
            h = s.tokens_in
            h.counts[bisect_left(h.bounds, usage.input_tokens)] += 1
            h.sum += usage.input_tokens
            if ex.operation == "chat":
                h = s.tokens_out
                h.counts[bisect_left(h.bounds, usage.output_tokens)] += 1
                h.sum += usage.output_tokens
            cost = cost_usd(b, usage)
            if cost:
                s.cost.value += cost
            return cost
        return None


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
