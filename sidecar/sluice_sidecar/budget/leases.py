"""Budget leases, the sidecar's side: what to ask the control plane for, and the caps it grants.

Owns ``LeaseKeeper``: for every limit of every enforcing budget (Block or Downgrade; AlertOnly
needs none) it keeps the lease the operator granted for the limit's current window and puts it on
the limit's meter (``ledger.MeterLease``), so admission stays a local, synchronous check against
``spent + slice`` instead of the full limit. The network half is
``controlplane_client.LeaseClient``, which posts ``keeper.request()`` to ``POST /v1/leases`` every
third of the lease TTL and whenever ``keeper.on_need`` fires, and hands the answer to ``take``.

* **What it asks.** Per window: its settled ``spent`` there, the ``cap`` it holds (lowered first
  to ``spent + held + want``: an unused slice goes back on the next renewal, and the sidecar
  keeps that lower cap locally until it hears back), and ``want`` - its reservations in flight
  plus twice its recent demand (what it settled and what leases refused since the last request),
  or a decaying memory of earlier demand when idle, or ``INITIAL_SHARE`` of the limit before any
  demand was seen.
* **Expiry.** A lease lives ``ttl`` seconds from the moment its request was *sent* (the sidecar's
  monotonic clock; the operator counts ``ttl + skew`` from when it answered), so the sidecar always
  stops first. An expired lease admits nothing more.
* **Control-plane loss.** No answer for a whole TTL (or none at all in the first
  ``STARTUP_GRACE`` seconds) means lost: a Block budget (``onControlPlaneLoss: Block``) admits
  nothing once its lease has expired; an ``AllowLocal`` one enforces its whole limit locally, as a
  sidecar without a control plane does, until the operator answers again.
* **An older operator** (``POST /v1/leases`` answers 404) grants no leases: every limit is then
  enforced whole, locally, as before leases existed, and the request is tried again now and then.
* **Provider quotas** ride on the same request (``share_quotas``): ``routing.QuotaKeeper`` adds
  the demand of every backend with ``limits`` (``quotas``) and takes the shares granted; an
  operator that grants no leases leaves every quota whole, locally; a lost one leaves the last
  shares in place (fail-static).
* **The operator's clock.** Each answer carries the operator's wall clock; the offset (measured
  at the midpoint of the request) is added to the wall time the budget stage uses for windows, so
  the sidecar's windows are the operator's and a lease's ``start`` matches the local window key.

Pure and single-threaded like the rest of the package: instants are passed in, no IO.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..contract import (
    ControlPlaneLoss,
    ExceededAction,
    LeaseAmount,
    LeaseAsk,
    LeaseRequest,
    LeaseResponse,
)
from ..routing import QuotaKeeper
from .ledger import ZERO, Amount, MeterLease
from .policy import BudgetPolicy

#: Share of a limit asked for before any demand was seen.
INITIAL_SHARE = 0.1
#: Want = reservations in flight + this many times the demand since the last request.
DEMAND_FACTOR = 2
#: Renew early when less than this share of the last slice is left.
LOW_WATER = 0.25
#: Seconds without any answer after start before the control plane counts as lost.
STARTUP_GRACE = 5.0


@dataclass(slots=True)
class _Held:
    lease: MeterLease
    expires: float  # monotonic
    slice: Amount  # granted on top of the spend, for the low-water mark


def _caps(a: LeaseAmount) -> tuple[int | None, int | None, int | None]:
    return (a.pusd, a.tokens, a.requests)


def _amount(a: Amount, caps: tuple[int | None, ...]) -> LeaseAmount:
    v = a.values()
    return LeaseAmount(
        pusd=v[0] if caps[0] is not None else None,
        tokens=v[1] if caps[1] is not None else None,
        requests=v[2] if caps[2] is not None else None,
    )


class LeaseKeeper:
    """The leases of one sidecar process (see the module doc)."""

    def __init__(
        self, policy: BudgetPolicy, namespace: str, pod: str, instance: str, mono: float
    ) -> None:
        self.policy = policy
        self.namespace, self.pod, self.instance = namespace, pod, instance
        self.seq = 0
        self.ttl = 30.0
        #: Operator's wall clock minus ours (added to the wall time windows use).
        self.offset = 0.0
        self.started = mono
        self.answered_at: float | None = None
        self.leases: dict[tuple[str, str], _Held] = {}
        self._last: dict[tuple[str, str], tuple[float, Amount]] = {}
        self._peak: dict[tuple[str, str], Amount] = {}
        #: Demand the request in flight counted, committed when its answer arrives (a request
        #: that fails consumes nothing): key -> (start, spent, peak, meter, refused).
        self._pending: list[tuple[tuple[str, str], float, Amount, Amount | None, Any, Amount]] = []
        self._next_check = float("-inf")
        self._lost = False
        #: Called when a lease should be renewed now (a refusal, a slice running low).
        self.on_need: Callable[[], None] = lambda: None
        self.requests = 0
        #: The operator grants no leases (an older one: 404): every limit is enforced whole,
        #: locally, as without a control plane, until it does.
        self.unsupported = False
        #: The provider quotas shared through the same requests (``share_quotas``); None: none.
        self.quotas: QuotaKeeper | None = None
        self.attach()

    def share_quotas(self, quotas: QuotaKeeper) -> None:
        """Ask for shares of the provider quotas ``quotas`` walks with every lease request."""
        self.quotas = quotas
        quotas.on_need = self.need

    # --- state on the meters ---------------------------------------------------------------------

    def lost(self, mono: float) -> bool:
        if self.answered_at is None:
            return mono - self.started > STARTUP_GRACE
        return mono - self.answered_at > self.ttl

    def attach(self) -> None:
        """Put the leases and the loss policy on every meter (after each config swap too)."""
        for st in self.policy.states():
            enforcing = st.rule.on_exceeded is not ExceededAction.ALERT_ONLY
            enforcing = enforcing and not self.unsupported
            local = st.rule.on_control_plane_loss is ControlPlaneLoss.ALLOW_LOCAL
            for m in st.ledger.meters:
                m.leasing = enforcing
                m.allow_local = local
                m.lost = self._lost
                held = self.leases.get((st.rule.name, m.limit.window_id()))
                m.lease = held.lease if held is not None else None

    def idle(self, mono: float = 0.0) -> bool:
        """Nothing to lease: no enforcing budget covers this pod and no backend it serves has
        ``limits`` (no request needs sending)."""
        if self.quotas is not None and self.quotas.active(mono):
            return False
        return not any(m.leasing for st in self.policy.states() for m in st.ledger.meters)

    def missing(self) -> bool:
        """Whether an enforcing limit has no lease at all (a budget new to this sidecar)."""
        return any(
            m.leasing and m.lease is None for st in self.policy.states() for m in st.ledger.meters
        )

    def tick(self, mono: float) -> None:
        """Expire leases and notice a lost control plane (cheap unless something is due)."""
        if mono < self._next_check:
            return
        lost = self.lost(mono)
        changed = lost != self._lost
        self._lost = lost
        nxt = float("inf")
        for h in self.leases.values():
            if h.lease.live and h.expires <= mono:
                h.lease.live = False
            elif h.lease.live:
                nxt = min(nxt, h.expires)
        nxt = min(nxt, self.started + STARTUP_GRACE if self.answered_at is None else nxt)
        if self.answered_at is not None and not lost:
            nxt = min(nxt, self.answered_at + self.ttl)
        self._next_check = nxt if math.isfinite(nxt) else mono + 1.0
        if changed:
            self.attach()

    # --- the exchange ----------------------------------------------------------------------------

    def request(self, wall: float, *, release: bool = False, mono: float = 0.0) -> LeaseRequest:
        """The next lease request (lowers the held caps to what it offers: see the module doc);
        ``mono``: the monotonic instant (quota demand is measured on it)."""
        asks: list[LeaseAsk] = []
        self._pending = []
        for st in self.policy.states():
            if st.rule.on_exceeded is ExceededAction.ALERT_ONLY:
                continue
            seen: set[str] = set()
            for lw in st.ledger.lease_windows(wall):
                if lw.window in seen:
                    continue  # two limits over one window: the operator leases the first
                seen.add(lw.window)
                key = (lw.rule, lw.window)
                caps = lw.meter.caps
                last = self._last.get(key)
                settled = lw.spent - last[1] if last and last[0] == lw.start else lw.spent
                demand = settled.clamp() + lw.refused
                peak = self._peak.get(key)
                new_peak: Amount | None = None
                if peak is None and not demand:
                    want = Amount(
                        *(math.ceil((c or 0) * INITIAL_SHARE) for c in caps)
                    )  # nothing seen yet
                else:
                    halved = Amount(*(v // 2 for v in (peak or ZERO).values()))
                    recent = Amount(*(v * DEMAND_FACTOR for v in demand.values())).max(halved)
                    want = lw.held + recent
                    new_peak = demand.max(halved)
                want = want.max(lw.least)
                self._pending.append((key, lw.start, lw.spent, new_peak, lw.meter, lw.refused))
                held = self.leases.get(key)
                cap: LeaseAmount | None = None
                if held is not None and held.lease.live and held.lease.start == lw.start:
                    offer = (lw.spent + lw.held + want).values()
                    short = any(
                        c is not None and c < s + q
                        for c, s, q in zip(
                            held.lease.cap, lw.spent.values(), lw.least.values(), strict=True
                        )
                    )
                    if short:  # what is left cannot admit the waiting request: all of it back
                        offer = (lw.spent + lw.held).values()
                    lowered = tuple(
                        None if c is None else min(c, o)
                        for c, o in zip(held.lease.cap, offer, strict=True)
                    )
                    held.lease.cap = (lowered[0], lowered[1], lowered[2])
                    cap = LeaseAmount(pusd=lowered[0], tokens=lowered[1], requests=lowered[2])
                asks.append(
                    LeaseAsk(
                        budget=lw.rule,
                        window=lw.window,
                        start=lw.start,
                        spent=_amount(lw.spent, (0, 0, 0)),
                        cap=cap,
                        want=_amount(want, caps),
                        least=_amount(lw.least, caps),
                    )
                )
        self.seq += 1
        self.requests += 1
        return LeaseRequest(
            namespace=self.namespace,
            pod=self.pod,
            instance=self.instance,
            seq=self.seq,
            asks=tuple(asks),
            release=release,
            quotas=self.quotas.asks(mono) if self.quotas is not None and not release else (),
        )

    def take(
        self, response: LeaseResponse, sent_mono: float, sent_wall: float, received_wall: float
    ) -> None:
        """Apply an answer to the request sent at ``sent_mono``/``sent_wall``."""
        for key, start, spent, peak, meter, refused in self._pending:
            self._last[key] = (start, spent)
            if peak is not None:
                self._peak[key] = peak
            meter.refused = (meter.refused - refused).clamp()
            meter.least = ZERO
        self._pending = []
        self.offset = response.now - (sent_wall + received_wall) / 2
        self.ttl = response.ttl
        self.answered_at = sent_mono
        granted: dict[tuple[str, str], _Held] = {}
        for lease in response.leases:
            key = (lease.budget, lease.window)
            cap = _caps(lease.cap)
            spent = self._last.get(key, (0.0, ZERO))[1]
            everywhere = lease.spent
            granted[key] = _Held(
                MeterLease(
                    start=lease.start,
                    cap=cap,
                    live=True,
                    exhausted=lease.exhausted,
                    spent_everywhere=(
                        everywhere.pusd or 0,
                        everywhere.tokens or 0,
                        everywhere.requests or 0,
                    ),
                ),
                sent_mono + response.ttl,
                (Amount(*((c or 0) for c in cap)) - spent).clamp(),
            )
        self.leases = granted
        if self.quotas is not None:
            self.quotas.take(response.quotas, sent_mono, response.ttl)
        self.unsupported = False
        self._lost = False
        self._next_check = float("-inf")
        self.attach()

    def no_leases(self, mono: float | None = None) -> None:
        """The operator answered that it grants no leases (an older operator)."""
        if not self.unsupported:
            self.unsupported = True
            self.attach()
        if self.quotas is not None:
            self.quotas.whole(self.started if mono is None else mono)

    def need(self) -> None:
        self.on_need()

    def running_low(self, wall: float) -> bool:
        """Whether a live lease has less than ``LOW_WATER`` of its last slice left."""
        for st in self.policy.states():
            for m in st.ledger.meters:
                lease = m.lease
                if lease is None or not lease.live or not m.leasing:
                    continue
                held = self.leases.get((st.rule.name, m.limit.window_id()))
                if held is None:
                    continue
                status = m.used(wall + self.offset)
                for i, c in enumerate(lease.cap):
                    s = held.slice.values()[i]
                    if c is not None and s > 0 and c - status[i] < s * LOW_WATER:
                        return True
        return False
