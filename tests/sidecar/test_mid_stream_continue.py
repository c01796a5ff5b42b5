"""``streaming.midStreamFailure: Continue``: a stream that fails after its first frame is resumed
on the next backend with the partial answer as a prefill, spliced into the same client stream
(one role, one [DONE], the first stream's id and model), with both tries in the audit record;
when routing allows no other try, the stream ends with the terminal error event as in Error
mode."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import openai

from sluice_sidecar import sse
from sluice_sidecar.contract import MidStreamFailure, Retry, Route, Timeouts
from sluice_sidecar.gateway.continuation import CONTINUE_PROMPT
from tests.fakes import anthropic_server as fa
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI, cut, hang_mid, ok, status

from .conftest import StartSidecar, backend, config, route

MSG: list[Any] = [{"role": "user", "content": "Tell me a story"}]
CONTINUE = MidStreamFailure.CONTINUE


def continuing(*backends: Any, **kw: Any) -> Route:
    return route("chat", *backends, mid_stream_failure=CONTINUE, **kw)


async def raw_stream(sc: Any, **extra: Any) -> list[sse.Event]:
    body = {"model": "chat", "messages": MSG, "stream": True, "max_tokens": 50, **extra}
    parser = sse.Parser()
    async with (
        aiohttp.ClientSession() as s,
        s.post(sc.url + "/v1/chat/completions", json=body) as r,
    ):
        assert r.status == 200
        events = parser.feed(await r.read())
    assert not parser.has_partial
    return events


def chunks(events: list[sse.Event]) -> list[dict[str, Any]]:
    return [json.loads(e.data) for e in events if e.data != "[DONE]"]


def text(events: list[sse.Event]) -> str:
    return "".join(
        c.get("delta", {}).get("content") or ""
        for ch in chunks(events)
        for c in ch.get("choices", ())
    )


async def test_cut_stream_continues_on_the_next_backend(
    start_sidecar: StartSidecar, fake: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake.default = cut(2)  # "Hello", " from", then a half event and a reset
    fake_b.default = ok("and the rest.")
    sc = await start_sidecar(config(continuing(backend("a", fake), backend("b", fake_b))))
    events = await raw_stream(sc, stream_options={"include_usage": True})
    assert text(events) == "Hello fromand the rest."
    assert [e.data for e in events].count("[DONE]") == 1 and events[-1].data == "[DONE]"
    got = chunks(events)
    assert not any("error" in c for c in got)
    roles = [c for ch in got for c in ch["choices"] if "role" in c.get("delta", {})]
    assert len(roles) == 1  # the continuation's role chunk was dropped
    assert {(c["id"], c["model"]) for c in got} == {("chatcmpl-fake", "a-model")}
    # The next backend was asked to continue the partial answer, within what is left of the cap.
    sent = fake_b.requests[0]
    assert sent["messages"] == [
        *MSG,
        {"role": "assistant", "content": "Hello from"},
        {"role": "user", "content": CONTINUE_PROMPT},
    ]
    assert sent["max_tokens"] == 48
    # Usage covers both tries: the cut one estimated (2 chunks), the continuation as reported.
    usage = got[-1]["usage"]
    rec = sc.audit.records[-1]
    assert usage["completion_tokens"] == 2 + 3 == rec["outputTokens"]
    assert usage["prompt_tokens"] == rec["inputTokens"] > 11
    assert rec["outcome"] == "ok" and rec["status"] == 200 and rec["usageSource"] == "estimated"
    assert [(t["backend"], t["result"]) for t in rec["tries"]] == [("a", "5xx"), ("b", "ok")]
    assert rec["tries"][0]["reason"] == "bad_upstream_response"
    assert rec["attempts"] == 2 and rec["fallbacks"] == 1 and rec["backend"] == "b"
    assert rec["annotations"]["continued"] == 1
    metrics = await sc.metrics()
    assert 'sluice_stream_failures_total{backend="a",reason="5xx",route="chat"} 1.0' in metrics
    health = sc.gateway.route_state(sc.gateway.snapshot.routes["chat"]).health["a"]  # type: ignore[union-attr]
    assert health.consecutive_failures == 1  # the breaker was told


async def test_sdk_sees_one_answer(
    start_sidecar: StartSidecar, fake: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake.default = hang_mid(2)
    fake_b.default = ok("and the rest.")
    r = continuing(backend("a", fake), backend("b", fake_b), timeouts=Timeouts(idle=0.3))
    sc = await start_sidecar(config(r))
    async with openai.AsyncOpenAI(base_url=sc.base_url, api_key="x", max_retries=0) as client:
        stream = await client.chat.completions.create(model="chat", messages=MSG, stream=True)
        got = [c async for c in stream]  # no APIError
    assert "".join(c.choices[0].delta.content or "" for c in got) == "Hello fromand the rest."
    assert [c.choices[0].finish_reason for c in got][-1] == "stop"
    assert [t["result"] for t in sc.audit.records[-1]["tries"]] == ["timeout", "ok"]


async def test_anthropic_continues_a_true_prefill(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    claude = await FakeAnthropic().start()
    try:
        fake.default = cut(3)  # "Once", " upon", " " — the partial answer ends in a space
        fake.default.content = "Once upon  a time"
        claude.default = fa.ok(" a time.")
        c = backend("c", provider="anthropic", base_url=claude.base_url, model="claude-x")
        sc = await start_sidecar(config(continuing(backend("a", fake), c)))
        events = await raw_stream(sc)
    finally:
        await claude.stop()
    # Anthropic continues the last assistant message itself (no instruction), which must not
    # end in whitespace; the space it then opens with is not doubled.
    assert claude.requests[0]["messages"] == [
        {"role": "user", "content": "Tell me a story"},
        {"role": "assistant", "content": "Once upon"},
    ]
    assert claude.requests[0]["max_tokens"] == 47
    assert text(events) == "Once upon a time."
    assert events[-1].data == "[DONE]"


async def test_no_backend_left_ends_with_the_error_event(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    fake.default = cut(2)
    sc = await start_sidecar(config(continuing(backend("a", fake), retry=Retry(attempts=1))))
    events = await raw_stream(sc)
    assert text(events) == "Hello from"
    assert all(e.data != "[DONE]" for e in events)
    assert json.loads(events[-1].data)["error"]["code"] == "bad_upstream_response"
    rec = sc.audit.records[-1]
    assert rec["outcome"] == "stream_error" and len(fake.requests) == 1
    assert rec["annotations"]["gaveUp"] == "attempts exhausted"
    assert "continued" not in rec["annotations"]


async def test_failed_continuation_ends_with_its_error(
    start_sidecar: StartSidecar, fake: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake.default = cut(2)
    fake_b.default = status(500, "the continuation failed too")
    sc = await start_sidecar(config(continuing(backend("a", fake), backend("b", fake_b))))
    events = await raw_stream(sc)
    assert text(events) == "Hello from"
    assert json.loads(events[-1].data)["error"]["code"] == "upstream_500"
    assert all(e.data != "[DONE]" for e in events)
    rec = sc.audit.records[-1]
    assert [(t["backend"], t["result"]) for t in rec["tries"]] == [("a", "5xx"), ("b", "5xx")]
    assert rec["outcome"] == "stream_error" and rec["errorCode"] == "upstream_500"


async def test_error_mode_does_not_continue(
    start_sidecar: StartSidecar, fake: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake.default = cut(2)
    sc = await start_sidecar(config(route("chat", backend("a", fake), backend("b", fake_b))))
    events = await raw_stream(sc)
    assert json.loads(events[-1].data)["error"]["code"] == "bad_upstream_response"
    assert fake_b.requests == []
