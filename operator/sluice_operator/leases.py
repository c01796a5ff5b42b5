"""Budget leases (Doorman-style), the operator's side: the arithmetic and the desk that answers.

DESIGN.md "Budgets across replicas", the ``budget`` package docstring and docs/budget.md: the
operator grants each sidecar process a slice of each budget window (``POST /v1/leases``,
``controlplane``; ``LeaseDesk`` below), the sidecar uses ``spent + slice`` as its local cap
(``sluice_sidecar.budget.leases``; admission stays local: no network call on the request path),
and reports its settled spend as before (``reports.BudgetSpend``), which the desk folds into every
book. ``LeaseBook`` is the operator's book for one window of one limit; it decides how much may be
granted so that the limit holds however grants, reports, expiries and restarts interleave.

Per holder (a sidecar process) the book keeps ``cap`` - what the holder may have spent in the window
in total (its reported spend plus the slice granted on top) - ``spent`` (its latest report, a
gauge: a lower value never replaces a higher one) and ``expires``. While a lease is live the holder
may spend up to ``cap``; once it expires without renewal the holder must not spend beyond what it
had (its cap falls to its spend: the sidecar stops at the lease's TTL on its own clock, which is
why TTLs are short and the operator adds ``skew`` before it counts a lease as gone). The invariant,
per metric (picodollars, tokens, requests) with a limit::

    sum over live holders of max(cap, spent) + sum over the others of spent  <=  limit

(``granted + spent <= limit``), except for what holders report beyond their caps (the settlement
error of one sidecar, see ``budget``), which no grant can undo; the book then grants nothing until
spend falls back under the limit (a new window).

A restarted sidecar is a new holder; its predecessor's lease simply expires. Pure: all instants are
passed in; no IO.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date as _date
from datetime import datetime as _datetime
from datetime import timedelta as _timedelta
from functools import lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sluice_sidecar.contract import (
    BudgetLimit,
    BudgetRule,
    Lease,
    LeaseAmount,
    LeaseRequest,
    LeaseResponse,
    Route,
    WindowKind,
)

from .quotas import QuotaDesk

if TYPE_CHECKING:
    from .reports import BudgetSpend


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


Values = tuple[int, int, int]  # picodollars, tokens, requests
Limit = tuple[int | None, int | None, int | None]
ZERO: Values = (0, 0, 0)


def _max(a: Values, b: Values) -> Values:
    return (max(a[0], b[0]), max(a[1], b[1]), max(a[2], b[2]))


def _add(a: Values, b: Values) -> Values:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


@dataclass
class Holder:
    cap: Values = ZERO
    spent: Values = ZERO
    expires: float = float("-inf")
    #: What it asked for on top of its spend last time (its recent demand), for fair shares.
    want: Values = ZERO

    def live(self, now: float) -> bool:
        return now < self.expires

    def charged(self, now: float) -> Values:
        """What this holder counts against the limit at ``now``."""
        return _max(self.cap, self.spent) if self.live(now) else self.spent


@dataclass(frozen=True)
class Grant:
    """A lease: spend up to ``cap`` in the window until ``expires`` (the holder's new cap is
    ``spent + slice``; ``slice`` may be zero in a metric without room)."""

    holder: str
    cap: Values
    slice: Values
    expires: float


@dataclass
class LeaseBook:
    """The leases of one window of one limit.

    A lease answer costs O(1) amortised in the number of holders: the book keeps running totals
    at its clock (``_clock``, the latest instant it was asked about) - the charge of all holders
    (``max(cap, spent)`` of the live ones, ``spent`` of the others), their summed spend and, per
    metric, how many live holders want more - updated on every change of a holder, and a heap of
    expiry instants that moves holders from live to expired as the clock passes them (lazily,
    when time advances). An earlier instant than the clock (a wall clock stepped back) recounts
    from scratch. Mutate holders only through the book's methods (``holders`` is for reading);
    ``recount`` is the walk the totals replace (tests hold them equal)."""

    limit: Limit
    ttl: float = 30.0
    skew: float = 5.0  # added to every expiry on the operator's side (clock skew, delivery)
    holders: dict[str, Holder] = field(default_factory=dict)
    _clock: float = field(default=float("-inf"), repr=False, compare=False)
    _charged: list[int] = field(default_factory=lambda: [0, 0, 0], repr=False, compare=False)
    _spent: list[int] = field(default_factory=lambda: [0, 0, 0], repr=False, compare=False)
    _wanting: list[int] = field(default_factory=lambda: [0, 0, 0], repr=False, compare=False)
    _live: set[str] = field(default_factory=set, repr=False, compare=False)
    _dead: set[str] = field(default_factory=set, repr=False, compare=False)
    _expiries: list[tuple[float, str]] = field(default_factory=list, repr=False, compare=False)
    _queued: dict[str, float] = field(default_factory=dict, repr=False, compare=False)
    #: Per holder, the durable spend entry ``_sync`` took last (its (pod, instance) and the
    #: entry itself: an entry that is the same object holds the same values, not taken again).
    synced: dict[str, tuple[tuple[str, str], object]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self._rebuild(self._clock)

    # -- the running totals ---------------------------------------------------------------

    def _out(self, name: str, h: Holder) -> None:
        """Take ``h``'s contribution out of the totals (before it changes)."""
        live = name in self._live
        c = _max(h.cap, h.spent) if live else h.spent
        for i in range(3):
            self._charged[i] -= c[i]
            self._spent[i] -= h.spent[i]
            if live and h.want[i] > 0:
                self._wanting[i] -= 1
        (self._live if live else self._dead).discard(name)

    def _in(self, name: str, h: Holder) -> None:
        """Put ``h``'s contribution at the clock into the totals (after it changed)."""
        live = h.live(self._clock)
        c = _max(h.cap, h.spent) if live else h.spent
        for i in range(3):
            self._charged[i] += c[i]
            self._spent[i] += h.spent[i]
            if live and h.want[i] > 0:
                self._wanting[i] += 1
        if live:
            self._live.add(name)
            if self._queued.get(name) != h.expires:
                heapq.heappush(self._expiries, (h.expires, name))
                self._queued[name] = h.expires
        else:
            self._dead.add(name)

    def _rebuild(self, now: float) -> None:
        self._clock = now
        self._charged, self._spent, self._wanting = [0, 0, 0], [0, 0, 0], [0, 0, 0]
        self._live, self._dead = set(), set()
        self._expiries, self._queued = [], {}
        for name, h in self.holders.items():
            self._in(name, h)

    def _advance(self, now: float) -> None:
        """Move the clock to ``now``: the leases that expired meanwhile count their spend only."""
        if now < self._clock:
            self._rebuild(now)
            return
        self._clock = now
        heap = self._expiries
        while heap and heap[0][0] <= now:
            expires, name = heapq.heappop(heap)
            if self._queued.get(name) == expires:
                del self._queued[name]
            h = self.holders.get(name)
            if h is not None and name in self._live and h.expires == expires:
                self._out(name, h)
                self._in(name, h)  # no longer live at the clock

    def _holder(self, name: str) -> Holder:
        h = self.holders.get(name)
        if h is None:
            h = self.holders[name] = Holder()
            self._in(name, h)
        return h

    def _forget(self, name: str) -> None:
        h = self.holders.pop(name, None)
        if h is not None:
            self._out(name, h)
            self._queued.pop(name, None)
        self.synced.pop(name, None)

    def recount(self, now: float) -> tuple[Values, Values, Values]:
        """(charged, spent, live holders wanting more per metric) at ``now`` by walking every
        holder: O(holders), the reference for the running totals (tests, debugging)."""
        charged = spent = wanting = ZERO
        for h in self.holders.values():
            charged = _add(charged, h.charged(now))
            spent = _add(spent, h.spent)
            if h.live(now):
                wanting = _add(
                    wanting, (int(h.want[0] > 0), int(h.want[1] > 0), int(h.want[2] > 0))
                )
        return charged, spent, wanting

    def totals(self, now: float) -> tuple[Values, Values, Values]:
        """The running totals at ``now`` (what ``recount`` computes, in O(1) amortised)."""
        self._advance(now)
        c, s, w = self._charged, self._spent, self._wanting
        return (c[0], c[1], c[2]), (s[0], s[1], s[2]), (w[0], w[1], w[2])

    # -- the book -------------------------------------------------------------------------

    def charged(self, now: float, *, without: str | None = None) -> Values:
        self._advance(now)
        c = self._charged
        total: Values = (c[0], c[1], c[2])
        h = self.holders.get(without) if without is not None else None
        if h is not None:
            mine = h.charged(now)
            total = (total[0] - mine[0], total[1] - mine[1], total[2] - mine[2])
        return total

    def spent(self) -> Values:
        """The summed spend of every holder in the book."""
        s = self._spent
        return (s[0], s[1], s[2])

    def report(self, holder: str, spent: Values, *, replace: bool = False) -> None:
        """A holder's settled spend in the window: a gauge that never lowers what was seen, or
        with ``replace`` (a rolling window, whose spend leaves it) the holder's latest value."""
        h = self._holder(holder)
        self._out(holder, h)
        h.spent = spent if replace else _max(h.spent, spent)
        self._in(holder, h)

    def offer(self, holder: str, cap: Values, now: float) -> None:
        """The holder gives back what its live lease holds beyond ``cap`` (it promised not to
        spend past ``cap``; never below its spend)."""
        self._advance(now)
        h = self.holders.get(holder)
        if h is not None and h.live(now):
            self._out(holder, h)
            h.cap = _max(
                h.spent, (min(h.cap[0], cap[0]), min(h.cap[1], cap[1]), min(h.cap[2], cap[2]))
            )
            self._in(holder, h)

    def adopt(self, holder: str, cap: Values, now: float) -> None:
        """A lease of a previous operator that the holder presents (the grace): unless the book
        has a live one, the holder keeps ``cap`` (never below its spend) for a TTL from ``now``."""
        self._advance(now)
        h = self._holder(holder)
        if not h.live(now):
            self._out(holder, h)
            h.cap, h.expires = _max(h.spent, cap), now + self.ttl + self.skew
            self._in(holder, h)

    def grant(self, holder: str, want: Values, now: float, least: Values = ZERO) -> Grant:
        """Renew ``holder``'s lease with up to ``want`` on top of its spend (per metric, only what
        the limit leaves once every other holder's charge is counted). A live lease never shrinks
        here (the holder may already be spending it; it gives slices back with ``offer``). While
        other live holders want more too, one grant takes at most an even share of the room that
        is left (Doorman's fair share, in small steps: the next renewals take the rest), but at
        least ``least`` on top of the spend when the room allows it (the slice that admits the
        request waiting: an even share too small for any request would strand the room)."""
        self._advance(now)
        h = self._holder(holder)
        self._out(holder, h)  # the totals now count every other holder
        h.want = (max(0, want[0]), max(0, want[1]), max(0, want[2]))
        others = self._charged
        floor = h.charged(now)  # a live cap stays; an expired one fell to the spend
        cap = []
        for i in range(3):
            lim = self.limit[i]
            wanted = h.spent[i] + h.want[i]
            if lim is None:
                cap.append(max(floor[i], wanted))
                continue
            free = max(0, lim - others[i] - floor[i])
            need = max(0, wanted - floor[i])
            rivals = self._wanting[i]
            share = -(-free // (rivals + 1))  # rounded up: the last unit is granted too
            minimum = max(0, h.spent[i] + max(0, least[i]) - floor[i])
            # less than the waiting request needs is of no use to anyone: then nothing
            share = 0 if minimum > free else max(share, minimum)
            cap.append(floor[i] + min(max(need, minimum), share))
        new: Values = (cap[0], cap[1], cap[2])
        h.cap = new
        h.expires = now + self.ttl + self.skew
        self._in(holder, h)
        return Grant(
            holder,
            new,
            (new[0] - h.spent[0], new[1] - h.spent[1], new[2] - h.spent[2]),
            now + self.ttl,
        )

    def release(self, holder: str) -> None:
        """The holder gave its slice back (it stopped, or needs less): its charge is its spend."""
        h = self.holders.get(holder)
        if h is not None:
            self._out(holder, h)
            h.cap, h.expires = h.spent, float("-inf")
            self._in(holder, h)

    def forget_expired(self, keep: Callable[[str], bool], now: float) -> None:
        """Forget the holders without a live lease at ``now`` except those ``keep`` names (walks
        only the expired ones, which each call leaves only kept ones of)."""
        self._advance(now)
        for name in [n for n in self._dead if not keep(n)]:
            self._forget(name)

    def room(self, now: float) -> Values:
        """What could still be granted in each limited metric (0 where unlimited)."""
        charged = self.charged(now)
        return (
            max(0, (self.limit[0] or 0) - charged[0]) if self.limit[0] is not None else 0,
            max(0, (self.limit[1] or 0) - charged[1]) if self.limit[1] is not None else 0,
            max(0, (self.limit[2] or 0) - charged[2]) if self.limit[2] is not None else 0,
        )


# --- the operator's lease desk ----------------------------------------------------------------
#
# ``LeaseDesk`` answers the sidecars' ``LeaseRequest``s (``POST /v1/leases``, ``controlplane``):
# one ``LeaseBook`` per (namespace, Budget, limit window), for the window that contains the
# operator's ``now`` (a new window starts a new book). A holder is one sidecar process, named as
# ``reports.BudgetSpend`` names it (pod and instance), so the spend its reports made durable and
# the spend its lease requests carry are one gauge, not two. Before a book grants, it takes every
# process's reported spend in that window from ``BudgetSpend`` (calendar windows: restarted
# sidecars, folded ones and those enforcing locally count too).
#
# An operator that starts (or becomes the leader) does not know the leases its predecessor granted,
# nor the spend its sidecars settled since the last status write, so for ``ttl + skew`` seconds
# after it first compiled a namespace (the grace) it grants nothing new there for a Budget it found
# existing (one it did not see being created): a sidecar that presents a live lease keeps it (the
# book adopts the cap it presents), every sidecar's request tells the book its spend (sidecars ask
# at least every third of a TTL, failing or not), and the rest waits until every lease of the old
# operator has expired. A Budget this operator saw being created (a watch ``ADDED`` event, never a
# listing) cannot have leases of another operator, so it has no grace; no clocks are compared. An
# operator replica that does not reconcile (not the leader) has no compiled config:
# ``NotServingError``.

PICO = 10**12
#: Lease requests remembered per sidecar process (for ``seq``) before the oldest are forgotten.
MAX_PROCESSES = 10_000


def _week_start(d: _date) -> _date:
    return d - _timedelta(days=d.weekday())


def _first(kind: WindowKind, d: _date) -> _date:
    if kind is WindowKind.DAY:
        return d
    if kind is WindowKind.WEEK:
        return _week_start(d)
    return d.replace(day=1)


def _next(kind: WindowKind, d: _date, n: int) -> _date:
    if kind is WindowKind.DAY:
        return d + _timedelta(days=n)
    if kind is WindowKind.WEEK:
        return d + _timedelta(days=7 * n)
    months = d.year * 12 + (d.month - 1) + n
    return _date(months // 12, months % 12 + 1, 1)


def calendar_window(kind: WindowKind, zone_name: str, t: float) -> tuple[float, float]:
    """(start, resets_at) of the Day/Week/Month window in ``zone_name`` containing ``t``: the
    same arithmetic as the sidecar's ``budget.windows.calendar_window`` (a test holds them equal;
    the operator may import only the sidecar's contract)."""
    tz = _zone(zone_name)
    p = _first(kind, _datetime.fromtimestamp(t, tz).date())
    lo, hi = -1, 2
    while True:
        bounds = [
            _datetime(d.year, d.month, d.day, tzinfo=tz).timestamp()
            for d in (_next(kind, p, n) for n in range(lo, hi + 1))
        ]
        before = [b for b in bounds if b <= t]
        after = [b for b in bounds if b > t]
        if before and after:
            return max(before), min(after)
        if not before:
            lo -= 1
        if not after:
            hi += 1


def limit_values(lim: BudgetLimit) -> Limit:
    """A limit in the book's units (picodollars, tokens, requests; None: not limited)."""
    return (
        round(lim.usd * PICO) if lim.usd is not None else None,
        lim.tokens,
        lim.requests,
    )


def _values(a: LeaseAmount | None) -> Values:
    if a is None:
        return ZERO
    return (a.pusd or 0, a.tokens or 0, a.requests or 0)


@dataclass
class _Window:
    start: float
    resets_at: float | None
    book: LeaseBook


class NotServingError(Exception):
    """This operator replica has no compiled config for the namespace (not the leader)."""


def lease_ttl(env: Mapping[str, str]) -> float:
    """The lease TTL: ``SLUICE_LEASE_TTL`` seconds (default 30, at least 1)."""
    try:
        return max(1.0, float(env.get("SLUICE_LEASE_TTL", "") or 30.0))
    except ValueError:
        return 30.0


@dataclass
class LeaseDesk:
    """The operator's leases: answers lease requests (pure; the caller passes the time)."""

    ttl: float = 30.0
    #: Added to every expiry on this side (clock rates, delivery); default ``max(1, ttl / 6)``.
    skew: float | None = None
    #: When this operator first compiled each namespace (wall): its grace starts there, or
    #: when the control plane began to listen (``open``), whichever is later.
    since: dict[str, float] = field(default_factory=dict)
    opened: float = float("-inf")
    windows: dict[tuple[str, str, str], _Window] = field(default_factory=dict)
    _seqs: dict[tuple[str, str, str], int] = field(default_factory=dict)
    #: Budgets whose durable spend lease requests raised (the caller refreshes their status).
    touched: set[tuple[str, str]] = field(default_factory=set)
    #: Lease requests answered and refused as stale (metrics, tests).
    answered: int = 0
    stale: int = 0
    #: The provider quota shares that ride on the same requests (``quotas``).
    quotas: QuotaDesk = field(default_factory=QuotaDesk)

    def __post_init__(self) -> None:
        if self.skew is None:
            self.skew = max(1.0, self.ttl / 6)

    @property
    def slack(self) -> float:
        return self.skew if self.skew is not None else max(1.0, self.ttl / 6)

    def saw(self, namespace: str, now: float) -> None:
        """This operator has compiled ``namespace`` (its grace starts at the first call)."""
        self.since.setdefault(namespace, now)

    def in_grace(self, namespace: str, now: float, *, born: bool = False) -> bool:
        """Whether a Budget of ``namespace`` waits out the leases of a previous operator now
        (``born``: this operator saw it being created, so it has no grace)."""
        if born:
            return False
        since = self.since.get(namespace)
        if since is None:
            return True
        return now < max(since, self.opened) + self.ttl + self.slack

    def open(self, now: float) -> None:
        """The control plane listens from ``now`` (sidecars' requests reach this operator from
        then on: a grace never ends before a TTL after it)."""
        self.opened = now

    def answer(
        self,
        request: LeaseRequest,
        rules: Sequence[BudgetRule],
        spend: BudgetSpend | None,
        now: float,
        born: Collection[str] = (),
        *,
        routes: Sequence[Route] = (),
    ) -> LeaseResponse | None:
        """The leases for ``request`` (None: an older request of the same process, ignored).
        ``born``: the Budgets this operator saw being created (no grace; see above). ``routes``:
        the namespace's compiled routes, whose backends' ``limits`` the request's ``quotas``
        get shares of (``quotas.QuotaDesk``; none without routes)."""
        who = (request.namespace, request.pod, request.instance)
        if request.seq <= self._seqs.get(who, -1):
            self.stale += 1
            return None
        self._seqs.pop(who, None)
        self._seqs[who] = request.seq
        while len(self._seqs) > MAX_PROCESSES:
            self._seqs.pop(next(iter(self._seqs)))
        self.answered += 1
        holder = holder_name(request.pod, request.instance)
        by_name = {r.name: r for r in rules}
        leases: list[Lease] = []
        for ask in request.asks:
            rule = by_name.get(ask.budget)
            lim = (
                next((x for x in rule.limits if x.window_id() == ask.window), None)
                if rule
                else None
            )
            if rule is None or lim is None:
                continue
            grace = self.in_grace(request.namespace, now, born=rule.name in born)
            w = self._window(request.namespace, rule.name, lim, now)
            book = w.book
            rolling = lim.window is WindowKind.ROLLING
            if spend is not None and not rolling:
                _sync(
                    book,
                    spend,
                    request.namespace,
                    rule.name,
                    window=ask.window,
                    start=w.start,
                    now=now,
                )
            mine = ask.start == w.start
            if mine:
                book.report(holder, _values(ask.spent), replace=rolling)
                raised = (
                    spend is not None
                    and w.resets_at is not None
                    and spend.lease_spend(
                        request.namespace,
                        rule.name,
                        (request.pod, request.instance),
                        window=(ask.window, w.start, w.resets_at),
                        values=_values(ask.spent),
                        now=now,
                    )
                )
                if raised:  # the status learns it before the next report
                    self.touched.add((request.namespace, rule.name))
            if request.release:
                book.release(holder)
                continue
            want = _values(ask.want)
            if mine and ask.cap is not None:
                cap = _capped(ask.cap)
                if grace:  # a lease of the operator before this one: keep it, grant no more
                    book.adopt(holder, cap, now)
                book.offer(holder, cap, now)
            if grace:
                want = ZERO
            g = book.grant(holder, want, now, ZERO if grace else _values(ask.least))
            room = book.room(now)
            spent_total = book.spent()
            leases.append(
                Lease(
                    budget=rule.name,
                    window=ask.window,
                    start=w.start,
                    resets_at=w.resets_at,
                    cap=_amount(g.cap, book.limit),
                    spent=_amount(spent_total, (0, 0, 0)),
                    exhausted=any(
                        book.limit[i] is not None and room[i] == 0 and g.slice[i] == 0
                        for i in range(3)
                    ),
                )
            )
        shares = self.quotas.answer(
            request.namespace,
            holder,
            request.quotas,
            routes,
            now,
            ttl=self.ttl,
            skew=self.slack,
            grace=self.in_grace(request.namespace, now),
            release=request.release,
        )
        return LeaseResponse(now=now, ttl=self.ttl, leases=tuple(leases), quotas=shares)

    def _window(self, namespace: str, budget: str, lim: BudgetLimit, now: float) -> _Window:
        key = (namespace, budget, lim.window_id())
        if lim.window is WindowKind.ROLLING:
            start, resets = 0.0, None
        else:
            start, resets_at = calendar_window(lim.window, lim.timezone, now)
            resets = resets_at
        w = self.windows.get(key)
        if w is None or w.start != start:
            book = LeaseBook(limit_values(lim), self.ttl, self.slack)
            w = self.windows[key] = _Window(start, resets, book)
        w.book.limit = limit_values(lim)  # an edited limit applies at once
        return w

    def forget(self, namespace: str, budget: str) -> None:
        """A deleted Budget: drop its books."""
        for key in [k for k in self.windows if k[0] == namespace and k[1] == budget]:
            del self.windows[key]


def holder_name(pod: str, instance: str) -> str:
    """A sidecar process's name in a book: ``reports.BudgetSpend``'s (pod, instance)."""
    return f"{pod}\x00{instance or pod}"


def _sync(
    book: LeaseBook,
    spend: BudgetSpend,
    namespace: str,
    budget: str,
    *,
    window: str,
    start: float,
    now: float,
) -> None:
    """Take every process's durable spend in the window into ``book``, and forget holders without
    a live lease that the durable spend no longer names (folded into one entry there: counting
    them too would count them twice)."""
    table = spend.budgets.get((namespace, budget)) or {}
    key = (window, start)
    synced = book.synced
    for who, inst in table.items():
        s = inst.windows.get(key)
        if s is None:
            continue
        name = holder_name(*who)
        seen = synced.get(name)
        if seen is None or seen[1] is not s:  # a changed entry is a new object (``reports``)
            synced[name] = (who, s)
            book.report(name, s.values)

    def named(name: str) -> bool:
        seen = synced.get(name)
        inst = table.get(seen[0]) if seen is not None else None
        return inst is not None and key in inst.windows

    book.forget_expired(named, now)


def _capped(a: LeaseAmount) -> Values:
    """A presented cap in book units (a metric left None: the sidecar holds nothing there)."""
    return (a.pusd or 0, a.tokens or 0, a.requests or 0)


def _amount(v: Values, limit: Limit) -> LeaseAmount:
    """``v`` as a LeaseAmount; a metric the limit leaves unlimited is None."""
    return LeaseAmount(
        pusd=v[0] if limit[0] is not None else None,
        tokens=v[1] if limit[1] is not None else None,
        requests=v[2] if limit[2] is not None else None,
    )
