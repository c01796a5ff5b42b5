"""Budget leases (Doorman-style), the arithmetic only: NOT wired in yet.

The plan (DESIGN.md "Budgets across replicas", the ``budget`` package docstring): the operator
grants each sidecar process a slice of each budget window, the sidecar uses ``spent + slice`` as
its local cap (admission stays local: no network call on the request path), and reports its
settled spend as it does today (``reports.BudgetSpend``). This module is the operator's book for
one window of one limit; it decides how much may be granted so that the limit holds however grants,
reports, expiries and restarts interleave.

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

from dataclasses import dataclass, field

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
    """The leases of one window of one limit."""

    limit: Limit
    ttl: float = 30.0
    skew: float = 5.0  # added to every expiry on the operator's side (clock skew, delivery)
    holders: dict[str, Holder] = field(default_factory=dict)

    def charged(self, now: float, *, without: str | None = None) -> Values:
        total = ZERO
        for name, h in self.holders.items():
            if name != without:
                total = _add(total, h.charged(now))
        return total

    def report(self, holder: str, spent: Values) -> None:
        """A holder's settled spend in the window (a gauge: never lowers what was seen)."""
        h = self.holders.setdefault(holder, Holder())
        h.spent = _max(h.spent, spent)

    def grant(self, holder: str, want: Values, now: float) -> Grant:
        """Renew ``holder``'s lease with up to ``want`` on top of its spend (per metric, only what
        the limit leaves once every other holder's charge is counted). A live lease never shrinks:
        the holder may already be spending it."""
        h = self.holders.setdefault(holder, Holder())
        others = self.charged(now, without=holder)
        floor = h.charged(now)  # a live cap stays; an expired one fell to the spend
        cap = []
        for i in range(3):
            lim = self.limit[i]
            wanted = h.spent[i] + max(0, want[i])
            if lim is None:
                cap.append(max(floor[i], wanted))
                continue
            room = max(0, lim - others[i])
            cap.append(max(floor[i], min(wanted, room)))
        new: Values = (cap[0], cap[1], cap[2])
        h.cap = new
        h.expires = now + self.ttl + self.skew
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
            h.cap, h.expires = h.spent, float("-inf")

    def room(self, now: float) -> Values:
        """What could still be granted in each limited metric (0 where unlimited)."""
        charged = self.charged(now)
        return (
            max(0, (self.limit[0] or 0) - charged[0]) if self.limit[0] is not None else 0,
            max(0, (self.limit[1] or 0) - charged[1]) if self.limit[1] is not None else 0,
            max(0, (self.limit[2] or 0) - charged[2]) if self.limit[2] is not None else 0,
        )
