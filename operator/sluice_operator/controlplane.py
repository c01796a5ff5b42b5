"""The operator's HTTP endpoint for sidecars: config push (long-poll) and usage reports.

Owns:
* ``GET /v1/config/{namespace}?hash=H&wait=S`` - answers at once with ``{"hash", "config"}`` when
  the namespace's current hash differs from ``H``, otherwise holds the request up to ``S`` seconds
  (max 60) for a change and then answers 304. A sidecar keeps one such request open, so a change
  reaches it within milliseconds instead of the kubelet's ConfigMap sync period; the ConfigMap
  stays the bootstrap and fail-static copy.
* ``POST /v1/reports`` - a ``UsageReport``; idempotent by (pod, seq). Fields this operator does
  not know (a newer sidecar's) are ignored, not refused (``contract._Sent``).
* ``POST /v1/leases`` - a ``LeaseRequest``: the sidecar process's budget windows, its spend there,
  the caps it holds and what it wants; answered with a ``LeaseResponse`` (``leases.LeaseDesk``),
  or 409 when an older request of the same process arrives after a newer one. Authenticated and
  bound to the pod exactly like a report.
* Authentication: ``Authorization: Bearer <projected ServiceAccount token>`` checked with a
  TokenReview before any body is read. Reviews are cached (by the token's hash), concurrent
  reviews of one token share one call, and new reviews are rate-limited per source address and
  overall with a bound on reviews in flight: over a limit is a 429 with ``Retry-After`` at once,
  never a queue. A sidecar may only read its own namespace's config and report for its own
  namespace and pod: a report's ``pod`` must be the pod the token is bound to (TokenReview's
  ``authentication.kubernetes.io/pod-name``), otherwise 403. Every refusal is counted by a fixed
  reason (``denials``, served as ``sluice_operator_controlplane_denied_total{reason}``).
* Memory per connection: ``lean_tls_reads`` (called by ``create_app``) lowers asyncio's TLS read
  buffer, allocated and zero-filled per connection, from 256 KiB to one TLS record.
* Every request is counted by route and status code (``Auth.requests``, served as
  ``sluice_operator_controlplane_requests_total{path,code}``; ``path`` is the route's pattern, so
  the label values are bounded; ``499``: the client went away before the answer). A client that
  disconnects while its body is read (a sidecar cut off at shutdown) is a one-line debug log.

The caller supplies the token reviewer and the report sink, so this module holds no Kubernetes
client of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from asyncio import sslproto
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from aiohttp import web
from pydantic import ValidationError

from sluice_sidecar.contract import LeaseRequest, LeaseResponse, UsageReport

from .compile import CompileResult
from .leases import NotServingError

log = logging.getLogger(__name__)

AUDIENCE = "sluice"
MAX_WAIT = 60.0
TOKEN_CACHE_SECONDS = 60.0
#: Each token's cache lifetime is stretched by up to this fraction, by a value derived from the
#: token (so the same token always lives as long): pods started together, whose tokens were
#: reviewed together, do not all come back for a review in the same second and meet the rate limit.
TOKEN_CACHE_SPREAD = 0.5
MAX_CACHED_TOKENS = 10_000
MAX_REPORT_BYTES = 4 * 1024 * 1024
#: asyncio's TLS layer (``asyncio.sslproto.SSLProtocol``, without uvloop) allocates and zero-fills
#: a read buffer of ``max_size`` (256 KiB) for every connection, resident for its whole life. A
#: sidecar keeps up to three connections here (the config long poll, reports, lease requests),
#: so at 1,000 sidecars that buffer alone was up to 0.75 GB. A TLS record carries at most 16 KiB
#: of plaintext, so a buffer of one record only costs more read calls on large bodies. Measured
#: (500 held keep-alive connections, aiohttp over TLS, RSS): 318 KiB a connection, 82 KiB after.
TLS_READ_BUFFER = 16 * 1024
POD_NAME_CLAIM = "authentication.kubernetes.io/pod-name"
POD_UID_CLAIM = "authentication.kubernetes.io/pod-uid"
#: Why a request was refused: the only values of the denial metric's ``reason`` label.
DENIAL_REASONS = (
    "unauthenticated",
    "rate_limited",
    "namespace_mismatch",
    "pod_mismatch",
    "unbound_token",
    "too_large",
)
#: The ``code`` of a request whose client went away before the answer (nginx's "client closed").
CLIENT_GONE = 499


@dataclass(frozen=True)
class TokenUser:
    """What a TokenReview says about a valid token: the username and the ``extra`` claims."""

    username: str
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


Reviewer = Callable[[str, list[str]], Awaitable[TokenUser | None]]


@dataclass(frozen=True)
class Caller:
    """An authenticated sidecar: its ServiceAccount's namespace and, when the token is bound to a
    pod (a projected token always is), that pod's name and uid."""

    namespace: str
    service_account: str
    pod: str | None = None
    pod_uid: str | None = None

    @classmethod
    def of(cls, user: TokenUser | None) -> Caller | None:
        # system:serviceaccount:<namespace>:<name>
        parts = (user.username if user else "").split(":")
        if user is None or len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:
            return None

        def claim(key: str) -> str | None:
            values = user.extra.get(key) or ()
            return values[0] if len(values) == 1 and values[0] else None

        return cls(parts[2], parts[3], claim(POD_NAME_CLAIM), claim(POD_UID_CLAIM))


def cache_lifetime(key: str) -> float:
    """How long the review of the token with SHA-256 hex digest ``key`` is cached (60-90 s)."""
    return TOKEN_CACHE_SECONDS * (1.0 + TOKEN_CACHE_SPREAD * int(key[:4], 16) / 0x10000)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"message": message}}, status=status, headers=headers)


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class RateLimit:
    """Token buckets for TokenReviews: one per source address and one overall, plus a bound on
    reviews in flight. ``take`` answers at once: None (go) or the seconds to wait."""

    per_source_rate: float = 2.0  # reviews per second, per source address
    per_source_burst: float = 20.0
    overall_rate: float = 50.0
    overall_burst: float = 200.0
    max_in_flight: int = 32
    max_sources: int = 10_000
    in_flight: int = 0
    _sources: dict[str, _Bucket] = field(default_factory=dict)
    _overall: _Bucket | None = None

    @staticmethod
    def _refill(bucket: _Bucket, rate: float, burst: float, now: float) -> None:
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now

    def take(self, source: str, now: float) -> float | None:
        if self.in_flight >= self.max_in_flight:
            return 1.0
        overall = self._overall
        if overall is None:
            overall = self._overall = _Bucket(self.overall_burst, now)
        self._refill(overall, self.overall_rate, self.overall_burst, now)
        mine = self._sources.get(source)
        if mine is None:
            if len(self._sources) >= self.max_sources:
                self._forget_full(now)
            mine = self._sources[source] = _Bucket(self.per_source_burst, now)
        self._refill(mine, self.per_source_rate, self.per_source_burst, now)
        if mine.tokens < 1:
            return (1 - mine.tokens) / self.per_source_rate
        if overall.tokens < 1:
            return (1 - overall.tokens) / self.overall_rate
        mine.tokens -= 1
        overall.tokens -= 1
        return None

    def _forget_full(self, now: float) -> None:
        """Drop the sources whose bucket has refilled (they lose nothing by being forgotten)."""
        for key, bucket in list(self._sources.items()):
            self._refill(bucket, self.per_source_rate, self.per_source_burst, now)
            if bucket.tokens >= self.per_source_burst:
                del self._sources[key]
        if len(self._sources) >= self.max_sources:  # still full: an attack; start over
            self._sources.clear()


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
    """Bearer-token check from the headers alone: cached, coalesced and rate-limited reviews."""

    review: Reviewer
    audiences: list[str] = field(default_factory=lambda: [AUDIENCE])
    limit: RateLimit = field(default_factory=RateLimit)
    clock: Callable[[], float] = time.monotonic
    denials: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DENIAL_REASONS, 0))
    reviews: int = 0
    #: Requests answered, by (route pattern, status code): ``metrics``.
    requests: dict[tuple[str, str], int] = field(default_factory=dict)
    _cache: dict[str, tuple[float, Caller | None]] = field(default_factory=dict)
    _pending: dict[str, asyncio.Future[Caller | None]] = field(default_factory=dict)

    def deny(self, reason: str, status: int, message: str, **headers: str) -> web.Response:
        self.denials[reason] += 1
        return _error(status, message, headers)

    async def identify(self, request: web.Request) -> Caller | web.Response:
        """The caller, or the refusal to send (401, or 429 with Retry-After)."""
        header = request.headers.get("Authorization", "")
        token = header[len("Bearer ") :].strip() if header.startswith("Bearer ") else ""
        if not token:
            return self.deny("unauthenticated", 401, _TOKEN_REQUIRED)
        key = hashlib.sha256(token.encode()).hexdigest()
        now = self.clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            caller = hit[1]
        elif key in self._pending:
            try:
                caller = await asyncio.shield(self._pending[key])
            except Exception:
                return _error(503, "cannot review tokens now", {"Retry-After": "5"})
        else:
            wait = self.limit.take(request.remote or "", now)
            if wait is not None:
                return self.deny(
                    "rate_limited",
                    429,
                    "too many new tokens to review; retry later",
                    **{"Retry-After": str(max(1, math.ceil(wait)))},
                )
            try:
                caller = await self._review(key, token)
            except Exception:  # the apiserver failed: not the caller's fault, not cached
                log.warning("TokenReview failed", exc_info=True)
                return _error(503, "cannot review tokens now", {"Retry-After": "5"})
        if caller is None:
            return self.deny("unauthenticated", 401, _TOKEN_REQUIRED)
        return caller

    async def _review(self, key: str, token: str) -> Caller | None:
        future: asyncio.Future[Caller | None] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        self.limit.in_flight += 1
        self.reviews += 1
        try:
            caller = Caller.of(await self.review(token, self.audiences))
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            self.limit.in_flight -= 1
            del self._pending[key]
        future.set_result(caller)
        now = self.clock()
        self._cache[key] = (now + cache_lifetime(key), caller)
        if len(self._cache) > MAX_CACHED_TOKENS:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            while len(self._cache) > MAX_CACHED_TOKENS:
                self._cache.pop(next(iter(self._cache)))
        return caller


_TOKEN_REQUIRED = "a valid ServiceAccount token (audience sluice) is required"  # noqa: S105 - a message


BOARD = web.AppKey("board", ConfigBoard)
AUTH = web.AppKey("auth", Auth)
SINK: web.AppKey[Callable[[UsageReport], bool]] = web.AppKey("sink")
LeaseAnswer = Callable[[LeaseRequest], LeaseResponse | None]
LEASES: web.AppKey[LeaseAnswer | None] = web.AppKey("leases")


def _other_namespace(auth: Auth, caller: Caller, namespace: str) -> web.Response | None:
    if caller.namespace == namespace:
        return None
    return auth.deny(
        "namespace_mismatch",
        403,
        f"a sidecar in namespace {caller.namespace!r} cannot access {namespace[:63]!r}",
    )


async def get_config(request: web.Request) -> web.Response:
    namespace = request.match_info["namespace"]
    auth = request.app[AUTH]
    caller = await auth.identify(request)
    if isinstance(caller, web.Response):
        return caller
    denied = _other_namespace(auth, caller, namespace)
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


_Doc = TypeVar("_Doc", UsageReport, LeaseRequest)


async def _pod_document(request: web.Request, model: type[_Doc], what: str) -> _Doc | web.Response:
    """The body as ``model``, from a caller whose token is bound to the pod it names."""
    auth = request.app[AUTH]
    # Who is calling, from the headers alone: an unauthenticated body is never read or parsed.
    caller = await auth.identify(request)
    if isinstance(caller, web.Response):
        return caller
    if caller.pod is None:
        return auth.deny(
            "unbound_token",
            403,
            f"{what}s need a token bound to the reporting pod (a projected ServiceAccount token)",
        )
    if (request.content_length or 0) > MAX_REPORT_BYTES:
        return auth.deny("too_large", 413, f"a {what} is at most {MAX_REPORT_BYTES} bytes")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return auth.deny("too_large", 413, f"a {what} is at most {MAX_REPORT_BYTES} bytes")
    except ConnectionError as exc:  # the client went away (a sidecar cut off at shutdown)
        log.debug("a %s from pod %s ended before its body was read: %s", what, caller.pod, exc)
        return web.Response(status=CLIENT_GONE)  # nobody reads it; counted as gone
    try:
        doc = model.model_validate_json(body)
    except ValidationError as exc:
        return _error(400, f"invalid {what}: {exc.errors()[0]['msg']}")
    denied = _other_namespace(auth, caller, doc.namespace)
    if denied is not None:
        return denied
    if doc.pod != caller.pod:
        log.warning(
            "refused a %s for pod %s/%s from a token bound to pod %s",
            what,
            doc.namespace,
            doc.pod[:253],
            caller.pod,
        )
        return auth.deny(
            "pod_mismatch",
            403,
            f"this token is bound to pod {caller.pod!r}; it cannot report for another pod",
        )
    return doc


async def post_report(request: web.Request) -> web.Response:
    report = await _pod_document(request, UsageReport, "usage report")
    if isinstance(report, web.Response):
        return report
    try:
        fresh = request.app[SINK](report)
    except NotServingError:
        return _not_leader(report.namespace)
    return web.json_response({"accepted": fresh})


def _not_leader(namespace: str) -> web.Response:
    """A follower replica's answer to what only the leader takes (reports, leases): 503, and the
    connection closed so the sidecar's retry may reach the leader behind the Service."""
    return _error(
        503,
        f"this operator replica does not serve namespace {namespace[:63]!r} now (not the "
        "leader, or not started yet); try again",
        {"Retry-After": "1", "Connection": "close"},
    )


async def post_leases(request: web.Request) -> web.Response:
    answer = request.app[LEASES]
    if answer is None:
        return _error(404, "this control plane grants no budget leases")
    ask = await _pod_document(request, LeaseRequest, "lease request")
    if isinstance(ask, web.Response):
        return ask
    try:
        got = answer(ask)
    except NotServingError:
        return _not_leader(ask.namespace)
    if got is None:
        return _error(409, "an older lease request of this process (seq); ask again")
    return web.Response(body=got.model_dump_json(by_alias=True), content_type="application/json")


@web.middleware
async def _count(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Count the request by route pattern and status code (``Auth.requests``)."""
    code = 500
    try:
        response = await handler(request)
        code = response.status
        return response
    except web.HTTPException as exc:
        code = exc.status
        raise
    except asyncio.CancelledError:
        code = CLIENT_GONE
        raise
    finally:
        resource = request.match_info.route.resource
        key = (resource.canonical if resource is not None else "unmatched", str(code))
        counts = request.app[AUTH].requests
        counts[key] = counts.get(key, 0) + 1


def lean_tls_reads() -> None:
    """Lower asyncio's per-connection TLS read buffer to ``TLS_READ_BUFFER`` in this process (a
    class attribute of the standard library: every TLS connection accepted or opened after the
    call, the control plane's, the webhook's and the API client's alike; uvloop has its own)."""
    sslproto.SSLProtocol.max_size = min(sslproto.SSLProtocol.max_size, TLS_READ_BUFFER)


def create_app(
    board: ConfigBoard,
    auth: Auth,
    sink: Callable[[UsageReport], bool],
    leases: LeaseAnswer | None = None,
) -> web.Application:
    lean_tls_reads()  # every sidecar holds connections here: see TLS_READ_BUFFER
    app = web.Application(client_max_size=MAX_REPORT_BYTES, middlewares=[_count])
    app[BOARD] = board
    app[AUTH] = auth
    app[SINK] = sink
    app[LEASES] = leases
    app.router.add_get("/v1/config/{namespace}", get_config)
    app.router.add_post("/v1/reports", post_report)
    app.router.add_post("/v1/leases", post_leases)
    app.router.add_get("/healthz", healthz)
    return app


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")
