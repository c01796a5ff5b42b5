"""``POST /v1/messages``: the official anthropic SDK (sync, async, streaming) as a client of the
sidecar, routed by the same routes to Anthropic (passed through natively), OpenAI-compatible,
Gemini and mock backends (translated), with fallback from a failing Anthropic backend."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import pytest

from sluice_sidecar import sse
from sluice_sidecar.contract import Backend
from sluice_sidecar.exchange import Exchange
from sluice_sidecar.stage import Stage
from tests.fakes import anthropic_server as fa
from tests.fakes import gemini_server as fg
from tests.fakes import openai_server as fo
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.openai_server import FakeOpenAI

from .conftest import StartSidecar, backend, config, route

MSGS: list[Any] = [{"role": "user", "content": "Say hi"}]


@pytest.fixture
async def claude() -> AsyncIterator[FakeAnthropic]:
    f = await FakeAnthropic().start()
    yield f
    await f.stop()


@pytest.fixture
async def gemini() -> AsyncIterator[FakeGemini]:
    f = await FakeGemini().start()
    yield f
    await f.stop()


def claude_backend(f: FakeAnthropic, name: str = "c") -> Backend:
    return backend(name, provider="anthropic", base_url=f.base_url, model="claude-x")


def gemini_backend(f: FakeGemini, name: str = "g") -> Backend:
    return backend(name, provider="gemini", base_url=f.base_url, model="gemini-x")


async def test_sync_sdk_native_passthrough(
    start_sidecar: StartSidecar, claude: FakeAnthropic
) -> None:
    claude.default = fa.ok("Hello, native.", usage=(10, 3, 5, 7))
    sc = await start_sidecar(config(route("claude", claude_backend(claude))))
    system: Any = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]

    def call() -> anthropic.types.Message:
        with anthropic.Anthropic(base_url=sc.url, api_key="x", max_retries=0) as client:
            return client.messages.create(
                model="claude",
                max_tokens=100,
                system=system,
                messages=MSGS,
                extra_body={"top_k": 5},
                thinking={"type": "enabled", "budget_tokens": 64},
            )

    out = await asyncio.to_thread(call)
    assert out.content[0].type == "text" and out.content[0].text == "Hello, native."
    assert out.usage.cache_read_input_tokens == 7
    sent = claude.requests[0]
    # passed through as the client wrote it: cache_control, top_k, thinking survive
    assert sent["system"] == system and sent["top_k"] == 5 and sent["thinking"]["type"] == "enabled"
    assert sent["model"] == "claude-x"
    rec = sc.audit.records[-1]
    assert rec["api"] == "anthropic" and rec["inputTokens"] == 22 and rec["cachedInputTokens"] == 7


async def test_async_sdk_translated_to_openai_backend(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    sc = await start_sidecar(config(route("chat", backend("o", fake))))
    async with anthropic.AsyncAnthropic(base_url=sc.url, api_key="x", max_retries=0) as client:
        out = await client.messages.create(
            model="chat",
            max_tokens=64,
            system="Be brief.",
            messages=MSGS,
            stop_sequences=["END"],
        )
    assert out.content[0].type == "text" and out.content[0].text == "Hello from the fake."
    assert out.stop_reason == "end_turn"
    assert out.usage.input_tokens == 11 and out.usage.output_tokens == 5
    assert fake.requests[0] == {
        "model": "o-model",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hi"},
        ],
        "max_tokens": 64,
        "stop": ["END"],
    }


async def test_streaming_sdk_helper_translated(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    fake.default = fo.ok("Streaming through the sidecar")
    sc = await start_sidecar(config(route("chat", backend("o", fake))))
    async with (
        anthropic.AsyncAnthropic(base_url=sc.url, api_key="x", max_retries=0) as client,
        client.messages.stream(model="chat", max_tokens=64, messages=MSGS) as stream,
    ):
        texts = [t async for t in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(texts) == "Streaming through the sidecar"
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == 11 and final.usage.output_tokens == 4
    assert fake.requests[0]["stream_options"] == {"include_usage": True}


async def test_streaming_native_passthrough(
    start_sidecar: StartSidecar, claude: FakeAnthropic
) -> None:
    claude.default = fa.tool_use("lookup", {"q": "x"}, text="Checking")
    sc = await start_sidecar(config(route("claude", claude_backend(claude))))

    def run() -> anthropic.types.Message:
        with (
            anthropic.Anthropic(base_url=sc.url, api_key="x", max_retries=0) as client,
            client.messages.stream(model="claude", max_tokens=64, messages=MSGS) as stream,
        ):
            for _ in stream:
                pass
            return stream.get_final_message()

    final = await asyncio.to_thread(run)
    assert [b.type for b in final.content] == ["text", "tool_use"]
    assert final.content[1].input == {"q": "x"}  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use"
    assert sc.audit.records[-1]["outputTokens"] == 5


async def test_tools_translated_to_openai_and_back(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    sc = await start_sidecar(config(route("chat", backend("o", fake))))
    tools: Any = [
        {
            "name": "get_weather",
            "description": "Weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    messages: Any = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "21C"}],
        },
    ]
    async with anthropic.AsyncAnthropic(base_url=sc.url, api_key="x", max_retries=0) as client:
        await client.messages.create(
            model="chat",
            max_tokens=64,
            messages=messages,
            tools=tools,
            tool_choice={"type": "tool", "name": "get_weather"},
        )
    sent = fake.requests[0]
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "21C"}


async def test_gemini_and_mock_backends(start_sidecar: StartSidecar, gemini: FakeGemini) -> None:
    sc = await start_sidecar(
        config(route("g", gemini_backend(gemini)), route("m", backend("mock1")))
    )
    async with anthropic.AsyncAnthropic(base_url=sc.url, api_key="x", max_retries=0) as client:
        out = await client.messages.create(model="g", max_tokens=64, messages=MSGS)
        assert out.content[0].text == "Hello from Gemini."  # type: ignore[union-attr]
        assert out.usage.input_tokens == 9
        async with client.messages.stream(model="m", max_tokens=64, messages=MSGS) as stream:
            text = "".join([t async for t in stream.text_stream])
        assert text.startswith("This is a mock answer")
        final = await stream.get_final_message()
        assert final.usage.output_tokens == 16


async def test_fallback_from_failing_anthropic_to_openai(
    start_sidecar: StartSidecar, claude: FakeAnthropic, fake: FakeOpenAI
) -> None:
    claude.then(fa.overloaded(), fa.inband(events_before=3))
    sc = await start_sidecar(config(route("chat", claude_backend(claude), backend("o", fake))))
    async with anthropic.AsyncAnthropic(base_url=sc.url, api_key="x", max_retries=0) as client:
        out = await client.messages.create(model="chat", max_tokens=64, messages=MSGS)
        assert out.content[0].text == "Hello from the fake."  # type: ignore[union-attr]
        # streaming: Anthropic fails in-band before any content → invisible fallback
        async with client.messages.stream(model="chat", max_tokens=64, messages=MSGS) as stream:
            text = "".join([t async for t in stream.text_stream])
        assert text == "Hello from the fake."
    assert [r["fallbacks"] for r in sc.audit.records] == [1, 1]
    assert [t["result"] for t in sc.audit.records[0]["tries"]] == ["5xx", "ok"]


async def test_errors_are_anthropic_shaped(
    start_sidecar: StartSidecar, claude: FakeAnthropic
) -> None:
    claude.default = fa.status(401, "authentication_error", "invalid x-api-key")
    sc = await start_sidecar(config(route("claude", claude_backend(claude))))
    async with anthropic.AsyncAnthropic(base_url=sc.url, api_key="x", max_retries=0) as client:
        with pytest.raises(anthropic.NotFoundError) as nf:
            await client.messages.create(model="nope", max_tokens=5, messages=MSGS)
        assert nf.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
        with pytest.raises(anthropic.AuthenticationError):
            await client.messages.create(model="claude", max_tokens=5, messages=MSGS)
    status, _, body = await sc.post("/v1/messages", {"model": "claude", "messages": MSGS})
    assert status == 400 and body["type"] == "error"
    assert (
        body["error"]["type"] == "invalid_request_error"
        and "max_tokens" in body["error"]["message"]
    )
    status, _, body = await sc.post("/v1/messages", data=b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"


async def test_mid_stream_failure_is_an_error_event(
    start_sidecar: StartSidecar, claude: FakeAnthropic, fake: FakeOpenAI
) -> None:
    claude.default = fa.inband(events_before=5)
    fake.default = fo.inband(chunks_before=2)
    sc = await start_sidecar(
        config(route("claude", claude_backend(claude)), route("o", backend("o", fake)))
    )
    async with anthropic.AsyncAnthropic(base_url=sc.url, api_key="x", max_retries=0) as client:
        for model in ("claude", "o"):
            with pytest.raises(anthropic.APIStatusError) as err:
                async with client.messages.stream(model=model, max_tokens=64, messages=MSGS) as s:
                    async for _ in s:
                        pass
            assert err.value.body["type"] == "error"  # type: ignore[index]
    # raw: the translated stream ends with one `event: error` and no message_stop
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            sc.url + "/v1/messages",
            json={"model": "o", "max_tokens": 5, "messages": MSGS, "stream": True},
        ) as r,
    ):
        events = sse.Parser().feed(await r.read())
    assert events[-1].event == "error" and json.loads(events[-1].data)["type"] == "error"
    assert not any(e.event == "message_stop" for e in events)
    assert events[0].event == "message_start"


class _Redact(Stage):
    async def on_request(self, ex: Exchange) -> None:
        ex.body = {**ex.body, "messages": [{"role": "user", "content": "[redacted]"}]}


async def test_stage_rewriting_the_body_disables_passthrough(
    start_sidecar: StartSidecar, claude: FakeAnthropic
) -> None:
    sc = await start_sidecar(config(route("claude", claude_backend(claude))), stages=[_Redact()])
    status, _, body = await sc.post(
        "/v1/messages",
        {"model": "claude", "max_tokens": 9, "messages": MSGS, "top_k": 3},
    )
    assert status == 200 and body["type"] == "message"
    sent = claude.requests[0]
    assert sent["messages"] == [{"role": "user", "content": "[redacted]"}]
    assert sent["top_k"] == 3  # carried through the canonical form (openai_anthropic.FIELDS)


async def test_gemini_stream_to_anthropic_client(
    start_sidecar: StartSidecar, gemini: FakeGemini
) -> None:
    gemini.default = fg.function_call("lookup", {"q": "x"}, text="Let me see")
    sc = await start_sidecar(config(route("g", gemini_backend(gemini))))
    async with (
        anthropic.AsyncAnthropic(base_url=sc.url, api_key="x", max_retries=0) as client,
        client.messages.stream(model="g", max_tokens=64, messages=MSGS) as stream,
    ):
        final = await stream.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use"]
    assert final.content[1].input == {"q": "x"}  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use"
    assert final.usage.input_tokens == 9 and final.usage.output_tokens == 4
