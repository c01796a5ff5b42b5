"""Trace context through the sidecar (propagated as received, or as the parent of each try when
spans are exported), spans exported through the OpenTelemetry SDK (in memory and over OTLP/HTTP to
a loopback collector), and the audit record: who, what per try, how much, never a key or prompt
text unless asked."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sluice_sidecar import main as sidecar_main
from sluice_sidecar import tracing
from sluice_sidecar.contract import CredentialRef
from tests.fakes import anthropic_server as fa
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI

from .conftest import StartSidecar, backend, config, route

MSG = [{"role": "user", "content": "a secret plan"}]
TID = "4bf92f3577b34da6a3ce929d0e0e4736"
TP = f"00-{TID}-00f067aa0ba902b7-01"


@pytest.fixture
async def claude() -> AsyncIterator[FakeAnthropic]:
    f = await FakeAnthropic().start()
    yield f
    await f.stop()


async def test_traceparent_is_propagated_unchanged_without_export(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    sc = await start_sidecar(config(route("chat", backend("a", fake))))
    headers = {"traceparent": TP, "tracestate": "vendor=1"}
    status, _, _ = await sc.post(
        "/v1/chat/completions", {"model": "chat", "messages": MSG}, headers=headers
    )
    assert status == 200
    assert fake.headers[0]["traceparent"] == TP and fake.headers[0]["tracestate"] == "vendor=1"
    assert sc.audit.records[-1]["traceId"] == TID
    await sc.post("/v1/chat/completions", {"model": "chat", "messages": MSG})
    assert "traceparent" not in fake.headers[1]  # nothing to propagate, nothing invented
    assert sc.audit.records[-1]["traceId"] is None


async def test_spans_exported_with_genai_attributes_and_try_parents(
    start_sidecar: StartSidecar, claude: FakeAnthropic, fake: FakeOpenAI
) -> None:
    memory = InMemorySpanExporter()
    exporter = tracing.OtelExporter(SimpleSpanProcessor(memory), {"k8s.namespace.name": "team"})
    claude.default = fa.overloaded()
    c = backend("c", provider="anthropic", base_url=claude.base_url, model="claude-x")
    sc = await start_sidecar(config(route("chat", c, backend("o", fake))), tracer=exporter)
    status, _, _ = await sc.post(
        "/v1/chat/completions",
        {"model": "chat", "messages": MSG, "max_tokens": 20},
        headers={"traceparent": TP},
    )
    assert status == 200
    spans = {s.name: s for s in memory.get_finished_spans()}
    server, failed, ok = spans["chat chat"], spans["chat claude-x"], spans["chat o-model"]
    assert server.context is not None and server.parent is not None
    assert f"{server.context.trace_id:032x}" == TID and f"{server.parent.span_id:016x}" == TP[36:52]
    assert (
        server.attributes is not None
        and server.attributes["gen_ai.provider.name"] == "openai-compatible"
    )
    assert server.attributes["gen_ai.usage.input_tokens"] == 11
    assert server.attributes["gen_ai.request.max_tokens"] == 20
    assert server.resource.attributes["k8s.namespace.name"] == "team"
    for s in (failed, ok):
        assert s.parent is not None and s.parent.span_id == server.context.span_id
    assert failed.attributes is not None and failed.attributes["error.type"] == "upstream_529"
    assert failed.attributes["gen_ai.provider.name"] == "anthropic"
    # each try carried its own span as the parent upstream
    assert failed.context is not None and ok.context is not None
    assert claude.headers[0]["traceparent"] == f"00-{TID}-{failed.context.span_id:016x}-01"
    assert fake.headers[0]["traceparent"] == f"00-{TID}-{ok.context.span_id:016x}-01"


async def test_otlp_http_export_to_a_collector(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    received: list[ExportTraceServiceRequest] = []

    async def traces(request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(await request.read())
        received.append(msg)
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert site._server is not None
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        exporter = tracing.otlp_exporter(f"http://127.0.0.1:{port}", {"k8s.pod.name": "p1"})
        sc = await start_sidecar(config(route("chat", backend("a", fake))), tracer=exporter)
        await sc.post("/v1/chat/completions", {"model": "chat", "messages": MSG})
        assert await asyncio.to_thread(exporter.force_flush)
    finally:
        await runner.cleanup()
    spans = [
        s for r in received for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans
    ]
    assert sorted(s.name for s in spans) == ["chat a-model", "chat chat"]
    attrs = {kv.key: kv.value for s in spans if s.name == "chat chat" for kv in s.attributes}
    assert attrs["gen_ai.operation.name"].string_value == "chat"
    assert attrs["gen_ai.usage.output_tokens"].int_value == 5
    resource = {
        kv.key: kv.value.string_value for kv in received[0].resource_spans[0].resource.attributes
    }
    assert resource["service.name"] == "sluice-sidecar" and resource["k8s.pod.name"] == "p1"


def test_cli_tracer_is_off_by_default_and_on_with_an_endpoint() -> None:
    assert sidecar_main._tracer(None) is None
    exporter = sidecar_main._tracer("http://127.0.0.1:9/")
    assert isinstance(exporter, tracing.OtelExporter)
    exporter.shutdown()
    args = sidecar_main.parser().parse_args(["--config", "c.yaml", "--audit-prompts"])
    assert args.audit_prompts is True


async def test_audit_record_who_what_how_much_and_no_secrets(
    start_sidecar: StartSidecar, claude: FakeAnthropic, fake: FakeOpenAI, tmp_path: Path
) -> None:
    (tmp_path / "key").write_text("sk-ant-SUPERSECRET")
    ref = CredentialRef(secret_name="s", key="k", file="key")
    claude.default = fa.status(529, "overloaded_error", "Overloaded; key sk-ant-SUPERSECRET")
    c = backend(
        "c", provider="anthropic", base_url=claude.base_url, model="claude-x", credentials=ref
    )
    who = {"namespace": "team-a", "pod": "app-7f9", "serviceAccount": "app-sa"}
    sc = await start_sidecar(
        config(route("chat", c, backend("o", fake))), secrets_dir=str(tmp_path), who=who
    )
    await sc.post("/v1/chat/completions", {"model": "chat", "messages": MSG})
    rec = sc.audit.records[-1]
    assert (rec["namespace"], rec["pod"], rec["serviceAccount"]) == ("team-a", "app-7f9", "app-sa")
    assert rec["api"] == "openai" and rec["route"] == "chat" and rec["configHash"]
    assert [
        (t["provider"], t["model"], t["result"], t["status"], t["reason"]) for t in rec["tries"]
    ] == [
        ("anthropic", "claude-x", "5xx", 529, "upstream_529"),
        ("openai-compatible", "o-model", "ok", 200, None),
    ]
    assert all(isinstance(t["latencyMs"], float) for t in rec["tries"])
    assert rec["inputTokens"] == 11 and "costUSD" in rec
    assert rec["prompt"] is None and rec["promptVersion"] is None and rec["guardrails"] == []
    dumped = json.dumps(rec)
    assert "SUPERSECRET" not in dumped and "secret plan" not in dumped


async def test_audit_prompts_only_when_enabled(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    sc = await start_sidecar(config(route("chat", backend("a", fake))), audit_prompts=True)
    await sc.post("/v1/chat/completions", {"model": "chat", "messages": MSG})
    assert sc.audit.records[-1]["promptMessages"] == MSG


async def test_who_defaults_to_the_injector_environment(
    start_sidecar: StartSidecar, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "ns1")
    monkeypatch.setenv("POD_NAME", "pod1")
    monkeypatch.setenv("POD_SERVICE_ACCOUNT", "sa1")
    sc = await start_sidecar(config(route("chat", backend("a", fake))))
    await sc.post("/v1/chat/completions", {"model": "chat", "messages": MSG})
    rec = sc.audit.records[-1]
    assert (rec["namespace"], rec["pod"], rec["serviceAccount"]) == ("ns1", "pod1", "sa1")


async def test_one_trace_per_agent_run_with_its_totals_on_each_span(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    """Steps of a run that bring no traceparent join one trace (derived from the namespace and
    the run id, so steps in other pods join it too); each server span carries the run's totals;
    a caller's own traceparent still wins; the run metrics count steps and refusals."""
    from sluice_sidecar.contract import BudgetRule, RunLimits
    from sluice_sidecar.model import run_trace_id

    memory = InMemorySpanExporter()
    exporter = tracing.OtelExporter(SimpleSpanProcessor(memory))
    rule = BudgetRule(name="agents", per_run=RunLimits(max_steps=2))
    cfg = config(route("chat", backend("o", fake))).model_copy(update={"budgets": (rule,)})
    sc = await start_sidecar(cfg, tracer=exporter)
    body = {"model": "chat", "messages": MSG, "max_tokens": 5}
    job = {"x-sluice-run": "job-7"}
    for headers in (job, job, job, {"x-sluice-run": "job-8"}, {**job, "traceparent": TP}):
        await sc.post("/v1/chat/completions", body, headers=headers)
    await asyncio.sleep(0.05)  # spans are exported just after the answer
    servers = [s for s in memory.get_finished_spans() if s.name == "chat chat"]
    assert len(servers) == 5
    traces = [f"{s.context.trace_id:032x}" for s in servers if s.context is not None]
    want = run_trace_id(cfg.namespace, "job-7")
    assert traces[:3] == [want] * 3  # two steps and the refused third: one trace
    assert traces[3] == run_trace_id(cfg.namespace, "job-8") != want
    assert traces[4] == TID  # the app's own trace context wins
    attrs = [dict(s.attributes or {}) for s in servers]
    assert [a.get("sluice.run.step") for a in attrs[:2]] == [1, 2]
    assert attrs[0]["sluice.run.id"] == "job-7" and attrs[1]["sluice.run.requests"] == 2
    assert attrs[2]["sluice.run.refused"] == "agents:maxSteps"
    # the upstream call of a step carries the run's trace
    assert fake.headers[0]["traceparent"].startswith(f"00-{want}-")
    text = await sc.metrics()
    assert 'sluice_run_steps_total{route="chat"} 3.0' in text  # job-7's first two, job-8's one
    assert 'sluice_run_refusals_total{limit="maxSteps",route="chat"} 2.0' in text
