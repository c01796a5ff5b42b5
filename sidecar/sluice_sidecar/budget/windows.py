"""Budget window arithmetic: which window an instant falls in, and when that window resets.

Owns the three things a budget limit needs to know about time and nothing else:

* ``calendar_window(kind, tz, t)``: the Day / Week / Month window containing the instant ``t``
  (UTC epoch seconds) in the IANA zone ``tz``. A Day starts at local midnight, a Week on Monday at
  00:00 local, a Month on the first at 00:00 local. A window ends exactly where the next one starts
  (``resets_at``), so windows tile the time line with no overlap and no gap. DST is handled by
  construction: a window's boundaries are the UTC instants of local midnights, so a spring-forward
  day lasts 23 hours and a fall-back day 25. A midnight that does not exist (zones that switch
  DST at 00:00) is replaced by the first instant of that date; a date a zone skipped entirely
  (Pacific/Apia, 2011-12-30) yields no window at all.
* ``CalendarTracker``: the current calendar window of one limit, with **the clock-step rule**: a
  window's counters are keyed by its start; when the wall clock moves backwards (an NTP step, a
  VM resumed with a stale clock) inside the current window, counting continues in it; when it
  moves backwards across a boundary, the later window stays current. A closed window is never
  re-opened and a window is never started twice, so a clock step can neither reset a budget early
  nor count it twice. Moving forwards is indistinguishable from time passing and rolls over.
* ``RollingRing``: a rolling window (the last ``duration`` seconds) as a ring of ``buckets + 1``
  integer buckets, so memory is bounded whatever the traffic. It is conservative: an amount
  counts for between ``duration`` and ``duration + duration / buckets`` seconds after it was
  added, never less. The same clock-step rule applies (time never moves its head backwards).

Pure: instants are passed in, nothing reads a clock; zones come from ``zoneinfo`` (the system
database or the ``tzdata`` package).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..contract import WindowKind

#: Buckets of a rolling window: its resolution is ``duration / ROLLING_BUCKETS``.
ROLLING_BUCKETS = 60


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open interval ``[start, resets_at)`` of UTC epoch seconds."""

    start: float
    resets_at: float

    def __contains__(self, t: float) -> bool:
        return self.start <= t < self.resets_at


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ``ValueError`` when it is unknown or malformed."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"unknown time zone {name!r}") from err


def _period_start(kind: WindowKind, d: date) -> date:
    if kind is WindowKind.DAY:
        return d
    if kind is WindowKind.WEEK:
        return d - timedelta(days=d.weekday())
    if kind is WindowKind.MONTH:
        return d.replace(day=1)
    raise ValueError(f"{kind} is not a calendar window")


def _shift(kind: WindowKind, d: date, n: int) -> date:
    """The first date of the period ``n`` periods after the one starting on ``d``."""
    if kind is WindowKind.DAY:
        return d + timedelta(days=n)
    if kind is WindowKind.WEEK:
        return d + timedelta(days=7 * n)
    months = d.year * 12 + (d.month - 1) + n
    return date(months // 12, months % 12 + 1, 1)


def _boundary(tz: tzinfo, d: date) -> float:
    """The first instant of local date ``d``: its midnight, or with fold=0 semantics the moment
    the clock jumps over a non-existent midnight (and the earlier one of an ambiguous one)."""
    return datetime(d.year, d.month, d.day, tzinfo=tz).timestamp()


def calendar_window(kind: WindowKind, tz: tzinfo, t: float) -> Window:
    """The Day, Week or Month window in ``tz`` that contains the instant ``t``. A pure function.

    The window boundaries are the first instants of the period's first local dates, so they are
    non-decreasing in the date; the window is the latest boundary at or before ``t`` up to the
    first boundary after it. Looking one period either side of ``t``'s local date is enough even
    where a zone's local date runs backwards for a moment (a DST fold across midnight).
    """
    p = _period_start(kind, datetime.fromtimestamp(t, tz).date())
    lo, hi = -1, 2
    while True:
        bounds = [_boundary(tz, _shift(kind, p, n)) for n in range(lo, hi + 1)]
        before = [b for b in bounds if b <= t]
        after = [b for b in bounds if b > t]
        if before and after:
            return Window(max(before), min(after))
        if not before:
            lo -= 1
        if not after:
            hi += 1


class CalendarTracker:
    """The current calendar window of one limit, applying the clock-step rule (module doc)."""

    __slots__ = ("_current", "kind", "tz")

    def __init__(self, kind: WindowKind, tz: tzinfo) -> None:
        _period_start(kind, date(2000, 1, 1))  # rejects Rolling
        self.kind = kind
        self.tz = tz
        self._current: Window | None = None

    @property
    def current(self) -> Window | None:
        return self._current

    def window(self, t: float) -> Window:
        """The window counting at ``t``: the current one while ``t`` is before its reset (even if
        ``t`` went back before its start), else the window containing ``t``."""
        cur = self._current
        if cur is not None and t < cur.resets_at:
            return cur
        cur = self._current = calendar_window(self.kind, self.tz, t)
        return cur


class RollingRing:
    """Integer amounts (in ``channels`` parallel counters) over a rolling window, bucketed.

    Bucket ``i`` holds what was added during ``[i * width, (i + 1) * width)``; the window at head
    bucket ``h`` is buckets ``h - buckets … h``. Totals are kept incrementally, so reads are O(1).
    """

    __slots__ = ("_buckets", "_head", "_totals", "buckets", "channels", "duration", "width")

    def __init__(self, duration: float, buckets: int = ROLLING_BUCKETS, channels: int = 3) -> None:
        if not duration > 0 or buckets < 1 or channels < 1:
            raise ValueError("a rolling window needs a positive duration, buckets and channels")
        self.duration = float(duration)
        self.buckets = buckets
        self.channels = channels
        self.width = self.duration / buckets
        self._buckets = [[0] * channels for _ in range(buckets + 1)]
        self._head: int | None = None
        self._totals = [0] * channels

    def _advance(self, t: float) -> int:
        idx = math.floor(t / self.width)
        head = self._head
        if head is None:
            self._head = idx
            return idx
        if idx <= head:  # same bucket, or the clock went back: keep counting in the later one
            return head
        ring = len(self._buckets)
        if idx - head >= ring:
            for b in self._buckets:
                b[:] = [0] * self.channels
            self._totals = [0] * self.channels
        else:
            totals = self._totals
            for i in range(head + 1, idx + 1):
                b = self._buckets[i % ring]
                for c in range(self.channels):
                    totals[c] -= b[c]
                    b[c] = 0
        self._head = idx
        return idx

    def add(self, t: float, values: Sequence[int]) -> None:
        """Count ``values`` (one per channel) at ``t`` (at the head if ``t`` is in the past)."""
        head = self._advance(t)
        b = self._buckets[head % len(self._buckets)]
        for c, v in enumerate(values):
            b[c] += v
            self._totals[c] += v

    def totals(self, t: float) -> tuple[int, ...]:
        """What the window holds at ``t``, per channel."""
        self._advance(t)
        return tuple(self._totals)

    def until_freed(self, t: float, channel: int, amount: int) -> float | None:
        """Seconds from ``t`` until at least ``amount`` of ``channel`` has left the window
        (0 when ``amount`` ≤ 0); None when the window does not even hold that much."""
        if amount <= 0:
            return 0.0
        head = self._advance(t)
        now = max(t, head * self.width)
        ring = len(self._buckets)
        freed = 0
        for i in range(head - self.buckets, head + 1):
            freed += self._buckets[i % ring][channel]
            if freed >= amount:
                return max(0.0, (i + self.buckets + 1) * self.width - now)
        return None

    def span(self, t: float) -> Window:
        """The interval the window covers at ``t``, as ``[start, resets_at)``: ``resets_at`` is
        when its oldest non-empty bucket leaves (``t`` + one bucket when it is empty)."""
        head = self._advance(t)
        ring = len(self._buckets)
        start = (head - self.buckets) * self.width
        for i in range(head - self.buckets, head + 1):
            if any(self._buckets[i % ring]):
                return Window(start, (i + self.buckets + 1) * self.width)
        return Window(start, (head + 1) * self.width)
