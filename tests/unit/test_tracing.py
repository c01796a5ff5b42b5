"""W3C trace context parsing and propagation, and the spans built from a finished exchange."""

from __future__ import annotations

import pytest

from sluice_sidecar import errors, tracing
from sluice_sidecar.contract import Backend, Route
from sluice_sidecar.exchange import Exchange, Try
from sluice_sidecar.model import Usage

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
PID = "00f067aa0ba902b7"
TP = f"00-{TID}-{PID}-01"


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (TP, (TID, PID, "01")),
        (f"00-{TID}-{PID}-00", (TID, PID, "00")),
        (f"cc-{TID}-{PID}-01-future-stuff", (TID, PID, "01")),  # a later version: first 4 fields
        (f" {TP} ", (TID, PID, "01")),
        (None, None),
        ("", None),
        (f"00-{TID}-{PID}-01-extra", None),  # version 00 has exactly four fields
        (f"ff-{TID}-{PID}-01", None),
        (f"00-{'0' * 32}-{PID}-01", None),
        (f"00-{TID}-{'0' * 16}-01", None),
        (f"00-{TID.upper()}-{PID}-01", None),
        (f"00-{TID[:-1]}-{PID}-01", None),
        (f"00-{TID}-{PID}-1", None),
        ("garbage", None),
    ],
)
def test_parse_traceparent(value: str | None, parsed: tuple[str, str, str] | None) -> None:
    assert tracing.parse_traceparent(value) == parsed


def test_without_export_the_header_is_passed_on_unchanged() -> None:
    assert tracing.incoming({}, exporting=False) is None
    ctx = tracing.incoming({"traceparent": TP, "tracestate": "v=1"}, exporting=False)
    assert ctx is not None and ctx.span_id is None
    assert tracing.upstream_headers(ctx, None) == {"traceparent": TP, "tracestate": "v=1"}
    bad = tracing.incoming({"traceparent": "nonsense"}, exporting=False)
    assert bad is None


def test_with_export_each_try_is_the_parent_upstream() -> None:
    ctx = tracing.incoming({"traceparent": TP}, exporting=True)
    assert ctx is not None and ctx.trace_id == TID and ctx.parent_id == PID and ctx.sampled
    assert ctx.span_id is not None and len(ctx.span_id) == 16
    assert tracing.upstream_headers(ctx, "1" * 16) == {"traceparent": f"00-{TID}-{'1' * 16}-01"}
    root = tracing.incoming({}, exporting=True)
    assert root is not None and root.parent_id is None and len(root.trace_id) == 32


def test_spans_of_an_exchange_with_a_fallback() -> None:
    claude = Backend(name="c", provider="anthropic", model="claude-x", base_url="https://api.test")
    gem = Backend(name="g", provider="gemini", model="gemini-x")
    r = Route(name="chat", source="chat", backends=(claude, gem))
    ex = Exchange("rid", "chat", started=100.0, model="chat", route=r, backend=gem, status=200)
    ex.body = {"max_tokens": 50, "temperature": 0.2}
    ex.attempts = 2
    ex.usage = Usage(30, 4, 10)
    ex.trace = tracing.TraceContext(TID, PID, "a" * 16)
    ex.tries = [
        Try(claude, 100.0, "b" * 16, 0.5, "5xx", 529, "upstream_529"),
        Try(gem, 100.5, "c" * 16, 1.0, "ok"),
    ]
    spans = tracing.spans(ex, now_wall=5000.0, now=102.0, config_hash="h1")
    server, first, second = spans
    assert (server.name, server.kind, server.parent_id, server.span_id) == (
        "chat chat",
        "server",
        PID,
        "a" * 16,
    )
    assert server.start == pytest.approx(4998.0) and server.end == 5000.0
    assert server.attributes["gen_ai.provider.name"] == "gcp.gemini"
    assert server.attributes["gen_ai.usage.input_tokens"] == 30
    assert server.attributes["gen_ai.usage.cache_read.input_tokens"] == 10
    assert server.attributes["gen_ai.request.max_tokens"] == 50
    assert server.attributes["sluice.config_hash"] == "h1" and server.error is None
    assert (first.name, first.kind, first.parent_id) == ("chat claude-x", "client", "a" * 16)
    assert first.attributes["error.type"] == "upstream_529" and first.error == "upstream_529"
    assert first.attributes["server.address"] == "api.test"
    assert first.attributes["http.response.status_code"] == 529
    assert first.end - first.start == pytest.approx(0.5)
    assert second.error is None and second.attributes["gen_ai.provider.name"] == "gcp.gemini"
    ex.error = errors.UpstreamTimeout("slow")
    assert tracing.spans(ex, now_wall=1, now=1, config_hash=None)[0].attributes["error.type"] == (
        "upstream_timeout"
    )
    ex.trace = tracing.TraceContext(TID, PID, None)
    assert tracing.spans(ex, now_wall=1, now=1, config_hash=None) == []


def test_the_base_sidecar_does_not_load_opentelemetry() -> None:
    import subprocess
    import sys

    code = (
        "import sys, sluice_sidecar.app, sluice_sidecar.main;"
        "print([m for m in sys.modules if m.startswith('opentelemetry')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
