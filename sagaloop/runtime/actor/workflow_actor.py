"""The workflow actor: one per live execution, owner of its ``Run``.

The actor's mailbox takes status, query, signal, update and cancel
messages while the handler runs in the actor's *drive* task, and never
waits on the handler: an update that arrives while a step runs, and a query
or update that arrives while a resumed run still replays its history (or
behind such an update), waits in the actor's *queue* and is answered there,
in arrival order, by a task of its own. Every value a message hands out is
a copy (``boundary``). A cancel or a workflow timeout
interrupts the handler at its current await; from the moment the handler
has ended, the run is *finishing* (rollback, end record) and nothing
interrupts it any more — only an engine shutdown, which leaves the run
in flight in the store, to be resumed by the next process.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from typing import Any, Callable

from ...actors import Actor
from ...errors import (
    EngineClosedError,
    HandlerCrashedError,
    NonDeterminismError,
    QueryNotFoundError,
    StepFailedError,
    StorageError,
    UpdateNotFoundError,
    UpdateRejectedError,
    WorkflowCancelledError,
    WorkflowEndedError,
    WorkflowTimeoutError,
)
from ..boundary import recorded, result_record, snapshot
from ..decisions.outcome import error_dict
from ..handler.context import RestrictedContext, WorkflowContext
from ..run import Run
from ..run.control import Outcome, RunSuspended
from ..run.signals import record_signal
from ..vocabulary import Phase, Record, Trigger
from ..clock import TimerHandle
from .admission import Admission
from .messages import Cancel, Message, Query, RequestCancel, Signal, Status, Update

log = logging.getLogger(__name__)


def _resolve(future: asyncio.Future[Any], record: Record | None, error: BaseException | None) -> None:
    if future.done():
        return  # a waiter that gave up
    if error is None:
        future.set_result(record)
    else:
        future.set_exception(error)
        future.exception()  # retrieved: nobody may be waiting


class WorkflowActor(Actor):
    """Drives one run and answers messages about it."""

    __slots__ = ("run", "ctx", "_ended", "_blocked_or_ended_waiters", "_end", "_blocked", "_on_end", "_phase",
                 "_drive_task", "_timer", "_admission", "_slot", "_queue", "_queue_task")

    def __init__(self, run: Run, on_end: Callable[[str, BaseException | None], None], admission: Admission) -> None:
        self.run = run
        self.ctx = WorkflowContext(run)
        run.ctx = self.ctx
        # Futures are made when someone asks for them: most runs are only ever awaited once.
        self._ended: asyncio.Future[Record] | None = None
        self._blocked_or_ended_waiters: list[asyncio.Future[Record | None]] | None = None
        self._end: tuple[Record | None, BaseException | None] | None = None  # (record, error) once ended
        self._blocked = False  # the handler has blocked on a signal, a timer or a child
        run.on_block = self._on_block
        run.on_wait_outside = self._release_slot
        self._admission = admission
        self._slot = False  # holds an admission slot (see admission.py)
        self._on_end = on_end
        self._phase: Phase = "starting"  # starting -> running -> finishing -> ended
        self._drive_task: asyncio.Task[None] | None = None
        self._timer: TimerHandle | None = None
        # Queries and updates that wait their turn (see the module docstring); made on first use.
        self._queue: deque[tuple[Query | Update, asyncio.Future[Any]]] | None = None
        self._queue_task: asyncio.Task[None] | None = None

    def begin(self) -> None:
        """Start driving the run (right after spawn). The actor itself is spawned lazily: its
        mailbox task only starts with the first message, which most runs never get."""
        self._drive_task = asyncio.get_running_loop().create_task(self._drive())
        deadline = self.run.record.get("deadline")
        if deadline is not None and self.run.resume_outcome is None:
            self._timer = self.run.clock.call_at(deadline, self._on_timeout)

    async def receive(self, message: Any) -> Any:
        """Answer a message. A query or an update answers with a future (see ``_must_queue``)."""
        if isinstance(message, Status):
            return snapshot(self.run.record if self._phase == "ended" else self.run.status_record())
        if isinstance(message, (Query, Update)):
            future = asyncio.get_running_loop().create_future()
            if self._must_queue(message):
                self._enqueue(message, future)
            else:
                try:
                    future.set_result(await self._answer(message))
                except Exception as exc:
                    future.set_exception(exc)
            return future
        if isinstance(message, Signal):
            return await self._signal(message)
        if isinstance(message, Cancel):
            return self._cancel(message.reason, message.trigger)
        if isinstance(message, RequestCancel):
            return await self._request_cancel()
        raise TypeError(f"workflow actor cannot handle {message!r}")

    def end_record(self) -> Record:
        """The end record for one caller to build its result from (``boundary.result_record``)."""
        return result_record(self.run.record)

    async def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        task = self._drive_task
        if task is not None and not task.done():
            task.cancel()  # engine shutdown: the run stays in flight in the store
            await asyncio.gather(task, return_exceptions=True)
        closed = EngineClosedError(f"the engine closed while workflow {self.run.workflow_id!r} was running; "
                                   f"it resumes when the engine opens again")
        if self._queue_task is not None:
            self._queue_task.cancel()
        for _, future in self._queue or ():
            _resolve(future, None, closed)
        if self._end is None:
            self._conclude(None, closed)
        self._release()

    def _release_slot(self) -> None:
        """Give the admission slot back, for good: the run waits on something outside it, or ended."""
        if self._slot:
            self._slot = False
            self._admission.leave()

    def _release(self, failure: BaseException | None = None) -> None:
        """Leave the engine's live table and let go of the run (idempotent)."""
        self._release_slot()
        if self._timer is not None:
            self._timer.cancel()
        self._on_end(self.run.workflow_id, failure)
        # Cut the run <-> actor <-> context cycles: an ended run is then freed by reference
        # counting at once, not left for the cyclic GC (which cost ~20% of W1's time at x1000).
        self.run.on_block = self.run.on_wait_outside = None
        self.run.ctx = None

    # -- messages ---------------------------------------------------------------------

    def _must_queue(self, message: Query | Update) -> bool:
        """Whether the message must wait its turn instead of being answered now.

        A query or an update must see the state after the replay (a resumed
        run) and after every update that arrived before it; an update runs
        between steps. None of these waits may hold up the mailbox.
        """
        if self._queue or self.run.replaying:
            return True
        return isinstance(message, Update) and self.run.step_running

    def _enqueue(self, message: Query | Update, future: asyncio.Future[Any]) -> None:
        if self._queue is None:
            self._queue = deque()
        self._queue.append((message, future))
        if isinstance(message, Update):
            self.run.updates_waiting += 1  # the step that ends next lets it in before going on
        if self._queue_task is None:
            self._queue_task = asyncio.get_running_loop().create_task(self._answer_queued())

    async def _answer_queued(self) -> None:
        """Answer the queued messages in arrival order, each when its turn has come."""
        run, queue = self.run, self._queue
        assert queue is not None
        try:
            while queue:
                message, future = queue[0]
                await run.replay_finished()
                if isinstance(message, Update):
                    await run.wait_between_steps()
                queue.popleft()
                try:
                    _resolve(future, await self._answer(message), None)
                except Exception as exc:
                    _resolve(future, None, exc)
                finally:
                    if isinstance(message, Update):
                        run.update_done()
        finally:
            self._queue_task = None

    async def _answer(self, message: Query | Update) -> Any:
        return await (self._query(message) if isinstance(message, Query) else self._update(message))

    async def _query(self, message: Query) -> Any:
        handler = self.run.definition.queries.get(message.name)
        if handler is None:
            raise QueryNotFoundError(f"workflow {self.run.definition.tag!r} has no query {message.name!r}")
        ctx = RestrictedContext(self.run, "query")
        value = handler(ctx) if message.args is None else handler(ctx, message.args)
        if inspect.isawaitable(value):
            value = await value
        return snapshot(value)

    async def _signal(self, message: Signal) -> None:
        """Make the signal durable, then deliver it; in mailbox order with queries and cancels."""
        if self._phase not in ("starting", "running"):
            raise WorkflowEndedError(f"workflow {self.run.workflow_id!r} has ended; it takes no more signals",
                                     workflow_id=self.run.workflow_id)
        run = self.run
        seq = run.inbox.next_seq
        encoded = await record_signal(run.store, run.workflow_id, seq=seq, next_event_seq=run.next_seq,
                                      name=message.name, payload=message.payload, now=run.clock.now_ms())
        run.inbox.next_seq = seq + 1
        run.inbox.deliver(seq, recorded(encoded))  # the workflow gets what was recorded, not the sender's dict

    async def _request_cancel(self) -> None:
        """Parent-close policy ``request_cancel``: durable, so a resumed run still sees it."""
        run = self.run
        if run.cancel_requested or self._phase not in ("starting", "running"):
            return
        run.cancel_requested = True
        run.record["cancel_requested"] = True
        run.store.put_instance(run.record)
        await run.store.commit()

    async def _update(self, message: Update) -> Any:
        """Validate, then apply and journal before replying (between steps: see ``_must_queue``)."""
        run = self.run
        if message.update_id is not None and message.update_id in run.update_replies:
            return snapshot(run.update_replies[message.update_id])  # sent again: the recorded reply
        handler = run.definition.updates.get(message.name)
        if handler is None:
            raise UpdateNotFoundError(f"workflow {run.definition.tag!r} has no update {message.name!r}")
        if self._phase not in ("starting", "running"):
            raise WorkflowEndedError(f"workflow {run.workflow_id!r} has ended; it takes no more updates",
                                     workflow_id=run.workflow_id)
        validator = run.definition.validators.get(message.name)
        if validator is not None:
            try:
                verdict = validator(RestrictedContext(run, "validator"), message.args)
                if inspect.isawaitable(verdict):
                    await verdict
            except Exception as exc:
                raise UpdateRejectedError(f"update {message.name!r} rejected: {exc}") from exc
        reply = await run.apply_update(message.name, handler, RestrictedContext(run, "update"), message.args,
                                       message.update_id)
        return snapshot(reply)

    @property
    def ended(self) -> asyncio.Future[Record]:
        """Resolves with the instance record when the run has ended and the end is durable."""
        if self._ended is None:
            self._ended = asyncio.get_running_loop().create_future()
            if self._end is not None:
                _resolve(self._ended, *self._end)
        return self._ended

    def blocked_or_ended(self) -> asyncio.Future[Record | None]:
        """A future of the caller's own (cancelling it cancels nothing else): None once the handler
        has blocked on a signal, a timer or a child, else the end record as ``ended``."""
        future: asyncio.Future[Record | None] = asyncio.get_running_loop().create_future()
        if self._end is not None:
            _resolve(future, *self._end)
        elif self._blocked:
            future.set_result(None)
        elif self._blocked_or_ended_waiters is None:
            self._blocked_or_ended_waiters = [future]
        else:
            self._blocked_or_ended_waiters.append(future)
        return future

    def _on_block(self) -> None:
        self._release_slot()
        if not self._blocked:
            self._blocked = True
            self._wake_blocked_or_ended_waiters(None, None)

    def _conclude(self, record: Record | None, error: BaseException | None = None) -> None:
        if self._end is not None:
            return
        self._end = (record, error)
        if self._ended is not None:
            _resolve(self._ended, record, error)
        self._wake_blocked_or_ended_waiters(record, error)

    def _wake_blocked_or_ended_waiters(self, record: Record | None, error: BaseException | None) -> None:
        waiters, self._blocked_or_ended_waiters = self._blocked_or_ended_waiters, None
        for future in waiters or ():
            _resolve(future, record, error)

    def _cancel(self, reason: str | None, trigger: Trigger = "cancel") -> asyncio.Future[Record] | None:
        """Interrupt the handler; the caller awaits the returned end. None if already past that point."""
        if self._phase not in ("starting", "running") or self.run.interrupt is not None:
            if trigger == "parent_closed" and self._phase != "ended":
                return self.ended  # already ending (e.g. its rollback resumed after a crash): the parent waits
            interrupted = self.run.interrupt is not None and self.run.interrupt[0] != "timeout"
            return self.ended if interrupted else None
        self.run.interrupt = (trigger, reason or "cancelled")
        self.run.cancel_requested = True
        assert self._drive_task is not None
        self._drive_task.cancel()
        return self.ended

    def _on_timeout(self) -> None:
        if self._phase in ("starting", "running") and self.run.interrupt is None:
            self.run.interrupt = ("timeout", "workflow timeout")
            if self._drive_task is not None:
                self._drive_task.cancel()

    # -- the drive task ---------------------------------------------------------------

    async def _drive(self) -> None:
        # The handler is awaited right here, not in a helper coroutine: every step's wake-up
        # passes through each frame between the task and the step, so fewer is faster.
        run = self.run
        try:
            resumed = run.resume_outcome
            if resumed is not None:
                outcome = await self._replay_to_rollback(resumed)
            else:
                self._phase = "running"
                try:
                    waiter = self._admission.enter()
                    if waiter is None:
                        self._slot = True
                    else:
                        try:
                            await waiter
                        finally:  # ours if it was handed over, even when a cancel came in the same turn
                            self._slot = waiter.done() and not waiter.cancelled()
                    output = await run.definition.handler(self.ctx)
                except asyncio.CancelledError as exc:
                    task = asyncio.current_task()
                    assert task is not None
                    if run.interrupt is None:
                        if task.cancelling():
                            raise  # shutdown
                        outcome = self._outcome_of(exc)  # raised by the handler's code: a crash
                    else:
                        task.uncancel()
                        outcome = self._interrupted()
                except (RunSuspended, KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as exc:
                    outcome = self._outcome_of(exc)
                else:
                    # The handler may have swallowed the cancellation of a cancel or timeout.
                    outcome = self._interrupted() if run.interrupt is not None else Outcome("completed", output=output)
            self._phase = "finishing"
            run.closed = True  # a ctx kept past the handler's end makes no more journaled calls
            if outcome.kind != "completed":
                self._release_slot()  # compensations may wait on I/O: a rollback needs no turn
            if self._timer is not None:
                self._timer.cancel()
            record = await run.finish(outcome)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise  # shutdown (on_stop answers the waiters), or the process is asked to stop
        except (RunSuspended, StorageError) as exc:
            # A commit failed: the run stops at its last commit, its callers get the error, and the
            # engine resumes it from the store after a pause (visible in the log and in status).
            error = exc.error if isinstance(exc, RunSuspended) else exc
            self._conclude(None, error)
            self._release(failure=error)
            self.stop()
            return
        except BaseException as exc:  # a bug of ours: never a silent hang
            log.exception("workflow %s could not finish", run.workflow_id)
            self._conclude(None, exc)
        else:
            self._phase = "ended"
            self._conclude(record)
        self._release()
        self.stop()

    def _outcome_of(self, exc: BaseException) -> Outcome:
        """How a handler that raised ``exc`` ends."""
        if isinstance(exc, NonDeterminismError):
            return Outcome("nondeterminism", error=error_dict(exc))
        if self.run.interrupt is not None and isinstance(exc, Exception):
            return self._interrupted()  # e.g. a step failed because the cancel interrupted it
        if isinstance(exc, StepFailedError):
            return Outcome("failed", error=error_dict(exc, step=exc.step), failed_step=exc.step, trigger="step_failed")
        if isinstance(exc, Exception):
            return Outcome("failed", error=error_dict(exc, default_code="handler_error"), trigger="step_failed")
        # Not an Exception: it must not take the process or other runs down.
        crash = HandlerCrashedError(f"the handler raised {type(exc).__name__}({exc}), which is not an Exception")
        return Outcome("failed", error=error_dict(crash), trigger="step_failed")

    async def _replay_to_rollback(self, outcome: Outcome) -> Outcome:
        """The process died while this run rolled back: replay (running nothing) to get the
        compensations back, then finish with the rollback that had started. Shielded from cancels."""
        self._phase = "finishing"
        self.run.replay_only = True
        try:
            await self.run.definition.handler(self.ctx)
        except (asyncio.CancelledError, RunSuspended, KeyboardInterrupt, SystemExit):
            raise  # shutdown, a failed commit, the process asked to stop
        except BaseException:  # ReplayExhausted, the recorded failure, or anything the replay raises
            pass
        self.run.replay_only = False
        first = self.run.record["finishing"]["rollback_first"]
        self.run.interrupted_step = self.run.steps.get(first) if first else None
        return outcome

    def _interrupted(self) -> Outcome:
        assert self.run.interrupt is not None
        trigger, reason = self.run.interrupt
        if trigger == "timeout":
            timeout = self.run.record.get("timeout")
            timed_out = WorkflowTimeoutError(f"workflow {self.run.workflow_id!r} passed its timeout of {timeout:g} ms")
            return Outcome("timeout", error=error_dict(timed_out), trigger="timeout", reason=reason)
        cancelled = WorkflowCancelledError(f"workflow {self.run.workflow_id!r} was cancelled: {reason}")
        return Outcome("cancelled", error=error_dict(cancelled), trigger=trigger, reason=reason)
