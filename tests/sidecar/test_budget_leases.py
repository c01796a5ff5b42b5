"""Budget leases over real loopback sockets: sidecars (in process) renew their leases against the
operator's real control-plane endpoint (``controlplane.create_app`` with a ``LeaseDesk``), so one
Budget holds across replicas; a lost control plane follows ``onControlPlaneLoss``; and the
operator reads reports carrying fields it does not know (a newer sidecar)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sluice_operator import controlplane
from sluice_operator.leases import LeaseDesk
from sluice_operator.reports import BudgetSpend
from sluice_sidecar.budget import BudgetStage
from sluice_sidecar.clock import SystemClock
from sluice_sidecar.contract import (
    BudgetLimit,
    BudgetRule,
    ControlPlaneLoss,
    ExceededAction,
    LeaseRequest,
    SidecarConfig,
    UsageReport,
    WindowKind,
)
from sluice_sidecar.controlplane_client import Identity, LeaseClient
from sluice_sidecar.gateway import GATEWAY
from tests.sidecar.conftest import Sidecar, StartSidecar, backend, config, route

NS = "test"
POD_CLAIM = "authentication.kubernetes.io/pod-name"


def chat() -> dict[str, Any]:
    return {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


def budget_config(requests: int, loss: ControlPlaneLoss = ControlPlaneLoss.BLOCK) -> SidecarConfig:
    rule = BudgetRule(
        name="team",
        limits=(BudgetLimit(window=WindowKind.DAY, requests=requests),),
        on_exceeded=ExceededAction.BLOCK,
        on_control_plane_loss=loss,
    )
    return config(route("chat", backend("m")), budgets=(rule,))


class ControlPlane:
    """The operator's control-plane app on a loopback port: a LeaseDesk over the config's budgets
    and a BudgetSpend fed by the reports; tokens ``tok-<pod>`` are bound to pod ``<pod>``."""

    def __init__(self, cfg: SidecarConfig, ttl: float, *, grants: bool = True) -> None:
        self.cfg = cfg
        self.grants = grants
        self.desk = LeaseDesk(ttl=ttl)
        self.desk.saw(NS, time.time() - 3600)  # no restart grace: a fresh operator long ago
        self.spend = BudgetSpend()
        self.asked: list[LeaseRequest] = []
        self.runner: web.AppRunner | None = None
        self.port = 0
        #: Client ports seen per endpoint ("config", "reports", "leases"): one per connection.
        self.peers: dict[str, set[int]] = {}

    async def review(self, token: str, _: list[str]) -> controlplane.TokenUser | None:
        pod = token.removeprefix("tok-")
        return controlplane.TokenUser(f"system:serviceaccount:{NS}:app", {POD_CLAIM: (pod,)})

    def answer(self, request: LeaseRequest) -> Any:
        self.asked.append(request)
        return self.desk.answer(request, self.cfg.budgets, self.spend, time.time())

    def sink(self, report: UsageReport) -> bool:
        return bool(self.spend.add(report, time.time()))

    async def start(self) -> None:
        app = controlplane.create_app(
            controlplane.ConfigBoard(),
            controlplane.Auth(review=self.review),
            self.sink,
            self.answer if self.grants else None,
        )
        app.on_response_prepare.append(self._seen)
        # As the operator runs it (``handlers``): a sidecar that went away ends its poll.
        self.runner = web.AppRunner(app, shutdown_timeout=2.0, handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def _seen(self, request: web.Request, _: web.StreamResponse) -> None:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer is not None:
            self.peers.setdefault(request.path.split("/")[2], set()).add(peer[1])

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def leasing(
    sc: Sidecar, cp: ControlPlane, pod: str, tmp_path: Path
) -> AsyncIterator[LeaseClient]:
    """Run ``sc``'s lease client against ``cp`` as pod ``pod`` (as ``main.serve_async`` does)."""
    token = tmp_path / f"token-{pod}"
    token.write_text(f"tok-{pod}")
    stage = next(s for s in sc.app[GATEWAY].stages.all if isinstance(s, BudgetStage))
    keeper = stage.enable_leases(NS, pod, f"{pod}-1")
    client = LeaseClient(Identity(cp.url, NS, pod, token), keeper, SystemClock())
    task = asyncio.create_task(client.run())
    try:
        yield client
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def eventually(check: Callable[[], Any], within: float = 20.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def hammer(sc: Sidecar, n: int) -> list[tuple[int, Any]]:
    async def one() -> tuple[int, Any]:
        status, _, body = await sc.post("/v1/chat/completions", chat())
        return status, body

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def test_two_sidecars_share_one_limit_through_their_leases(
    start_sidecar: StartSidecar, tmp_path: Path
) -> None:
    cfg = budget_config(requests=20)
    cp = ControlPlane(cfg, ttl=3.0)
    await cp.start()
    a = await start_sidecar(cfg, clock=SystemClock())
    b = await start_sidecar(cfg, clock=SystemClock())
    try:
        async with leasing(a, cp, "a", tmp_path), leasing(b, cp, "b", tmp_path):
            ok = 0
            refusals: list[Any] = []
            # Hammer until the budget is spent: refusals for lack of lease are retried (the lease
            # grows on renewal); the limit itself holds across both sidecars.
            for _ in range(200):
                results = [r for sc in (a, b) for r in await hammer(sc, 6)]
                ok += sum(1 for s, _ in results if s == 200)
                refusals += [body for s, body in results if s == 429]
                assert ok <= 20
                if ok == 20:
                    break
                await asyncio.sleep(0.1)
            assert ok == 20
            assert all(s != 200 for s, _ in await hammer(a, 4) + await hammer(b, 4))
            messages = [r["error"]["message"] for r in refusals]
            assert all("Budget 'team'" in m for m in messages)
            assert any("lease" in m for m in messages)
            # Each request settled in exactly one sidecar's window.
            spent = [
                w.requests
                for sc in (a, b)
                for w in next(
                    s for s in sc.app[GATEWAY].stages.all if isinstance(s, BudgetStage)
                ).status()
            ]
            assert sum(spent) == 20
            assert all(q.pod in ("a", "b") for q in cp.asked)
    finally:
        await cp.stop()


async def test_an_idle_sidecar_gives_its_slice_back(
    start_sidecar: StartSidecar, tmp_path: Path
) -> None:
    cfg = budget_config(requests=100)
    cp = ControlPlane(cfg, ttl=1.5)
    await cp.start()
    a = await start_sidecar(cfg, clock=SystemClock())
    b = await start_sidecar(cfg, clock=SystemClock())
    try:
        async with leasing(a, cp, "a", tmp_path) as ca, leasing(b, cp, "b", tmp_path):
            await eventually(lambda: ca.answered >= 1)
            for _ in range(3):
                await hammer(a, 5)
            # a goes idle: within a few renewals its cap falls back near its spend, so b can
            # take nearly everything that is left.
            book = next(iter(cp.desk.windows.values())).book

            def returned() -> bool:
                h = book.holders.get("a\x00a-1")
                return h is not None and h.cap[2] - h.spent[2] <= 4

            await eventually(returned)
            ok = 0
            for _ in range(100):
                ok += sum(1 for s, _ in await hammer(b, 10) if s == 200)
                if book.room(time.time())[2] == 0 and ok >= 80:
                    break
                await asyncio.sleep(0.05)
            assert ok >= 80  # a kept at most a few: its unused slice returned
    finally:
        await cp.stop()


@pytest.mark.parametrize("loss", [ControlPlaneLoss.BLOCK, ControlPlaneLoss.ALLOW_LOCAL])
async def test_a_lost_control_plane_follows_on_control_plane_loss(
    start_sidecar: StartSidecar, tmp_path: Path, loss: ControlPlaneLoss
) -> None:
    cfg = budget_config(requests=50, loss=loss)
    cp = ControlPlane(cfg, ttl=1.0)
    await cp.start()
    a = await start_sidecar(cfg, clock=SystemClock())
    try:
        await lose_and_find(a, cp, tmp_path, loss)
    finally:
        await cp.stop()


async def lose_and_find(
    a: Sidecar, cp: ControlPlane, tmp_path: Path, loss: ControlPlaneLoss
) -> None:
    async with leasing(a, cp, "a", tmp_path) as client:
        await eventually(lambda: client.answered >= 1)
        assert (await a.post("/v1/chat/completions", chat()))[0] == 200
        await cp.stop()
        # The lease expires on the sidecar's clock a TTL after its last request was sent.
        await asyncio.sleep(2.5)
        status, headers, body = await a.post("/v1/chat/completions", chat())
        if loss is ControlPlaneLoss.BLOCK:
            assert status == 429
            message = body["error"]["message"]
            assert "Budget 'team'" in message and "control plane is unreachable" in message
            assert "onControlPlaneLoss is Block" in message
            assert int(headers["retry-after"]) >= 1
        else:
            assert status == 200  # the whole limit, enforced locally
        before = client.answered
        await cp.start()  # same port: the sidecar finds it again
        await eventually(lambda: client.answered > before, within=40)
        # Refused while the lease was lost, it asks for that demand now: requests pass again.
        for _ in range(100):
            if 200 in [s for s, _ in await hammer(a, 3)]:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("no request passed after the control plane came back")


async def test_the_operator_ignores_report_fields_it_does_not_know() -> None:
    cp = ControlPlane(budget_config(requests=5), ttl=5.0)
    await cp.start()
    try:
        report = json.loads(
            UsageReport(
                namespace=NS, pod="a", config_hash="h", seq=1, window_start=0, window_end=1
            ).model_dump_json(by_alias=True)
        )
        report["fromTheFuture"] = {"x": 1}
        report["usage"] = [{"route": "chat", "backend": "m", "requests": 1, "newCounter": 7}]
        report["budgets"] = [
            {
                "budget": "team",
                "window": "Day/UTC",
                "start": 0.0,
                "resetsAt": 86400.0,
                "requests": 2,
                "carbonGrams": 3,
            }
        ]
        headers = {"Authorization": "Bearer tok-a", "Content-Type": "application/json"}
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"{cp.url}/v1/reports", data=json.dumps(report), headers=headers) as r,
        ):
            assert r.status == 200, await r.text()
            assert (await r.json()) == {"accepted": True}
        inst = cp.spend.budgets[(NS, "team")][("a", "a")]
        assert inst.windows[("Day/UTC", 0.0)].values == (0, 0, 2)
        # A lease request from a newer sidecar, too.
        ask = {
            "namespace": NS,
            "pod": "a",
            "instance": "i",
            "seq": 1,
            "asks": [],
            "priority": "high",
        }
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"{cp.url}/v1/leases", data=json.dumps(ask), headers=headers) as r,
        ):
            assert r.status == 200, await r.text()
        # But a report for another pod than the token's is still refused.
        report["pod"] = "b"
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"{cp.url}/v1/reports", data=json.dumps(report), headers=headers) as r,
        ):
            assert r.status == 403
    finally:
        await cp.stop()


async def test_an_operator_that_grants_no_leases_leaves_the_whole_limit_local(
    start_sidecar: StartSidecar, tmp_path: Path
) -> None:
    """A sidecar newer than its operator (404 on /v1/leases) enforces as before leases."""
    cfg = budget_config(requests=3)
    cp = ControlPlane(cfg, ttl=1.0, grants=False)
    await cp.start()
    a = await start_sidecar(cfg, clock=SystemClock())
    try:
        async with leasing(a, cp, "a", tmp_path) as client:
            await eventually(lambda: client.keeper.unsupported)
            statuses = [s for s, _ in await hammer(a, 5)]
            assert sorted(statuses) == [200, 200, 200, 429, 429]
    finally:
        await cp.stop()


async def test_a_sidecar_holds_two_connections_to_the_operator_not_three(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``main.serve_async`` in a pod: the config long-poll, the usage reports and the lease
    requests share one connector, so reports and leases take turns on one connection beside the
    long-poll's (the operator holds a TLS connection and a read buffer for each)."""
    from sluice_sidecar import main

    cfg = budget_config(1000)
    cp = ControlPlane(cfg, ttl=1.5)
    await cp.start()
    token = tmp_path / "token"
    token.write_text("tok-pod-a")
    (tmp_path / "config.json").write_text(cfg.model_dump_json(by_alias=True))
    for name, value in {
        "SLUICE_CONTROL_PLANE_URL": cp.url,
        "SLUICE_CONTROL_PLANE_INSECURE": "true",
        "POD_NAMESPACE": NS,
        "POD_NAME": "pod-a",
        "SLUICE_TOKEN_FILE": str(token),
        "SLUICE_REPORT_INTERVAL": "0.1",
    }.items():
        monkeypatch.setenv(name, value)
    stop = asyncio.Event()
    serving = asyncio.create_task(
        main.serve_async(tmp_path / "config.json", port=0, admin_port=0, audit_log=None, stop=stop)
    )
    try:
        await eventually(
            lambda: len(cp.asked) >= 6 and len(cp.peers.get("reports", ())) > 0, within=30
        )
    finally:
        stop.set()
        await serving
        await cp.stop()
    reports, leases = cp.peers["reports"], cp.peers["leases"]
    assert reports & leases, cp.peers  # one connection carried both
    assert len(reports | leases | cp.peers.get("config", set())) <= 3, cp.peers
