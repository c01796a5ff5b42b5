"""Streaming: chunk-by-chunk pass-through, the commit point at the first frame, and what a
client sees when a stream fails after it: content so far, one terminal error event, no [DONE]."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import openai
import pytest

from sluice_sidecar import sse
from sluice_sidecar.contract import Timeouts
from tests.fakes.openai_server import (
    FakeOpenAI,
    cut,
    eof,
    hang,
    hang_mid,
    inband,
    ok,
    quirks,
)

from .conftest import StartSidecar, backend, config, route

MSG = [{"role": "user", "content": "hi"}]
STREAM = {"model": "chat", "messages": MSG, "stream": True}


async def raw_stream(url: str, body: dict[str, Any]) -> tuple[int, dict[str, str], list[sse.Event]]:
    parser = sse.Parser()
    async with aiohttp.ClientSession() as s, s.post(url + "/v1/chat/completions", json=body) as r:
        events = parser.feed(await r.read())
        assert not parser.has_partial
        return r.status, dict(r.headers), events


def texts(events: list[sse.Event]) -> str:
    out = []
    for ev in events:
        if ev.data == "[DONE]":
            continue
        obj = json.loads(ev.data)
        for c in obj.get("choices", []):
            out.append(c.get("delta", {}).get("content") or "")
    return "".join(out)


def assert_terminal_error(events: list[sse.Event], code: str) -> None:
    assert all(ev.data != "[DONE]" for ev in events)
    last = json.loads(events[-1].data)
    assert set(last) == {"error"}
    assert last["error"]["code"] == code
    assert not any("error" in json.loads(e.data) for e in events[:-1])


async def test_headers_and_canonical_frames(start_sidecar: StartSidecar, fake: FakeOpenAI) -> None:
    sc = await start_sidecar(config(route("chat", backend("a", fake))))
    status, headers, events = await raw_stream(sc.url, STREAM)
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    assert headers["x-sluice-route"] == "chat" and headers["x-sluice-backend"] == "a"
    assert events[-1].data == "[DONE]"
    assert texts(events) == "Hello from the fake."
    # The usage chunk the sidecar asked for is not shown to a client that did not ask for it.
    assert all(json.loads(e.data).get("choices") for e in events[:-1])
    assert sc.audit.records[-1]["usageSource"] == "provider"


async def test_usage_chunk_kept_when_client_asks(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    sc = await start_sidecar(config(route("chat", backend("a", fake))))
    _, _, events = await raw_stream(sc.url, {**STREAM, "stream_options": {"include_usage": True}})
    usage = json.loads(events[-2].data)
    assert usage["choices"] == [] and usage["usage"]["prompt_tokens"] == 11


async def test_no_usage_from_provider_is_counted(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    fake.default = ok("one two three", usage=False)
    sc = await start_sidecar(config(route("chat", backend("a", fake))))
    await raw_stream(sc.url, STREAM)
    rec = sc.audit.records[-1]
    assert rec["usageSource"] == "estimated" and rec["outputTokens"] == 3


async def test_sse_quirks_are_parsed(start_sidecar: StartSidecar, fake: FakeOpenAI) -> None:
    fake.default = quirks("Hello quirky world")
    sc = await start_sidecar(config(route("chat", backend("a", fake))))
    async with openai.AsyncOpenAI(base_url=sc.base_url, api_key="x", max_retries=0) as client:
        stream = await client.chat.completions.create(model="chat", messages=MSG, stream=True)  # type: ignore[arg-type]
        chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello quirky world"
    assert all(c.choices for c in chunks)  # the empty-choices annotation frame was dropped


async def test_hang_after_headers_before_first_event_falls_over(
    start_sidecar: StartSidecar, fake: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake.default = hang_mid(0)
    r = route("chat", backend("a", fake), backend("b", fake_b), timeouts=Timeouts(first_token=0.3))
    sc = await start_sidecar(config(r))
    status, headers, events = await raw_stream(sc.url, STREAM)
    assert status == 200 and headers["x-sluice-backend"] == "b"
    assert texts(events) == "Hello from the fake." and events[-1].data == "[DONE]"


async def test_hang_before_headers_everywhere_is_a_plain_504(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    fake.default = hang()
    r = route("chat", backend("a", fake), timeouts=Timeouts(first_token=0.2))
    sc = await start_sidecar(config(r))
    async with (
        aiohttp.ClientSession() as s,
        s.post(sc.url + "/v1/chat/completions", json=STREAM) as resp,
    ):
        assert resp.status == 504
        assert (await resp.json())["error"]["code"] == "upstream_timeout"


async def test_hang_mid_stream_ends_with_error_event(
    start_sidecar: StartSidecar, fake: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake.default = hang_mid(2)
    r = route("chat", backend("a", fake), backend("b", fake_b), timeouts=Timeouts(idle=0.3))
    sc = await start_sidecar(config(r))
    status, _, events = await raw_stream(sc.url, STREAM)
    assert status == 200
    assert texts(events[:-1]) == "Hello from"
    assert_terminal_error(events, "upstream_timeout")
    assert fake_b.requests == []  # no silent fallback after the commit point
    rec = sc.audit.records[-1]
    assert rec["outcome"] == "stream_error" and rec["outputTokens"] == 2
    assert (
        'sluice_stream_failures_total{backend="a",reason="timeout",route="chat"} 1.0'
        in await sc.metrics()
    )


async def test_sdk_raises_on_mid_stream_failure(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    fake.default = cut(2)
    sc = await start_sidecar(config(route("chat", backend("a", fake))))
    got: list[str] = []
    async with openai.AsyncOpenAI(base_url=sc.base_url, api_key="x", max_retries=0) as client:
        stream = await client.chat.completions.create(model="chat", messages=MSG, stream=True)  # type: ignore[arg-type]
        with pytest.raises(openai.APIError, match=r"broke the connection|cut the stream"):
            async for c in stream:
                got.append(c.choices[0].delta.content or "")
    assert "".join(got) == "Hello from"


@pytest.mark.parametrize(
    ("step", "code"),
    [
        (cut(2), "bad_upstream_response"),
        (eof(2), "bad_upstream_response"),
        (inband(2), "upstream_stream_error"),
    ],
    ids=["cut-mid-line", "eof-without-done", "in-band-error"],
)
async def test_broken_stream_after_commit(
    start_sidecar: StartSidecar, fake: FakeOpenAI, fake_b: FakeOpenAI, step: Any, code: str
) -> None:
    fake.default = step
    sc = await start_sidecar(config(route("chat", backend("a", fake), backend("b", fake_b))))
    status, _, events = await raw_stream(sc.url, STREAM)
    assert status == 200
    assert texts(events[:-1]) == "Hello from"
    assert_terminal_error(events, code)
    assert len(fake.requests) == 1 and fake_b.requests == []
    health = sc.gateway.route_state(sc.gateway.snapshot.routes["chat"]).health["a"]  # type: ignore[union-attr]
    assert health.consecutive_failures == 1  # the breaker was told


async def test_eof_after_finish_reason_is_complete(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    fake.default = eof(100)  # every frame including finish_reason, then EOF without [DONE]
    sc = await start_sidecar(config(route("chat", backend("a", fake))))
    _, _, events = await raw_stream(sc.url, STREAM)
    assert texts(events) == "Hello from the fake."
    assert events[-1].data == "[DONE]"


async def test_mock_stream_with_sync_sdk(start_sidecar: StartSidecar) -> None:
    import asyncio

    sc = await start_sidecar(config(route("m", backend("mock"))))

    def run() -> str:
        with openai.OpenAI(base_url=sc.base_url, api_key="x", max_retries=0) as client:
            stream = client.chat.completions.create(model="m", messages=MSG, stream=True)  # type: ignore[arg-type]
            return "".join(c.choices[0].delta.content or "" for c in stream)

    text = await asyncio.to_thread(run)
    assert text.startswith("This is a mock answer from Sluice.")
