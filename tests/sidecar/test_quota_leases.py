"""Provider quotas shared across replicas, over real loopback sockets: three sidecars (in
process) renew their leases against the operator's real control-plane endpoint
(``controlplane.create_app`` with a ``LeaseDesk`` over the config's routes); a backend's
``limits.rpm`` is shared out by demand (the shares sum to the limit less the floor kept for a new
process, and follow the busy sidecar); an operator that does not share quotas leaves the whole
limit local, and a lost one leaves the last share (fail-static)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from sluice_operator.leases import holder_name
from sluice_operator.quotas import QuotaBook, floor_of
from sluice_sidecar import routing
from sluice_sidecar.app import quota_keeper
from sluice_sidecar.budget import BudgetStage
from sluice_sidecar.clock import SystemClock
from sluice_sidecar.contract import LeaseRequest, RateLimits, SidecarConfig
from sluice_sidecar.controlplane_client import Identity, LeaseClient
from sluice_sidecar.gateway import GATEWAY
from tests.sidecar.conftest import Sidecar, StartSidecar, backend, config, route
from tests.sidecar.test_budget_leases import NS, ControlPlane, eventually

RPM = 60


def quota_config() -> SidecarConfig:
    """Backend a (first) with a quota of ``RPM``, backend b without one (where the rest goes)."""
    return config(
        route(
            "chat",
            backend("a", limits=RateLimits(rpm=RPM)),
            backend("b", priority=1),
        )
    )


class QuotaControlPlane(ControlPlane):
    """The control plane of tests/sidecar/test_budget_leases.py, answering quota asks against
    the config's routes as ``Reconciler.answer_leases`` does (``shares=False``: an operator that
    does not share quotas)."""

    def __init__(self, cfg: SidecarConfig, ttl: float, *, shares: bool = True) -> None:
        super().__init__(cfg, ttl)
        self.shares = shares

    def answer(self, request: LeaseRequest) -> Any:
        self.asked.append(request)
        routes = self.cfg.routes if self.shares else ()
        return self.desk.answer(request, self.cfg.budgets, self.spend, time.time(), routes=routes)

    def book(self) -> QuotaBook | None:
        return self.desk.quotas.book(NS, "chat", "a")


@contextlib.asynccontextmanager
async def leasing(
    sc: Sidecar, cp: ControlPlane, pod: str, tmp_path: Path
) -> AsyncIterator[LeaseClient]:
    """Run ``sc``'s lease client against ``cp`` as pod ``pod``, with its quotas (as
    ``main.serve_async`` wires it)."""
    token = tmp_path / f"token-{pod}"
    token.write_text(f"tok-{pod}")
    stage = next(s for s in sc.app[GATEWAY].stages.all if isinstance(s, BudgetStage))
    keeper = stage.enable_leases(NS, pod, f"{pod}-1")
    keeper.share_quotas(quota_keeper(sc.app[GATEWAY]))
    client = LeaseClient(Identity(cp.url, NS, pod, token), keeper, SystemClock())
    task = asyncio.create_task(client.run())
    try:
        yield client
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def limiter(sc: Sidecar) -> routing.BackendLimiter:
    gw = sc.app[GATEWAY]
    assert gw.snapshot is not None
    return gw.route_state(gw.snapshot.routes["chat"]).limiters["a"]


def chat() -> dict[str, Any]:
    return {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


async def hammer(sc: Sidecar, n: int) -> list[int]:
    async def one() -> int:
        return (await sc.post("/v1/chat/completions", chat()))[0]

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def busy_until(
    busy: Sidecar, cp: QuotaControlPlane, check: Callable[[], bool], within: float = 30.0
) -> None:
    """Keep ``busy`` loaded until ``check`` holds; the live shares never exceed the quota."""
    deadline = time.monotonic() + within
    while True:
        assert set(await hammer(busy, 10)) == {200}  # what a's share does not cover goes to b
        book = cp.book()
        if book is not None:
            assert book.live_total(time.time())[0] <= RPM
        if check():
            return
        assert time.monotonic() < deadline, f"timed out: {book}"
        await asyncio.sleep(0.05)


async def test_three_sidecars_share_a_backends_quota_by_demand(
    start_sidecar: StartSidecar, tmp_path: Path
) -> None:
    cfg = quota_config()
    cp = QuotaControlPlane(cfg, ttl=1.5)
    await cp.start()
    sidecars = [await start_sidecar(cfg, clock=SystemClock()) for _ in range(3)]
    names = [holder_name(pod, f"{pod}-1") for pod in ("s0", "s1", "s2")]
    floor = floor_of(RPM, 3)
    most = RPM - 3 * floor  # all but the idle ones' floors and the one kept for a newcomer
    try:
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(leasing(sc, cp, f"s{i}", tmp_path))
                for i, sc in enumerate(sidecars)
            ]

            def shares() -> list[int]:
                book = cp.book()
                if book is None:
                    return []
                now = time.time()
                return [
                    h.share[0] if (h := book.holders.get(n)) and h.live(now) else -1 for n in names
                ]

            def led_by(i: int) -> bool:
                s = shares()
                return (
                    len(s) == 3
                    and s[i] == most
                    and all(x == floor for j, x in enumerate(s) if j != i)
                    and limiter(sidecars[i]).share == (most, None)  # the sidecar resized to it
                )

            await busy_until(sidecars[0], cp, lambda: led_by(0))
            assert sum(shares()) == RPM - floor
            bucket = limiter(sidecars[0]).rpm
            assert bucket is not None and bucket.capacity == most
            # The load moves to s1: the shares follow it as s0's demand decays.
            await busy_until(sidecars[1], cp, lambda: led_by(1))
            assert sum(shares()) == RPM - floor
            assert all(c.answered >= 2 for c in clients)
            # Every sidecar asked for a (route, backend) share with its demand per minute.
            assert any(q.quotas and q.quotas[0].rpm > RPM for q in cp.asked if q.pod == "s1")
    finally:
        await cp.stop()


async def test_no_quota_lease_keeps_the_whole_limit_and_a_lost_one_the_last_share(
    start_sidecar: StartSidecar, tmp_path: Path
) -> None:
    cfg = quota_config()
    # An operator that does not share quotas (older, or a route it does not know): whole limit.
    old = QuotaControlPlane(cfg, ttl=1.0, shares=False)
    await old.start()
    a = await start_sidecar(cfg, clock=SystemClock())
    try:
        async with leasing(a, old, "a", tmp_path) as client:
            await eventually(lambda: client.answered >= 2)
            lim = limiter(a)
            assert lim.share is None and lim.rpm is not None and lim.rpm.capacity == RPM
            assert old.asked[-1].quotas  # it asked all the same
    finally:
        await old.stop()
    cp = QuotaControlPlane(cfg, ttl=1.0)
    await cp.start()
    b = await start_sidecar(cfg, clock=SystemClock())
    try:
        async with leasing(b, cp, "b", tmp_path) as client:
            await eventually(lambda: client.answered >= 1)
            lim = limiter(b)
            held = lim.share
            assert held is not None and held[0] is not None and held[0] < RPM
            await cp.stop()
            await asyncio.sleep(2.5)  # well past the TTL: the control plane is lost
            assert client.keeper.lost(time.monotonic())
            assert lim.share == held  # fail-static: the last share stays
            assert lim.rpm is not None and lim.rpm.capacity == held[0]
    finally:
        await cp.stop()


async def test_a_new_retry_budget_keeps_the_quota_share(
    start_sidecar: StartSidecar, tmp_path: Path
) -> None:
    """A config swap that rebuilds a route's state (a new retry budget) carries its backends'
    quota buckets over, with the share the operator leased them: no whole-limit gap until the
    next renewal."""
    cfg = quota_config()
    cp = QuotaControlPlane(cfg, ttl=30.0)  # no renewal during the test
    await cp.start()
    a = await start_sidecar(cfg, clock=SystemClock())
    try:
        async with leasing(a, cp, "a", tmp_path) as client:
            await eventually(lambda: client.answered >= 1)
            held = limiter(a).share
            assert held is not None and held[0] is not None and held[0] < RPM
            (chat_route,) = cfg.routes
            retry = chat_route.retry.model_copy(update={"budget_ratio": 0.5})
            edited = cfg.model_copy(
                update={"routes": (chat_route.model_copy(update={"retry": retry}),)}
            )
            gw = a.app[GATEWAY]
            before = gw.route_state(gw.snapshot.routes["chat"])
            gw.source._swap(edited)  # what a reload does
            after = gw.route_state(gw.snapshot.routes["chat"])
            assert after is not before  # the route state was rebuilt ...
            assert limiter(a).share == held  # ... and the share stayed
            assert limiter(a).rpm is not None and limiter(a).rpm.capacity == held[0]
    finally:
        await cp.stop()
