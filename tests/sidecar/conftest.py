"""Fixtures: fake providers and a sidecar on real loopback sockets, built from a SidecarConfig."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from sluice_sidecar import app as sidecar_app
from sluice_sidecar.config_source import ConfigSource
from sluice_sidecar.contract import Backend, Route, SidecarConfig
from sluice_sidecar.gateway import GATEWAY, Gateway
from sluice_sidecar.metering import MemoryAudit
from tests.fakes.clock import FakeClock
from tests.fakes.openai_server import FakeOpenAI


@dataclass
class Sidecar:
    url: str
    admin_url: str
    audit: MemoryAudit
    clock: FakeClock
    app: web.Application

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def gateway(self) -> Gateway:
        return self.app[GATEWAY]

    async def post(
        self,
        path: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, CIMultiDict[str], Any]:
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                self.url + path, json=body if data is None else None, data=data, headers=headers
            ) as r,
        ):
            raw = await r.read()
            try:
                parsed: Any = await r.json(content_type=None)
            except ValueError:
                parsed = raw
            return r.status, r.headers.copy(), parsed

    async def get(self, url: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as s, s.get(url) as r:
            return r.status, await r.text()

    async def metrics(self) -> str:
        return (await self.get(self.admin_url + "/metrics"))[1]


def backend(name: str, fake: FakeOpenAI | None = None, **kw: Any) -> Backend:
    if fake is not None:
        kw.setdefault("provider", "openai-compatible")
        kw.setdefault("base_url", fake.base_url)
    else:
        kw.setdefault("provider", "mock")
    kw.setdefault("model", f"{name}-model")
    return Backend(name=name, **kw)


def route(name: str, *backends: Backend, **kw: Any) -> Route:
    kw.setdefault("source", name)
    return Route(name=name, backends=backends, **kw)


def config(*routes: Route, **kw: Any) -> SidecarConfig:
    return SidecarConfig(namespace="test", routes=routes, **kw)


StartSidecar = Callable[..., Awaitable[Sidecar]]


@pytest.fixture
async def start_sidecar() -> AsyncIterator[StartSidecar]:
    runners: list[web.AppRunner] = []

    async def start(cfg: SidecarConfig | ConfigSource | str, **kw: Any) -> Sidecar:
        clock = kw.pop("clock", None) or FakeClock()
        header_timeout = kw.pop("header_timeout", sidecar_app.HEADER_TIMEOUT)
        audit = MemoryAudit()
        app = sidecar_app.create_app(cfg, clock=clock, rng=random.Random(7), audit=audit, **kw)
        admin = sidecar_app.create_admin_app(app)
        urls = []
        for runner in (
            sidecar_app.api_runner(app, header_timeout=header_timeout),
            web.AppRunner(admin, access_log=None),
        ):
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            runners.append(runner)
            assert site._server is not None
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
            urls.append(f"http://127.0.0.1:{port}")
        return Sidecar(urls[0], urls[1], audit, clock, app)

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    f = await FakeOpenAI("a").start()
    yield f
    await f.stop()


@pytest.fixture
async def fake_b() -> AsyncIterator[FakeOpenAI]:
    f = await FakeOpenAI("b").start()
    yield f
    await f.stop()
