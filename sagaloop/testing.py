"""Tools for testing workflows: a clock you control, idleness, and injected step failures.

``VirtualClock`` replaces the real clock of one engine: durable timers,
``ctx.sleep``, signal timeouts, retry waits and the workflow timeout follow
it, and ``await clock.advance("30d")`` fires everything that falls due, in
order, letting the workflows run between timers — a month of workflow in
milliseconds of wall time. (Step ``timeout``s stay in real time: they bound
real work.)

``await wait_idle(engine)`` returns once the engine has nothing left to do
by itself: every write is committed and every live run is blocked on a
signal, a timer or a child (or has ended). Tests wait on it instead of
sleeping a guessed while.

``await wait_committed(engine)`` only waits for the writes queued so far to
be committed (from inside a step, say, before a test kills the process).

``fail_step(engine, tag, times=1)`` makes the next attempts of a step raise
without touching its handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import time
from typing import Any, Callable, Iterator

from .errors import InvalidArgumentError
from .runtime.clock import Clock
from .runtime.decisions.durations import parse_duration

__all__ = ["VirtualClock", "fail_step", "wait_committed", "wait_idle"]


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


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
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        timer = self._push(deadline_ms, functools.partial(_wake, future))
        try:
            await future
        finally:
            timer.cancel()

    def call_at(self, deadline_ms: float, callback: Callable[[], None]) -> _Timer:
        return self._push(deadline_ms, callback)

    def bind(self, owner: object, probe: Callable[[], int]) -> None:
        """Attach to one engine's runtime (``owner``, which the idleness rule reads).

        ``probe`` (a count of the engine's commits) is accepted for the
        runtime's call and kept, but no longer needed: ``owner`` tells all.
        """
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

    async def advance(self, duration: Any, *, timeout: float = 10.0, wait_for_steps: bool = True) -> None:
        """Move time forward by ``duration``, firing every timer that falls due, in order.

        Between timers the workflows run until the engine is idle again (see
        ``wait_idle``), so timers they set while the clock advances fire too
        if they fall within the span. ``timeout`` bounds, in real seconds,
        each of those waits: past it ``TimeoutError`` names what is still
        busy (a step that really runs that long, say).

        Step handlers run in real time. To move the clock while a step is
        held on purpose (an event the test sets later, a step that hangs until
        the workflow timeout interrupts it), pass ``wait_for_steps=False``: a
        run inside a step handler then counts as idle (everything else is
        still waited for, the rollback a timeout starts included).
        """
        target = self._now + parse_duration(duration, name="advance")
        while True:
            await self.settle(timeout=timeout, wait_for_steps=wait_for_steps)
            timer = self._next_live()
            if timer is None or timer.deadline > target:
                break
            heapq.heappop(self._timers)
            self._now = max(self._now, timer.deadline)
            timer.action()
        self._now = max(self._now, target)
        await self.settle(timeout=timeout, wait_for_steps=wait_for_steps)

    async def settle(self, *, timeout: float = 10.0, wait_for_steps: bool = True) -> None:
        """Let the engine run until it is idle (``wait_idle``'s rule), without moving time.

        Setting a timer counts as activity too. ``timeout`` and
        ``wait_for_steps`` are as for ``advance``. A clock bound to no engine
        only lets the loop turn a few times.
        """
        if self._owner is None:
            for _ in range(_QUIET_TURNS):
                await asyncio.sleep(0)
            return
        await _until_idle(self._owner, timeout, wait_for_steps, lambda: self._activity)

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


# -- idleness -------------------------------------------------------------------------------

# How many loop turns in a row the engine must look idle, with no new commit and no new timer.
# A few hops of callbacks can separate two states that both look idle (a child's end reaches its
# parent, blocked on it, two turns later): a handful of turns covers them at no real cost.
_QUIET_TURNS = 5
# While something is busy without a commit to wait on (a step doing real work), poll: first by
# loop turns, then by short real sleeps growing to this bound, so a long step does not spin.
_SPIN_TURNS = 50
_MAX_POLL_S = 0.02


async def wait_idle(engine: Any, *, timeout: float = 10.0) -> None:
    """Return once ``engine`` is idle: nothing will happen in it until the outside world acts.

    Idle means, for a few loop turns in a row with no new commit:

    * every write queued to the store is committed (its group commit has landed);
    * every live run is blocked on a signal, a timer (a ``ctx.sleep``, a signal
      timeout, a retry wait) or a child, or has ended; a run whose step really
      runs (``await asyncio.sleep(0.2)`` in a step handler, say) is busy until
      the step ends, and so is a run answering a queued query or update;
    * no run is being loaded back (recovery at open, or after a failed commit);
    * no background task of the engine is pending. That includes a run stopped
      by a failed commit: it waits in such a task for a real-time pause
      (0.05 s, doubling up to 5 s) and then resumes by itself, so it counts as
      busy, not blocked, and ``wait_idle`` waits for it to resume (and block or
      end); while the store keeps failing, it times out naming that run.

    A closed engine is idle. Timers of the real clock are not waited for: a run
    in a 1 h ``ctx.sleep`` is blocked (under a ``VirtualClock``, ``advance``
    fires timers and uses this same rule between them).

    Example::

        from sagaloop.testing import wait_idle

        await engine.workflows.execute(product="shop", env="test", tag="order",
                                       workflow_id="wf-1", wait=False)
        await wait_idle(engine)  # its steps ran; it now waits for "approved"
        status = await engine.workflows.status(product="shop", env="test", workflow_id="wf-1")
        assert status.waiting_for == "signal approved"

    Args:
        engine: a ``sagaloop.Engine`` (open or closed).
        timeout: real seconds to wait at the most.

    Raises:
        TimeoutError: the engine is still busy after ``timeout`` seconds; the
            message names what is busy (each run that is not blocked, with its
            workflow and current step, a pending commit, a run being loaded back).
    """
    await _until_idle(engine, timeout, True)


async def wait_committed(engine: Any, *, timeout: float = 10.0) -> None:
    """Return once every write queued to ``engine``'s store so far is committed.

    Unlike ``wait_idle`` it does not wait for the runs: a step handler can call
    it, to make sure what the engine recorded before (a step's "running" record
    is queued at the step's first suspension, so ``await asyncio.sleep(0)``
    first) is durable before, say, the test kills the process. A closed engine
    has nothing to commit.

    Example::

        async def step():
            await asyncio.sleep(0)          # the step's "running" record is queued now
            await wait_committed(engine)    # ... and committed now
            print("IN-STEP", flush=True)    # the test SIGKILLs us when it reads this

    Raises:
        TimeoutError: the commit has not landed after ``timeout`` real seconds.
        StorageError: the commit failed.
    """
    commit = _look(engine, False)[0]
    if commit is not None:
        async with asyncio.timeout(timeout):
            await asyncio.shield(commit)


async def _until_idle(target: Any, timeout: float, wait_for_steps: bool,
                      activity: Callable[[], int] = lambda: 0) -> None:
    """``wait_idle``'s rule, shared with ``VirtualClock.settle`` (which adds its timers to ``activity``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    quiet, busy_turns, last = 0, 0, None
    while True:
        commit, groups, busy = _look(target, wait_for_steps)
        if commit is not None and not commit.done():
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(_not_idle(timeout, ["a group commit of the store has not landed"] + busy))
            await asyncio.wait([commit], timeout=left)  # never raises what the commit raised
            quiet = 0
            continue
        mark = (groups, activity())
        quiet = quiet + 1 if not busy and mark == last else 0
        last = mark
        if quiet >= _QUIET_TURNS:
            return
        if loop.time() >= deadline:
            if busy:
                raise TimeoutError(_not_idle(timeout, busy))
            if quiet == 0:  # commits or timers keep coming without anything named busy
                raise TimeoutError(_not_idle(timeout, ["the store keeps committing"]))
        busy_turns = busy_turns + 1 if busy else 0
        if busy_turns <= _SPIN_TURNS:
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(min(_MAX_POLL_S, 0.001 * 2 ** ((busy_turns - _SPIN_TURNS) // 10)))


def _not_idle(timeout: float, busy: list[str]) -> str:
    return f"the engine is not idle after {timeout} s: " + "; ".join(busy)


def _look(target: Any, wait_for_steps: bool) -> tuple[asyncio.Future[None] | None, int, list[str]]:
    """Read the engine's state: (the store's current commit future or None when the store is closed,
    its count of committed groups, what is busy). A run inside a step handler is busy only if
    ``wait_for_steps``.

    The one place that reads engine internals (``target`` is an ``Engine`` or its runtime), to be
    adapted if the runtime changes shape.
    """
    rt = getattr(target, "_runtime", target)
    store = rt.store
    try:
        commit = store.commit()
    except Exception:  # not open (or closed): nothing is queued that could land
        return None, 0, []
    groups = store.stats.groups
    registry = rt.registry
    busy = []
    for wf, actor in list(registry.live.items()):
        run = actor.run
        if run.waiting_for is None and run.step_running:  # its step handler runs
            if wait_for_steps:
                busy.append(f"run {wf} (workflow {run.definition.tag!r}: in step {run.current_step!r})")
        elif run.waiting_for is None:
            busy.append(f"run {wf} (workflow {run.definition.tag!r}: {actor._phase}, "
                        f"current step {run.current_step!r})")
        elif actor._queue_task is not None:
            busy.append(f"run {wf} (workflow {run.definition.tag!r}: answering a query or update)")
    busy += [f"run {wf} (being started)" for wf in registry.reserved]
    busy += [f"run {wf} (being loaded back)" for wf in registry.resuming]
    scheduler = getattr(rt, "scheduler", None)
    if scheduler is not None and scheduler.busy:
        busy.append("the scheduler (messages in its mailbox)")
    pending = sum(1 for task in rt._background if not task.done())
    if pending:
        away = [wf for wf in registry.suspended if wf not in registry.live and wf not in registry.resuming]
        busy.append(f"{pending} background task(s) of the engine" +
                    (f" (runs stopped by a failed commit, to resume by themselves: {', '.join(away)})"
                     if away else ""))
    return commit, groups, busy


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
