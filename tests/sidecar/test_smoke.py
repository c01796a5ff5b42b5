"""The happy paths through the official openai SDK: sync, async, streaming, embeddings, models."""

from __future__ import annotations

import asyncio

import openai

from tests.fakes.openai_server import FakeOpenAI

from .conftest import StartSidecar, backend, config, route

MSG = [{"role": "user", "content": "Say hi"}]


async def test_sync_sdk_non_streaming(start_sidecar: StartSidecar, fake: FakeOpenAI) -> None:
    sc = await start_sidecar(config(route("chat", backend("a", fake))))

    def call() -> openai.types.chat.ChatCompletion:
        client = openai.OpenAI(base_url=sc.base_url, api_key="unused", max_retries=0)
        with client:
            return client.chat.completions.create(model="chat", messages=MSG)  # type: ignore[arg-type]

    out = await asyncio.to_thread(call)
    assert out.choices[0].message.content == "Hello from the fake."
    assert fake.requests[0]["model"] == "a-model"
    assert sc.audit.records[0]["inputTokens"] == 11
    assert sc.audit.records[0]["outcome"] == "ok"


async def test_async_sdk_streaming(start_sidecar: StartSidecar, fake: FakeOpenAI) -> None:
    sc = await start_sidecar(config(route("chat", backend("a", fake))))
    async with openai.AsyncOpenAI(base_url=sc.base_url, api_key="x", max_retries=0) as client:
        stream = await client.chat.completions.create(model="chat", messages=MSG, stream=True)  # type: ignore[arg-type]
        parts = [c.choices[0].delta.content or "" async for c in stream]
    assert "".join(parts) == "Hello from the fake."
    assert fake.requests[0]["stream_options"] == {"include_usage": True}
    rec = sc.audit.records[0]
    assert rec["outputTokens"] == 4 and rec["usageSource"] == "provider"


async def test_mock_provider(start_sidecar: StartSidecar) -> None:
    sc = await start_sidecar(config(route("m", backend("mock1"))))
    async with openai.AsyncOpenAI(base_url=sc.base_url, api_key="x", max_retries=0) as client:
        out = await client.chat.completions.create(model="m", messages=MSG)  # type: ignore[arg-type]
        assert out.usage is not None and out.usage.completion_tokens == 16
        stream = await client.chat.completions.create(
            model="m",
            messages=MSG,
            stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16
        emb = await client.embeddings.create(model="m", input=["a", "b"])
        assert len(emb.data) == 2
        models = await client.models.list()
        assert [m.id for m in models.data] == ["m"]
