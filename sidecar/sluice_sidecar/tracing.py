"""Trace context (W3C ``traceparent``) and spans with OpenTelemetry GenAI attributes.

Owns three things:

* **Propagation** (always on, pure): a valid incoming ``traceparent`` (W3C Trace Context level 1:
  ``00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>``; all-zero ids, version ``ff``,
  upper-case hex and malformed values are ignored; a future version is read by its first four
  fields) is kept on the request. Without export it is passed upstream unchanged with its
  ``tracestate``, so the provider's spans join the app's trace. With export the sidecar starts a
  trace when none came, and each try upstream carries the id of its own client span.
* **Spans** (pure): ``spans(ex, …)`` turns a finished exchange into one server span for the
  request and one client span per try, named and attributed after the OpenTelemetry GenAI
  semantic conventions (``gen_ai.operation.name``, ``gen_ai.provider.name``,
  ``gen_ai.request.model``, ``gen_ai.usage.*``, ``error.type``, …). No prompt or answer text.
* **Export** (optional, IO): ``OtelExporter`` hands the spans to an OpenTelemetry SDK span
  processor; ``otlp_exporter(endpoint)`` builds one that batches them to an OTLP/HTTP collector
  in the SDK's worker thread. The SDK is the ``[otel]`` extra and is imported only here, only
  when export is switched on, so the base sidecar neither needs nor loads it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from .model import TraceContext

if TYPE_CHECKING:
    from .exchange import Exchange

_HEX = frozenset("0123456789abcdef")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
PROVIDER_NAMES = {"gemini": "gcp.gemini", "mistral": "mistral_ai"}
#: Span attributes from a request's run totals (audit ``annotations.run``).
_RUN_ATTRIBUTES = (
    ("id", "sluice.run.id"),
    ("step", "sluice.run.step"),
    ("spentUSD", "sluice.run.spent_usd"),
    ("tokens", "sluice.run.tokens"),
    ("requests", "sluice.run.requests"),
    ("parent", "sluice.run.parent"),
    ("root", "sluice.run.root"),
    ("rootSpentUSD", "sluice.run.root_spent_usd"),
    ("refused", "sluice.run.refused"),
)


def _hex(value: str, n: int) -> bool:
    return len(value) == n and set(value) <= _HEX


def parse_traceparent(value: str | None) -> tuple[str, str, str] | None:
    """(trace id, parent id, flags) of a valid ``traceparent``; None otherwise. Pure."""
    if not value:
        return None
    fields = value.strip().split("-")
    if len(fields) < 4:
        return None
    version, trace_id, parent_id, flags = fields[:4]
    if not _hex(version, 2) or version == "ff" or (version == "00" and len(fields) != 4):
        return None
    if not _hex(trace_id, 32) or trace_id == _ZERO_TRACE:
        return None
    if not _hex(parent_id, 16) or parent_id == _ZERO_SPAN or not _hex(flags, 2):
        return None
    return trace_id, parent_id, flags


def new_id(nbytes: int) -> str:
    return os.urandom(nbytes).hex()


def incoming(headers: Mapping[str, str], exporting: bool) -> TraceContext | None:
    """The request's trace context: the caller's, a new one when exporting, else None."""
    received = headers.get("traceparent")
    parsed = parse_traceparent(received)
    if parsed is None:
        if not exporting:
            return None
        return TraceContext(new_id(16), None, new_id(8))
    trace_id, parent_id, flags = parsed
    return TraceContext(
        trace_id,
        parent_id,
        new_id(8) if exporting else None,
        flags,
        headers.get("tracestate"),
        received,
    )


def upstream_headers(ctx: TraceContext | None, span_id: str | None) -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) for one try upstream."""
    return {} if ctx is None else ctx.upstream_headers(span_id)


@dataclass(slots=True)
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    #: "server" (the request) or "client" (a try upstream).
    kind: str
    start: float
    end: float
    attributes: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def provider_name(provider: str) -> str:
    """``gen_ai.provider.name`` for a Sluice provider."""
    return PROVIDER_NAMES.get(provider, provider)


def spans(ex: Exchange, *, now_wall: float, now: float, config_hash: str | None) -> list[Span]:
    """The spans of a finished request (needs ``ex.trace.span_id``). A pure function."""
    ctx = ex.trace
    if ctx is None or ctx.span_id is None:
        return []
    to_wall = now_wall - now
    op = ex.operation
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": op,
        "gen_ai.request.model": ex.model,
        "http.response.status_code": ex.status,
        "sluice.request_id": ex.request_id,
        "sluice.outcome": ex.outcome,
        "sluice.stream": ex.stream,
        "sluice.attempts": ex.attempts,
    }
    if config_hash:
        attrs["sluice.config_hash"] = config_hash
    if ex.route is not None:
        attrs["sluice.route"] = ex.route.name
    for key, name in (
        ("max_tokens", "gen_ai.request.max_tokens"),
        ("temperature", "gen_ai.request.temperature"),
        ("top_p", "gen_ai.request.top_p"),
    ):
        value = ex.body.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attrs[name] = value
    if ex.backend is not None:
        attrs["gen_ai.provider.name"] = provider_name(str(ex.backend.provider))
        attrs["gen_ai.response.model"] = ex.backend.model
        attrs["sluice.backend"] = ex.backend.name
    if ex.usage is not None:
        attrs["gen_ai.usage.input_tokens"] = ex.usage.input_tokens
        attrs["gen_ai.usage.output_tokens"] = ex.usage.output_tokens
        if ex.usage.cached_input_tokens:
            attrs["gen_ai.usage.cache_read.input_tokens"] = ex.usage.cached_input_tokens
    run = ex.annotations.get("run")
    if isinstance(run, dict):  # the run's totals after this step (``budget.runs.totals``)
        for key, name in _RUN_ATTRIBUTES:
            value = run.get(key)
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                attrs[name] = value
    if ex.prompt_ref is not None:
        attrs["sluice.prompt"] = ex.prompt_ref
    if ex.prompt_version is not None:
        attrs["sluice.prompt_version"] = ex.prompt_version
    error = (ex.error.code or ex.error.type) if ex.error is not None else None
    if error is not None:
        attrs["error.type"] = error
    out = [
        Span(
            f"{op} {ex.model}".strip(),
            ctx.trace_id,
            ctx.span_id,
            ctx.parent_id,
            "server",
            ex.started + to_wall,
            now_wall,
            attrs,
            error,
        )
    ]
    for t in ex.tries:
        if t.span_id is None:
            continue
        b = t.backend
        a: dict[str, Any] = {
            "gen_ai.operation.name": op,
            "gen_ai.provider.name": provider_name(str(b.provider)),
            "gen_ai.request.model": b.model,
            "sluice.backend": b.name,
            "sluice.result": t.result,
        }
        host = urlsplit(b.base_url).hostname if b.base_url else None
        if host:
            a["server.address"] = host
        if t.status is not None:
            a["http.response.status_code"] = t.status
        terr = None if t.result == "ok" else (t.reason or t.result)
        if terr is not None:
            a["error.type"] = terr
        # the try that answered lasts until its answer ended (a stream: its last frame)
        end = now if t.result == "ok" or not t.duration else t.started + t.duration
        out.append(
            Span(
                f"{op} {b.model}",
                ctx.trace_id,
                t.span_id,
                ctx.span_id,
                "client",
                t.started + to_wall,
                end + to_wall,
                a,
                terr,
            )
        )
    return out


# --- export -----------------------------------------------------------------------------------


class Exporter(Protocol):
    #: Whether spans are wanted (the pipeline then makes span ids and calls ``export``).
    enabled: bool

    def export(self, spans: list[Span]) -> None: ...

    def shutdown(self) -> None: ...


class NullExporter:
    enabled = False

    def export(self, spans: list[Span]) -> None:
        pass

    def shutdown(self) -> None:
        pass


class OtelExporter:
    """Spans handed to an OpenTelemetry SDK ``SpanProcessor`` (batched to OTLP by default)."""

    enabled = True

    def __init__(self, processor: Any, resource: Mapping[str, str] | None = None) -> None:
        from opentelemetry import trace as api
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self._api = api
        self._readable = ReadableSpan
        self._processor = processor
        attrs = {"service.name": "sluice-sidecar", **(resource or {})}
        self._resource = Resource.create(attrs)
        self._scope = InstrumentationScope("sluice_sidecar")
        self._kinds = {"server": api.SpanKind.SERVER, "client": api.SpanKind.CLIENT}

    def export(self, spans: list[Span]) -> None:
        api = self._api
        for s in spans:
            flags = api.TraceFlags(api.TraceFlags.SAMPLED)
            context = api.SpanContext(int(s.trace_id, 16), int(s.span_id, 16), False, flags)
            parent = (
                api.SpanContext(int(s.trace_id, 16), int(s.parent_id, 16), True, flags)
                if s.parent_id
                else None
            )
            status = (
                api.Status(api.StatusCode.ERROR, s.error)
                if s.error
                else api.Status(api.StatusCode.UNSET)
            )
            self._processor.on_end(
                self._readable(
                    s.name,
                    context=context,
                    parent=parent,
                    resource=self._resource,
                    attributes=s.attributes,
                    kind=self._kinds[s.kind],
                    status=status,
                    start_time=int(s.start * 1e9),
                    end_time=int(s.end * 1e9),
                    instrumentation_scope=self._scope,
                )
            )

    def force_flush(self) -> bool:
        """Send what is batched now (blocking; call it off the event loop)."""
        return bool(self._processor.force_flush())

    def shutdown(self) -> None:
        self._processor.shutdown()


def otlp_exporter(endpoint: str, resource: Mapping[str, str] | None = None) -> OtelExporter:
    """An exporter batching spans to the OTLP/HTTP collector at ``endpoint`` (``/v1/traces`` is
    appended unless the URL has it). Needs the ``[otel]`` extra."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ImportError(
            "OTLP trace export needs the OpenTelemetry SDK: pip install 'sluicegate[otel]'"
        ) from exc
    url = endpoint.rstrip("/")
    if not url.endswith("/v1/traces"):
        url += "/v1/traces"
    return OtelExporter(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)), resource)
