"""Budget windows (pure): calendar windows across DST and month ends, the clock-step rule, and
rolling windows as a bounded ring. Property tests check the tiling invariants in many zones."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice_sidecar.budget.windows import (
    CalendarTracker,
    RollingRing,
    Window,
    calendar_window,
    zone,
)
from sluice_sidecar.contract import WindowKind

DAY, WEEK, MONTH = WindowKind.DAY, WindowKind.WEEK, WindowKind.MONTH
H = 3600.0

#: Zones with ordinary DST, odd offsets, 30-minute DST, DST at midnight, and a skipped date.
ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/St_Johns",
    "America/Sao_Paulo",
    "Pacific/Apia",
    "Pacific/Chatham",
    "Africa/Casablanca",
    "Asia/Tehran",
    "America/Havana",
]


def at(tz: str, iso: str) -> float:
    return datetime.fromisoformat(iso).replace(tzinfo=zone(tz)).timestamp()


def local(tz: str, t: float) -> datetime:
    return datetime.fromtimestamp(t, zone(tz))


def window(kind: WindowKind, tz: str, iso: str) -> Window:
    return calendar_window(kind, zone(tz), at(tz, iso))


# --- DST ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "day", "hours"),
    [
        ("Europe/Berlin", "2025-03-30", 23),  # spring forward 02:00 → 03:00
        ("Europe/Berlin", "2025-10-26", 25),  # fall back 03:00 → 02:00
        ("Europe/Berlin", "2025-06-15", 24),
        ("America/New_York", "2025-03-09", 23),
        ("America/New_York", "2025-11-02", 25),
        ("America/New_York", "2024-03-10", 23),
        ("America/New_York", "2024-11-03", 25),
    ],
)
def test_dst_days_last_23_or_25_hours_from_local_midnight(tz: str, day: str, hours: int) -> None:
    for clock in ("00:00", "01:30", "02:30", "12:00", "23:59:59"):
        w = window(DAY, tz, f"{day}T{clock}")
        assert w.resets_at - w.start == hours * H
        start, end = local(tz, w.start), local(tz, w.resets_at)
        assert (start.date().isoformat(), start.hour, start.minute) == (day, 0, 0)
        assert end.date() == date.fromisoformat(day) + timedelta(days=1)
        assert (end.hour, end.minute) == (0, 0)


def test_fall_back_hour_is_counted_once_in_the_same_day() -> None:
    tz = zone("America/New_York")
    # 01:30 happens twice on 2025-11-02: 05:30 UTC (EDT) and 06:30 UTC (EST).
    first = datetime(2025, 11, 2, 5, 30, tzinfo=UTC).timestamp()
    second = datetime(2025, 11, 2, 6, 30, tzinfo=UTC).timestamp()
    assert calendar_window(DAY, tz, first) == calendar_window(DAY, tz, second)


def test_the_missing_hour_does_not_open_a_window() -> None:
    tz = zone("Europe/Berlin")
    before = at("Europe/Berlin", "2025-03-30T01:59:59")
    after = before + 1  # 03:00:00 CEST
    assert local("Europe/Berlin", after).hour == 3
    assert calendar_window(DAY, tz, before) == calendar_window(DAY, tz, after)


def test_midnight_that_does_not_exist_starts_the_day_at_its_first_instant() -> None:
    # Sao Paulo sprang forward at 00:00 on 2018-11-04: that day began at 01:00 local.
    w = window(DAY, "America/Sao_Paulo", "2018-11-04T12:00")
    assert local("America/Sao_Paulo", w.start).hour == 1
    assert w.resets_at - w.start == 23 * H
    prev = calendar_window(DAY, zone("America/Sao_Paulo"), w.start - 1)
    assert prev.resets_at == w.start


def test_a_skipped_date_has_no_window() -> None:
    # Samoa skipped 2011-12-30 entirely: the 29th's window ends where the 31st's begins.
    w29 = window(DAY, "Pacific/Apia", "2011-12-29T12:00")
    w31 = window(DAY, "Pacific/Apia", "2011-12-31T12:00")
    assert w29.resets_at == w31.start


def test_week_starts_monday_midnight_local_across_dst() -> None:
    w = window(WEEK, "Europe/Berlin", "2025-03-30T12:00")  # a Sunday, DST day
    assert local("Europe/Berlin", w.start).isoformat() == "2025-03-24T00:00:00+01:00"
    assert local("Europe/Berlin", w.resets_at).isoformat() == "2025-03-31T00:00:00+02:00"
    assert w.resets_at - w.start == 7 * 24 * H - H


# --- month ends ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("iso", "start", "reset"),
    [
        ("2025-01-31T23:59:59", "2025-01-01", "2025-02-01"),
        ("2025-02-01T00:00:00", "2025-02-01", "2025-03-01"),
        ("2025-02-28T23:59:59", "2025-02-01", "2025-03-01"),
        ("2024-02-29T12:00:00", "2024-02-01", "2024-03-01"),
        ("2024-02-28T23:00:00", "2024-02-01", "2024-03-01"),
        ("2025-12-31T23:59:59", "2025-12-01", "2026-01-01"),
        ("2025-03-31T23:30:00", "2025-03-01", "2025-04-01"),  # DST month
    ],
)
def test_month_windows_at_month_ends(iso: str, start: str, reset: str) -> None:
    for tz in ("UTC", "Europe/Berlin", "America/New_York"):
        w = window(MONTH, tz, iso)
        assert local(tz, w.start).isoformat()[:19] == f"{start}T00:00:00"
        assert local(tz, w.resets_at).isoformat()[:19] == f"{reset}T00:00:00"


def test_month_lengths() -> None:
    tz = "UTC"
    assert (
        window(MONTH, tz, "2024-02-10T00:00").resets_at
        - window(MONTH, tz, "2024-02-10T00:00").start
        == 29 * 24 * H
    )
    w = window(MONTH, tz, "2025-02-10T00:00")
    assert w.resets_at - w.start == 28 * 24 * H
    w = window(MONTH, "Europe/Berlin", "2025-03-10T00:00")
    assert w.resets_at - w.start == 31 * 24 * H - H


def test_same_instant_different_zones_different_days() -> None:
    t = datetime(2025, 6, 1, 23, 30, tzinfo=UTC).timestamp()
    berlin = calendar_window(DAY, zone("Europe/Berlin"), t)  # already June 2nd there
    ny = calendar_window(DAY, zone("America/New_York"), t)  # still June 1st
    assert local("Europe/Berlin", berlin.start).day == 2
    assert local("America/New_York", ny.start).day == 1


def test_unknown_zone_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        zone("Mars/Olympus_Mons")
    with pytest.raises(ValueError):
        zone("../etc/passwd")


# --- properties ---------------------------------------------------------------------------------

instants = st.integers(min_value=946_684_800, max_value=4_102_444_800).map(float)  # 2000..2100
fractions = st.floats(min_value=0, max_value=0.999, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    tz=st.sampled_from(ZONES),
    kind=st.sampled_from([DAY, WEEK, MONTH]),
    t=instants,
    frac=fractions,
)
def test_windows_tile_time(tz: str, kind: WindowKind, t: float, frac: float) -> None:
    z = zone(tz)
    t += frac
    w = calendar_window(kind, z, t)
    assert w.start <= t < w.resets_at
    # The next window starts exactly at resets_at; the previous one ends exactly at start.
    nxt = calendar_window(kind, z, w.resets_at)
    assert nxt.start == w.resets_at
    assert calendar_window(kind, z, w.start) == w
    assert calendar_window(kind, z, w.start - 0.5).resets_at == w.start
    assert calendar_window(kind, z, w.resets_at - 0.5) == w
    # Plausible lengths (Apia's skipped day makes one 24h "day" out of 48h of dates).
    length = w.resets_at - w.start
    lo, hi = {DAY: (20 * H, 26 * H), WEEK: (7 * 24 * H - 25 * H, 7 * 24 * H + 25 * H)}.get(
        kind, (27 * 24 * H, 31 * 24 * H + 25 * H)
    )
    assert lo <= length <= hi


@settings(max_examples=200, deadline=None)
@given(
    tz=st.sampled_from(["Europe/Berlin", "America/New_York", "UTC", "Australia/Lord_Howe"]),
    kind=st.sampled_from([DAY, WEEK, MONTH]),
    t=instants,
)
def test_window_starts_are_local_period_starts(tz: str, kind: WindowKind, t: float) -> None:
    w = calendar_window(kind, zone(tz), t)
    s = local(tz, w.start)
    assert (s.hour, s.minute, s.second) == (0, 0, 0)  # these zones never skip midnight
    assert s.date() == local(tz, t).date() or kind is not DAY
    if kind is WEEK:
        assert s.weekday() == 0
    if kind is MONTH:
        assert s.day == 1 and (s.year, s.month) == (local(tz, t).year, local(tz, t).month)


@settings(max_examples=200, deadline=None)
@given(
    tz=st.sampled_from(ZONES),
    kind=st.sampled_from([DAY, WEEK, MONTH]),
    start=instants,
    steps=st.lists(st.floats(min_value=-3 * 86400, max_value=2 * 86400), max_size=40),
)
def test_clock_steps_never_reopen_or_restart_a_window(
    tz: str, kind: WindowKind, start: float, steps: list[float]
) -> None:
    """However the wall clock jumps, the tracker's windows only move forwards, each window is
    opened once, and the window in use always contains the latest instant seen."""
    tracker = CalendarTracker(kind, zone(tz))
    t = start
    high = t
    opened: list[Window] = [tracker.window(t)]
    for step in steps:
        t += step
        high = max(high, t)
        w = tracker.window(t)
        if w != opened[-1]:
            assert w.start >= opened[-1].resets_at  # forwards only
            assert w not in opened
            opened.append(w)
        assert w.start <= high < w.resets_at


def test_ntp_step_back_within_a_window_keeps_counting_in_it() -> None:
    tr = CalendarTracker(DAY, zone("Europe/Berlin"))
    noon = at("Europe/Berlin", "2025-05-10T12:00")
    w = tr.window(noon)
    assert tr.window(noon - 2 * H) is w


def test_ntp_step_back_across_midnight_keeps_the_later_window() -> None:
    tr = CalendarTracker(DAY, zone("Europe/Berlin"))
    after = at("Europe/Berlin", "2025-05-11T00:00:30")
    w11 = tr.window(after)
    back = tr.window(after - 60)  # 23:59:30 on the 10th by the wall clock
    assert back is w11
    assert tr.window(after + 60) is w11  # and moving on again does not open it twice


def test_ntp_step_forward_rolls_over() -> None:
    tr = CalendarTracker(DAY, zone("UTC"))
    t = datetime(2025, 5, 10, 23, 59, tzinfo=UTC).timestamp()
    w10 = tr.window(t)
    w11 = tr.window(t + 120)
    assert w11.start == w10.resets_at


def test_tracker_rejects_rolling() -> None:
    with pytest.raises(ValueError):
        CalendarTracker(WindowKind.ROLLING, zone("UTC"))


# --- rolling ------------------------------------------------------------------------------------


def test_rolling_ring_counts_for_duration_plus_at_most_one_bucket() -> None:
    ring = RollingRing(3600, buckets=60, channels=1)  # 60 s buckets
    ring.add(1000.0, [5])
    assert ring.totals(1000.0) == (5,)
    assert ring.totals(1000.0 + 3600) == (5,)  # still inside: never forgotten early
    assert ring.totals(960.0 + 3600 + 60) == (0,)  # gone once its bucket is a full hour old
    ring.add(10_000.0, [1])
    assert ring.totals(10_000.0 + 3599) == (1,)


@settings(max_examples=200, deadline=None)
@given(
    adds=st.lists(
        st.tuples(st.floats(min_value=0, max_value=20_000), st.integers(1, 100)), max_size=50
    ),
    probe=st.floats(min_value=0, max_value=25_000),
)
def test_rolling_ring_is_conservative(adds: list[tuple[float, int]], probe: float) -> None:
    """Whatever was added in the last ``duration`` seconds is always counted; nothing older than
    ``duration + width`` is."""
    duration, buckets = 600.0, 10
    width = duration / buckets
    ring = RollingRing(duration, buckets=buckets, channels=1)
    adds = sorted(adds)
    for t, v in adds:
        if t <= probe:
            ring.add(t, [v])
    total = ring.totals(probe)[0]
    must = sum(v for t, v in adds if probe - duration <= t <= probe)
    may = sum(v for t, v in adds if probe - duration - width < t <= probe)
    assert must <= total <= may


def test_rolling_ring_clock_back_counts_at_the_head() -> None:
    ring = RollingRing(60, buckets=6, channels=2)
    ring.add(1000.0, [1, 10])
    ring.add(900.0, [2, 20])  # the clock went back 100 s: counted now, not in the past
    assert ring.totals(1000.0) == (3, 30)
    assert ring.totals(1000.0 + 60) == (3, 30)
    assert ring.totals(1000.0 + 71) == (0, 0)


def test_rolling_until_freed_and_span() -> None:
    ring = RollingRing(600, buckets=10, channels=1)  # 60 s buckets
    ring.add(0.0, [3])
    ring.add(120.0, [4])
    now = 300.0
    assert ring.until_freed(now, 0, 0) == 0.0
    assert ring.until_freed(now, 0, 3) == 660.0 - now  # bucket 0 leaves at (0 + 11) * 60
    assert ring.until_freed(now, 0, 5) == 780.0 - now  # bucket 2 leaves at (2 + 11) * 60
    assert ring.until_freed(now, 0, 8) is None
    span = ring.span(now)
    assert span.start == (5 - 10) * 60 and span.resets_at == 660.0
    assert ring.totals(660.0) == (4,)


def test_rolling_ring_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RollingRing(0)


def test_rolling_ring_memory_is_bounded() -> None:
    ring = RollingRing(3600, buckets=60, channels=3)
    for i in range(10_000):
        ring.add(float(i * 7), [1, 2, 3])
    assert len(ring._buckets) == 61
