"""Provider quota shares (Doorman-style rate leases), the operator's side: the arithmetic.

A backend's ``limits{rpm, tpm}`` is its provider account's quota on one route. Every sidecar
process serving the route keeps token buckets for it (``sluice_sidecar.routing``); with many
replicas the operator shares the quota out: each process asks with its budget lease request
(``LeaseRequest.quotas``: its demand per minute, tries sent plus tries steered away) and gets a
share (``LeaseResponse.quotas``) that its buckets are sized to until the next renewal.

``QuotaBook`` is the book of one (namespace, route, backend); holders are sidecar processes, named
as the budget leases name them (``leases.holder_name``). Per metric (rpm, tpm) with a capacity
``C`` (the limit in the compiled config), a grant is::

    target = the max-min fair share of the demand: each live holder wants max(demand, floor);
             C - floor is split so that nobody gets more than it wants and those wanting more
             share the rest evenly (water-filling)
    grant  = min(target, C - the live shares of the other holders)

``floor`` is a small share every live holder keeps however idle it is (``FLOOR_SHARE`` of ``C``,
at least 1, and at most ``C // (holders + 1)``), and one floor is kept out of the targets for a
process that starts (so its first requests are admitted before the busy ones renew). The second
line is the invariant's guard: a grant never takes what another holder still holds, so

    sum over live holders of share  <=  C

however asks and expiries interleave; shares move towards the fair targets as each holder renews
(every third of the lease TTL, or sooner when it finds its share short). A holder is live for
``ttl + skew`` after its last grant, as a budget lease is; an expired one stops counting. A capacity
lowered by an edit is the exception: until the holders renew (within a third of a TTL), the shares
granted under the old capacity may add up to more than the new one (the newest grants get nothing
while they do).

Unused capacity is not handed out (a holder gets at most what it wants, or its floor): it stays free
for a holder whose demand grows, which takes it on its next (early) renewal.

Cost: a grant sorts the live holders' wants, O(n log n) for n live holders of the book (the sidecar
processes of a namespace serving the route), where ``LeaseBook`` answers in O(1) amortised: a
namespace of 200 replicas renewing every 10 s costs 20 sorts of 200 numbers a second per limited
backend, negligible next to the HTTP around it.

After an operator restart (``LeaseDesk.in_grace``) a holder keeps the share it presents (``held``),
clipped to what the others leave, and one without a share gets a floor: no share grows until the
grace ends.

``QuotaDesk.views`` reads the books without changing them, for a limited backend's ``quota`` in the
ModelRoute's status (``status.with_quotas``) and the operator's ``sluice_quota_*`` metrics.

Pure: all instants are passed in; no IO.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sluice_sidecar.contract import QuotaAsk, QuotaShare, Route

#: The share of a capacity every live holder keeps however idle (and one kept for a newcomer).
FLOOR_SHARE = 0.05

Pair = tuple[int | None, int | None]  # rpm, tpm (None: the metric has no limit)


@dataclass(slots=True)
class QuotaHolder:
    want: tuple[int, int] = (0, 0)
    share: tuple[int, int] = (0, 0)
    expires: float = float("-inf")

    def live(self, now: float) -> bool:
        return now < self.expires


def floor_of(capacity: int, holders: int) -> int:
    """The floor share of one holder when ``holders`` are live (one more floor is kept free)."""
    return min(max(1, math.ceil(capacity * FLOOR_SHARE)), capacity // (holders + 1))


def fair_targets(pool: int, wants: Sequence[int]) -> list[int]:
    """Max-min fair shares of ``pool`` for ``wants`` (water-filling): nobody gets more than it
    wants; what the modest leave is split evenly among the rest (integers; the sum never exceeds
    ``pool``). A purely computational function."""
    n = len(wants)
    out = [0] * n
    left, rest = max(0, pool), n
    for i in sorted(range(n), key=lambda k: wants[k]):
        even = left // rest
        give = min(wants[i], even)
        out[i] = give
        left -= give
        rest -= 1
    return out


def target(capacity: int, wants: Sequence[int], mine: int) -> int:
    """The fair target of the holder at index ``mine`` among the live holders' ``wants``."""
    floor = floor_of(capacity, len(wants))
    wanted = [max(w, floor) for w in wants]
    return fair_targets(capacity - floor, wanted)[mine]


@dataclass
class QuotaBook:
    """The shares of one backend's quota on one route (see the module doc)."""

    capacity: Pair
    ttl: float = 30.0
    skew: float = 5.0
    holders: dict[str, QuotaHolder] = field(default_factory=dict)

    def live_total(self, now: float) -> tuple[int, int]:
        """The sum of the live holders' shares (the invariant: <= capacity per metric)."""
        rpm = tpm = 0
        for h in self.holders.values():
            if h.live(now):
                rpm += h.share[0]
                tpm += h.share[1]
        return rpm, tpm

    def live_holders(self, now: float) -> int:
        """How many holders have a live share at ``now`` (read-only, like ``live_total``)."""
        return sum(1 for h in self.holders.values() if h.live(now))

    def grant(
        self,
        holder: str,
        want: tuple[int, int],
        now: float,
        *,
        held: Pair | None = None,
        grace: bool = False,
    ) -> Pair:
        """Renew ``holder``'s share for a demand of ``want`` per minute (rpm, tpm). In the grace
        after a restart the holder keeps ``held`` (or a floor), never more than the others
        leave."""
        for name in [n for n, h in self.holders.items() if not h.live(now) and n != holder]:
            del self.holders[name]  # expired: no longer counted, forgotten
        me = self.holders.get(holder)
        if me is None:
            me = self.holders[holder] = QuotaHolder()
        me.want = (max(0, want[0]), max(0, want[1]))
        others = [h for n, h in self.holders.items() if n != holder]
        share: list[int] = []
        out: list[int | None] = []
        for i in range(2):
            cap = self.capacity[i]
            if cap is None:
                share.append(0)
                out.append(None)
                continue
            free = max(0, cap - sum(h.share[i] for h in others))
            if grace:
                kept = held[i] if held is not None else None
                goal = floor_of(cap, len(others) + 1) if kept is None else kept
            else:
                wants = [me.want[i]] + [h.want[i] for h in others]
                goal = target(cap, wants, 0)
            got = max(0, min(goal, free))
            share.append(got)
            out.append(got)
        me.share = (share[0], share[1])
        me.expires = now + self.ttl + self.skew
        return (out[0], out[1])

    def release(self, holder: str) -> None:
        """The holder stopped: its share is free at once."""
        self.holders.pop(holder, None)


@dataclass(frozen=True)
class QuotaView:
    """One limited backend's quota as status and metrics show it: the ``limit`` the compiled
    config declares, what the live shares add up to (``granted``; 0 where a metric has no limit,
    and possibly above a limit an edit just lowered, until the holders renew) and how many sidecar
    processes hold a live share (``holders``)."""

    route: str
    backend: str
    limit: Pair
    granted: tuple[int, int]
    holders: int


def capacity_of(routes: Iterable[Route]) -> dict[tuple[str, str], Pair]:
    """The quotas the compiled config declares: (route, backend) -> (rpm, tpm)."""
    return {
        (r.name, b.name): (b.limits.rpm, b.limits.tpm)
        for r in routes
        for b in r.backends
        if b.limits.rpm is not None or b.limits.tpm is not None
    }


@dataclass
class QuotaDesk:
    """The operator's quota books (one per namespace, route and backend): answers the quota asks
    of a lease request (pure; the caller passes the time). A book whose backend lost its
    ``limits`` (or whose route is gone) is dropped when a request of its namespace is answered."""

    #: namespace -> (route, backend) -> its book.
    books: dict[str, dict[tuple[str, str], QuotaBook]] = field(default_factory=dict)

    def book(self, namespace: str, route: str, backend: str) -> QuotaBook | None:
        return self.books.get(namespace, {}).get((route, backend))

    def views(self, namespace: str, routes: Iterable[Route], now: float) -> list[QuotaView]:
        """The quota of every limited backend of ``routes`` (a namespace's compiled routes) at
        ``now``, in the routes' order: the limit from the config, the rest from its book (zeros
        without one: no process asked yet). Read-only: changes no book (O(holders))."""
        books = self.books.get(namespace, {})
        out: list[QuotaView] = []
        for (route, backend), limit in capacity_of(routes).items():
            book = books.get((route, backend))
            granted = book.live_total(now) if book is not None else (0, 0)
            holders = book.live_holders(now) if book is not None else 0
            out.append(QuotaView(route, backend, limit, granted, holders))
        return out

    def answer(
        self,
        namespace: str,
        holder: str,
        asks: Sequence[QuotaAsk],
        routes: Sequence[Route],
        now: float,
        *,
        ttl: float,
        skew: float,
        grace: bool = False,
        release: bool = False,
    ) -> tuple[QuotaShare, ...]:
        """The shares for ``asks`` of ``holder`` (a process of ``namespace``); ``release``: the
        process stops, every share of it is freed."""
        quotas = capacity_of(routes)
        books = self.books.get(namespace)
        if books is None:
            if not quotas:
                return ()
            books = self.books[namespace] = {}
        for key in [k for k in books if k not in quotas]:
            del books[key]
        if release:
            for book in books.values():
                book.release(holder)
            return ()
        out: list[QuotaShare] = []
        for ask in asks:
            key = (ask.route, ask.backend)
            capacity = quotas.get(key)
            if capacity is None:
                continue  # a quota the operator does not know: the sidecar keeps its whole limit
            found = books.get(key)
            book = found if found is not None else QuotaBook(capacity, ttl, skew)
            books[key] = book
            book.capacity, book.ttl, book.skew = capacity, ttl, skew
            held = (ask.held.rpm, ask.held.tpm) if ask.held is not None else None
            rpm, tpm = book.grant(holder, (ask.rpm, ask.tpm), now, held=held, grace=grace)
            out.append(QuotaShare(route=ask.route, backend=ask.backend, rpm=rpm, tpm=tpm))
        return tuple(out)
