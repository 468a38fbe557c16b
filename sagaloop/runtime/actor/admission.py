"""Admission: how many runs may be in their first burst of work at once.

A run that starts (new, resumed or a child) takes a *slot* before its
handler runs, and gives it back for good at the first moment it stops
being pure CPU work: it ends, blocks on a durable wait (signal, timer,
retry wait, child), or a step handler suspends on its own I/O. Runs
beyond the limit wait in arrival order.

Why: thousands of runs stepping in lockstep touch more memory per loop
turn than the CPU caches hold, and each step then waits on memory. With
a hundred or so at once the same work runs from the caches: W1 (10
trivial steps, 1,000 in flight) measured ~1.3x the steps/s with a limit
of 100 (bench/). A run waiting on I/O holds no slot, so I/O-bound work
is not limited.

A slot held longer than ``overdue_s`` stops counting: the oldest waiter
is let in anyway. That bounds the wait behind a handler that awaits
something directly (not through ``ctx``), which no hook can see, so
admission can slow runs down but never deadlock them.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from ...errors import InvalidArgumentError

DEFAULT_MAX_ACTIVE = "auto"  # FAST_MAX_ACTIVE with durability "fast", no limit with "durable"
FAST_MAX_ACTIVE = 100
OVERDUE_S = 1.0


def resolve_limit(max_active_runs: int | str | None, durability: str) -> int | None:
    """``"auto"``: a limit only where it pays. A ``durable`` step waits on the disk, and the more
    runs share each sync the cheaper it is for each: W1 at 1,000 in flight measured 97k steps/s
    with no limit, 70k with 100. A ``fast`` step is pure CPU work: there the limit wins (1.2x)."""
    if max_active_runs == "auto":
        return FAST_MAX_ACTIVE if durability == "fast" else None
    return max_active_runs  # type: ignore[return-value]


class Admission:
    """At most ``limit`` slots taken at once; ``None`` admits everyone at once."""

    __slots__ = ("limit", "overdue_s", "active", "_queue", "_sweep")

    def __init__(self, limit: int | None = FAST_MAX_ACTIVE, *, overdue_s: float = OVERDUE_S) -> None:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise InvalidArgumentError(f"max_active_runs must be a positive int, None or 'auto', not {limit!r}")
        self.limit = limit
        self.overdue_s = overdue_s
        self.active = 0
        self._queue: deque[tuple[float, asyncio.Future[None]]] = deque()  # (since, waiter), oldest first
        self._sweep: asyncio.TimerHandle | None = None

    def enter(self) -> asyncio.Future[None] | None:
        """Take a slot: None if taken at once, else a future that resolves when it is yours."""
        if self.limit is None:
            return None
        if self.active < self.limit and not self._queue:
            self.active += 1
            return None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._queue.append((time.monotonic(), waiter))
        if self._sweep is None:
            self._sweep = loop.call_later(self.overdue_s, self._let_overdue_in)
        return waiter

    def leave(self) -> None:
        """Give a slot back: the oldest waiter (still waiting) gets it."""
        queue = self._queue
        while queue:
            _, waiter = queue.popleft()
            if not waiter.done():  # a waiter that was cancelled meanwhile gave up its turn
                waiter.set_result(None)
                return
        self.active -= 1

    def _let_overdue_in(self) -> None:
        """The queue has not moved for ``overdue_s``: let the oldest in beyond the limit."""
        self._sweep = None
        queue = self._queue
        now = time.monotonic()
        while queue and (queue[0][1].done() or now - queue[0][0] >= self.overdue_s):
            _, waiter = queue.popleft()
            if not waiter.done():
                self.active += 1
                waiter.set_result(None)
        if queue:
            self._sweep = asyncio.get_running_loop().call_later(
                self.overdue_s - (now - queue[0][0]), self._let_overdue_in)

    def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
