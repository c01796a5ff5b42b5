"""FAULTS.md "Upstream response larger than limit / infinite stream": an answer over the limits
is never passed on whole. A stream is cut at ``limits.maxStreamBytes`` and ended as if it had hit
its token limit, the provider's connection is dropped and the spend is capped; a non-streamed
answer over ``limits.maxResponseBytes`` is a 502 with a sanitised message, not retried."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import anthropic
import openai

from sluice_sidecar import sse
from sluice_sidecar.contract import Limits, Pricing
from tests.fakes.openai_server import FakeOpenAI, endless, status

from .conftest import StartSidecar, backend, config, route

MSG: list[Any] = [{"role": "user", "content": "Write forever"}]
LIMIT = 4096


async def _settled(sc: Any, fake: FakeOpenAI) -> None:
    for _ in range(500):  # the upstream handler sees its cancellation on a later loop turn
        if fake.cancelled and fake.active == 0 and sc.audit.records:
            return
        await asyncio.sleep(0.01)


async def test_endless_stream_is_cut_at_the_limit_as_length(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    fake.default = endless()
    b = backend("a", fake, pricing=Pricing(output_per_mtok=1_000_000.0))
    sc = await start_sidecar(config(route("chat", b), limits=Limits(max_stream_bytes=LIMIT)))
    async with openai.AsyncOpenAI(base_url=sc.base_url, api_key="x", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="chat",
            messages=MSG,
            max_tokens=10,
            stream=True,
        )
        chunks = [c async for c in stream]  # ends normally: no APIError
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text.startswith(" word0 word1 word2")
    await _settled(sc, fake)
    assert fake.cancelled == 1 and fake.active == 0  # the provider's connection was dropped
    rec = sc.audit.records[-1]
    assert rec["outcome"] == "truncated" and rec["status"] == 200
    assert 0 < rec["annotations"]["truncatedAtBytes"] <= LIMIT
    # Far more than 10 chunks were relayed; the spend is capped at the request's max_tokens.
    assert len(chunks) > 10
    assert rec["outputTokens"] == 10 and rec["usageSource"] == "estimated"
    assert rec["costUSD"] == 10.0
    health = sc.gateway.route_state(sc.gateway.snapshot.routes["chat"]).health["a"]  # type: ignore[union-attr]
    assert health.consecutive_failures == 0  # a long answer is not the backend's failure


async def test_cut_stream_bytes_stay_within_the_limit(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    fake.default = endless()
    sc = await start_sidecar(
        config(route("chat", backend("a", fake)), limits=Limits(max_stream_bytes=LIMIT))
    )
    body = {"model": "chat", "messages": MSG, "stream": True, "n": 2}
    async with (
        aiohttp.ClientSession() as s,
        s.post(sc.url + "/v1/chat/completions", json=body) as r,
    ):
        raw = await r.read()
    events = sse.Parser().feed(raw)
    assert events[-1].data == "[DONE]"
    stop = json.loads(events[-2].data)
    assert [(c["index"], c["finish_reason"]) for c in stop["choices"]] == [
        (0, "length"),
        (1, "length"),
    ]
    before = raw[: raw.index(b"data: " + events[-2].data.encode())]
    assert len(before) <= LIMIT and before.endswith(b"\n\n")  # whole events only
    assert all("error" not in json.loads(e.data) for e in events[:-1])
    await _settled(sc, fake)
    assert fake.cancelled == 1


async def test_endless_stream_to_an_anthropic_client_stops_at_max_tokens(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    fake.default = endless()
    sc = await start_sidecar(
        config(route("chat", backend("a", fake)), limits=Limits(max_stream_bytes=LIMIT))
    )
    async with (
        anthropic.AsyncAnthropic(base_url=sc.url, api_key="x", max_retries=0) as client,
        client.messages.stream(model="chat", max_tokens=64, messages=MSG) as stream,
    ):
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text.startswith(" word0 word1")
    assert final.stop_reason == "max_tokens"
    await _settled(sc, fake)
    assert sc.audit.records[-1]["outcome"] == "truncated"


async def test_oversize_answer_is_502_not_retried(
    start_sidecar: StartSidecar, fake: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    secret = "PROMPT-ECHO-" * 1000  # 12 kB: three times the limit
    answer = {"choices": [{"message": {"role": "assistant", "content": secret}}]}
    fake.default = status(200, body=json.dumps(answer).encode())
    r = route("chat", backend("a", fake), backend("b", fake_b))
    sc = await start_sidecar(config(r, limits=Limits(max_response_bytes=LIMIT)))
    async with openai.AsyncOpenAI(base_url=sc.base_url, api_key="x", max_retries=0) as client:
        try:
            await client.chat.completions.create(model="chat", messages=MSG)
        except openai.APIStatusError as exc:
            err = exc
        else:
            raise AssertionError("an oversize answer was passed on")
    assert err.status_code == 502
    body: Any = err.body
    assert body["code"] == "upstream_response_too_large"
    assert str(LIMIT) in body["message"] and "PROMPT-ECHO" not in body["message"]
    assert len(fake.requests) == 1 and fake_b.requests == []  # billed once, not asked again
    rec = sc.audit.records[-1]
    assert rec["status"] == 502 and rec["errorCode"] == "upstream_response_too_large"
    assert [t["result"] for t in rec["tries"]] == ["fatal"]


async def test_answer_at_the_limit_passes(start_sidecar: StartSidecar, fake: FakeOpenAI) -> None:
    answer = json.dumps({"choices": [{"message": {"role": "assistant", "content": "ok"}}]})
    fake.default = status(200, body=answer.encode())
    sc = await start_sidecar(
        config(route("chat", backend("a", fake)), limits=Limits(max_response_bytes=len(answer)))
    )
    code, _, out = await sc.post("/v1/chat/completions", {"model": "chat", "messages": MSG})
    assert code == 200 and out["choices"][0]["message"]["content"] == "ok"
