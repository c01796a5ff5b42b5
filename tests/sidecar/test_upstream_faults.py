"""FAULTS.md "Upstream faults": what the sidecar does when a provider fails, before any byte went
to the client (retry, fall over, cool down, eject) — asserted on fake clocks, not wall time."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from sluice_sidecar.contract import (
    CircuitBreaker,
    FailureClass,
    Fallback,
    Retry,
    Strategy,
    Timeouts,
)
from tests.fakes.openai_server import (
    FakeOpenAI,
    free_port,
    hang,
    html_502,
    inband,
    ok,
    reset,
    status,
)

from .conftest import StartSidecar, backend, config, route

MSG = [{"role": "user", "content": "hi"}]
CHAT = {"model": "chat", "messages": MSG}


def state(sc: Any, backend_name: str, route_name: str = "chat") -> Any:
    gw = sc.gateway
    r = gw.snapshot.routes[route_name]
    return gw.route_state(r).health.get(backend_name)


async def test_connection_refused_falls_over(start_sidecar: StartSidecar, fake: FakeOpenAI) -> None:
    dead = backend(
        "dead", base_url=f"http://127.0.0.1:{free_port()}/v1", provider="openai-compatible"
    )
    sc = await start_sidecar(config(route("chat", dead, backend("a", fake))))
    code, headers, _body = await sc.post("/v1/chat/completions", CHAT)
    assert code == 200
    assert headers["x-sluice-backend"] == "a"
    assert headers["x-sluice-attempts"] == "2"
    assert state(sc, "dead").consecutive_failures == 1  # a local-origin failure counts
    assert sc.audit.records[-1]["fallbacks"] == 1
    assert (
        'sluice_fallbacks_total{from_backend="dead",reason="connectError",route="chat",'
        'to_backend="a"} 1.0' in await sc.metrics()
    )


class FailingResolver(AbstractResolver):
    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def close(self) -> None:
        pass


async def test_dns_failure_falls_over_fast(start_sidecar: StartSidecar, fake: FakeOpenAI) -> None:
    def session() -> aiohttp.ClientSession:
        class Resolver(AbstractResolver):
            async def resolve(
                self,
                host: str,
                port: int = 0,
                family: socket.AddressFamily = socket.AF_INET,
            ) -> list[ResolveResult]:
                if host == "nxdomain.invalid":
                    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
                return [
                    {
                        "hostname": host,
                        "host": host,
                        "port": port,
                        "family": family,
                        "proto": 0,
                        "flags": 0,
                    }
                ]

            async def close(self) -> None:
                pass

        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=Resolver()))

    nx = backend("nx", base_url="http://nxdomain.invalid/v1", provider="openai-compatible")
    sc = await start_sidecar(config(route("chat", nx, backend("a", fake))), session_factory=session)
    code, headers, _ = await sc.post("/v1/chat/completions", CHAT)
    assert code == 200 and headers["x-sluice-backend"] == "a"
    assert sc.clock.sleeps == []  # fell over at once, no back-off


async def test_reset_before_any_byte_is_retried(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    fake.then(reset())
    sc = await start_sidecar(config(route("chat", backend("a", fake))))
    code, headers, body = await sc.post("/v1/chat/completions", CHAT)
    assert code == 200, body
    assert headers["x-sluice-attempts"] == "2"
    assert len(sc.clock.sleeps) == 1  # one jittered back-off before retrying the same backend


@pytest.mark.parametrize("code", [500, 502, 503, 504])
async def test_5xx_is_retried(start_sidecar: StartSidecar, fake: FakeOpenAI, code: int) -> None:
    fake.then(status(code))
    sc = await start_sidecar(config(route("chat", backend("a", fake))))
    out_code, headers, _ = await sc.post("/v1/chat/completions", CHAT)
    assert out_code == 200
    assert headers["x-sluice-attempts"] == "2"


@pytest.mark.parametrize("code", [400, 401, 403, 404, 422])
async def test_4xx_is_not_retried(
    start_sidecar: StartSidecar, fake: FakeOpenAI, fake_b: FakeOpenAI, code: int
) -> None:
    fake.then(status(code, "your request is wrong"))
    sc = await start_sidecar(config(route("chat", backend("a", fake), backend("b", fake_b))))
    out_code, headers, body = await sc.post("/v1/chat/completions", CHAT)
    assert out_code == code
    assert "your request is wrong" in body["error"]["message"]
    assert headers["x-sluice-attempts"] == "1"
    assert len(fake.requests) == 1 and fake_b.requests == []
    assert state(sc, "a").consecutive_failures == 0  # the request's fault, not the backend's


async def test_html_502_page_is_sanitised(start_sidecar: StartSidecar, fake: FakeOpenAI) -> None:
    fake.default = html_502()
    sc = await start_sidecar(config(route("chat", backend("a", fake))))
    code, _, body = await sc.post("/v1/chat/completions", CHAT)
    assert code == 502
    assert "<html" not in body["error"]["message"]
    assert "non-JSON body (text/html)" in body["error"]["message"]
    assert body["error"]["type"] == "upstream_error"


async def test_200_with_non_json_body_is_502(start_sidecar: StartSidecar, fake: FakeOpenAI) -> None:
    fake.default = status(200, body=b"<html>hello</html>", content_type="text/html")
    sc = await start_sidecar(config(route("chat", backend("a", fake))))
    code, _, body = await sc.post("/v1/chat/completions", CHAT)
    assert code == 502
    assert body["error"]["code"] == "bad_upstream_response"


async def test_breaker_opens_then_fails_fast_with_retry_after(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    fake.default = status(503)
    r = route(
        "chat",
        backend("a", fake),
        retry=Retry(attempts=1),
        circuit_breaker=CircuitBreaker(consecutive_failures=3, base_ejection=30),
    )
    sc = await start_sidecar(config(r))
    for _ in range(3):
        code, _, _ = await sc.post("/v1/chat/completions", CHAT)
        assert code == 502
    code, headers, body = await sc.post("/v1/chat/completions", CHAT)
    assert code == 503
    assert body["error"]["code"] == "no_backend_available"
    assert 27 <= int(headers["Retry-After"]) <= 30
    assert len(fake.requests) == 3  # no call while ejected
    assert 'sluice_backend_state{backend="a",route="chat"} 2.0' in await sc.metrics()
    # After the ejection the half-open probe goes through; success closes the breaker.
    sc.clock.advance(31)
    fake.default = ok()
    code, _, _ = await sc.post("/v1/chat/completions", CHAT)
    assert code == 200
    assert state(sc, "a").ejections == 0


async def test_failed_probe_ejects_longer(start_sidecar: StartSidecar, fake: FakeOpenAI) -> None:
    fake.default = status(500)
    r = route(
        "chat",
        backend("a", fake),
        retry=Retry(attempts=1),
        circuit_breaker=CircuitBreaker(consecutive_failures=1, base_ejection=10, max_ejection=100),
    )
    sc = await start_sidecar(config(r))
    await sc.post("/v1/chat/completions", CHAT)
    first = state(sc, "a").ejected_until - sc.clock.now()
    sc.clock.advance(first + 0.01)
    await sc.post("/v1/chat/completions", CHAT)  # the probe fails
    second = state(sc, "a").ejected_until - sc.clock.now()
    assert 9 <= first <= 10 and 18 <= second <= 20


async def test_429_retry_after_seconds_single_backend_waits(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    fake.then(status(429, "slow down", {"Retry-After": "2"}))
    sc = await start_sidecar(config(route("chat", backend("a", fake))))
    code, _, _ = await sc.post("/v1/chat/completions", CHAT)
    assert code == 200
    assert sc.clock.sleeps == [2.0]
    assert state(sc, "a").cooldown_until == 0.0  # the only backend is never cooled down


async def test_429_falls_over_and_cools_down(
    start_sidecar: StartSidecar, fake: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake.then(status(429, "slow down", {"Retry-After": "5"}))
    sc = await start_sidecar(config(route("chat", backend("a", fake), backend("b", fake_b))))
    code, headers, _ = await sc.post("/v1/chat/completions", CHAT)
    assert code == 200 and headers["x-sluice-backend"] == "b"
    assert sc.clock.sleeps == []
    assert state(sc, "a").cooldown_until == sc.clock.now() + 5
    code, headers, _ = await sc.post("/v1/chat/completions", CHAT)
    assert headers["x-sluice-backend"] == "b"  # a is cooling down
    assert len(fake.requests) == 1
    sc.clock.advance(5)
    code, headers, _ = await sc.post("/v1/chat/completions", CHAT)
    assert headers["x-sluice-backend"] == "a"


def _http_date(delta: float, now_wall: float) -> str:
    return format_datetime(datetime.fromtimestamp(now_wall + delta, UTC), usegmt=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("3", 3.0), ("date+4", 4.0), ("date-60", 0.0), ("0.5", 0.5)],
)
async def test_429_retry_after_forms(
    start_sidecar: StartSidecar, fake: FakeOpenAI, value: str, expected: float
) -> None:
    sc = await start_sidecar(config(route("chat", backend("a", fake))))
    if value.startswith("date"):
        value = _http_date(float(value[4:]), sc.clock.wall())
    fake.then(status(429, "slow down", {"Retry-After": value}))
    code, _, _ = await sc.post("/v1/chat/completions", CHAT)
    assert code == 200
    assert sum(sc.clock.sleeps) == pytest.approx(expected, abs=1.0)  # a past date: no wait
    assert len(fake.requests) == 2


async def test_429_garbage_retry_after_uses_default_backoff(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    fake.then(status(429, "slow down", {"Retry-After": "soon-ish"}))
    r = route("chat", backend("a", fake), retry=Retry(backoff_base=0.2, backoff_max=2.0))
    sc = await start_sidecar(config(r))
    code, _, _ = await sc.post("/v1/chat/completions", CHAT)
    assert code == 200
    assert len(sc.clock.sleeps) == 1 and 0.1 <= sc.clock.sleeps[0] <= 0.2


async def test_429_absurd_retry_after_is_returned_not_waited(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    fake.then(status(429, "daily quota", {"Retry-After": "86400"}))
    r = route("chat", backend("a", fake), fallback=Fallback(max_retry_after=10))
    sc = await start_sidecar(config(r))
    async with openai.AsyncOpenAI(base_url=sc.base_url, api_key="x", max_retries=0) as client:
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="chat", messages=MSG)  # type: ignore[arg-type]
    assert info.value.response.headers["retry-after"] == "86400"
    assert sc.clock.sleeps == []
    assert len(fake.requests) == 1


async def test_hang_before_headers_times_out_and_falls_over(
    start_sidecar: StartSidecar, fake: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake.default = hang()
    r = route("chat", backend("a", fake), backend("b", fake_b), timeouts=Timeouts(first_token=0.3))
    sc = await start_sidecar(config(r))
    code, headers, _ = await sc.post("/v1/chat/completions", CHAT)
    assert code == 200 and headers["x-sluice-backend"] == "b"
    for _ in range(300):
        if fake.cancelled:
            break
        await asyncio.sleep(0.01)
    assert fake.cancelled == 1  # the hung request was abandoned, not leaked


async def test_hang_everywhere_is_504(start_sidecar: StartSidecar, fake: FakeOpenAI) -> None:
    fake.default = hang()
    r = route(
        "chat", backend("a", fake), timeouts=Timeouts(first_token=0.2), retry=Retry(attempts=2)
    )
    sc = await start_sidecar(config(r))
    code, _, body = await sc.post("/v1/chat/completions", CHAT)
    assert code == 504
    assert body["error"]["code"] == "upstream_timeout"


async def test_in_band_error_in_200_json_is_a_failure(
    start_sidecar: StartSidecar, fake: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake.default = status(200, body=b'{"error": {"message": "overloaded", "type": "x"}}')
    sc = await start_sidecar(config(route("chat", backend("a", fake), backend("b", fake_b))))
    code, headers, _ = await sc.post("/v1/chat/completions", CHAT)
    assert code == 200 and headers["x-sluice-backend"] == "b"


async def test_in_band_stream_error_before_first_token_falls_over(
    start_sidecar: StartSidecar, fake: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake.default = inband(0)
    sc = await start_sidecar(config(route("chat", backend("a", fake), backend("b", fake_b))))
    async with openai.AsyncOpenAI(base_url=sc.base_url, api_key="x", max_retries=0) as client:
        stream = await client.chat.completions.create(model="chat", messages=MSG, stream=True)  # type: ignore[arg-type]
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == "Hello from the fake."
    assert state(sc, "a").consecutive_failures == 1  # the breaker was told


async def test_context_window_exceeded_is_not_retried(
    start_sidecar: StartSidecar, fake: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake.default = status(
        400,
        "This model's maximum context length is 8192 tokens",
        body=b'{"error": {"message": "maximum context length is 8192",'
        b' "type": "invalid_request_error",'
        b' "code": "context_length_exceeded"}}',
    )
    sc = await start_sidecar(config(route("chat", backend("a", fake), backend("b", fake_b))))
    code, headers, body = await sc.post("/v1/chat/completions", CHAT)
    assert code == 400
    assert body["error"]["code"] == "context_length_exceeded"
    assert headers["x-sluice-attempts"] == "1" and fake_b.requests == []


async def test_context_window_fallback_when_configured(
    start_sidecar: StartSidecar, fake: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake.default = status(
        400, body=b'{"error": {"message": "too long", "code": "context_length_exceeded"}}'
    )
    fb = Fallback(on=(FailureClass.CONTEXT_WINDOW_EXCEEDED,))
    sc = await start_sidecar(
        config(route("chat", backend("a", fake), backend("b", fake_b), fallback=fb))
    )
    code, headers, _ = await sc.post("/v1/chat/completions", CHAT)
    assert code == 200 and headers["x-sluice-backend"] == "b"


async def test_all_backends_failing_gives_last_error_within_attempts(
    start_sidecar: StartSidecar, fake: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake.default = status(500)
    fake_b.default = status(503)
    r = route("chat", backend("a", fake), backend("b", fake_b), retry=Retry(attempts=3))
    sc = await start_sidecar(config(r))
    code, headers, _body = await sc.post("/v1/chat/completions", CHAT)
    assert code == 502
    assert headers["x-sluice-attempts"] == "3"
    assert len(fake.requests) + len(fake_b.requests) == 3


async def test_retry_storm_is_bounded_by_the_budget(
    start_sidecar: StartSidecar, fake: FakeOpenAI
) -> None:
    fake.default = status(500)
    r = route(
        "chat",
        backend("a", fake),
        retry=Retry(attempts=5, budget_ratio=0.2, budget_min_per_second=1.0),
        circuit_breaker=CircuitBreaker(consecutive_failures=10_000),
    )
    sc = await start_sidecar(config(r))
    requests = 100
    for _ in range(requests):
        await sc.post("/v1/chat/completions", CHAT)
    retries = len(fake.requests) - requests
    # Fake time advanced only by back-off sleeps; the budget allows max(20% of requests,
    # 1/s x 10 s window), never the 4 retries per request that `attempts` would allow.
    assert 0 < retries <= max(0.2 * requests, 10) + 1
    assert "sluice_retry_budget_exhausted_total" in await sc.metrics()


async def test_weighted_strategy_spreads_traffic(
    start_sidecar: StartSidecar, fake: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    r = route(
        "chat",
        backend("a", fake, weight=3),
        backend("b", fake_b, weight=1),
        strategy=Strategy.WEIGHTED,
    )
    sc = await start_sidecar(config(r))
    for _ in range(40):
        await sc.post("/v1/chat/completions", CHAT)
    assert len(fake.requests) > len(fake_b.requests) > 0
