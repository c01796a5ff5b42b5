"""Time as a dependency: the ``Clock`` the sidecar reads and sleeps on, so tests can fake it.

Owns nothing but the protocol and the real implementation. ``now`` is monotonic seconds (breakers,
cool-downs, deadlines, durations); ``wall`` is Unix time (audit records, HTTP-date Retry-After).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    def wall(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock; ``now`` is the event loop's clock (``time.monotonic``). ``now`` and
    ``wall`` are the ``time`` functions themselves (no Python frame around each read: the
    request path reads the clock about ten times per request)."""

    now = staticmethod(time.monotonic)
    wall = staticmethod(time.time)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
