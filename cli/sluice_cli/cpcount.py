"""A counting pass-through for the operator's control plane (``sluice dev fleet --count-calls``).

Owns one thing: an HTTPS reverse proxy on loopback, in a thread of its own, that forwards every
sidecar request (method, path, query, ``Authorization``, body) to the operator's control plane
unchanged, hands the answer back (status, body, ``Content-Type``, ``Retry-After``), and counts
the calls by route (``POST /v1/reports``, ``POST /v1/leases``, ``GET /v1/config/{namespace}``)
and answer status. ``GET /fleet/calls`` (answered by the proxy itself, never forwarded) returns
the counts as JSON. It serves the control plane's own certificate, so a sidecar verifies it with
the same CA.

It exists for measurements (control-plane calls per request, ``bench/budget_overshoot.py``): the
operator counts its TokenReviews and refusals but not its calls. Everything the operator sees
comes from 127.0.0.1, as without the proxy (all sidecars of a fleet are on loopback anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import threading
from collections import Counter
from pathlib import Path

import aiohttp
from aiohttp import web

_ROUTE = re.compile(r"^/v1/config/[^/]+$")
_FORWARDED = ("Authorization", "Content-Type")
_RETURNED = ("Content-Type", "Retry-After")
LONG_POLL_SECONDS = 120.0  # the operator holds a config request up to 60 s


def route_of(method: str, path: str) -> str:
    """``POST /v1/reports``; a config long-poll of any namespace is ``GET /v1/config/{ns}``."""
    return f"{method} {'/v1/config/{ns}' if _ROUTE.match(path) else path}"


class CallCounter:
    """The proxy; ``start()`` returns once it listens, ``stop()`` ends the thread."""

    def __init__(self, upstream: str, cert_dir: Path, port: int) -> None:
        self.upstream = upstream.rstrip("/")
        self.cert_dir = cert_dir
        self.port = port
        self.calls: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="sluice-cp-counter", daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {"calls": dict(self.calls), "statuses": dict(self.statuses)}

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the control-plane call counter did not start")
        if self._error is not None:
            raise RuntimeError(f"the control-plane call counter failed: {self._error}")

    def stop(self) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopped.set)
            self._thread.join(10)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start() when it happens before ready
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_tls.load_cert_chain(self.cert_dir / "tls.crt", self.cert_dir / "tls.key")
        client_tls = ssl.create_default_context(cafile=str(self.cert_dir / "ca.crt"))
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_tls, limit=0),
            timeout=aiohttp.ClientTimeout(total=LONG_POLL_SECONDS),
            auto_decompress=False,
        ) as session:
            app = web.Application(client_max_size=8 * 1024 * 1024)
            app.router.add_get("/fleet/calls", self._calls)
            app.router.add_route("*", "/{tail:.*}", lambda r: self._forward(session, r))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            try:
                site = web.TCPSite(runner, "127.0.0.1", self.port, ssl_context=server_tls)
                await site.start()
                self._ready.set()
                await self._stopped.wait()
            finally:
                await runner.cleanup()

    async def _calls(self, _: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def _forward(self, session: aiohttp.ClientSession, request: web.Request) -> web.Response:
        route = route_of(request.method, request.path)
        with self._lock:
            self.calls[route] += 1  # on arrival: a long-poll held open is counted already
        headers = {k: request.headers[k] for k in _FORWARDED if k in request.headers}
        body = await request.read()
        try:
            async with session.request(
                request.method,
                f"{self.upstream}{request.path_qs}",
                data=body or None,
                headers=headers,
            ) as answer:
                payload = await answer.read()
                status = answer.status
                returned = {k: answer.headers[k] for k in _RETURNED if k in answer.headers}
        except (aiohttp.ClientError, TimeoutError):
            status, payload, returned = 502, b"", {}
        with self._lock:
            self.statuses[f"{route} {status}"] += 1
        if status == 502 and not payload:
            raise web.HTTPBadGateway()
        return web.Response(status=status, body=payload, headers=returned)
