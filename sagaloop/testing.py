"""Tools for testing workflows: a clock you control, and injected step failures.

``VirtualClock`` replaces the real clock of one engine: durable timers,
``ctx.sleep``, signal timeouts, retry waits and the workflow timeout follow
it, and ``await clock.advance("30d")`` fires everything that falls due, in
order, letting the workflows run between timers — a month of workflow in
milliseconds of wall time. (Step ``timeout``s stay in real time: they bound
real work.)

``fail_step(engine, tag, times=1)`` makes the next attempts of a step raise
without touching its handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from typing import Any, Callable, Iterator

from .errors import InvalidArgumentError
from .runtime.clock import Clock
from .runtime.decisions.durations import parse_duration

__all__ = ["VirtualClock", "fail_step"]


class _Timer:
    __slots__ = ("deadline", "seq", "action", "cancelled")

    def __init__(self, deadline: float, seq: int, action: Callable[[], None]) -> None:
        self.deadline = deadline
        self.seq = seq
        self.action = action
        self.cancelled = False

    def __lt__(self, other: "_Timer") -> bool:
        return (self.deadline, self.seq) < (other.deadline, other.seq)

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock(Clock):
    """A clock that moves only when told to.

    Example::

        clock = sagaloop.testing.VirtualClock()
        async with sagaloop.Engine(path, clock=clock) as engine:
            ...  # a workflow that sleeps 30 days
            await clock.advance("30d")

    Args:
        start_ms: the starting time in epoch milliseconds (default: now).
    """

    def __init__(self, start_ms: float | None = None) -> None:
        self._now = float(time.time() * 1000 if start_ms is None else start_ms)
        self._timers: list[_Timer] = []
        self._seq = itertools.count()
        self._activity = 0
        self._probe: Callable[[], int] = lambda: 0
        self._owner: object | None = None

    # -- the Clock interface ---------------------------------------------------------

    def now_ms(self) -> int:
        return int(self._now)

    async def sleep(self, ms: float) -> None:
        await self.sleep_until(self._now + max(0.0, ms))

    async def sleep_until(self, deadline_ms: float) -> None:
        if deadline_ms <= self._now:
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()
        timer = self._push(deadline_ms, lambda: future.done() or future.set_result(None))
        try:
            await future
        finally:
            timer.cancel()

    def call_at(self, deadline_ms: float, callback: Callable[[], None]) -> _Timer:
        return self._push(deadline_ms, callback)

    def bind(self, owner: object, probe: Callable[[], int]) -> None:
        """Attach to one engine (``probe`` counts its commits, to tell when it has gone idle)."""
        if self._owner is not None and self._owner is not owner:
            raise InvalidArgumentError("a VirtualClock drives one engine at a time; give each engine its own "
                                       "clock (or close the first before opening the next)")
        self._owner = owner
        self._probe = probe

    def unbind(self, owner: object) -> None:
        """Detach from a closed engine, so a reopened one can use this clock (and its time) again."""
        if self._owner is owner:
            self._owner = None
            self._probe = lambda: 0

    # -- moving time -----------------------------------------------------------------

    async def advance(self, duration: Any) -> None:
        """Move time forward by ``duration``, firing every timer that falls due, in order.

        Between timers the workflows run until they are idle again, so timers
        they set while the clock advances fire too if they fall within the span.
        """
        target = self._now + parse_duration(duration, name="advance")
        while True:
            await self.settle()
            timer = self._next_live()
            if timer is None or timer.deadline > target:
                break
            heapq.heappop(self._timers)
            self._now = max(self._now, timer.deadline)
            timer.action()
        self._now = max(self._now, target)
        await self.settle()

    async def settle(self) -> None:
        """Let the engine run until nothing changes for a few loop turns."""
        quiet = 0
        last = (self._activity, self._probe())
        for _ in range(100_000):
            await asyncio.sleep(0)
            now = (self._activity, self._probe())
            quiet = quiet + 1 if now == last else 0
            last = now
            if quiet >= 20:
                return

    @property
    def pending_timers(self) -> int:
        return sum(1 for t in self._timers if not t.cancelled)

    def _push(self, deadline: float, action: Callable[[], None]) -> _Timer:
        timer = _Timer(deadline, next(self._seq), action)
        heapq.heappush(self._timers, timer)
        self._activity += 1
        return timer

    def _next_live(self) -> _Timer | None:
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0] if self._timers else None


@contextlib.contextmanager
def fail_step(engine: Any, tag: str, times: int = 1, error: BaseException | None = None) -> Iterator[None]:
    """Make the next ``times`` attempts of step ``tag`` raise ``error``.

    The default error is a ``RuntimeError`` naming the step. The handler is
    not called for an attempt that is made to fail. Leaving the block removes
    what is left of the injection.
    """
    if isinstance(times, bool) or not isinstance(times, int) or times < 1:
        raise InvalidArgumentError(f"times must be a positive int, got {times!r}")
    faults = engine._runtime.faults
    faults[tag] = [times, error if error is not None else RuntimeError(f"fail_step: injected failure of step {tag!r}")]
    try:
        yield
    finally:
        faults.pop(tag, None)
