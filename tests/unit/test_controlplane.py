"""The control-plane endpoint over a real loopback socket: auth, long-poll, reports."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from sluice_operator import controlplane, manifests
from sluice_operator.compile import compile_namespace
from sluice_operator.manifests import Resource
from sluice_operator.reports import Reports
from sluice_sidecar.contract import UsageReport

from .test_api_models import ROUTE

TOKENS = {"tok-a": "system:serviceaccount:team-a:app", "tok-b": "system:serviceaccount:team-b:x"}


async def review(token: str, audiences: list[str]) -> str | None:
    assert audiences == ["sluice"]
    return TOKENS.get(token)


def result(attempts: int = 2):  # type: ignore[no-untyped-def]
    doc = {**ROUTE, "spec": {**ROUTE["spec"], "retry": {"attempts": attempts}}}
    r = manifests.parse_object(doc, "t")
    assert isinstance(r, Resource)
    return compile_namespace("team-a", [r])


@pytest.fixture
async def server():  # type: ignore[no-untyped-def]
    board = controlplane.ConfigBoard()
    reports = Reports()
    app = controlplane.create_app(
        board, controlplane.Auth(review=review), lambda rep: reports.add(rep, 0.0)
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
        yield board, reports, session
    await runner.cleanup()


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
