"""FAULTS.md "Data plane: client → sidecar": bad input never reaches a provider and is answered in
the OpenAI error shape with the right status and the offending field."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import openai
import pytest

from tests.fakes.openai_server import FakeOpenAI, hang_mid

from .conftest import StartSidecar, backend, config, route

MSG = [{"role": "user", "content": "hi"}]


def assert_openai_error(body: Any, type_: str, param: str | None = None) -> None:
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == type_
    assert isinstance(err["message"], str) and err["message"]
    if param is not None:
        assert err["param"] == param
        assert param in err["message"]


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"",
        b"[1, 2]",
        b'"just a string"',
        b'{"model": "chat", "messages": [' + b"[" * 100_000,
        b'{"model": "chat", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"model": "chat", "n": ' + b"9" * 100_000 + b"}",
        b'{"model": "chat", "temperature": 1e999999}',
        b'{"model": "chat", "temperature": NaN}',
        b'{"model": "chat", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
    ],
    ids=[
        "malformed",
        "empty",
        "array",
        "string",
        "deep-open",
        "deep-closed",
        "huge-int",
        "huge-float",
        "nan",
        "invalid-utf8",
    ],
)
async def test_unparseable_body_is_400_without_upstream_call(
    start_sidecar: StartSidecar, fake: FakeOpenAI, raw: bytes
) -> None:
    sc = await start_sidecar(config(route("chat", backend("a", fake))))
    status, _, body = await sc.post(
        "/v1/chat/completions", data=raw, headers={"Content-Type": "application/json"}
    )
    assert status == 400
    assert_openai_error(body, "invalid_request_error")
    assert fake.requests == []
    assert sc.audit.records[-1]["status"] == 400
    assert sc.audit.records[-1]["inputTokens"] == 0


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"messages": "hi"}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": 5, "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": ["x"]}, "messages[0]"),
        ({"max_tokens": "10"}, "max_tokens"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"stream": "yes"}, "stream"),
        ({"temperature": "hot"}, "temperature"),
        ({"model": 42}, "model"),
        ({"model": None}, "model"),
        ({"messages": [{"role": "user", "content": "\ud800"}]}, "messages[0].content"),
    ],
)
async def test_wrong_types_are_400_with_field_path(
    start_sidecar: StartSidecar, fake: FakeOpenAI, patch: dict[str, Any], param: str
) -> None:
    sc = await start_sidecar(config(route("chat", backend("a", fake))))
    body: dict[str, Any] = {"model": "chat", "messages": MSG, **patch}
    raw = json.dumps(body).encode()  # json.dumps escapes the lone surrogate as \ud800
    status, _, out = await sc.post(
        "/v1/chat/completions", data=raw, headers={"Content-Type": "application/json"}
    )
    assert status == 400
    assert_openai_error(out, "invalid_request_error", param)
    assert fake.requests == []


async def test_sdk_sees_bad_request_error(start_sidecar: StartSidecar, fake: FakeOpenAI) -> None:
    sc = await start_sidecar(config(route("chat", backend("a", fake))))
    async with openai.AsyncOpenAI(base_url=sc.base_url, api_key="x", max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(model="chat", messages=MSG, max_tokens=-5)  # type: ignore[arg-type]
    assert info.value.param == "max_tokens"  # type: ignore[attr-defined]


async def test_embeddings_input_checked(start_sidecar: StartSidecar, fake: FakeOpenAI) -> None:
    sc = await start_sidecar(config(route("emb", backend("a", fake))))
    status, _, out = await sc.post("/v1/embeddings", {"model": "emb", "input": [1.5]})
    assert status == 400
    assert_openai_error(out, "invalid_request_error", "input[0]")
    status, _, out = await sc.post("/v1/embeddings", {"model": "emb", "input": ["a"]})
    assert status == 200 and len(out["data"]) == 1
    assert len(fake.requests) == 1


async def test_unknown_model_is_404_without_upstream_call(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    sc = await start_sidecar(config(route("chat", backend("a", fake))))
    async with openai.AsyncOpenAI(base_url=sc.base_url, api_key="x", max_retries=0) as client:
        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(model="gpt-nope", messages=MSG)  # type: ignore[arg-type]
    assert info.value.code == "model_not_found"
    assert "chat" in info.value.message
    assert fake.requests == []


async def test_unknown_path_and_method_are_openai_errors(start_sidecar: StartSidecar) -> None:
    sc = await start_sidecar(config(route("m", backend("mock"))))
    status, _, body = await sc.post("/v1/edits", {"model": "m"})
    assert status == 404
    assert_openai_error(body, "invalid_request_error")
    status, text = await sc.get(sc.url + "/v1/chat/completions")
    assert status == 405
    assert_openai_error(json.loads(text), "invalid_request_error")


async def _raw_request(url: str, head: bytes, body: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head + body)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    return data


async def test_oversize_body_is_413_before_it_is_read(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    from sluice_sidecar.contract import Limits

    sc = await start_sidecar(
        config(route("chat", backend("a", fake)), limits=Limits(max_request_bytes=4096))
    )
    # Announce 10 MiB but send only 100 bytes: the answer must come without the rest.
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 10485760\r\n\r\n"
    )
    data = await _raw_request(sc.url, head, b"{" + b" " * 99)
    status_line, _, rest = data.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413")
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] == "request_too_large"
    assert fake.requests == []
    assert sc.audit.records[-1]["status"] == 413


async def test_oversize_chunked_body_is_413(start_sidecar: StartSidecar, fake: FakeOpenAI) -> None:
    from sluice_sidecar.contract import Limits

    sc = await start_sidecar(
        config(route("chat", backend("a", fake)), limits=Limits(max_request_bytes=4096))
    )

    async def gen() -> Any:
        for _ in range(100):
            yield b"x" * 1024

    async with (
        aiohttp.ClientSession() as s,
        s.post(sc.url + "/v1/chat/completions", data=gen()) as r,
    ):
        assert r.status == 413
    assert fake.requests == []


async def test_body_at_the_limit_passes(start_sidecar: StartSidecar, fake: FakeOpenAI) -> None:
    from sluice_sidecar.contract import Limits

    raw = json.dumps({"model": "chat", "messages": MSG}).encode()
    sc = await start_sidecar(
        config(route("chat", backend("a", fake)), limits=Limits(max_request_bytes=len(raw)))
    )
    status, _, _ = await sc.post("/v1/chat/completions", data=raw)
    assert status == 200


async def test_client_disconnect_mid_stream_cancels_upstream(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    fake.then(hang_mid(2))
    sc = await start_sidecar(config(route("chat", backend("a", fake))))
    async with aiohttp.ClientSession() as s:
        r = await s.post(
            sc.url + "/v1/chat/completions", json={"model": "chat", "messages": MSG, "stream": True}
        )
        first = await r.content.readline()
        assert first.startswith(b"data: ")
        r.close()  # the app goes away while the provider is still "generating"
    for _ in range(500):
        if fake.cancelled and sc.audit.records:
            break
        await asyncio.sleep(0.01)
    assert fake.cancelled == 1
    assert fake.active == 0
    rec = sc.audit.records[-1]
    assert rec["outcome"] == "client_disconnected"
    assert rec["outputTokens"] == 2  # counted: the chunks produced before the disconnect
    assert rec["usageSource"] == "estimated"
    assert (
        sc.gateway.route_state(sc.gateway.snapshot.routes["chat"])
        .of(  # type: ignore[union-attr]
            sc.gateway.snapshot.routes["chat"].backends[0]
        )
        .probing
        is False
    )  # type: ignore[union-attr]


async def test_pipeline_hook_can_refuse_before_any_upstream_call(fake: FakeOpenAI) -> None:
    """The seam for budgets and guardrails: a hook sees the exchange and may refuse it."""
    import random

    from aiohttp.test_utils import TestClient, TestServer

    from sluice_sidecar import errors
    from sluice_sidecar.app import create_app
    from sluice_sidecar.exchange import Exchange
    from sluice_sidecar.stage import Stage

    seen: list[Exchange] = []

    class Refuse(Stage):
        async def on_request(self, ex: Exchange) -> None:
            seen.append(ex)
            raise errors.RateLimited("Budget 'team' exhausted.", retry_after=30)

    app = create_app(
        config(route("chat", backend("a", fake))),
        rng=random.Random(1),
        stages=[Refuse()],
    )
    async with TestClient(TestServer(app)) as client:
        r = await client.post("/v1/chat/completions", json={"model": "chat", "messages": MSG})
        assert r.status == 429
        assert r.headers["Retry-After"] == "30"
        assert (await r.json())["error"]["type"] == "rate_limit_exceeded"
    assert seen[0].route is not None and seen[0].route.name == "chat"
    assert fake.requests == []


# --- slow clients (slowloris) ---------------------------------------------------------------


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


async def _trickle(writer: asyncio.StreamWriter, byte: bytes) -> None:
    """Send one byte at a time, slowly, until the server hangs up."""
    try:
        while True:
            writer.write(byte)
            await writer.drain()
            await asyncio.sleep(0.05)
    except ConnectionError:
        return


async def _served_meanwhile(sc: Any) -> None:
    async with openai.AsyncOpenAI(base_url=sc.base_url, api_key="x", max_retries=0) as client:
        out = await client.chat.completions.create(model="chat", messages=MSG)  # type: ignore[arg-type]
    assert out.choices[0].message.content == "Hello from the fake."


async def test_slowloris_headers_connection_closed_others_served(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    sc = await start_sidecar(config(route("chat", backend("a", fake))), header_timeout=0.3)
    reader, writer = await asyncio.open_connection(*_host_port(sc.url))
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    slow = asyncio.create_task(_trickle(writer, b"a"))
    try:
        await _served_meanwhile(sc)
        # The head never completes: the server closes the connection without an answer, seen
        # as an EOF, or as a reset when a trickled byte reaches the closed socket first (the
        # audit below shows that no answer was written either way). (The wait is a bound for a
        # broken build, not the timeout under test.)
        try:
            got = await asyncio.wait_for(reader.read(), 20)
        except ConnectionResetError:
            got = b""
        assert got == b""
    finally:
        slow.cancel()
        writer.close()
    assert fake.requests == [MSG_BODY]
    assert all(r["status"] == 200 for r in sc.audit.records)  # the slow client never got in


async def test_slowloris_body_is_408_and_closed_others_served(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    from sluice_sidecar.contract import Limits

    sc = await start_sidecar(
        config(route("chat", backend("a", fake)), limits=Limits(body_timeout=0.3))
    )
    reader, writer = await asyncio.open_connection(*_host_port(sc.url))
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 200\r\n\r\n{"model": "chat", '
    )
    slow = asyncio.create_task(_trickle(writer, b" "))
    try:
        await _served_meanwhile(sc)
        data = await asyncio.wait_for(reader.read(), 20)  # the answer, then EOF: closed
    finally:
        slow.cancel()
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    err = json.loads(body)["error"]
    assert err["code"] == "request_timeout" and "limits.bodyTimeout" in err["message"]
    assert fake.requests == [MSG_BODY]  # only the other client's request went upstream
    assert sorted(r["status"] for r in sc.audit.records) == [200, 408]


# --- what goes upstream ---------------------------------------------------------------------

MSG_BODY = {"model": "a-model", "messages": MSG, "max_tokens": 4096}


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_client_credentials_are_never_forwarded(
    start_sidecar: StartSidecar, tmp_path: Any, provider: str
) -> None:
    from sluice_sidecar.contract import CredentialRef
    from tests.fakes.anthropic_server import FakeAnthropic
    from tests.fakes.gemini_server import FakeGemini

    (tmp_path / "key").write_text("sk-backend-key\n")
    ref = CredentialRef(secret_name="s", key="k", file="key")
    up: Any = (
        await FakeOpenAI().start()
        if provider == "openai"
        else await (FakeAnthropic() if provider == "anthropic" else FakeGemini()).start()
    )
    try:
        b = backend("a", provider=provider, base_url=up.base_url, credentials=ref)
        sc = await start_sidecar(config(route("chat", b)), secrets_dir=str(tmp_path))
        secret = "sk-client-OWN-SECRET"
        async with openai.AsyncOpenAI(
            base_url=sc.base_url,
            api_key=secret,
            max_retries=0,
            default_headers={"x-api-key": secret, "api-key": secret, "x-goog-api-key": secret},
        ) as client:
            await client.chat.completions.create(model="chat", messages=MSG)  # type: ignore[arg-type]
            stream = await client.chat.completions.create(model="chat", messages=MSG, stream=True)  # type: ignore[arg-type]
            async for _ in stream:
                pass
    finally:
        await up.stop()
    assert len(up.headers) == 2
    assert secret not in json.dumps(up.headers)
    key_header = {"openai": "Authorization", "anthropic": "x-api-key", "gemini": "x-goog-api-key"}
    for seen in up.headers:
        assert seen[key_header[provider]].removeprefix("Bearer ") == "sk-backend-key"


@pytest.mark.parametrize(
    ("provider", "field"),
    [
        ("openai-compatible", "max_tokens"),
        ("mistral", "max_tokens"),
        ("openai", "max_completion_tokens"),
    ],
)
async def test_request_without_max_tokens_gets_the_default_cap(
    start_sidecar: StartSidecar, fake: FakeOpenAI, provider: str, field: str
) -> None:
    from sluice_sidecar.contract import Limits

    sc = await start_sidecar(
        config(
            route("chat", backend("a", fake, provider=provider)),
            limits=Limits(default_max_tokens=123),
        )
    )
    status, _, _ = await sc.post("/v1/chat/completions", {"model": "chat", "messages": MSG})
    assert status == 200
    sent = fake.requests[-1]
    assert sent[field] == 123
    assert {"max_tokens", "max_completion_tokens"} & set(sent) == {field}
    # The client's own cap is passed as it is, in the client's field.
    await sc.post("/v1/chat/completions", {"model": "chat", "messages": MSG, "max_tokens": 7})
    await sc.post(
        "/v1/chat/completions", {"model": "chat", "messages": MSG, "max_completion_tokens": 9}
    )
    assert fake.requests[-2]["max_tokens"] == 7 and "max_completion_tokens" not in fake.requests[-2]
    assert fake.requests[-1]["max_completion_tokens"] == 9 and "max_tokens" not in fake.requests[-1]


async def test_default_cap_reaches_gemini(start_sidecar: StartSidecar) -> None:
    from sluice_sidecar.contract import Limits
    from tests.fakes.gemini_server import FakeGemini

    up = await FakeGemini().start()
    try:
        b = backend("g", provider="gemini", base_url=up.base_url)
        sc = await start_sidecar(config(route("chat", b), limits=Limits(default_max_tokens=321)))
        status, _, _ = await sc.post("/v1/chat/completions", {"model": "chat", "messages": MSG})
    finally:
        await up.stop()
    assert status == 200
    assert up.requests[-1]["generationConfig"]["maxOutputTokens"] == 321
