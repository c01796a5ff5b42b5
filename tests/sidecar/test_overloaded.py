"""An overloaded Anthropic backend (529 ``overloaded_error``, as a status or as a stream event
before any content) reaches OpenAI-dialect clients as a 503 with ``Retry-After`` — their SDKs'
retry logic fires — and Anthropic clients as the provider's own 529 ``overloaded_error``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import openai
import pytest

from tests.fakes import anthropic_server as fa
from tests.fakes.anthropic_server import FakeAnthropic

from .conftest import Sidecar, StartSidecar, backend, config, route

MSG = [{"role": "user", "content": "Hi"}]


@pytest.fixture
async def claude() -> AsyncIterator[FakeAnthropic]:
    f = await FakeAnthropic().start()
    yield f
    await f.stop()


async def _sidecar(start_sidecar: StartSidecar, claude: FakeAnthropic) -> Sidecar:
    b = backend("c", provider="anthropic", base_url=claude.base_url, model="claude-x")
    return await start_sidecar(config(route("m", b)))


@pytest.mark.parametrize("step", [fa.overloaded, lambda: fa.inband(events_before=1)])
async def test_openai_clients_get_503_with_retry_after(
    start_sidecar: StartSidecar, claude: FakeAnthropic, step: object
) -> None:
    claude.default = step()  # type: ignore[operator]
    sc = await _sidecar(start_sidecar, claude)
    async with openai.AsyncOpenAI(base_url=sc.base_url, api_key="x", max_retries=0) as c:
        with pytest.raises(openai.InternalServerError) as exc:
            await c.chat.completions.create(model="m", messages=MSG, stream=True)  # type: ignore[arg-type]
        assert exc.value.status_code == 503
        assert int(exc.value.response.headers["retry-after"]) >= 1
        body = exc.value.body
        assert isinstance(body, dict) and body["type"] == "service_unavailable"
        with pytest.raises(openai.InternalServerError) as exc:
            await c.responses.create(model="m", input="Hi", stream=True)
        assert exc.value.status_code == 503 and "retry-after" in exc.value.response.headers


async def test_the_openai_sdk_retries_an_overloaded_backend(
    start_sidecar: StartSidecar, claude: FakeAnthropic
) -> None:
    claude.then(fa.overloaded())
    sc = await _sidecar(start_sidecar, claude)
    async with openai.AsyncOpenAI(base_url=sc.base_url, api_key="x", max_retries=1) as c:
        out = await c.chat.completions.create(model="m", messages=MSG)  # type: ignore[arg-type]
    assert out.choices[0].message.content and len(claude.requests) == 2


async def test_anthropic_clients_still_get_529(
    start_sidecar: StartSidecar, claude: FakeAnthropic
) -> None:
    claude.default = fa.inband(events_before=1)
    sc = await _sidecar(start_sidecar, claude)
    async with anthropic.AsyncAnthropic(base_url=sc.url, api_key="x", max_retries=0) as c:
        with pytest.raises(anthropic.OverloadedError) as exc:
            async with c.messages.stream(model="m", max_tokens=5, messages=MSG) as s:  # type: ignore[arg-type]
                await s.get_final_message()
    assert exc.value.status_code == 529
