"""Hostile upstreams: a provider that echoes every request header (the API key among them) in its
error bodies, error codes and types, and in-band stream errors, must not get a key into anything
the sidecar emits — the client's answer, the audit record, the metrics, spans or logs — and the
codes it chooses must not become metric labels (FAULTS.md, "Upstream faults")."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sluice_sidecar import tracing
from sluice_sidecar.contract import CredentialRef, Fallback
from sluice_sidecar.upstream import scrub
from tests.sidecar.conftest import Sidecar, StartSidecar, backend, config, route

#: A key shaped like a real one, and one that is not (only its known value can catch it).
SHAPED_KEY = "sk-live-0123456789abcdefSECRET"
OPAQUE_KEY = "opaque.Zq7~wobble.42"
SECRETS = ("0123456789abcdefSECRET", "Zq7~wobble")
MSG = [{"role": "user", "content": "hi"}]


class EchoUpstream:
    """Answers every POST with its ``mode``, putting all request headers into the error."""

    def __init__(self) -> None:
        self.mode = "401"
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> EchoUpstream:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._answer)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        assert site._server is not None
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        dump = "; ".join(f"{k}: {v}" for k, v in request.headers.items())
        anthropic = request.path.endswith("/messages")
        responses = request.path.endswith("/responses")
        if anthropic:
            err: dict[str, Any] = {"type": "error", "error": {"type": dump, "message": dump}}
        else:
            err = {"error": {"message": dump, "type": dump, "code": dump, "param": dump}}
        if self.mode in ("401", "404", "400", "500", "503"):
            return web.json_response(err, status=int(self.mode))
        if self.mode == "html":
            return web.Response(status=502, text=f"<html>{dump}</html>", content_type=dump[:60])
        # in-band: a 200 that carries the error
        if not body.get("stream"):
            return web.json_response(err)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if anthropic:
            await resp.write(b"event: error\ndata: " + json.dumps(err).encode() + b"\n\n")
        elif responses:
            ev = {"type": "error", "code": dump, "message": dump}
            await resp.write(b"event: error\ndata: " + json.dumps(ev).encode() + b"\n\n")
        else:
            await resp.write(b"data: " + json.dumps(err).encode() + b"\n\n")
        return resp

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def echo() -> AsyncIterator[EchoUpstream]:
    e = await EchoUpstream().start()
    yield e
    await e.stop()


async def _sidecar(
    start_sidecar: StartSidecar, echo: EchoUpstream, tmp_path: Path, exporter: Any
) -> Sidecar:
    (tmp_path / "shaped").write_text(SHAPED_KEY + "\n")
    (tmp_path / "opaque").write_text(OPAQUE_KEY)
    shaped = CredentialRef(secret_name="s", key="a", file="shaped")
    opaque = CredentialRef(secret_name="s", key="b", file="opaque")
    routes = [
        # (route, backend, provider, base URL suffix, key)
        ("chat", "compat", "openai-compatible", "/v1", opaque),
        ("gpt", "oai", "openai", "/v1", shaped),
        ("claude", "ant", "anthropic", "", shaped),
        ("claude-opaque", "ant2", "anthropic", "", opaque),
    ]
    return await start_sidecar(
        config(
            *(
                route(
                    name,
                    backend(b, base_url=echo.url + sfx, provider=p, credentials=key),
                    fallback=Fallback(on=()),
                )
                for name, b, p, sfx, key in routes
            )
        ),
        secrets_dir=str(tmp_path),
        tracer=exporter,
    )


REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("/v1/chat/completions", {"model": "chat", "messages": MSG}),
    ("/v1/chat/completions", {"model": "gpt", "messages": MSG}),
    ("/v1/chat/completions", {"model": "claude", "messages": MSG, "max_tokens": 5}),
    ("/v1/embeddings", {"model": "chat", "input": "hi"}),
    ("/v1/embeddings", {"model": "gpt", "input": "hi"}),
    ("/v1/messages", {"model": "claude", "messages": MSG, "max_tokens": 5}),
    ("/v1/messages", {"model": "claude-opaque", "messages": MSG, "max_tokens": 5}),
    ("/v1/messages", {"model": "chat", "messages": MSG, "max_tokens": 5}),
    ("/v1/responses", {"model": "gpt", "input": "hi"}),
    ("/v1/responses", {"model": "chat", "input": "hi"}),
]
MODES = ("401", "404", "400", "500", "html", "inband")


async def _raw(sc: Sidecar, path: str, body: dict[str, Any]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.post(sc.url + path, json=body) as r:
        return r.status, await r.text()


async def test_a_key_echoed_by_the_upstream_reaches_no_output(
    start_sidecar: StartSidecar,
    echo: EchoUpstream,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    memory = InMemorySpanExporter()
    exporter = tracing.OtelExporter(SimpleSpanProcessor(memory), {})
    sc = await _sidecar(start_sidecar, echo, tmp_path, exporter)
    outputs: list[str] = []
    statuses: set[int] = set()
    with caplog.at_level(logging.DEBUG):
        for mode in MODES:
            echo.mode = mode
            for path, body in REQUESTS:
                for stream in (False, True):
                    if stream and path == "/v1/embeddings":
                        continue
                    status, text = await _raw(sc, path, {**body, "stream": stream})
                    statuses.add(status)
                    assert status >= 400 or "error" in text, (mode, path, stream, text)
                    outputs.append(text)
    assert {401, 404, 400, 502} <= statuses
    # the upstream's text (scrubbed) is still in the client's message: the tests see it
    assert any("[REDACTED]" in o for o in outputs)
    sc.gateway.audit.flush()
    outputs.append(json.dumps(sc.audit.records))
    outputs.append(await sc.metrics())
    outputs.append(json.dumps([dict(s.attributes or {}) for s in memory.get_finished_spans()]))
    outputs.append(json.dumps([str(s.status.description) for s in memory.get_finished_spans()]))
    outputs.append(caplog.text)
    for out in outputs:
        for secret in SECRETS:
            assert secret not in out, out[:2000]


async def test_upstream_error_codes_are_a_fixed_vocabulary(
    start_sidecar: StartSidecar, tmp_path: Path
) -> None:
    """40 errors with random codes and types add no label values and no audit codes."""
    rng = random.Random(3)
    codes: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        code = "".join(rng.choice("abcdefgh_") for _ in range(12))
        codes.append(code)
        err = {"error": {"message": "no", "type": code, "code": code}}
        return web.json_response(err, status=rng.choice((400, 403, 409, 422, 500, 503)))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        b = backend("x", base_url=f"http://127.0.0.1:{port}/v1", provider="openai-compatible")
        sc = await start_sidecar(config(route("chat", b, fallback=Fallback(on=()))))
        for _ in range(40):
            status, _, body = await sc.post(
                "/v1/chat/completions", {"model": "chat", "messages": MSG}
            )
            assert status >= 400
            assert body["error"]["code"] not in codes and body["error"]["type"] not in codes
        metrics = await sc.metrics()
    finally:
        await runner.cleanup()
    assert not any(code in metrics for code in codes)
    for record in sc.audit.records:
        assert record["errorCode"] not in codes and record["errorType"] not in codes
        for t in record["tries"]:
            assert t["reason"] not in codes


def test_scrubber_text_and_vocabulary() -> None:
    s = scrub.Scrubber(lambda: ("opaque-key-value",))
    text = s.text(
        "Incorrect API key provided: sk-abcdefghijklmnop1234. authorization: Bearer tok.tok "
        "x-api-key: opaque-key-value AIzaSyA1234567890abcdefghijklmnopqrstu"
    )
    for leak in ("sk-abcdefghijklmnop1234", "tok.tok", "opaque-key-value", "AIzaSyA12345"):
        assert leak not in text
    assert "Incorrect API key provided" in text
    assert scrub.code_of("context_length_exceeded", 400) == "context_length_exceeded"
    assert scrub.code_of("Bearer sk-xyz", 401) == "upstream_401"
    assert scrub.type_of("whatever") == "invalid_request_error"
    assert s.answer(b'{"content":"opaque-key-value"}') == b'{"content":"[REDACTED]"}'


# --- usage from upstreams -----------------------------------------------------------------------

BAD_USAGE = (-5, 10**400)


async def _usage_upstream(prompt_tokens: int) -> web.AppRunner:
    """An OpenAI-compatible upstream whose answers report ``prompt_tokens`` (unary and stream)."""

    async def answer(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 3, "total_tokens": 1}
        message = {"role": "assistant", "content": "Twelve chars"}
        if not body.get("stream"):
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            obj = {"id": "x", "object": "chat.completion", "choices": [choice], "usage": usage}
            return web.Response(body=json.dumps(obj), content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        delta = {"index": 0, "delta": message, "finish_reason": "stop"}
        chunk = {"id": "x", "object": "chat.completion.chunk", "choices": [delta]}
        tail = {"id": "x", "object": "chat.completion.chunk", "choices": [], "usage": usage}
        for frame in (chunk, tail):
            await resp.write(b"data: " + json.dumps(frame).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


@pytest.mark.parametrize("prompt_tokens", BAD_USAGE, ids=("negative", "10^400"))
async def test_usage_out_of_range_is_counted_from_the_text(
    start_sidecar: StartSidecar, prompt_tokens: int, caplog: pytest.LogCaptureFixture
) -> None:
    from sluice_sidecar.contract import BudgetLimit, BudgetRule, Pricing, WindowKind

    runner = await _usage_upstream(prompt_tokens)
    port = runner.addresses[0][1]
    try:
        b = backend(
            "x",
            base_url=f"http://127.0.0.1:{port}/v1",
            provider="openai-compatible",
            pricing=Pricing(input_per_mtok=1.0, output_per_mtok=2.0),
        )
        rule = BudgetRule(name="day", limits=(BudgetLimit(window=WindowKind.DAY, usd=1.0),))
        cfg = config(route("chat", b)).model_copy(update={"budgets": (rule,)})
        sc = await start_sidecar(cfg)
        with caplog.at_level(logging.WARNING):
            for stream in (False, True, False, True):
                status, text = await _raw(
                    sc, "/v1/chat/completions", {"model": "chat", "messages": MSG, "stream": stream}
                )
                assert status == 200, text
                assert "Twelve chars" in text and "error" not in text
        metrics = await sc.metrics()
    finally:
        await runner.cleanup()
    assert len(sc.audit.records) == 4
    for record in sc.audit.records:
        assert record["usageSource"] == "estimated"
        assert 0 <= record["inputTokens"] < 100 and 0 < record["outputTokens"] < 100
        assert 0 <= record["costUSD"] < 0.01
        assert record["annotations"]["usageInvalid"] is True
    assert 'sluice_upstream_usage_invalid_total{backend="x",route="chat"} 4.0' in metrics
    budget = next(s for s in sc.gateway.stages.finish if s.name == "budget")
    assert budget.in_flight() == 0  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_finish_never_raises(
    start_sidecar: StartSidecar, caplog: pytest.LogCaptureFixture
) -> None:
    """Metrics, a stage and the audit record all failing: the request is still answered, the
    other parts still run, a minimal audit record is written, one short log line each."""
    sc = await start_sidecar(config(route("chat", backend("m"))))
    gw = sc.gateway

    def boom(*args: Any, **kwargs: Any) -> None:
        raise OverflowError("int too large " + "x" * 20_000)

    gw.metrics.finish = boom  # type: ignore[method-assign]
    audit_write = gw.audit.write
    calls = {"n": 0}

    def fail_once(record: dict[str, Any]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OverflowError("no")
        audit_write(record)

    gw.audit.write = fail_once  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR):
        status, _, _ = await sc.post("/v1/chat/completions", {"model": "chat", "messages": MSG})
        await __import__("asyncio").sleep(0.01)
    assert status == 200
    assert sc.audit.records and sc.audit.records[-1]["auditIncomplete"] is True
    messages = [r.getMessage() for r in caplog.records]
    assert any("metrics failed" in m for m in messages)
    assert all(len(m) < 300 for m in messages)
