"""``ctx.step`` and ``ctx.checkpoint``: the run's calls that do work once and remember it."""

from __future__ import annotations

import asyncio
import inspect
import random
from types import CoroutineType
from typing import Any, Callable

from ...errors import (
    DuplicateStepError,
    HandlerCrashedError,
    InvalidArgumentError,
    NotSerializableError,
    StepFailedError,
    StepTimeoutError,
    StorageError,
)
from ..boundary import IMMUTABLE_TYPES, is_flat_dict, snapshot
from ..decisions.outcome import error_dict
from ..decisions.step_options import DEFAULT_STEP_OPTIONS, StepOptions
from .control import ReplayExhausted, RunSuspended
from .entries import RESTORED_POSITION, StepState, recorded_step_output
from .trampoline import Trampoline
from .updates import UpdateCalls


async def with_timeout(what: str, handler: Callable[[], Any], timeout_ms: float) -> Any:
    """``handler()``, awaited if it returns an awaitable, bounded by ``timeout_ms`` (``StepTimeoutError``)."""
    try:
        async with asyncio.timeout(timeout_ms / 1000.0):
            output = handler()
            if inspect.isawaitable(output):
                output = await output
            return output
    except TimeoutError as exc:
        raise StepTimeoutError(f"step {what!r} timed out after {timeout_ms:g} ms") from exc


class StepCalls(UpdateCalls):
    """Part of ``Run``: steps (with retries, timeouts, injected faults) and checkpoints."""

    __slots__ = ()

    async def step(self, tag: str, handler: Callable[[], Any], rollback: Callable[..., Any] | None,
                   opts: StepOptions) -> Any:
        # The hot path of the engine, kept in one coroutine frame on purpose: one encode and one
        # commit wait per step; replay, retries and failures branch off it.
        if self.closed:
            self._check_open()
        if tag in self.steps:
            return await self.claim_restored(tag, rollback, opts)  # else DuplicateStepError
        if type(tag) is not str or not tag:
            raise InvalidArgumentError(f"a step tag must be a non-empty string, got {tag!r}")
        if not callable(handler):
            raise InvalidArgumentError(f"the handler of step {tag!r} must be callable, got {handler!r}")
        if rollback is not None and not callable(rollback):
            raise InvalidArgumentError(f"the rollback of step {tag!r} must be callable, got {rollback!r}")
        if self._replay or self._updates_to_replay or self.replay_only:
            position, recorded = await self._next_call("step", tag)
        else:  # the common case, inlined: a new run past its journal
            position = self._position
            self._position = position + 1
            recorded = None
        st = StepState(tag, position, rollback, opts)
        self.steps[tag] = st
        now = self._now
        if recorded is None:
            st.started_at = now()
            st.seq = self._event_seq
            self._event_seq += 1
            self.current_step = tag
        else:
            st.load(recorded)
            if st.status == "completed":
                return snapshot(st.output)  # the handler's copy; st.output stays as recorded
            if st.status == "skipped":
                return None
            if st.status == "failed":
                self.failed_step = st
                error = st.error or {}
                raise StepFailedError(error.get("message", ""), step=tag, code=error.get("code"))
            # "running": it was in flight when the process died; run it again (at-least-once),
            # unless the run is only replaying to get its compensations back.
            if self.replay_only:
                raise ReplayExhausted()
            if st.seq < 0:
                st.started_at = now()
                st.seq = self.next_seq()
            self.current_step = tag
            if st.retry_at is not None:  # resumed in a retry wait: only the time that is left
                await self._sleep_to_retry(st)
        store, entries = self.store, self.entries
        self._step_running = True
        try:
            while True:
                st.attempts += 1
                try:
                    if self.faults and tag in self.faults:
                        self._inject_fault(tag)
                    if opts.timeout_ms is None:
                        output = handler()
                        if type(output) is CoroutineType:
                            # Run it up to its first suspension by hand: a handler that finishes
                            # without suspending needs no "running" record at all.
                            try:
                                suspended_on = output.send(None)
                            except StopIteration as done:
                                output = done.value
                            else:
                                entries.put_deferred(position, st.entry)  # encoded if still running at the flush
                                self.waiting_outside()
                                output = await Trampoline(output, suspended_on)
                        elif inspect.isawaitable(output):
                            entries.put_deferred(position, st.entry)
                            self.waiting_outside()
                            output = await output
                    else:
                        entries.put_deferred(position, st.entry)
                        self.waiting_outside()
                        output = await with_timeout(tag, handler, opts.timeout_ms)
                    st.status = "completed"
                    st.output = output
                    st.end_seq = self._event_seq
                    self._event_seq += 1
                    st.ended_at = now()
                    st.order = self._order
                    self._order += 1
                    if self.state:  # so status shows it even before a resumed run has replayed
                        entry = st.entry_dict()
                        entry["state"] = self.state
                        encoded = entries.put(position, entry)
                    else:
                        encoded = entries.put(position, st.entry())
                    if type(output) not in IMMUTABLE_TYPES:
                        # The journal's own bytes stay the step's record (its compensation's
                        # argument); the handler gets a copy of what they hold: a shallow copy
                        # for the common small flat dict, else decoded from them.
                        st.recorded, st.output = encoded, None
                        output = dict(output) if is_flat_dict(output) else recorded_step_output(encoded)
                    break
                except asyncio.CancelledError as exc:
                    if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                        if self.interrupt is not None:  # cancel or timeout; a shutdown leaves it "running"
                            self.interrupted_step = st
                        raise
                    # Raised by the step's own code, not a cancellation of this run: a crash of the step.
                    crash = HandlerCrashedError(f"step {tag!r} raised CancelledError without being cancelled")
                    crash.__cause__ = exc
                    return await self._fail(st, crash, DEFAULT_STEP_OPTIONS)
                except NotSerializableError as exc:
                    st.status, st.output, st.order = "running", None, -1
                    return await self._fail(st, exc, opts)
                except Exception as exc:
                    if opts.retry.retries_after(st.attempts, exc):
                        await self._wait_to_retry(st, exc, opts)
                        continue
                    return await self._fail(st, exc, opts)
                except (KeyboardInterrupt, SystemExit):
                    raise  # the process is asked to stop: the step stays in flight, resumed at the next start
                except BaseException as exc:  # not an Exception: never retried, never skipped
                    crash = HandlerCrashedError(f"step {tag!r} raised {type(exc).__name__}({exc}), "
                                                f"which is not an Exception")
                    crash.__cause__ = exc
                    return await self._fail(st, crash, DEFAULT_STEP_OPTIONS)
        finally:
            self._step_running = False
            if self._between_steps is not None and not self._between_steps.done():
                self._between_steps.set_result(None)  # an update was waiting for this step to end
        self.current_step = None
        try:
            await store.commit()
        except StorageError as exc:  # inline, not _durable(): one frame less on the hot path
            raise RunSuspended(exc) from exc
        if self.updates_waiting:
            await self.let_updates_in()
        return output

    async def _wait_to_retry(self, st: StepState, exc: Exception, opts: StepOptions) -> None:
        """The wait between attempts is a durable timer: journaled before it starts, resumed after a crash."""
        self.event("step_retrying", {"step": st.tag, "attempt": st.attempts, "error": error_dict(exc, step=st.tag)})
        st.retry_at = self._now() + opts.retry.delay_ms(st.attempts, random.random)
        self.entries.put(st.position, st.entry())
        await self._durable()
        await self._sleep_to_retry(st)

    async def _sleep_to_retry(self, st: StepState) -> None:
        """A retry wait is a durable timer, and part of the step: ``execute`` waits through it."""
        assert st.retry_at is not None
        self.waiting_for = f"retry of step {st.tag} at attempt {st.attempts + 1}"
        self.waiting_outside()  # a wait outside the run: no admission turn held meanwhile
        try:
            await self.clock.sleep_until(st.retry_at)
        finally:
            self.waiting_for = None
        st.retry_at = None

    def _inject_fault(self, tag: str) -> None:
        fault = self.faults[tag]
        if fault[0] > 0:
            fault[0] -= 1
            raise fault[1]

    async def _fail(self, st: StepState, exc: BaseException, opts: StepOptions) -> None:
        tag = st.tag
        st.error = error_dict(exc, step=tag)
        st.ended_at = self.clock.now_ms()
        st.status = "skipped" if opts.allow_fail else "failed"
        st.end_seq = self.next_seq()
        self.entries.put(st.position, st.entry())
        self.current_step = None
        await self._durable()
        if opts.allow_fail:
            return None
        self.failed_step = st
        raise StepFailedError(st.error["message"], step=tag, code=st.error["code"]) from exc

    async def claim_restored(self, tag: str, rollback: Callable[..., Any] | None, opts: StepOptions) -> Any:
        """The handler calls a step this run restored (see ``RunCore._restore``): its recorded output
        (None if it was skipped), without running it; journaled at this call's position as this run's
        step, with ``rollback`` as its compensation. Any other second use of a tag is refused."""
        st = self.steps[tag]
        if not st.restored or st.position != RESTORED_POSITION:
            raise DuplicateStepError(f"step tag {tag!r} is used twice in workflow {self.workflow_id!r}")
        position, recorded = await self._next_call("step", tag)
        st.position, st.rollback, st.opts = position, rollback, opts
        if recorded is not None:
            st.load(recorded)  # claimed before a crash of this run: as journaled then
        else:
            st.started_at = st.ended_at = self._now()
            st.seq, st.end_seq = self.next_seq(), self.next_seq()
            self.entries.put(position, st.entry())
        return None if st.status == "skipped" else st.recorded_output()

    # -- ctx.checkpoint -----------------------------------------------------------

    # -- ctx.checkpoint -----------------------------------------------------------

    async def checkpoint(self, name: str, data: Any = None) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"a checkpoint name must be a non-empty string, got {name!r}")
        data = snapshot(data)  # kept as recorded: the caller's later writes to it change nothing
        position, recorded = await self._next_call("checkpoint", name)
        if recorded is None:
            # The entry also stands for the checkpoint_created history event.
            self.entries.put(position, {"k": "checkpoint", "name": name, "data": data,
                                    "at": self.clock.now_ms(), "seq": self.next_seq()})
            await self._durable()
        self.checkpoint_name, self.checkpoint_data, self.checkpoint_position = name, data, position
