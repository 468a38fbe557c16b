"""Where the runtime gets the time: wall-clock milliseconds and waits.

Every timer of the runtime goes through a ``Clock`` so tests can substitute
one they control. Deadlines are wall-clock epoch milliseconds because they
are journaled and must mean the same thing after a restart.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Protocol


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock:
    """The real clock: ``time.time`` and the event loop's timers."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000  # an int straight away: cheaper than int(time.time() * 1000)

    async def sleep(self, ms: float) -> None:
        await asyncio.sleep(max(0.0, ms) / 1000.0)

    async def sleep_until(self, deadline_ms: float) -> None:
        await self.sleep(deadline_ms - time.time() * 1000)

    def call_at(self, deadline_ms: float, callback: Callable[[], None]) -> TimerHandle:
        delay = max(0.0, deadline_ms - time.time() * 1000) / 1000.0
        return asyncio.get_running_loop().call_later(delay, callback)


SYSTEM_CLOCK = Clock()
