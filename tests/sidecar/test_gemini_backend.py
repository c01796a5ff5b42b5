"""A Gemini backend behind the OpenAI API: the openai SDK talks to the sidecar, the sidecar to a
fake Gemini server (generateContent / streamGenerateContent?alt=sse). Safety blocks become
content_filter; errors map to the same failure classes as every provider's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from sluice_sidecar import sse
from sluice_sidecar.contract import Backend, CredentialRef, FailureClass, Fallback
from tests.fakes import gemini_server as fg
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.openai_server import FakeOpenAI

from .conftest import StartSidecar, backend, config, route

MSG: list[Any] = [{"role": "user", "content": "Say hi"}]


@pytest.fixture
async def gemini() -> AsyncIterator[FakeGemini]:
    f = await FakeGemini().start()
    yield f
    await f.stop()


def gemini_backend(f: FakeGemini, name: str = "g", **kw: Any) -> Backend:
    return backend(name, provider="gemini", base_url=f.base_url, model="gemini-x", **kw)


async def raw_stream(url: str, body: dict[str, Any]) -> list[sse.Event]:
    parser = sse.Parser()
    async with aiohttp.ClientSession() as s, s.post(url + "/v1/chat/completions", json=body) as r:
        return parser.feed(await r.read())


async def test_unary_url_key_body_and_usage(
    start_sidecar: StartSidecar, gemini: FakeGemini, tmp_path: Path
) -> None:
    (tmp_path / "key").write_text("AIza-test")
    ref = CredentialRef(secret_name="s", key="k", file="key")
    gemini.default = fg.ok("Hi!", usage=(30, 2, 10, 5))
    sc = await start_sidecar(
        config(route("chat", gemini_backend(gemini, credentials=ref))), secrets_dir=str(tmp_path)
    )
    async with openai.AsyncOpenAI(base_url=sc.base_url, api_key="x", max_retries=0) as client:
        out = await client.chat.completions.create(
            model="chat",
            messages=[{"role": "system", "content": "Be brief."}, *MSG],
            max_tokens=20,
            temperature=0.3,
            stop=["END"],
        )
    assert out.choices[0].message.content == "Hi!" and out.choices[0].finish_reason == "stop"
    assert out.usage is not None and out.usage.prompt_tokens == 30
    assert out.usage.completion_tokens == 7  # candidates + thoughts
    assert gemini.paths[0] == "/v1beta/models/gemini-x:generateContent"
    assert gemini.headers[0]["x-goog-api-key"] == "AIza-test"
    assert gemini.requests[0] == {
        "contents": [{"role": "user", "parts": [{"text": "Say hi"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"temperature": 0.3, "maxOutputTokens": 20, "stopSequences": ["END"]},
    }
    assert sc.audit.records[-1]["cachedInputTokens"] == 10


async def test_function_calling_round_trip(start_sidecar: StartSidecar, gemini: FakeGemini) -> None:
    gemini.then(fg.function_call("get_weather", {"city": "Oslo"}))
    sc = await start_sidecar(config(route("chat", gemini_backend(gemini))))
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    async with openai.AsyncOpenAI(base_url=sc.base_url, api_key="x", max_retries=0) as client:
        out = await client.chat.completions.create(model="chat", messages=MSG, tools=tools)
        msg = out.choices[0].message
        assert out.choices[0].finish_reason == "tool_calls" and msg.tool_calls
        call: Any = msg.tool_calls[0]
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Oslo"}
        await client.chat.completions.create(
            model="chat",
            messages=[
                *MSG,
                msg.model_dump(exclude_none=True),  # type: ignore[list-item]
                {"role": "tool", "tool_call_id": call.id, "content": '{"temp": -3}'},
            ],
            tools=tools,
        )
    decl = gemini.requests[0]["tools"][0]["functionDeclarations"][0]
    assert decl["name"] == "get_weather" and decl["parametersJsonSchema"]["type"] == "object"
    contents = gemini.requests[1]["contents"]
    assert contents[1] == {
        "role": "model",
        "parts": [
            {
                "functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
                "thoughtSignature": "c2ln",
            }
        ],
    }
    assert contents[2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": -3}}}],
    }


async def test_streaming(start_sidecar: StartSidecar, gemini: FakeGemini) -> None:
    gemini.default = fg.ok("Streamed from Gemini today")
    sc = await start_sidecar(config(route("chat", gemini_backend(gemini))))
    async with openai.AsyncOpenAI(base_url=sc.base_url, api_key="x", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="chat", messages=MSG, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "Streamed from Gemini today"
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert gemini.paths[0] == "/v1beta/models/gemini-x:streamGenerateContent?alt=sse"


async def test_safety_finish_is_content_filter(
    start_sidecar: StartSidecar, gemini: FakeGemini
) -> None:
    gemini.default = fg.safety()
    sc = await start_sidecar(config(route("chat", gemini_backend(gemini))))
    status, _, body = await sc.post("/v1/chat/completions", {"model": "chat", "messages": MSG})
    assert status == 200 and body["choices"][0]["finish_reason"] == "content_filter"
    events = await raw_stream(sc.url, {"model": "chat", "messages": MSG, "stream": True})
    finishes = [
        json.loads(e.data)["choices"][0]["finish_reason"] for e in events if e.data != "[DONE]"
    ]
    assert finishes[-1] == "content_filter" and events[-1].data == "[DONE]"


async def test_blocked_prompt_is_content_filter_class(
    start_sidecar: StartSidecar, gemini: FakeGemini, fake: FakeOpenAI
) -> None:
    gemini.default = fg.blocked()
    only = route("only", gemini_backend(gemini))
    fb = Fallback(on=(FailureClass.CONTENT_FILTER,))
    both = route("both", gemini_backend(gemini), backend("o", fake), fallback=fb)
    sc = await start_sidecar(config(only, both))
    status, _, body = await sc.post("/v1/chat/completions", {"model": "only", "messages": MSG})
    assert status == 400 and body["error"]["code"] == "content_filter"
    stream = {"model": "both", "messages": MSG, "stream": True}
    events = await raw_stream(sc.url, stream)
    assert events[-1].data == "[DONE]"
    assert sc.audit.records[-1]["backend"] == "o" and sc.audit.records[-1]["fallbacks"] == 1


@pytest.mark.parametrize(
    ("step", "status", "code"),
    [
        (fg.key_invalid(), 401, "invalid_api_key"),
        (fg.too_long(), 400, "context_length_exceeded"),
        (fg.status(429, "Resource has been exhausted", headers={"retry-after": "40"}), 429, None),
        (fg.status(403, "Permission denied"), 403, "permission_denied"),
    ],
)
async def test_errors_map_to_classes(
    start_sidecar: StartSidecar, gemini: FakeGemini, step: fg.Step, status: int, code: str | None
) -> None:
    gemini.default = step
    sc = await start_sidecar(config(route("chat", gemini_backend(gemini))))
    got, _, body = await sc.post("/v1/chat/completions", {"model": "chat", "messages": MSG})
    assert got == status
    if code is not None:
        assert body["error"]["code"] == code
    assert len(gemini.requests) == 1


async def test_503_falls_over_and_inband_error_before_content(
    start_sidecar: StartSidecar, gemini: FakeGemini, fake: FakeOpenAI
) -> None:
    gemini.then(fg.status(503, "The model is overloaded."), fg.inband(0))
    sc = await start_sidecar(config(route("chat", gemini_backend(gemini), backend("o", fake))))
    status, headers, _ = await sc.post("/v1/chat/completions", {"model": "chat", "messages": MSG})
    assert status == 200 and headers["x-sluice-backend"] == "o"
    events = await raw_stream(sc.url, {"model": "chat", "messages": MSG, "stream": True})
    assert events[-1].data == "[DONE]" and sc.audit.records[-1]["backend"] == "o"


async def test_cut_and_eof_mid_stream_end_with_error(
    start_sidecar: StartSidecar, gemini: FakeGemini
) -> None:
    gemini.then(fg.cut(1), fg.eof(1))
    sc = await start_sidecar(config(route("chat", gemini_backend(gemini))))
    for _ in range(2):
        events = await raw_stream(sc.url, {"model": "chat", "messages": MSG, "stream": True})
        assert json.loads(events[-1].data)["error"]["code"] == "bad_upstream_response"
        assert json.loads(events[0].data)["choices"][0]["delta"]["content"] == "Hello"
