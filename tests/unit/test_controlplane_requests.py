"""The control plane's request counter (``sluice_operator_controlplane_requests_total{path,code}``)
and a client that disconnects mid-body (a sidecar cut off at shutdown: a debug line, no traceback),
over a real loopback socket."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import generate_latest

from sluice_operator import controlplane, metrics

from .test_controlplane import review, serving


def app_and_auth(
    reviewed: asyncio.Event | None = None,
) -> tuple[web.Application, controlplane.Auth]:
    async def reviewing(token: str, audiences: list[str]) -> controlplane.TokenUser | None:
        try:
            return await review(token, audiences)
        finally:
            if reviewed is not None:
                reviewed.set()

    auth = controlplane.Auth(review=reviewing)
    app = controlplane.create_app(
        controlplane.ConfigBoard(), auth, lambda rep: True, leases=lambda ask: None
    )
    return app, auth


async def test_requests_are_counted_by_route_pattern_and_code_and_served() -> None:
    app, auth = app_and_auth()
    async with serving(app) as port, aiohttp.ClientSession(f"http://127.0.0.1:{port}") as s:
        async with s.get("/v1/config/team-a") as r:
            assert r.status == 401
        async with s.get("/v1/config/team-b", headers={"Authorization": "Bearer tok-a"}) as r:
            assert r.status == 403
        async with s.get("/healthz") as r:
            assert r.status == 200
        async with s.get("/nowhere") as r:
            assert r.status == 404
        async with s.post("/v1/leases", data=b"{}") as r:
            assert r.status == 401
    assert auth.requests == {
        ("/v1/config/{namespace}", "401"): 1,
        ("/v1/config/{namespace}", "403"): 1,
        ("/healthz", "200"): 1,
        ("unmatched", "404"): 1,
        ("/v1/leases", "401"): 1,
    }
    registry = metrics.build_registry(
        passes=lambda: 0,
        api_requests=lambda: 0,
        namespaces=lambda: 0,
        objects=lambda: 0,
        problems=lambda: 0,
        sidecars=lambda: 0,
        requests=lambda: auth.requests,
    )
    text = generate_latest(registry).decode()
    assert "# TYPE sluice_operator_controlplane_requests_total counter" in text
    assert 'sluice_operator_controlplane_requests_total{code="401",path="/v1/leases"} 1.0' in text
    assert (
        'sluice_operator_controlplane_requests_total{code="403",path="/v1/config/{namespace}"} 1.0'
        in text
    )


async def test_a_lease_request_cut_off_mid_body_is_a_debug_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reviewed = asyncio.Event()
    app, auth = app_and_auth(reviewed)
    caplog.set_level(logging.DEBUG)
    async with serving(app) as port:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/leases HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-a\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            b'{"namespace": "team-a", '
        )
        await writer.drain()
        await asyncio.wait_for(reviewed.wait(), 30)  # the handler is past the token check
        writer.close()
        await writer.wait_closed()
        for _ in range(500):  # until the server has seen the disconnect
            if auth.requests:
                break
            await asyncio.sleep(0.01)
    assert auth.requests == {("/v1/leases", "499"): 1}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    gone = [r for r in caplog.records if "ended before its body was read" in r.getMessage()]
    assert len(gone) == 1 and gone[0].levelno == logging.DEBUG
    assert "pod p" in gone[0].getMessage()
