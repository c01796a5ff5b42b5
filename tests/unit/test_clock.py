"""``SystemClock`` reads the monotonic and the wall clock (``time.monotonic``, ``time.time``)."""

from __future__ import annotations

import time

from sluice_sidecar.clock import Clock, SystemClock


def test_now_is_the_monotonic_clock_and_wall_the_unix_time() -> None:
    clock: Clock = SystemClock()
    before, before_wall = time.monotonic(), time.time()
    now, wall = clock.now(), clock.wall()
    after, after_wall = time.monotonic(), time.time()
    assert before <= now <= after
    assert before_wall <= wall <= after_wall
    assert isinstance(now, float) and isinstance(wall, float)
