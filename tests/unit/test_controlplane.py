"""The control-plane endpoint over a real loopback socket: auth, long-poll, reports."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from sluice_operator import controlplane, manifests
from sluice_operator.compile import compile_namespace
from sluice_operator.manifests import Resource
from sluice_operator.reports import Reports
from sluice_sidecar.contract import UsageReport

from .test_api_models import ROUTE

POD = "authentication.kubernetes.io/pod-name"
TOKENS = {
    "tok-a": controlplane.TokenUser(
        "system:serviceaccount:team-a:app",
        {POD: ("p",), "authentication.kubernetes.io/pod-uid": ("u-1",)},
    ),
    "tok-a2": controlplane.TokenUser("system:serviceaccount:team-a:app", {POD: ("p2",)}),
    "tok-unbound": controlplane.TokenUser("system:serviceaccount:team-a:app"),
    "tok-b": controlplane.TokenUser("system:serviceaccount:team-b:x", {POD: ("p",)}),
}
REVIEWED: list[str] = []


async def review(token: str, audiences: list[str]) -> controlplane.TokenUser | None:
    assert audiences == ["sluice"]
    REVIEWED.append(token)
    return TOKENS.get(token)


def result(attempts: int = 2):  # type: ignore[no-untyped-def]
    doc = {**ROUTE, "spec": {**ROUTE["spec"], "retry": {"attempts": attempts}}}
    r = manifests.parse_object(doc, "t")
    assert isinstance(r, Resource)
    return compile_namespace("team-a", [r])


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[int]:
    """``app`` on a loopback port (yielded) until the block ends."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@pytest.fixture
async def server():  # type: ignore[no-untyped-def]
    board = controlplane.ConfigBoard()
    reports = Reports()
    auth = controlplane.Auth(review=review)
    app = controlplane.create_app(board, auth, lambda rep: reports.add(rep, 0.0))
    async with serving(app) as port, aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
        yield board, reports, session


async def test_auth_is_required_and_namespace_scoped(server) -> None:  # type: ignore[no-untyped-def]
    board, _, s = server
    board.publish("team-a", result())
    async with s.get("/v1/config/team-a") as r:
        assert r.status == 401
    async with s.get("/v1/config/team-a", headers={"Authorization": "Bearer nope"}) as r:
        assert r.status == 401
    async with s.get("/v1/config/team-a", headers={"Authorization": "Bearer tok-b"}) as r:
        assert r.status == 403
    async with s.get("/v1/config/team-a", headers={"Authorization": "Bearer tok-a"}) as r:
        assert r.status == 200
        body = await r.json()
        assert body["hash"] == result().hash
        assert body["config"]["namespace"] == "team-a"


async def test_long_poll_returns_on_change(server) -> None:  # type: ignore[no-untyped-def]
    board, _, s = server
    first = result()
    board.publish("team-a", first)
    auth = {"Authorization": "Bearer tok-a"}
    async with s.get(f"/v1/config/team-a?hash={first.hash}&wait=0.05", headers=auth) as r:
        assert r.status == 304

    async def change_soon() -> None:
        await asyncio.sleep(0.05)
        board.publish("team-a", result(attempts=5))

    task = asyncio.create_task(change_soon())
    async with s.get(f"/v1/config/team-a?hash={first.hash}&wait=30", headers=auth) as r:
        assert r.status == 200
        assert (await r.json())["hash"] == result(attempts=5).hash
    await task


async def test_reports_are_accepted_once_and_namespace_checked(server) -> None:  # type: ignore[no-untyped-def]
    _, reports, s = server
    rep = UsageReport(
        namespace="team-a", pod="p", config_hash="h", seq=1, window_start=0, window_end=1
    ).model_dump_json(by_alias=True)
    auth = {"Authorization": "Bearer tok-a", "content-type": "application/json"}
    async with s.post("/v1/reports", data=rep, headers=auth) as r:
        assert (await r.json()) == {"accepted": True}
    async with s.post("/v1/reports", data=rep, headers=auth) as r:
        assert (await r.json()) == {"accepted": False}
    other = {"Authorization": "Bearer tok-b", "content-type": "application/json"}
    async with s.post("/v1/reports", data=rep, headers=other) as r:
        assert r.status == 403
    async with s.post("/v1/reports", data=b"{", headers=auth) as r:
        assert r.status == 400
    assert len(reports.pods) == 1


def report_json(pod: str = "p", namespace: str = "team-a") -> str:
    return UsageReport(
        namespace=namespace, pod=pod, config_hash="h", seq=1, window_start=0, window_end=1
    ).model_dump_json(by_alias=True)


async def test_a_report_is_bound_to_the_pod_of_its_token(server) -> None:  # type: ignore[no-untyped-def]
    _, reports, s = server
    headers = {"content-type": "application/json"}
    # tok-a2 is bound to pod p2 of team-a: it cannot report for p (403), only for p2
    async with s.post(
        "/v1/reports", data=report_json("p"), headers={**headers, "Authorization": "Bearer tok-a2"}
    ) as r:
        assert r.status == 403
        assert "bound to pod 'p2'" in (await r.json())["error"]["message"]
    # a ServiceAccount token not bound to a pod may read config but never report
    async with s.post(
        "/v1/reports",
        data=report_json("p"),
        headers={**headers, "Authorization": "Bearer tok-unbound"},
    ) as r:
        assert r.status == 403
    async with s.post(
        "/v1/reports", data=report_json("p2"), headers={**headers, "Authorization": "Bearer tok-a2"}
    ) as r:
        assert r.status == 200
    assert list(reports.pods) == [("team-a", "p2")]


async def test_the_body_is_not_read_before_the_token_is_checked() -> None:
    seen: list[bytes] = []

    async def never(token: str, audiences: list[str]) -> controlplane.TokenUser | None:
        return None

    auth = controlplane.Auth(review=never)
    app = controlplane.create_app(controlplane.ConfigBoard(), auth, lambda rep: True)
    async with serving(app) as port:
        # Declares 3 MiB but sends only the head: an unauthenticated caller is answered without
        # the server waiting for (or parsing) the body.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/reports HTTP/1.1\r\nHost: x\r\nContent-Length: 3145728\r\n"
            b"Content-Type: application/json\r\n\r\n{"
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readline(), 5)
        seen.append(head)
        writer.close()
    assert seen[0].startswith(b"HTTP/1.1 401")
    assert auth.denials["unauthenticated"] == 1


async def test_new_tokens_are_rate_limited_per_source_with_retry_after() -> None:
    calls: list[str] = []

    async def ok(token: str, audiences: list[str]) -> controlplane.TokenUser | None:
        calls.append(token)
        return controlplane.TokenUser("system:serviceaccount:team-a:app")

    now = [0.0]
    auth = controlplane.Auth(
        review=ok,
        limit=controlplane.RateLimit(per_source_rate=1, per_source_burst=3, overall_burst=100),
        clock=lambda: now[0],
    )
    app = controlplane.create_app(controlplane.ConfigBoard(), auth, lambda rep: True)
    board = app[controlplane.BOARD]
    board.publish("team-a", result())
    async with serving(app) as port, aiohttp.ClientSession(f"http://127.0.0.1:{port}") as s:
        statuses = []
        for i in range(5):
            async with s.get(
                "/v1/config/team-a", headers={"Authorization": f"Bearer new-{i}"}
            ) as r:
                statuses.append(r.status)
                if r.status == 429:
                    assert int(r.headers["Retry-After"]) >= 1
        assert statuses == [200, 200, 200, 429, 429]
        # a cached token is never limited
        async with s.get("/v1/config/team-a", headers={"Authorization": "Bearer new-0"}) as r:
            assert r.status == 200
        now[0] += 1.0  # one more review allowed a second later
        async with s.get("/v1/config/team-a", headers={"Authorization": "Bearer new-9"}) as r:
            assert r.status == 200
    assert calls == ["new-0", "new-1", "new-2", "new-9"]
    assert auth.denials["rate_limited"] == 2


def test_the_overall_limit_and_the_in_flight_bound() -> None:
    limit = controlplane.RateLimit(per_source_burst=10, overall_rate=1, overall_burst=2)
    assert limit.take("a", 0.0) is None
    assert limit.take("b", 0.0) is None
    wait = limit.take("c", 0.0)
    assert wait is not None and 0 < wait <= 1
    limit = controlplane.RateLimit(max_in_flight=1)
    limit.in_flight = 1
    assert limit.take("a", 0.0) == 1.0
    # the source table stays bounded
    limit = controlplane.RateLimit(max_sources=3)
    for i in range(10):
        limit.take(f"s{i}", 0.0)
    assert len(limit._sources) <= 3


async def test_concurrent_requests_with_one_new_token_share_one_review() -> None:
    calls: list[str] = []
    gate = asyncio.Event()

    async def slow(token: str, audiences: list[str]) -> controlplane.TokenUser | None:
        calls.append(token)
        await gate.wait()
        return controlplane.TokenUser("system:serviceaccount:team-a:app")

    auth = controlplane.Auth(review=slow)
    app = controlplane.create_app(controlplane.ConfigBoard(), auth, lambda rep: True)
    app[controlplane.BOARD].publish("team-a", result())
    async with serving(app) as port, aiohttp.ClientSession(f"http://127.0.0.1:{port}") as s:

        async def get() -> int:
            async with s.get("/v1/config/team-a", headers={"Authorization": "Bearer t"}) as r:
                return r.status

        tasks = [asyncio.create_task(get()) for _ in range(5)]
        await asyncio.sleep(0.2)
        gate.set()
        assert await asyncio.gather(*tasks) == [200] * 5
    assert calls == ["t"]


def test_token_reviews_expire_spread_over_half_a_minute_not_all_at_once() -> None:
    """Pods started together had their tokens reviewed together: their cache entries must not
    all end in the same second (they would meet the review rate limit together)."""
    keys = [hashlib.sha256(f"token-{i}".encode()).hexdigest() for i in range(1000)]
    lifetimes = [controlplane.cache_lifetime(k) for k in keys]
    low = controlplane.TOKEN_CACHE_SECONDS
    assert all(low <= t < low * (1 + controlplane.TOKEN_CACHE_SPREAD) for t in lifetimes)
    per_second = Counter(int(t) for t in lifetimes)
    assert len(per_second) >= 25 and max(per_second.values()) < 100
    assert controlplane.cache_lifetime(keys[0]) == controlplane.cache_lifetime(keys[0])


async def test_a_cached_review_lasts_its_own_lifetime() -> None:
    calls: list[str] = []

    async def ok(token: str, audiences: list[str]) -> controlplane.TokenUser | None:
        calls.append(token)
        return controlplane.TokenUser("system:serviceaccount:team-a:app")

    now = [0.0]
    auth = controlplane.Auth(review=ok, clock=lambda: now[0])
    app = controlplane.create_app(controlplane.ConfigBoard(), auth, lambda rep: True)
    app[controlplane.BOARD].publish("team-a", result())
    lifetime = controlplane.cache_lifetime(hashlib.sha256(b"tok").hexdigest())
    async with serving(app) as port, aiohttp.ClientSession(f"http://127.0.0.1:{port}") as s:
        for at in (0.0, lifetime - 0.5, lifetime + 0.5):
            now[0] = at
            async with s.get("/v1/config/team-a", headers={"Authorization": "Bearer tok"}) as r:
                assert r.status == 200
    assert calls == ["tok", "tok"]  # reviewed at 0, cached until its lifetime, reviewed again
