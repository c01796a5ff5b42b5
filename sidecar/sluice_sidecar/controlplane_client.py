"""The sidecar's side of the operator's control plane: config push in, usage reports out.

Owns:
* ``ControlPlaneConfig`` - a ``ConfigSource`` that boots from the mounted ConfigMap file (the
  fail-static copy) and then keeps one long-poll open to ``GET /v1/config/{namespace}?hash=...``,
  so a change reaches the pod within a second instead of the kubelet's sync period. While the
  operator answers, it is authoritative; while it does not, the file is watched as before. A
  config that fails validation is rejected and the last good one keeps serving, whatever its
  origin. Unreachable operator => back-off, never a tight loop.
* ``UsageReporter`` - counts requests per (route, backend) through the pipeline's ``on_finish``
  hook (a few integer additions per request) and posts a ``UsageReport`` with backend health
  (and which backends' API keys it cannot read) and the config hash it runs every ``interval``
  seconds; reports carry a sequence number so a
  retried post is counted once.
* ``LeaseClient`` - the network half of the budget leases (``budget.leases``): posts the
  ``LeaseKeeper``'s request to ``POST /v1/leases`` every third of the lease TTL and at once when
  the keeper needs more (a refusal, a slice running low, a provider quota share found short;
  at most every ``MIN_LEASE_GAP`` s), and gives every slice back when the sidecar stops. The
  same requests carry the provider quota asks (``routing.QuotaKeeper``). Nothing on the request
  path waits for it.

Authentication is the pod's projected ServiceAccount token, re-read from its file on every call
(the kubelet rotates it). Nothing here runs unless the injector set ``SLUICE_CONTROL_PLANE_URL``.
The URL is ``https://``, and the server's certificate is verified against the PEM CA bundle in
``SLUICE_CONTROL_PLANE_CA`` (set by the injector from the operator's CA; the system CAs when
absent). An ``http://`` URL is refused - the token would travel in clear - unless
``SLUICE_CONTROL_PLANE_INSECURE=true`` says so explicitly (development only); refused, the
sidecar serves its mounted config file alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import ssl
import statistics
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from . import model
from .budget import LeaseKeeper
from .clock import Clock, SystemClock
from .config_source import ConfigError, FileConfig, parse
from .contract import (
    BackendHealth,
    BackendState,
    BudgetRouteSpend,
    BudgetWindowSpend,
    LeaseResponse,
    UsageEntry,
    UsageReport,
)
from .exchange import Exchange
from .guardrails.stats import VerdictCounts

log = logging.getLogger("sluice.controlplane")

POLL_WAIT = 30.0  # seconds the operator may hold a long-poll
REPORT_INTERVAL = 10.0
MAX_BACKOFF = 30.0
MAX_SAMPLES = 256  # latency samples kept per (route, backend) and window

HealthFn = Callable[[], Iterable[tuple[str, str, BackendState, int]]]
BudgetSpendFn = Callable[[], tuple[tuple[BudgetWindowSpend, ...], tuple[BudgetRouteSpend, ...]]]


@dataclass(frozen=True)
class Identity:
    """Who this sidecar is, from the injector's downward-API environment."""

    url: str
    namespace: str
    pod: str
    token_file: Path
    report_interval: float = REPORT_INTERVAL
    #: PEM CA bundle for the control plane's certificate; empty: the system's CAs
    ca: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Identity | None:
        url = env.get("SLUICE_CONTROL_PLANE_URL", "").rstrip("/")
        namespace = env.get("POD_NAMESPACE", "")
        if not url or not namespace:
            return None
        insecure = env.get("SLUICE_CONTROL_PLANE_INSECURE", "").strip().lower() == "true"
        if not url.startswith("https://") and not (url.startswith("http://") and insecure):
            log.error(
                "SLUICE_CONTROL_PLANE_URL must be https:// (plain http only with "
                "SLUICE_CONTROL_PLANE_INSECURE=true, development only); serving the config "
                "file alone"
            )
            return None
        ca = env.get("SLUICE_CONTROL_PLANE_CA", "")
        try:
            ssl.create_default_context(cadata=ca or None)
        except (ssl.SSLError, ValueError) as exc:
            log.error(
                "SLUICE_CONTROL_PLANE_CA is not a PEM CA bundle (%s); serving the config "
                "file alone",
                exc,
            )
            return None
        return cls(
            ca=ca,
            url=url,
            namespace=namespace,
            pod=env.get("POD_NAME", "unknown"),
            token_file=Path(
                env.get("SLUICE_TOKEN_FILE", "/var/run/secrets/sluice.dev/token/token")
            ),
            report_interval=float(env.get("SLUICE_REPORT_INTERVAL", REPORT_INTERVAL)),
        )

    def connector(self) -> aiohttp.TCPConnector:
        """Verifies the control plane's certificate (hostname included) with ``ca``."""
        if not self.url.startswith("https://"):
            return aiohttp.TCPConnector()
        context = ssl.create_default_context(cadata=self.ca or None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return aiohttp.TCPConnector(ssl=context)

    def headers(self) -> dict[str, str]:
        try:
            token = self.token_file.read_text(encoding="utf-8").strip()
        except OSError:
            return {}
        return {"Authorization": f"Bearer {token}"}


def _session(
    identity: Identity, shared: aiohttp.BaseConnector | None, timeout: aiohttp.ClientTimeout
) -> aiohttp.ClientSession:
    """A session on ``shared`` when there is one (the config long-poll, the reports and the lease
    requests of a sidecar share one TLS context and keep-alive pool: the long-poll holds one
    connection, reports and leases take turns on a second), else on a connector of its own."""
    if shared is None:
        return aiohttp.ClientSession(connector=identity.connector(), timeout=timeout)
    return aiohttp.ClientSession(connector=shared, connector_owner=False, timeout=timeout)


class ControlPlaneConfig(FileConfig):
    """The ConfigMap file at start, then the operator's long-poll while it answers."""

    def __init__(
        self,
        path: str | Path,
        identity: Identity,
        *,
        clock: Clock | None = None,
        interval: float = 1.0,
        poll_wait: float = POLL_WAIT,
        connector: aiohttp.BaseConnector | None = None,
    ) -> None:
        self.identity = identity
        self.connector = connector
        self.poll_wait = poll_wait
        self.connected = False
        self.pushes = 0
        super().__init__(path, clock=clock, interval=interval)  # loads the file once

    def reload(self) -> bool:
        # While the operator answers it is the fresher source; the file is the fallback.
        if self.connected:
            return False
        return super().reload()

    async def run(self) -> None:
        async with _session(
            self.identity, self.connector, aiohttp.ClientTimeout(total=None)
        ) as session:
            file_watch = asyncio.create_task(super().run())
            try:
                await self._poll(session)
            finally:
                file_watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await file_watch

    async def _poll(self, session: aiohttp.ClientSession) -> None:
        backoff = 0.5
        url = f"{self.identity.url}/v1/config/{self.identity.namespace}"
        while True:
            try:
                params = {"wait": str(self.poll_wait)}
                if self.current_hash:
                    params["hash"] = self.current_hash
                async with session.get(
                    url,
                    params=params,
                    headers=self.identity.headers(),
                    timeout=aiohttp.ClientTimeout(total=self.poll_wait + 10, connect=5),
                ) as resp:
                    if resp.status == 304:
                        self.connected = True
                        backoff = 0.5
                        continue
                    if resp.status != 200:
                        raise _UnavailableError(f"HTTP {resp.status}: {(await resp.text())[:200]}")
                    body = await resp.json(content_type=None)
                self.connected = True
                backoff = 0.5
                self._take(body)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, TimeoutError, ValueError, _UnavailableError) as exc:
                if self.connected:
                    log.warning("control plane unreachable (%s); serving the last good config", exc)
                self.connected = False
                await self._clock.sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)

    def _take(self, body: Any) -> None:
        config = body.get("config") if isinstance(body, dict) else None
        try:
            parsed = parse(_json_text(config), name="control plane config")
        except ConfigError as exc:
            self._fail(str(exc))
            return
        if self.current is not None and parsed == self.current:
            return
        self.pushes += 1
        self._swap_logged(parsed)


class _UnavailableError(Exception):
    pass


def _json_text(data: Any) -> str:
    return json.dumps(data)


@dataclass
class _Counts:
    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    ttfts_ms: list[float] = field(default_factory=list)


@dataclass
class UsageReporter:
    """Per-window usage counters, reported to the operator."""

    identity: Identity
    config_hash: Callable[[], str | None]
    health: HealthFn = lambda: ()
    #: (route, backend) whose API key this sidecar cannot read (``Credentials.missing``).
    missing_credentials: Callable[[], Collection[tuple[str, str]]] = lambda: ()
    #: The budget stage's settled spend (``BudgetStage.spend``), reported as gauges.
    budget_spend: BudgetSpendFn | None = None
    #: This process: a restarted sidecar's spend counts apart from its predecessor's.
    instance: str = field(default_factory=lambda: secrets.token_hex(8))
    clock: Clock = field(default_factory=SystemClock)
    interval: float = REPORT_INTERVAL
    seq: int = 0
    sent: int = 0
    _window_start: float = field(default_factory=time.time)
    _counts: dict[tuple[str, str], _Counts] = field(default_factory=dict)
    #: Guardrail verdicts per policy and entity, the last hour in buckets (gauges).
    verdicts: VerdictCounts = field(default_factory=VerdictCounts)
    #: The sidecar's shared control-plane connector (``_session``); None: one of its own.
    connector: aiohttp.BaseConnector | None = None

    def record(self, ex: Exchange) -> None:
        """The ``on_finish`` hook: cheap, no IO."""
        if ex.verdicts:  # also of requests a guardrail blocked (they have no backend)
            self.verdicts.record(ex.verdicts, time.time())
        if ex.route is None or ex.backend is None:
            return
        c = self._counts.get((ex.route.name, ex.backend.name))
        if c is None:
            c = self._counts[(ex.route.name, ex.backend.name)] = _Counts()
        c.requests += 1
        c.fallbacks += ex.fallbacks
        if ex.outcome != "ok":
            c.errors += 1
        if ex.usage is not None:
            c.input_tokens += ex.usage.input_tokens
            c.output_tokens += ex.usage.output_tokens
            c.cost_usd += model.cost_usd(ex.backend, ex.usage)
        if len(c.latencies_ms) < MAX_SAMPLES:
            c.latencies_ms.append((self.clock.now() - ex.started) * 1000)
            if ex.ttft is not None:
                c.ttfts_ms.append(ex.ttft * 1000)

    def build(self) -> UsageReport:
        """The report for the current window; starts a new window."""
        now = time.time()
        counts, self._counts = self._counts, {}
        spend = self.budget_spend() if self.budget_spend is not None else ((), ())
        self.seq += 1
        report = UsageReport(
            namespace=self.identity.namespace,
            pod=self.identity.pod,
            config_hash=self.config_hash() or "",
            seq=self.seq,
            window_start=self._window_start,
            window_end=now,
            usage=tuple(
                UsageEntry(
                    route=route,
                    backend=backend,
                    requests=c.requests,
                    errors=c.errors,
                    fallbacks=c.fallbacks,
                    input_tokens=c.input_tokens,
                    output_tokens=c.output_tokens,
                    cost_usd=round(c.cost_usd, 8),
                    latency_p50_ms=round(statistics.median(c.latencies_ms), 2)
                    if c.latencies_ms
                    else None,
                    ttft_p50_ms=round(statistics.median(c.ttfts_ms), 2) if c.ttfts_ms else None,
                )
                for (route, backend), c in sorted(counts.items())
            ),
            health=self._health(),
            instance=self.instance,
            budgets=spend[0],
            budget_routes=spend[1],
            guardrails=self.verdicts.report(now),
        )
        self._window_start = now
        return report

    def _health(self) -> tuple[BackendHealth, ...]:
        missing = self.missing_credentials()
        return tuple(
            BackendHealth(
                route=route,
                backend=backend,
                state=state,
                credentials_missing=(route, backend) in missing,
            )
            for route, backend, state, _ in self.health()
        )

    async def run(self) -> None:
        async with _session(
            self.identity, self.connector, aiohttp.ClientTimeout(total=10, connect=5)
        ) as session:
            pending: UsageReport | None = None
            while True:
                await self.clock.sleep(self.interval)
                # A report that failed is merged into nothing and resent as is (same seq), so
                # the operator counts it once; newer counts wait for the next window.
                pending = pending or self.build()
                try:
                    async with session.post(
                        f"{self.identity.url}/v1/reports",
                        data=pending.model_dump_json(by_alias=True),
                        headers={**self.identity.headers(), "Content-Type": "application/json"},
                    ) as resp:
                        # 429 (the operator's TokenReview limit) and 5xx: resent next round
                        if resp.status < 500 and resp.status != 429:
                            pending = None
                            self.sent += 1
                        if resp.status >= 400 and resp.status != 429:
                            log.warning("usage report refused: HTTP %s", resp.status)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    log.debug("usage report not delivered yet: %s", exc)

    def lifecycle(self, _: web.Application) -> contextlib.AbstractAsyncContextManager[None]:
        return _task_context(self.run(), "sluice-usage-reporter")


#: Seconds between two lease requests at least (a burst of refusals asks once).
MIN_LEASE_GAP = 0.2
#: Seconds between lease requests to an operator that grants none (404).
NO_LEASES_RETRY = 60.0
#: Seconds between two looks of an idle lease client for something to lease (quotas).
IDLE_RECHECK = 1.0


def lease_wait(ok: bool, backoff: float, ttl: float, *, unsupported: bool) -> tuple[float, float]:
    """(seconds until the next lease request, the backoff after it) once a request got through
    (``ok``) or not. Renewals come every third of the TTL; failing, the backoff doubles from
    0.5 s but never beyond a third of the TTL either, so a new operator hears from every live
    sidecar (and learns its spend) within its restart grace of TTL + skew
    (``sluice_operator.leases``) before it grants anything new. An operator that grants no
    leases (``unsupported``) is asked every ``NO_LEASES_RETRY`` seconds."""
    if unsupported:
        return NO_LEASES_RETRY, NO_LEASES_RETRY
    if ok:
        return ttl / 3, 0.5
    backoff = min(MAX_BACKOFF, ttl / 3, backoff * 2)
    return backoff, backoff


@dataclass
class LeaseClient:
    """Keeps the budget leases of this sidecar process renewed (see ``budget.leases``)."""

    identity: Identity
    keeper: LeaseKeeper
    clock: Clock = field(default_factory=SystemClock)
    answered: int = 0
    failures: int = 0
    #: The sidecar's shared control-plane connector (``_session``); None: one of its own.
    connector: aiohttp.BaseConnector | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.keeper.on_need = self._wake.set

    async def exchange(self, session: aiohttp.ClientSession, *, release: bool = False) -> bool:
        """One lease request and its answer; False when it did not get through."""
        keeper = self.keeper
        sent_mono, sent_wall = self.clock.now(), self.clock.wall()
        request = keeper.request(sent_wall + keeper.offset, release=release, mono=sent_mono)
        try:
            async with session.post(
                f"{self.identity.url}/v1/leases",
                data=request.model_dump_json(by_alias=True),
                headers={**self.identity.headers(), "Content-Type": "application/json"},
            ) as resp:
                if resp.status == 409:  # an older request of ours arrived late: ask again
                    return True
                if resp.status == 404:  # an operator that grants no leases (older than us)
                    keeper.no_leases(self.clock.now())
                    self.failures += 1
                    return False
                if resp.status != 200:
                    log.warning("lease request refused: HTTP %s", resp.status)
                    self.failures += 1
                    return False
                answer = LeaseResponse.model_validate_json(await resp.read())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.debug("lease request not delivered: %s", exc)
            self.failures += 1
            return False
        if not release:
            keeper.take(answer, sent_mono, sent_wall, self.clock.wall())
        self.answered += 1
        return True

    async def run(self) -> None:
        async with _session(
            self.identity, self.connector, aiohttp.ClientTimeout(total=10, connect=5)
        ) as session:
            backoff = 0.5
            try:
                while True:
                    self._wake.clear()
                    if self.keeper.idle(self.clock.now()) and not self.keeper.unsupported:
                        # A config with an enforcing budget wakes us; one with a backend's
                        # ``limits`` is noticed within IDLE_RECHECK (a local check, no request).
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), IDLE_RECHECK)
                        continue
                    ok = await self.exchange(session)
                    wait, backoff = lease_wait(
                        ok, backoff, self.keeper.ttl, unsupported=self.keeper.unsupported
                    )
                    await self.clock.sleep(MIN_LEASE_GAP)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), max(0.0, wait - MIN_LEASE_GAP))
            except asyncio.CancelledError:
                # Stopping: give the slices back so the other replicas need not wait for expiry.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.exchange(session, release=True), 2.0)
                raise

    def lifecycle(self, _: web.Application) -> contextlib.AbstractAsyncContextManager[None]:
        return _task_context(self.run(), "sluice-lease-client")


@contextlib.asynccontextmanager
async def _task_context(coro: Any, name: str) -> AsyncIterator[None]:
    task = asyncio.create_task(coro, name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
