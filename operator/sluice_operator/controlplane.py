"""The operator's HTTP endpoint for sidecars: config push (long-poll) and usage reports.

Owns:
* ``GET /v1/config/{namespace}?hash=H&wait=S`` - answers at once with ``{"hash", "config"}`` when
  the namespace's current hash differs from ``H``, otherwise holds the request up to ``S`` seconds
  (max 60) for a change and then answers 304. A sidecar keeps one such request open, so a change
  reaches it within milliseconds instead of the kubelet's ConfigMap sync period; the ConfigMap
  stays the bootstrap and fail-static copy.
* ``POST /v1/reports`` - a ``UsageReport``; idempotent by (pod, seq).
* Authentication: ``Authorization: Bearer <projected ServiceAccount token>`` checked with a
  TokenReview (cached briefly); a sidecar may only read and report for its own namespace.

The caller supplies the token reviewer and the report sink, so this module holds no Kubernetes
client of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import ValidationError

from sluice_sidecar.contract import UsageReport

from .compile import CompileResult

AUDIENCE = "sluice"
MAX_WAIT = 60.0
TOKEN_CACHE_SECONDS = 60.0

Reviewer = Callable[[str, list[str]], Awaitable[str | None]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message}}, status=status)


@dataclass
class ConfigBoard:
    """Latest compiled config per namespace, and waiters for changes."""

    current: dict[str, tuple[str, str]] = field(default_factory=dict)  # ns -> (hash, body)
    _changed: dict[str, asyncio.Condition] = field(default_factory=dict)

    def publish(self, namespace: str, result: CompileResult) -> None:
        old = self.current.get(namespace)
        if old is not None and old[0] == result.hash:
            return
        body = json.dumps(
            {"hash": result.hash, "config": json.loads(result.config.canonical_json())},
            separators=(",", ":"),
        )
        self.current[namespace] = (result.hash, body)
        cond = self._changed.get(namespace)
        if cond is not None:
            asyncio.get_running_loop().create_task(self._notify(cond))

    @staticmethod
    async def _notify(cond: asyncio.Condition) -> None:
        async with cond:
            cond.notify_all()

    async def wait(
        self, namespace: str, known: str | None, seconds: float
    ) -> tuple[str, str] | None:
        """The current (hash, body) once it differs from ``known``; None after ``seconds``."""
        cond = self._changed.setdefault(namespace, asyncio.Condition())
        deadline = time.monotonic() + seconds
        async with cond:
            while True:
                now = self.current.get(namespace)
                if now is not None and now[0] != known:
                    return now
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                try:
                    await asyncio.wait_for(cond.wait(), remaining)
                except TimeoutError:
                    return None


@dataclass
class Auth:
    """Bearer-token check with a short cache; the username says which namespace a caller is in."""

    review: Reviewer
    audiences: list[str] = field(default_factory=lambda: [AUDIENCE])
    _cache: dict[str, tuple[float, str | None]] = field(default_factory=dict)

    async def namespace_of(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return None
        token = header[len("Bearer ") :].strip()
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            user = hit[1]
        else:
            user = await self.review(token, self.audiences)
            self._cache[key] = (now + TOKEN_CACHE_SECONDS, user)
            if len(self._cache) > 10_000:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        # system:serviceaccount:<namespace>:<name>
        parts = (user or "").split(":")
        if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
            return parts[2]
        return None


BOARD = web.AppKey("board", ConfigBoard)
AUTH = web.AppKey("auth", Auth)
SINK: web.AppKey[Callable[[UsageReport], bool]] = web.AppKey("sink")


async def _authorize(request: web.Request, namespace: str) -> web.Response | None:
    caller = await request.app[AUTH].namespace_of(request)
    if caller is None:
        return _error(401, "a valid ServiceAccount token (audience sluice) is required")
    if caller != namespace:
        return _error(403, f"a sidecar in namespace {caller!r} cannot access {namespace!r}")
    return None


async def get_config(request: web.Request) -> web.Response:
    namespace = request.match_info["namespace"]
    denied = await _authorize(request, namespace)
    if denied is not None:
        return denied
    try:
        wait = min(MAX_WAIT, max(0.0, float(request.query.get("wait", "0"))))
    except ValueError:
        return _error(400, "wait must be a number of seconds")
    found = await request.app[BOARD].wait(namespace, request.query.get("hash"), wait)
    if found is None:
        if namespace not in request.app[BOARD].current:
            return _error(404, f"no Sluice config for namespace {namespace!r} yet")
        return web.Response(status=304)
    return web.Response(body=found[1], content_type="application/json")


async def post_report(request: web.Request) -> web.Response:
    try:
        report = UsageReport.model_validate_json(await request.read())
    except ValidationError as exc:
        return _error(400, f"invalid usage report: {exc.errors()[0]['msg']}")
    denied = await _authorize(request, report.namespace)
    if denied is not None:
        return denied
    fresh = request.app[SINK](report)
    return web.json_response({"accepted": fresh})


def create_app(
    board: ConfigBoard, auth: Auth, sink: Callable[[UsageReport], bool]
) -> web.Application:
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app[BOARD] = board
    app[AUTH] = auth
    app[SINK] = sink
    app.router.add_get("/v1/config/{namespace}", get_config)
    app.router.add_post("/v1/reports", post_report)
    app.router.add_get("/healthz", healthz)
    return app


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")
