"""The spend ledger of one Budget rule: reservations, settlement and per-window counters.

Owns the accounting that makes a budget hold under concurrency:

* **Reserve, then settle.** ``reserve`` admits a request only if, for every limit of the rule,
  ``spent + outstanding reservations + this request's worst case ≤ limit``, and records the
  reservation in the same call. Nothing awaits in between, so on one event loop there is no
  check-then-record race however many requests arrive at once. ``settle`` replaces the
  reservation by the actual cost and tokens; ``release`` drops it (the request failed before any
  usage). Money is kept in integer picodollars, so holds and releases cancel exactly and
  counters never drift.
* **Windows.** Every limit counts in its own window (``windows``): a reservation is charged to
  the window it was admitted in, even if it settles after the window closed, and it stops
  counting against later windows the moment they open. Time is monotonised per ledger (the
  clock-step rule in ``windows``): a wall clock that steps back never re-opens a window.
* **TTL.** A reservation that is never settled (a crash or a bug on the request path) expires
  after its TTL (checked at least every ``EXPIRY_SCAN`` seconds of traffic) and stops counting:
  no phantom spend. A settle that arrives after that still
  charges the actual cost (that spend was real).
* **Idempotency.** Reservations are keyed by request id (the caller may fold a fingerprint of the
  body into it). A second reservation under a key that is in flight joins it (the hold grows to
  the larger worst case, the request is not counted twice); one under a key that was settled
  holds only what it could add. The key's charge is the *largest* actual of its attempts, so a
  client retry is counted once and never less than any attempt cost. Keys are remembered for
  ``idempotency_ttl`` after their last hold, at most ``max_entries`` of them, and for at most
  ``max_replays`` replays; a retry in a later window counts in that window as a new request.
* **Leases.** With a control plane, a limit's meter is ``leasing``: admission checks against
  ``min(limit, lease cap)`` of the lease (``MeterLease``, kept by ``budget.leases``) for the
  current window; with no live lease it refuses (``Exceeded.lease``: ``none``, or ``lost`` when
  the control plane is unreachable) unless the budget allows local enforcement then
  (``allow_local``: the whole limit). Refusals by the lease are remembered as demand
  (``refused``, ``least``) for the next lease request.
* **Alerts.** Each threshold (percent of a limit, the largest over usd/tokens/requests of the
  committed spend) is reported once per calendar window; in a rolling window it re-arms when the
  spend falls back below it.

The overshoot bound: committed spend of a window can exceed its limit only by what settled
requests cost beyond their reservation (their prompt was under-estimated, see ``policy``), summed
over the requests in flight at the edge; and by the worst case of requests admitted into room
freed by a reservation that expired while its request was still running.

Pure and single-threaded: all instants are passed in (UTC epoch seconds), no method awaits or
does IO. Not thread-safe: use it from one event loop.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Literal

from ..contract import BudgetLimit, BudgetRule, WindowKind
from .windows import CalendarTracker, RollingRing, Window, zone

PICO_PER_USD = 10**12
#: Retry-After when only other requests' reservations stand in the way: they settle soon.
IN_FLIGHT_RETRY = 1.0
DEFAULT_TTL = 300.0
DEFAULT_IDEMPOTENCY_TTL = 300.0
DEFAULT_MAX_ENTRIES = 20_000
DEFAULT_MAX_REPLAYS = 4
#: How often (in seconds of ``now``) in-flight reservations are checked for expiry.
EXPIRY_SCAN = 1.0

Metric = Literal["usd", "tokens", "requests"]
_METRICS: tuple[Metric, ...] = ("usd", "tokens", "requests")


def to_pico(usd: float) -> int:
    """``usd`` in integer picodollars (negative amounts count as zero)."""
    return max(0, round(usd * PICO_PER_USD))


@dataclass(frozen=True, slots=True)
class Amount:
    """Spend in the three units a limit can cap: picodollars, tokens and requests."""

    pusd: int = 0
    tokens: int = 0
    requests: int = 0

    @classmethod
    def of(cls, usd: float = 0.0, tokens: int = 0, requests: int = 0) -> Amount:
        return cls(to_pico(usd), max(0, tokens), max(0, requests))

    @property
    def usd(self) -> float:
        return self.pusd / PICO_PER_USD

    def values(self) -> tuple[int, int, int]:
        return (self.pusd, self.tokens, self.requests)

    def __add__(self, o: Amount) -> Amount:
        return Amount(self.pusd + o.pusd, self.tokens + o.tokens, self.requests + o.requests)

    def __sub__(self, o: Amount) -> Amount:
        return Amount(self.pusd - o.pusd, self.tokens - o.tokens, self.requests - o.requests)

    def max(self, o: Amount) -> Amount:
        return Amount(
            max(self.pusd, o.pusd), max(self.tokens, o.tokens), max(self.requests, o.requests)
        )

    def clamp(self) -> Amount:
        """Each component at least zero."""
        return Amount(max(0, self.pusd), max(0, self.tokens), max(0, self.requests))

    def __bool__(self) -> bool:
        return bool(self.pusd or self.tokens or self.requests)


ZERO = Amount()


def _display(metric: Metric, value: int) -> float:
    return value / PICO_PER_USD if metric == "usd" else float(value)


@dataclass(frozen=True, slots=True)
class Exceeded:
    """Why a reservation was refused: the binding limit and metric, and when to retry."""

    rule: str
    limit_index: int
    window: WindowKind
    timezone: str
    rolling_seconds: float | None
    metric: Metric
    #: The limit, committed spend plus reservations, and what this request would add, in the
    #: metric's unit (USD, tokens or requests).
    limit: float
    used: float
    requested: float
    percent: float
    #: When the window resets (calendar) or its oldest spend leaves it (rolling).
    resets_at: float
    #: Seconds until the request could fit; None when its worst case alone exceeds the limit.
    retry_after: float | None
    #: Refused only because of other requests' reservations (committed spend leaves room).
    in_flight: bool
    #: Refused by the lease from the control plane rather than the limit: ``share`` (this
    #: sidecar's slice is used; other replicas hold or spent the rest), ``none`` (no lease for
    #: this window yet), ``lost`` (no lease and the control plane is unreachable: Block).
    lease: Literal["share", "none", "lost"] | None = None
    #: With ``lease``: the budget's settled spend across replicas as the last lease said (the
    #: metric's unit), and this sidecar's lease cap.
    spent_everywhere: float | None = None
    lease_cap: float | None = None


@dataclass(frozen=True, slots=True)
class Alert:
    """A threshold crossed by committed spend in one window of one limit."""

    rule: str
    limit_index: int
    window: WindowKind
    window_start: float
    resets_at: float
    threshold: int
    percent: float


@dataclass(frozen=True, slots=True)
class WindowStatus:
    """One limit's current window, as ``Budget.status`` shows it."""

    rule: str
    limit_index: int
    window: WindowKind
    timezone: str
    start: float
    resets_at: float
    spent_usd: float
    tokens: int
    requests: int
    held_usd: float
    held_tokens: int
    held_requests: int
    percent: float
    state: Literal["Ok", "Warning", "Exhausted"]


#: Retry-After of a refusal for lack of lease room: the lease is renewed at once.
LEASE_RETRY = 1.0
#: Retry-After while the control plane is unreachable (onControlPlaneLoss: Block).
LOST_RETRY = 5.0

Caps = tuple[int | None, int | None, int | None]


@dataclass(slots=True)
class MeterLease:
    """The lease a sidecar holds for one limit's window (``budget.leases``): it may have settled
    up to ``cap`` there (None: that metric is not limited) while ``live``."""

    start: float
    cap: Caps
    live: bool = True
    exhausted: bool = False
    spent_everywhere: tuple[int, int, int] = (0, 0, 0)


@dataclass(slots=True)
class _Counts:
    window: Window
    spent: Amount = ZERO  # calendar windows only; a rolling window's spend is in its ring
    held: Amount = ZERO
    fired: set[int] = field(default_factory=set)


class _Meter:
    """The counters of one ``BudgetLimit`` of a rule."""

    __slots__ = (
        "allow_local",
        "caps",
        "counts",
        "index",
        "lease",
        "leasing",
        "least",
        "limit",
        "lost",
        "refused",
        "ring",
        "rule",
        "thresholds",
        "tracker",
    )

    def __init__(self, rule: str, index: int, limit: BudgetLimit, thresholds: tuple[int, ...]):
        self.tracker: CalendarTracker | None = None
        self.ring: RollingRing | None = None
        if limit.window is WindowKind.ROLLING:
            if not limit.rolling_seconds or limit.rolling_seconds <= 0:
                raise ValueError(f"budget {rule!r}: a Rolling limit needs a positive duration")
            self.ring = RollingRing(limit.rolling_seconds)
        else:
            self.tracker = CalendarTracker(limit.window, zone(limit.timezone))
        self.counts: dict[float, _Counts] = {}
        #: Leases (``budget.leases``): while ``leasing``, admission needs a live ``lease`` for the
        #: current window, except when the control plane is ``lost`` and ``allow_local``.
        self.leasing = False
        self.lease: MeterLease | None = None
        self.lost = False
        self.allow_local = False
        #: What lease refusals turned away since the last lease request (demand).
        self.refused = ZERO
        #: The largest ``held + worst case`` a lease refusal turned away: the slice (above the
        #: spend) that would have admitted it.
        self.least = ZERO
        self.configure(rule, index, limit, thresholds)

    def configure(
        self, rule: str, index: int, limit: BudgetLimit, thresholds: tuple[int, ...]
    ) -> None:
        self.rule, self.index, self.limit = rule, index, limit
        self.thresholds = tuple(sorted(set(thresholds)))
        self.caps: tuple[int | None, int | None, int | None] = (
            to_pico(limit.usd) if limit.usd is not None else None,
            limit.tokens,
            limit.requests,
        )

    def same_window_as(self, limit: BudgetLimit) -> bool:
        a = self.limit
        if a.window is not limit.window:
            return False
        if a.window is WindowKind.ROLLING:
            return a.rolling_seconds == limit.rolling_seconds
        return a.timezone == limit.timezone

    def key(self, now: float) -> float:
        """The key of the window counting at ``now`` (its start; 0 for a rolling window)."""
        if self.tracker is None:
            c = self.counts.get(0.0)
            if c is None:
                assert self.ring is not None
                self.counts[0.0] = _Counts(self.ring.span(now))
            return 0.0
        w = self.tracker.window(now)
        if w.start not in self.counts:
            # Keep the window that just closed (late settles, status) and any with holds.
            prev = max(self.counts, default=None)
            self.counts = {
                k: c for k, c in self.counts.items() if k == prev or c.held or k > w.start
            }
            self.counts[w.start] = _Counts(w)
        return w.start

    def _spent(self, c: _Counts, now: float) -> tuple[int, ...]:
        return self.ring.totals(now) if self.ring is not None else c.spent.values()

    def _window(self, c: _Counts, now: float) -> Window:
        return self.ring.span(now) if self.ring is not None else c.window

    def _lease_caps(self, key: float) -> tuple[Caps, MeterLease | None, str | None]:
        """The caps admission applies in window ``key``, the lease behind them, and why there is
        no usable lease (``none``/``lost``: refuse everything)."""
        if not self.leasing:
            return self.caps, None, None
        lease = self.lease
        if lease is not None and lease.live and lease.start == key:
            caps = tuple(
                c if lc is None else lc if c is None else min(c, lc)
                for c, lc in zip(self.caps, lease.cap, strict=True)
            )
            return (caps[0], caps[1], caps[2]), lease, None
        if self.lost and self.allow_local:
            return self.caps, None, None  # onControlPlaneLoss: AllowLocal
        return self.caps, None, "lost" if self.lost else "none"

    def check(self, key: float, add: Amount, now: float) -> Exceeded | None:
        """The most binding limit ``add`` would break in window ``key`` (None: it fits)."""
        c = self.counts[key]
        spent = self._spent(c, now)
        held = c.held.values()
        caps, lease, why = self._lease_caps(key)
        if why is not None and add:
            self.refused += add
            self.least = self.least.max(c.held + add)
            return self._no_lease(why, c=c, spent=spent, held=held, add=add, now=now)
        worst: Exceeded | None = None
        for i in range(len(_METRICS)):
            cap = caps[i]
            d = add.values()[i]
            if cap is None or d <= 0 or spent[i] + held[i] + d <= cap:
                continue
            limit = self.caps[i]
            if lease is not None and (limit is None or spent[i] + held[i] + d <= limit):
                self.refused += add
                self.least = self.least.max(c.held + add)
                return self._lease_share(i, lease, c=c, spent=spent, held=held, add=add, now=now)
            in_flight = spent[i] + d <= cap
            window = self._window(c, now)
            retry: float | None
            if d > cap:
                retry = None
            elif in_flight:
                retry = max(0.0, min(IN_FLIGHT_RETRY, window.resets_at - now))
            elif self.ring is not None:
                retry = self.ring.until_freed(now, i, spent[i] + d - cap)
            else:
                retry = max(0.0, window.resets_at - now)
            ex = self._exceeded(
                i, cap, spent[i] + held[i], d, window, retry_after=retry, in_flight=in_flight
            )
            if worst is None or _later(ex, worst):
                worst = ex
        return worst

    def _exceeded(
        self,
        i: int,
        cap: int,
        used: int,
        requested: int,
        window: Window,
        *,
        retry_after: float | None,
        in_flight: bool,
        lease: Literal["share", "none", "lost"] | None = None,
        spent_everywhere: float | None = None,
        lease_cap: float | None = None,
    ) -> Exceeded:
        """The refusal of this limit's metric ``i`` (amounts in integer units)."""
        metric = _METRICS[i]
        return Exceeded(
            rule=self.rule,
            limit_index=self.index,
            window=self.limit.window,
            timezone=self.limit.timezone,
            rolling_seconds=self.limit.rolling_seconds,
            metric=metric,
            limit=_display(metric, cap),
            used=_display(metric, used),
            requested=_display(metric, requested),
            percent=100.0 * used / cap if cap else 0.0,
            resets_at=window.resets_at,
            retry_after=retry_after,
            in_flight=in_flight,
            lease=lease,
            spent_everywhere=spent_everywhere,
            lease_cap=lease_cap,
        )

    def _no_lease(
        self,
        why: str,
        *,
        c: _Counts,
        spent: tuple[int, ...],
        held: tuple[int, ...],
        add: Amount,
        now: float,
    ) -> Exceeded:
        i = next((i for i, cap in enumerate(self.caps) if cap is not None), 2)
        return self._exceeded(
            i,
            self.caps[i] or 0,
            spent[i] + held[i],
            add.values()[i],
            self._window(c, now),
            retry_after=LOST_RETRY if why == "lost" else LEASE_RETRY,
            in_flight=False,
            lease="lost" if why == "lost" else "none",
        )

    def _lease_share(
        self,
        i: int,
        lease: MeterLease,
        *,
        c: _Counts,
        spent: tuple[int, ...],
        held: tuple[int, ...],
        add: Amount,
        now: float,
    ) -> Exceeded:
        metric = _METRICS[i]
        return self._exceeded(
            i,
            self.caps[i] or 0,
            spent[i] + held[i],
            add.values()[i],
            self._window(c, now),
            retry_after=LEASE_RETRY,
            in_flight=True,
            lease="share",
            spent_everywhere=_display(metric, lease.spent_everywhere[i]),
            lease_cap=_display(metric, lease.cap[i] or 0),
        )

    def used(self, now: float) -> tuple[int, int, int]:
        """Settled plus reserved in the current window."""
        c = self.counts[self.key(now)]
        spent = self._spent(c, now)
        held = c.held.values()
        return (spent[0] + held[0], spent[1] + held[1], spent[2] + held[2])

    def lease_window(self, now: float) -> LeaseWindow:
        """What a lease request says about this limit: its current window, the settled spend
        and reservations there, and the demand refused since the last answered request."""
        key = self.key(now)
        c = self.counts[key]
        window = self._window(c, now)
        pusd, tokens, requests = self._spent(c, now)
        return LeaseWindow(
            self,
            self.rule,
            self.limit.window_id(),
            key,
            window.resets_at,
            Amount(pusd, tokens, requests),
            c.held,
            self.refused,
            self.least,
        )

    def hold(self, key: float, delta: Amount) -> None:
        self.counts[key].held += delta

    def adjust(self, key: float, spent: Amount, held: Amount, now: float) -> list[Alert]:
        """Move an entry's contribution: ``spent`` more committed, ``held`` more (or less) held."""
        c = self.counts.get(key)
        if c is None:  # a window closed long ago and forgotten: nothing to enforce or report
            return []
        c.held += held
        if not spent:
            return []
        if self.ring is not None:
            self.ring.add(now, spent.values())
        else:
            c.spent += spent
        return self._alerts(key, c, now)

    def percent(self, spent: tuple[int, ...]) -> float:
        return max(
            (100.0 * spent[i] / cap for i, cap in enumerate(self.caps) if cap),
            default=0.0,
        )

    def _alerts(self, key: float, c: _Counts, now: float) -> list[Alert]:
        pct = self.percent(self._spent(c, now))
        out: list[Alert] = []
        for th in self.thresholds:
            if pct >= th and th not in c.fired:
                c.fired.add(th)
                window = self._window(c, now)
                start = key if self.ring is None else window.start
                out.append(
                    Alert(
                        self.rule, self.index, self.limit.window, start, window.resets_at, th, pct
                    )
                )
            elif pct < th and self.ring is not None:
                c.fired.discard(th)  # a rolling window re-arms as spend leaves it
        return out

    def status(self, now: float) -> WindowStatus:
        key = self.key(now)  # before reading self.counts: a new window replaces the dict
        c = self.counts[key]
        spent = self._spent(c, now)
        window = self._window(c, now)
        pct = self.percent(spent)
        warn = max((t for t in self.thresholds if t < 100), default=80)
        return WindowStatus(
            rule=self.rule,
            limit_index=self.index,
            window=self.limit.window,
            timezone=self.limit.timezone,
            start=window.start,
            resets_at=window.resets_at,
            spent_usd=spent[0] / PICO_PER_USD,
            tokens=spent[1],
            requests=spent[2],
            held_usd=c.held.usd,
            held_tokens=c.held.tokens,
            held_requests=c.held.requests,
            percent=pct,
            state="Exhausted" if pct >= 100 else "Warning" if pct >= warn else "Ok",
        )

    def spend(self, now: float) -> WindowSpend:
        """The committed spend of the current window (what a usage report carries)."""
        key = self.key(now)
        c = self.counts[key]
        window = self._window(c, now)
        pusd, tokens, requests = self._spent(c, now)
        return WindowSpend(
            self.rule,
            self.limit.window_id(),
            window.start,
            window.resets_at,
            Amount(pusd, tokens, requests),
        )


@dataclass(frozen=True, slots=True)
class LeaseWindow:
    """One limit's current window as a lease request needs it (``_Meter.lease_window``)."""

    meter: _Meter
    rule: str
    window: str
    start: float
    resets_at: float
    spent: Amount
    held: Amount
    refused: Amount
    least: Amount


@dataclass(frozen=True, slots=True)
class WindowSpend:
    """Committed spend of one limit's current window, exact (picodollars)."""

    rule: str
    window: str
    start: float
    resets_at: float
    spent: Amount


def _later(a: Exceeded, b: Exceeded) -> bool:
    """Whether ``a`` binds longer than ``b`` (None = never fits = longest)."""
    if a.retry_after is None:
        return b.retry_after is not None
    return b.retry_after is not None and a.retry_after > b.retry_after


class _Entry:
    """Everything known about one idempotency key."""

    __slots__ = (
        "charged",
        "epoch",
        "expires",
        "forget_at",
        "held",
        "holders",
        "key",
        "replayable",
        "replays",
        "where",
    )

    def __init__(self, key: str, where: tuple[tuple[_Meter, float], ...]) -> None:
        self.key = key
        self.where = where
        self.charged = ZERO  # the largest actual of its settled attempts
        self.held = ZERO  # the largest worst case of its attempts in flight
        self.holders = 0
        self.epoch = 0  # bumped when its holds expire, so stale handles cannot release twice
        self.replays = 0
        #: The key may come again (the client chose it): remember it once settled.
        self.replayable = True
        self.expires = 0.0
        self.forget_at = 0.0

    def hold_part(self) -> Amount:
        """What this key holds beyond its charge while attempts are in flight."""
        return (self.held - self.charged).clamp() if self.holders else ZERO


class Reservation:
    """A granted hold; pass it back to ``settle`` or ``release`` exactly once (again: no-op)."""

    __slots__ = (
        "_entry",
        "_epoch",
        "_open",
        "expires",
        "over",
        "replay",
        "request_id",
        "rule",
        "worst",
    )

    def __init__(
        self, rule: str, entry: _Entry, worst: Amount, expires: float, replay: bool
    ) -> None:
        self.rule = rule
        self.request_id = entry.key
        self.worst = worst
        self.expires = expires
        #: The key was already known (a client retry): nothing new was counted for it.
        self.replay = replay
        #: With ``enforce=False``: the limit this request broke (admitted anyway), else None.
        self.over: Exceeded | None = None
        self._entry = entry
        self._epoch = entry.epoch
        self._open = True

    @property
    def open(self) -> bool:
        return self._open

    def __repr__(self) -> str:
        return (
            f"Reservation(rule={self.rule!r}, request_id={self.request_id!r}, "
            f"usd={self.worst.usd}, tokens={self.worst.tokens}, open={self._open})"
        )


class Ledger:
    """The reservations and window counters of one ``BudgetRule``."""

    def __init__(
        self,
        rule: BudgetRule,
        *,
        ttl: float = DEFAULT_TTL,
        idempotency_ttl: float = DEFAULT_IDEMPOTENCY_TTL,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_replays: int = DEFAULT_MAX_REPLAYS,
    ) -> None:
        self.ttl = ttl
        self.idempotency_ttl = idempotency_ttl
        self.max_entries = max_entries
        self.max_replays = max_replays
        self._meters: list[_Meter] = []
        self._entries: dict[str, _Entry] = {}
        #: Keys with attempts in flight (O(concurrency)); scanned for expiry once a second.
        self._live: dict[_Entry, None] = {}
        self._next_scan = float("-inf")
        self._forget: list[tuple[float, int, _Entry]] = []
        self._seq = itertools.count()
        self._high = float("-inf")
        self.reconfigure(rule)

    @property
    def rule(self) -> BudgetRule:
        return self._rule

    def reconfigure(self, rule: BudgetRule) -> None:
        """Take a new version of the rule, keeping the counters of every limit whose window is
        unchanged (same kind and zone, or same rolling duration): a raised cap or an edited
        selector does not reset what was spent. In-flight reservations settle where they were."""
        old = list(self._meters)
        meters: list[_Meter] = []
        for i, limit in enumerate(rule.limits):
            m = next((m for m in old if m.same_window_as(limit)), None)
            if m is not None:
                old.remove(m)
                m.configure(rule.name, i, limit, rule.alert_thresholds)
            else:
                m = _Meter(rule.name, i, limit, rule.alert_thresholds)
            meters.append(m)
        self._rule = rule
        self._meters = meters

    def _tick(self, now: float) -> float:
        """``now``, never earlier than an instant already seen (the clock-step rule)."""
        self._high = max(self._high, now)
        return self._high

    def _sweep(self, now: float, *, force: bool = False) -> None:
        if self._live and (force or now >= self._next_scan):
            self._next_scan = now + EXPIRY_SCAN
            for e in [e for e in self._live if e.expires <= now]:
                part = e.hold_part()
                e.holders, e.held, e.epoch = 0, ZERO, e.epoch + 1
                for m, k in e.where:
                    m.adjust(k, ZERO, ZERO - part, now)
                self._idle(e)
        while self._forget and (self._forget[0][0] <= now or len(self._entries) > self.max_entries):
            _, _, e = heapq.heappop(self._forget)
            if not e.holders and (e.forget_at <= now or len(self._entries) > self.max_entries):
                self._drop(e)

    def _drop(self, e: _Entry) -> None:
        if self._entries.get(e.key) is e:
            del self._entries[e.key]

    def _idle(self, e: _Entry) -> None:
        """``e`` has no attempt in flight any more: forget it now if it was never charged (a
        retry is then a new request) or its key cannot come again (the sidecar made it), else
        once its idempotency time is over."""
        self._live.pop(e, None)
        if not e.charged or not e.replayable:
            self._drop(e)
        else:
            heapq.heappush(self._forget, (e.forget_at, next(self._seq), e))

    def reserve(
        self,
        request_id: str,
        worst_case_cost: float,
        worst_case_tokens: int,
        now: float,
        *,
        enforce: bool = True,
        ttl: float | None = None,
        replayable: bool = True,
    ) -> Reservation | Exceeded:
        """Hold ``worst_case_cost`` USD, ``worst_case_tokens`` and one request in every limit's
        current window, or refuse with the most binding ``Exceeded`` and hold nothing. With
        ``enforce=False`` (AlertOnly, a downgraded request) the hold is recorded even over the
        limit and the reservation's ``over`` says which limit it broke."""
        now = self._tick(now)
        self._sweep(now)
        worst = Amount.of(worst_case_cost, worst_case_tokens, 1)
        where = tuple((m, m.key(now)) for m in self._meters)
        entry = self._entries.get(request_id)
        if entry is not None and (entry.where != where or entry.replays >= self.max_replays):
            entry = None  # a new logical request; the old key keeps its charge where it was
        replay = entry is not None
        if entry is None:
            entry = _Entry(request_id, where)
            entry.replayable = replayable
        old_part = entry.hold_part()
        new_held = entry.held.max(worst) if entry.holders else worst
        new_part = (new_held - entry.charged).clamp()
        delta = new_part - old_part
        over: Exceeded | None = None
        for m, k in where:
            ex = m.check(k, delta, now)
            if ex is not None and (over is None or _later(ex, over)):
                over = ex
        if over is not None and enforce:
            return over
        for m, k in where:
            m.hold(k, delta)
        entry.held = new_held
        entry.holders += 1
        if replay:
            entry.replays += 1
        expires = now + (self.ttl if ttl is None else ttl)
        entry.expires = max(entry.expires, expires)
        entry.forget_at = max(entry.forget_at, entry.expires + self.idempotency_ttl)
        self._entries[request_id] = entry
        self._live[entry] = None
        r = Reservation(self._rule.name, entry, worst, expires, replay)
        r.over = over
        return r

    def settle(
        self, reservation: Reservation, actual_cost: float, actual_tokens: int, now: float
    ) -> tuple[Alert, ...]:
        """Replace the reservation by what the request really cost; returns the thresholds this
        crossed. A second settle (or a settle after ``release``) does nothing."""
        if not reservation._open:
            return ()
        reservation._open = False
        now = self._tick(now)
        self._sweep(now)
        e = reservation._entry
        actual = Amount.of(actual_cost, actual_tokens, 1)
        old_part, old_charged = e.hold_part(), e.charged
        e.charged = old_charged.max(actual)
        idle = False
        if reservation._epoch == e.epoch and e.holders:
            e.holders -= 1
            if not e.holders:
                e.held, idle = ZERO, True
        spent, held = e.charged - old_charged, e.hold_part() - old_part
        alerts: list[Alert] = []
        for m, k in e.where:
            alerts.extend(m.adjust(k, spent, held, now))
        if idle:
            self._idle(e)
        return tuple(alerts)

    def release(self, reservation: Reservation) -> None:
        """Drop the reservation of a request that produced no usage. A key that was never
        charged is forgotten, so a retry of it is a new request."""
        if not reservation._open:
            return
        reservation._open = False
        e = reservation._entry
        if reservation._epoch != e.epoch or not e.holders:
            return
        old_part = e.hold_part()
        e.holders -= 1
        if not e.holders:
            e.held = ZERO
        held = e.hold_part() - old_part
        for m, k in e.where:
            m.adjust(k, ZERO, held, self._high)
        if not e.holders:
            self._idle(e)

    def expire(self, now: float) -> None:
        """Expire overdue reservations and forget old keys (``reserve`` and ``settle`` do too)."""
        self._sweep(self._tick(now), force=True)

    def status(self, now: float) -> tuple[WindowStatus, ...]:
        now = self._tick(now)
        self._sweep(now)
        return tuple(m.status(now) for m in self._meters)

    def spend(self, now: float) -> tuple[WindowSpend, ...]:
        """Every limit's committed spend in its current window."""
        now = self._tick(now)
        self._sweep(now)
        return tuple(m.spend(now) for m in self._meters)

    def lease_windows(self, now: float) -> tuple[LeaseWindow, ...]:
        """Every limit's current window, for a lease request."""
        now = self._tick(now)
        self._sweep(now)
        return tuple(m.lease_window(now) for m in self._meters)

    @property
    def meters(self) -> tuple[_Meter, ...]:
        return tuple(self._meters)

    def in_flight(self) -> int:
        """Attempts holding a reservation now (joined retries count once each)."""
        return sum(e.holders for e in self._live)

    def knows(self, request_id: str) -> bool:
        return request_id in self._entries
