"""An Anthropic backend behind the OpenAI API: the official openai SDK talks to the sidecar, the
sidecar talks to a fake Anthropic server in Anthropic's wire format (validated by the anthropic
SDK's types). Errors map to the same failure classes as OpenAI's, so fallback rules apply alike."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from sluice_sidecar import sse
from sluice_sidecar.contract import Backend, CredentialRef, FailureClass, Fallback, Timeouts
from tests.fakes import anthropic_server as fa
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI

from .conftest import StartSidecar, backend, config, route

MSG = [{"role": "user", "content": "Say hi"}]


@pytest.fixture
async def claude() -> AsyncIterator[FakeAnthropic]:
    f = await FakeAnthropic().start()
    yield f
    await f.stop()


def claude_backend(f: FakeAnthropic, name: str = "c", **kw: Any) -> Backend:
    return backend(name, provider="anthropic", base_url=f.base_url, model="claude-x", **kw)


async def raw_stream(url: str, body: dict[str, Any]) -> list[sse.Event]:
    parser = sse.Parser()
    async with aiohttp.ClientSession() as s, s.post(url + "/v1/chat/completions", json=body) as r:
        events = parser.feed(await r.read())
        assert not parser.has_partial
        return events


async def test_unary_headers_body_and_usage(
    start_sidecar: StartSidecar, claude: FakeAnthropic, tmp_path: Path
) -> None:
    (tmp_path / "key").write_text("sk-ant-test\n")
    ref = CredentialRef(secret_name="s", key="k", file="key")
    claude.default = fa.ok("Hi there.", usage=(10, 3, 4, 20))
    sc = await start_sidecar(
        config(route("chat", claude_backend(claude, credentials=ref))), secrets_dir=str(tmp_path)
    )
    async with openai.AsyncOpenAI(base_url=sc.base_url, api_key="x", max_retries=0) as client:
        out = await client.chat.completions.create(
            model="chat",
            messages=[{"role": "system", "content": "Be brief."}, *MSG],  # type: ignore[list-item]
            max_tokens=50,
            temperature=1.5,
            stop="END",
        )
    assert out.choices[0].message.content == "Hi there."
    assert out.choices[0].finish_reason == "stop"
    assert out.usage is not None
    assert out.usage.prompt_tokens == 34 and out.usage.completion_tokens == 3
    assert out.usage.prompt_tokens_details is not None
    assert out.usage.prompt_tokens_details.cached_tokens == 20
    sent, headers = claude.requests[0], claude.headers[0]
    assert headers["x-api-key"] == "sk-ant-test" and headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in headers
    assert sent == {
        "model": "claude-x",
        "messages": [{"role": "user", "content": "Say hi"}],
        "system": "Be brief.",
        "max_tokens": 50,
        "temperature": 1.0,
        "stop_sequences": ["END"],
    }
    rec = sc.audit.records[-1]
    assert rec["provider"] == "anthropic" and rec["cachedInputTokens"] == 20
    assert rec["usageSource"] == "provider"


async def test_default_max_tokens_from_config(
    start_sidecar: StartSidecar, claude: FakeAnthropic
) -> None:
    sc = await start_sidecar(config(route("chat", claude_backend(claude))))
    status, _, _ = await sc.post("/v1/chat/completions", {"model": "chat", "messages": MSG})
    assert status == 200 and claude.requests[0]["max_tokens"] == 4096


async def test_tool_calls_round_trip_through_the_sdk(
    start_sidecar: StartSidecar, claude: FakeAnthropic
) -> None:
    claude.then(fa.tool_use("get_weather", {"city": "Paris"}, text="Let me check."))
    sc = await start_sidecar(config(route("chat", claude_backend(claude))))
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather by city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    async with openai.AsyncOpenAI(base_url=sc.base_url, api_key="x", max_retries=0) as client:
        out = await client.chat.completions.create(
            model="chat",
            messages=MSG,  # type: ignore[arg-type]
            tools=tools,  # type: ignore[arg-type]
            tool_choice="required",
        )
        msg = out.choices[0].message
        assert out.choices[0].finish_reason == "tool_calls"
        assert msg.content == "Let me check."
        assert msg.tool_calls is not None
        call = msg.tool_calls[0]
        assert call.id == "toolu_01" and call.function.name == "get_weather"  # type: ignore[union-attr]
        assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
        assert claude.requests[0]["tools"][0]["input_schema"]["properties"]["city"]
        assert claude.requests[0]["tool_choice"] == {"type": "any"}
        # second turn: the tool result goes back as a tool_result block
        await client.chat.completions.create(
            model="chat",
            messages=[
                *MSG,
                msg.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": "toolu_01", "content": '{"temp": 21}'},
            ],  # type: ignore[list-item]
        )
    turns = claude.requests[1]["messages"]
    assert turns[1]["content"][1] == {
        "type": "tool_use",
        "id": "toolu_01",
        "name": "get_weather",
        "input": {"city": "Paris"},
    }
    assert turns[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": '{"temp": 21}'}],
    }


async def test_streaming_text_with_usage(
    start_sidecar: StartSidecar, claude: FakeAnthropic
) -> None:
    claude.default = fa.ok("One two three four.", usage=(7, 4, 0, 2))
    sc = await start_sidecar(config(route("chat", claude_backend(claude))))
    async with openai.AsyncOpenAI(base_url=sc.base_url, api_key="x", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="chat",
            messages=MSG,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "One two three four."
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 9
    assert chunks[-1].usage.completion_tokens == 4
    assert claude.requests[0]["stream"] is True
    assert sc.audit.records[-1]["outputTokens"] == 4


async def test_streaming_without_usage_request_hides_usage_chunk(
    start_sidecar: StartSidecar, claude: FakeAnthropic
) -> None:
    sc = await start_sidecar(config(route("chat", claude_backend(claude))))
    events = await raw_stream(sc.url, {"model": "chat", "messages": MSG, "stream": True})
    assert events[-1].data == "[DONE]"
    assert all(json.loads(e.data)["choices"] for e in events[:-1])


async def test_streaming_tool_call(start_sidecar: StartSidecar, claude: FakeAnthropic) -> None:
    claude.default = fa.tool_use("lookup", {"q": "sluice gates", "n": 3})
    sc = await start_sidecar(config(route("chat", claude_backend(claude))))
    async with openai.AsyncOpenAI(base_url=sc.base_url, api_key="x", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="chat",
            messages=MSG,  # type: ignore[arg-type]
            stream=True,
        )
        chunks = [c async for c in stream]
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].id == "toolu_01" and calls[0].function is not None
    assert calls[0].function.name == "lookup"
    args = "".join((tc.function.arguments or "") for tc in calls if tc.function)
    assert json.loads(args) == {"q": "sluice gates", "n": 3}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_529_overloaded_falls_over_to_openai(
    start_sidecar: StartSidecar, claude: FakeAnthropic, fake: FakeOpenAI
) -> None:
    claude.default = fa.overloaded()
    sc = await start_sidecar(config(route("chat", claude_backend(claude), backend("o", fake))))
    status, headers, body = await sc.post(
        "/v1/chat/completions", {"model": "chat", "messages": MSG}
    )
    assert status == 200 and headers["x-sluice-backend"] == "o"
    assert body["choices"][0]["message"]["content"] == "Hello from the fake."
    rec = sc.audit.records[-1]
    assert rec["fallbacks"] == 1
    assert [(t["backend"], t["result"], t["status"]) for t in rec["tries"]] == [
        ("c", "5xx", 529),
        ("o", "ok", 200),
    ]
    assert rec["tries"][0]["reason"] == "upstream_529"


async def test_429_with_retry_after_is_rate_limited_class(
    start_sidecar: StartSidecar, claude: FakeAnthropic
) -> None:
    claude.default = fa.status(429, "rate_limit_error", "slow down", {"retry-after": "30"})
    sc = await start_sidecar(config(route("chat", claude_backend(claude))))
    status, headers, body = await sc.post(
        "/v1/chat/completions", {"model": "chat", "messages": MSG}
    )
    assert status == 429 and headers["Retry-After"] == "30"
    assert body["error"]["type"] == "rate_limit_exceeded"
    assert len(claude.requests) == 1  # 30 s is above maxRetryAfter: returned, not waited


async def test_prompt_too_long_is_context_window_and_can_fall_over(
    start_sidecar: StartSidecar, claude: FakeAnthropic, fake: FakeOpenAI
) -> None:
    claude.default = fa.prompt_too_long()
    only = route("only", claude_backend(claude))
    fb = Fallback(on=(FailureClass.CONTEXT_WINDOW_EXCEEDED,))
    both = route("both", claude_backend(claude), backend("o", fake), fallback=fb)
    sc = await start_sidecar(config(only, both))
    status, _, body = await sc.post("/v1/chat/completions", {"model": "only", "messages": MSG})
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"
    status, headers, _ = await sc.post("/v1/chat/completions", {"model": "both", "messages": MSG})
    assert status == 200 and headers["x-sluice-backend"] == "o"


async def test_auth_error_is_not_retried(
    start_sidecar: StartSidecar, claude: FakeAnthropic, fake: FakeOpenAI
) -> None:
    claude.default = fa.status(401, "authentication_error", "invalid x-api-key")
    sc = await start_sidecar(config(route("chat", claude_backend(claude), backend("o", fake))))
    status, _, body = await sc.post("/v1/chat/completions", {"model": "chat", "messages": MSG})
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert len(claude.requests) == 1 and not fake.requests


async def test_in_band_overloaded_before_content_falls_over_invisibly(
    start_sidecar: StartSidecar, claude: FakeAnthropic, fake: FakeOpenAI
) -> None:
    claude.default = fa.inband(events_before=3)  # message_start, ping, content_block_start
    sc = await start_sidecar(config(route("chat", claude_backend(claude), backend("o", fake))))
    events = await raw_stream(sc.url, {"model": "chat", "messages": MSG, "stream": True})
    assert events[-1].data == "[DONE]"
    text = "".join(
        (json.loads(e.data)["choices"][0]["delta"].get("content") or "") for e in events[:-1]
    )
    assert text == "Hello from the fake."


async def test_in_band_error_mid_stream_ends_with_error_frame(
    start_sidecar: StartSidecar, claude: FakeAnthropic
) -> None:
    claude.default = fa.inband(events_before=5)  # two text deltas went out
    sc = await start_sidecar(config(route("chat", claude_backend(claude))))
    events = await raw_stream(sc.url, {"model": "chat", "messages": MSG, "stream": True})
    assert all(e.data != "[DONE]" for e in events)
    last = json.loads(events[-1].data)
    assert last["error"]["code"] == "upstream_stream_error"
    assert "overloaded_error" in last["error"]["message"]
    assert sc.audit.records[-1]["outcome"] == "stream_error"


async def test_cut_stream_and_eof_without_stop(
    start_sidecar: StartSidecar, claude: FakeAnthropic
) -> None:
    claude.then(fa.cut(5), fa.eof(5))
    sc = await start_sidecar(config(route("chat", claude_backend(claude))))
    for _ in range(2):
        events = await raw_stream(sc.url, {"model": "chat", "messages": MSG, "stream": True})
        assert json.loads(events[-1].data)["error"]["code"] == "bad_upstream_response"
        assert all(e.data != "[DONE]" for e in events)


async def test_hang_times_out_and_falls_over(
    start_sidecar: StartSidecar, claude: FakeAnthropic, fake: FakeOpenAI
) -> None:
    claude.default = fa.hang()
    r = route(
        "chat",
        claude_backend(claude),
        backend("o", fake),
        timeouts=Timeouts(first_token=0.2),
    )
    sc = await start_sidecar(config(r))
    status, headers, _ = await sc.post("/v1/chat/completions", {"model": "chat", "messages": MSG})
    assert status == 200 and headers["x-sluice-backend"] == "o"


async def test_embeddings_fall_over_from_anthropic(
    start_sidecar: StartSidecar, claude: FakeAnthropic, fake: FakeOpenAI
) -> None:
    sc = await start_sidecar(config(route("emb", claude_backend(claude), backend("o", fake))))
    status, headers, _ = await sc.post("/v1/embeddings", {"model": "emb", "input": "x"})
    assert status == 200 and headers["x-sluice-backend"] == "o" and not claude.requests
