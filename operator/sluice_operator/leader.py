"""Leader election among operator replicas: one ``coordination.k8s.io/v1`` Lease.

Every replica watches, compiles and serves sidecars' configs and the injector webhook from its own
caches (so any replica can answer them); only the leader writes to the API (ConfigMaps, status,
Events), takes usage reports and grants budget leases (``reconcile.Reconciler.lead``/``follow``).
kopf's peering is not used: two replicas of equal priority pause each other there, and kopf says
nothing to the handlers about who is active.

The protocol is client-go's ``leaderelection``: the Lease names its ``holderIdentity`` and its
``renewTime``; the holder renews it every ``retry`` seconds; another replica takes it over only
after it saw the record unchanged for a whole ``leaseDurationSeconds`` on its *own* monotonic
clock (so clock skew between replicas cannot end a lease early); updates carry the
``resourceVersion`` they read, so of two replicas racing for a free Lease exactly one wins (the
other gets 409). A leader that cannot renew for ``renew_deadline`` seconds steps down before
anyone else may take over (``renew_deadline < duration``). A replica that stops gracefully gives
the Lease up (empty holder), so its successor takes over at once instead of after a duration.

``decide`` is the pure part; ``Elector`` does the IO.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    """The part of a Lease the election reads (``version``: its resourceVersion)."""

    holder: str | None
    duration: float
    renewed: str | None
    acquired: str | None
    transitions: int
    version: str | None


@dataclass(frozen=True)
class Seen:
    """A record as this replica last saw it change, at ``at`` on its monotonic clock."""

    holder: str | None
    renewed: str | None
    at: float


def observe(seen: Seen | None, record: Record | None, now: float) -> Seen | None:
    """The observation after reading ``record`` at ``now`` (a change restarts the clock)."""
    if record is None:
        return None
    if seen is not None and (seen.holder, seen.renewed) == (record.holder, record.renewed):
        return seen
    return Seen(record.holder, record.renewed, now)


def decide(me: str, record: Record | None, seen: Seen | None, now: float) -> bool:
    """Whether ``me`` may write itself into the Lease now: it is free (no record, no holder),
    already ``me``'s, or unchanged for a whole duration as this replica saw it."""
    if record is None or not record.holder or record.holder == me:
        return True
    return seen is not None and now >= seen.at + record.duration


def stamp(t: float) -> str:
    """A Lease MicroTime."""
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def claimed(me: str, record: Record | None, duration: float, wall: float) -> dict[str, Any]:
    """The Lease ``spec`` that makes (or keeps) ``me`` the holder."""
    mine = record is not None and record.holder == me
    transitions = record.transitions if record is not None else 0
    return {
        "holderIdentity": me,
        "leaseDurationSeconds": max(1, round(duration)),
        "acquireTime": record.acquired if mine and record is not None else stamp(wall),
        "renewTime": stamp(wall),
        "leaseTransitions": transitions if mine or record is None else transitions + 1,
    }


def record_of(lease: dict[str, Any] | None) -> Record | None:
    """A Lease object (as the API returns it, a dict) as a ``Record``; None when absent."""
    if lease is None:
        return None
    spec = lease.get("spec") or {}
    return Record(
        holder=spec.get("holderIdentity") or None,
        duration=float(spec.get("leaseDurationSeconds") or 15),
        renewed=spec.get("renewTime"),
        acquired=spec.get("acquireTime"),
        transitions=int(spec.get("leaseTransitions") or 0),
        version=(lease.get("metadata") or {}).get("resourceVersion"),
    )


def identity() -> str:
    """This replica's name in the Lease: the pod's hostname plus a random suffix (a restarted
    container is a new candidate, never mistaken for its predecessor)."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class LeaseApi(Protocol):
    """What the election needs from the API (``kube.Kube``). ``write_lease`` returns False when
    another writer got there first (409: the resourceVersion moved, or it was created meanwhile)."""

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def write_lease(
        self, namespace: str, name: str, spec: dict[str, Any], version: str | None
    ) -> bool: ...


class Elector:
    """Runs the election for one replica (see the module doc); ``leading`` tells the state, and
    ``on_lead`` / ``on_follow`` are called on each change."""

    def __init__(
        self,
        api: LeaseApi,
        namespace: str,
        name: str,
        *,
        on_lead: Callable[[], Awaitable[None] | None],
        on_follow: Callable[[], Awaitable[None] | None],
        me: str | None = None,
        duration: float = 15.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.api, self.namespace, self.name = api, namespace, name
        self.on_lead, self.on_follow = on_lead, on_follow
        self.me = me or identity()
        self.duration = duration
        self.renew_deadline = duration * 2 / 3
        self.retry = duration / 7.5  # 2 s for the default 15 s, as client-go
        self.monotonic, self.wall = monotonic, wall
        self.leading = False
        self.transitions = 0  # times this replica became the leader (metrics, tests)
        self._seen: Seen | None = None
        self._renewed = float("-inf")

    async def _change(self, leading: bool) -> None:
        if leading == self.leading:
            return
        self.leading = leading
        if leading:
            self.transitions += 1
            log.info("leader election: %s leads (Lease %s/%s)", self.me, self.namespace, self.name)
        else:
            log.warning("leader election: %s follows now", self.me)
        done = (self.on_lead if leading else self.on_follow)()
        if done is not None:
            await done

    async def step(self) -> None:
        """One round: read the Lease, take or renew it when allowed, follow the result."""
        now = self.monotonic()
        try:
            lease = await self.api.read_lease(self.namespace, self.name)
            record = record_of(lease)
            self._seen = observe(self._seen, record, now)
            won = False
            if decide(self.me, record, self._seen, now):
                spec = claimed(self.me, record, self.duration, self.wall())
                won = await self.api.write_lease(
                    self.namespace, self.name, spec, record.version if record else None
                )
            if won:
                self._renewed = now
                await self._change(True)
                return
            # Someone else holds it (or won the race): a leader that lost it steps down now.
            if self.leading:
                await self._change(False)
        except Exception as exc:  # the API down (or refusing) is a round without a renewal
            log.warning("leader election: Lease %s/%s: %s", self.namespace, self.name, exc)
        if self.leading and now - self._renewed > self.renew_deadline:
            await self._change(False)  # before anyone else may take over

    async def run(self) -> None:
        """Elect forever; on cancel (a graceful stop) give the Lease up when holding it."""
        try:
            while True:
                await self.step()
                await asyncio.sleep(self.retry)
        except asyncio.CancelledError:
            if self.leading:
                self.leading = False
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._release(), 2.0)
            raise

    async def _release(self) -> None:
        record = record_of(await self.api.read_lease(self.namespace, self.name))
        if record is not None and record.holder == self.me:
            spec = {
                "holderIdentity": None,
                "leaseDurationSeconds": 1,
                "acquireTime": record.acquired,
                "renewTime": stamp(self.wall()),
                "leaseTransitions": record.transitions,
            }
            await self.api.write_lease(self.namespace, self.name, spec, record.version)
