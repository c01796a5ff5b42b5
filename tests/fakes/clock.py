"""A fake ``Clock``: time moves only when the code under test sleeps (or the test says so)."""

from __future__ import annotations

import asyncio


class FakeClock:
    def __init__(self, start: float = 1000.0, wall: float = 1_800_000_000.0) -> None:
        self.t = start
        self._wall_offset = wall - start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return self.t + self._wall_offset

    def advance(self, seconds: float) -> None:
        self.t += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)
