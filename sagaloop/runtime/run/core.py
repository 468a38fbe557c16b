"""One execution's journaled state: steps, checkpoints, rollbacks, the end.

A ``Run`` is owned by exactly one workflow actor and only ever touched from
its tasks. It is the memo table of the run (DBOS's model): each journaled
call (``ctx.step``, ``ctx.checkpoint``, ``ctx.trigger_rollback``) takes the
next *position*; when the handler runs again after a crash, a position that
is already in the journal returns what was recorded instead of running
again, and a recorded entry of another kind or tag is a loud
``NonDeterminismError``.

Writes go to the store's current group; a call returns only once its group
is committed (``_durable``), so what a handler has seen is never lost.
"""

from __future__ import annotations

import asyncio
import inspect
import operator
import random
from types import CoroutineType, MappingProxyType
from typing import Any, Callable, Mapping

from ...errors import (
    DuplicateStepError,
    HandlerCrashedError,
    InvalidArgumentError,
    NonDeterminismError,
    NotSerializableError,
    StepFailedError,
    StepTimeoutError,
    StorageError,
    WorkflowEndedError,
)
from ...storage import Store
from ..boundary import IMMUTABLE_TYPES, is_flat_dict, snapshot
from .children import ChildCalls
from ..clock import Clock
from .compensation import Compensation
from ..handler.definitions import Definition
from ..decisions.history import progress
from .inbox import Inbox
from .entries import (
    UPDATE_BASE,
    Outcome,
    ReplayExhausted,
    Resume,
    RunSuspended,
    RunHost,
    StepState,
    error_dict,
    merge_rollbacks,
    recorded_step_output,
)
from ..decisions.rollback import ending_status
from ..decisions.step_options import DEFAULT_STEP_OPTIONS, StepOptions
from .updates import UpdateCalls
from .waits import WaitCalls

_EMPTY: Mapping = MappingProxyType({})
_ORDER_STATUS_TAG = operator.attrgetter("order", "status", "tag")


class Run(UpdateCalls, ChildCalls, WaitCalls, Compensation):
    """The journaled state and journaled calls of one execution."""

    # Slots make a run smaller and its fields cheaper to read; slots are laid out in this
    # order, so the ones every step touches come first and share cache lines.
    __slots__ = ("steps", "_updates_to_replay", "_replay", "replay_only", "closed", "_position", "store", "entries",
                 "_now", "current_step", "_event_seq", "_step_running", "faults", "_order", "state", "_between_steps",
                 "_update_seq", "checkpoint_data", "checkpoint_name", "checkpoint_position", "children", "clock",
                 "ctx", "definition", "failed_step", "host", "_inbox", "interrupt", "interrupted_step",
                 "manual_rollbacks", "on_block", "on_suspend", "record", "update_replies", "waiting_for", "workflow_id",
                 "input", "context", "_replay_done", "cancel_requested", "updates_waiting", "_updates_applied")

    def __init__(self, *, store: Store, clock: Clock, definition: Definition, record: dict,
                 journal: list[tuple[int, dict]] = (), event_seq: int = 0,
                 signals: list[tuple[int, dict]] = ()) -> None:
        self.store = store
        self.entries = store.entry_writer(record["workflow_id"])  # entries.put / .put_deferred(position, ...)
        self.clock = clock
        self.definition = definition
        self.record = record
        self.workflow_id: str = record["workflow_id"]
        # The handler's own copies: what it does to them never reaches the record (or a caller).
        self.input: Any = snapshot(record.get("input"))
        self.context: Any = snapshot(record.get("context"))
        self.cancel_requested: bool = bool(record.get("cancel_requested"))  # request_cancel, durable
        self.closed = False  # the handler has ended: no more journaled calls through its ctx
        self._replay_done: asyncio.Future | None = None  # made when a message waits for the replay
        self.state: dict = {}
        self.steps: dict[str, StepState] = {}
        self.current_step: str | None = None
        self.checkpoint_name: str | None = None
        self.checkpoint_data: Any = None
        self.checkpoint_position: int | None = None
        self.failed_step: StepState | None = None
        self.manual_rollbacks: tuple[dict, ...] = ()  # results of ctx.trigger_rollback, in order
        self.interrupt: tuple[str, str] | None = None  # (trigger, reason) of a cancel or timeout
        self.interrupted_step: StepState | None = None
        # A new run shares these empty read-only tables; a resumed one gets its own (_load_journal).
        self._replay: Mapping[int, dict] = _EMPTY
        # Updates applied by an earlier process, re-applied at the same point of the replay.
        self._updates_to_replay: Mapping[int, list[dict]] = _EMPTY
        self.update_replies: Mapping[str, Any] = _EMPTY  # update_id -> reply; a dict once there is one
        self._update_seq = 0
        self._order = 0
        consumed: set[int] = set()
        if journal:  # a resumed run; a new one skips all of this
            self._load_journal(journal, consumed)
        self.ctx: Any = None  # the handler's WorkflowContext (set by its actor), passed to update handlers
        self._step_running = False
        self._between_steps: asyncio.Future | None = None  # an update waiting for the step to end
        self.updates_waiting = 0  # updates queued for the step's end (see let_updates_in)
        self._updates_applied: asyncio.Future | None = None
        self._position = 0
        self._event_seq = event_seq
        self._now = clock.now_ms
        # Made on first use (most runs never see a signal), unless signals are waiting already.
        self._inbox = Inbox(signals, consumed, next_seq=1 + max(seq for seq, _ in signals)) if signals else None
        # Told when the handler blocks on a signal or a timer (execute returns "running" then).
        self.on_block: Callable[[], None] | None = None
        # Told when the run is about to wait on something outside it (a step's I/O, a child).
        self.on_suspend: Callable[[], None] | None = None
        self.waiting_for: str | None = None
        self.host: RunHost | None = None        # the engine: child workflows, actions, ...
        self.replay_only = False                 # compensating an ended run: never run anything new
        self.faults: Mapping[str, list] = _EMPTY  # injected step failures (the engine's; testing.fail_step)
        self.children: Mapping[str, str] = _EMPTY  # live children started by this run -> close policy

    def _load_journal(self, journal: list[tuple[int, dict]], consumed: set[int]) -> None:
        self._replay, self._updates_to_replay = {}, {}
        for position, entry in journal:
            kind = entry.get("k")
            if position >= UPDATE_BASE:
                self._updates_to_replay.setdefault(entry["after"], []).append(entry)
                if entry.get("update_id") is not None:
                    self.remember_reply(entry["update_id"], entry["reply"])
                self._update_seq = max(self._update_seq, position - UPDATE_BASE + 1)
                continue
            self._replay[position] = entry
            if kind == "step":
                self._order = max(self._order, entry.get("order", -1) + 1)
            elif kind == "signal" and entry.get("status") == "received":
                consumed.add(entry["signal_seq"])

    # -- plumbing -------------------------------------------------------------------

    @property
    def completed_steps(self) -> list[str]:
        """The tags of the completed steps (child workflows too), in the order they completed.

        Derived from ``steps`` rather than kept beside it: one dict write per step instead of
        three measured ~7% of W1's time at 1,000 in flight.
        """
        # Sorted by completion order (not-completed steps have none yet: -1), C-level but the filter.
        return [tag for _, status, tag in sorted(map(_ORDER_STATUS_TAG, self.steps.values()))
                if status == "completed"]

    @property
    def inbox(self) -> Inbox:
        if self._inbox is None:
            self._inbox = Inbox()
        return self._inbox

    def remember_reply(self, update_id: str, reply: Any) -> None:
        if self.update_replies is _EMPTY:
            self.update_replies = {}
        self.update_replies[update_id] = reply  # type: ignore[index]

    def adopt_child(self, child_id: str, policy: str) -> None:
        """A child this run started: its parent-close ``policy`` applies when this run ends."""
        if self.children is _EMPTY:
            self.children = {}
        self.children[child_id] = policy  # type: ignore[index]

    def suspending(self) -> None:
        """The run is about to wait on something outside it (see ``admission``)."""
        if self.on_suspend is not None:
            self.on_suspend()

    def next_seq(self) -> int:
        """Reserve the next history seq (some events are implied by records; see ``history``)."""
        seq = self._event_seq
        self._event_seq = seq + 1
        return seq

    def event(self, type_: str, data: dict) -> None:
        seq = self.next_seq()
        self.store.put_event(self.workflow_id, seq,
                             {"type": type_, "timestamp": self.clock.now_ms(), "data": data, "seq": seq})

    async def _durable(self) -> None:
        """Wait for the commit of what this run queued; a failed commit suspends the run."""
        try:
            await self.store.commit()
        except StorageError as exc:
            raise RunSuspended(exc) from exc

    # -- updates and patches -----------------------------------------------------------


    def _check_open(self) -> None:
        """A ``ctx`` kept past its run's end raises here (``step`` tests ``closed`` inline first: hot path)."""
        if self.closed:
            raise WorkflowEndedError(f"workflow {self.workflow_id!r} has ended: its ctx takes no more "
                                     f"journaled calls (steps, checkpoints, waits, children)",
                                     workflow_id=self.workflow_id)

    def _take_position(self, kind: str, name: str) -> tuple[int, dict | None]:
        self._check_open()
        position = self._position
        self._position = position + 1
        if not self._replay:
            if self.replay_only:
                raise ReplayExhausted()
            return position, None
        recorded = self._replay.pop(position, None)
        if not self._replay:
            self._replay_progressed()
        if self.replay_only and (recorded is None or (kind != "step" and recorded.get("status") == "waiting")):
            raise ReplayExhausted()  # compensating: never start or wait for anything new
        if recorded is not None and (recorded.get("k") != kind or recorded.get("tag", recorded.get("name")) != name):
            was = f"{recorded.get('k')} {recorded.get('tag', recorded.get('name'))!r}"
            raise NonDeterminismError(
                f"workflow {self.workflow_id!r} asked for {kind} {name!r} at position {position}, "
                f"but the journal recorded {was} there: the handler's code changed under a running instance")
        return position, recorded

    # -- ctx.step -------------------------------------------------------------------

    async def step(self, tag: str, handler: Callable[[], Any], rollback: Callable[..., Any] | None,
                   opts: StepOptions) -> Any:
        # The hot path of the engine, kept in one coroutine frame on purpose: one encode and one
        # commit wait per step; replay, retries and failures branch off it.
        if self.closed:
            self._check_open()
        if tag in self.steps:
            raise DuplicateStepError(f"step tag {tag!r} is used twice in workflow {self.workflow_id!r}")
        if type(tag) is not str or not tag:
            raise InvalidArgumentError(f"a step tag must be a non-empty string, got {tag!r}")
        if not callable(handler):
            raise InvalidArgumentError(f"the handler of step {tag!r} must be callable, got {handler!r}")
        if rollback is not None and not callable(rollback):
            raise InvalidArgumentError(f"the rollback of step {tag!r} must be callable, got {rollback!r}")
        if self._updates_to_replay:
            await self.replay_updates(self._position - 1)
        if self._replay or self.replay_only:
            position, recorded = self._take_position("step", tag)
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
                raise StepFailedError(st.error["message"], step=tag, code=st.error["code"])
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
                                self.suspending()
                                output = await Resume(output, suspended_on)
                        elif inspect.isawaitable(output):
                            entries.put_deferred(position, st.entry)
                            self.suspending()
                            output = await output
                    else:
                        entries.put_deferred(position, st.entry)
                        self.suspending()
                        output = await self._with_timeout(tag, handler, opts.timeout_ms)
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
        self.waiting_for = f"retry of step {st.tag} at attempt {st.attempts + 1}"
        self.suspending()  # a wait outside the run: no admission turn held meanwhile
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

    @staticmethod
    async def _with_timeout(tag: str, handler: Callable[[], Any], timeout_ms: float) -> Any:
        try:
            async with asyncio.timeout(timeout_ms / 1000.0):
                output = handler()
                if inspect.isawaitable(output):
                    output = await output
                return output
        except TimeoutError as exc:
            raise StepTimeoutError(f"step {tag!r} timed out after {timeout_ms:g} ms") from exc

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

    # -- ctx.checkpoint -----------------------------------------------------------

    async def checkpoint(self, name: str, data: Any = None) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"a checkpoint name must be a non-empty string, got {name!r}")
        data = snapshot(data)  # kept as recorded: the caller's later writes to it change nothing
        if self._updates_to_replay:
            await self.replay_updates(self._position - 1)
        position, recorded = self._take_position("checkpoint", name)
        if recorded is None:
            # The entry also stands for the checkpoint_created history event.
            self.entries.put(position, {"k": "checkpoint", "name": name, "data": data,
                                    "at": self.clock.now_ms(), "seq": self.next_seq()})
            await self._durable()
        self.checkpoint_name, self.checkpoint_data, self.checkpoint_position = name, data, position

    # -- child workflows ------------------------------------------------------------


    # -- signals and timers ---------------------------------------------------------


    # -- rollback -------------------------------------------------------------------


    # -- the end ----------------------------------------------------------------------

    async def finish(self, outcome: "Outcome") -> dict:
        """Roll back if the outcome asks for it, then journal the end. Returns the instance record."""
        if self._updates_to_replay and outcome.kind == "completed":
            await self.replay_updates()  # updates that came after the last journaled call
        if self._replay_done is not None:
            self.end_replay()
        rollback_result: dict | None = merge_rollbacks(self.manual_rollbacks)
        error = outcome.error
        failed_step = outcome.failed_step
        if outcome.kind == "completed":
            if self.children:
                await self._close_children()
            status = "completed"
            if rollback_result is not None:
                status = "rolled_back" if rollback_result["success"] else "failed"
        elif outcome.kind == "nondeterminism":
            await self._close_children()
            status, rollback_result = "failed", None  # not this code's steps to compensate
        else:
            failed_state = self.steps.get(failed_step) if failed_step else self.interrupted_step
            if failed_state is not None and failed_state.status == "completed":
                failed_state = None
            if "finishing" not in self.record:
                # Journal the decision before the first compensation: a process that dies from
                # here on resumes *this rollback*, not the handler (see resume_outcome).
                self.record["finishing"] = {
                    "kind": outcome.kind, "error": error, "trigger": outcome.trigger, "reason": outcome.reason,
                    "failed_step": failed_step, "rollback_first": failed_state.tag if failed_state else None}
                self.store.put_instance(self.record)
                await self._durable()
            # After the decision is durable: a crash while children close resumes this ending,
            # never the handler (which would start again a child it had itself terminated).
            await self._close_children()
            result = await self.rollback(trigger=outcome.trigger, reason=outcome.reason or error["message"],
                                         failed_step=failed_state)
            rollback_result = merge_rollbacks([*self.manual_rollbacks, result])
            if outcome.kind == "cancelled":
                status = "cancelled"
            else:
                status = ending_status(rolled_back=len(rollback_result["rolled_back_steps"]),
                                       failed_compensations=len(rollback_result["failed_steps"]))
        return await self._record_end(status, outcome.output, error, failed_step, rollback_result)

    async def _close_children(self) -> None:
        """Apply the parent-close policies of the children still running, before our own rollback."""
        if self.children and self.host is not None:
            await self.host.close_children(self, dict(self.children))
            self.children = _EMPTY

    async def _record_end(self, status: str, output: Any, error: dict | None, failed_step: str | None,
                          rollback_result: dict | None) -> dict:
        now = self.clock.now_ms()
        record = dict(self.record)
        record.pop("finishing", None)
        record.update(status=status, output=output, error=error, failed_step=failed_step,
                      completed_steps=self.completed_steps, rollback_result=rollback_result,
                      state=self.state, current_step=None, checkpoint_name=self.checkpoint_name,
                      checkpoint_data=self.checkpoint_data, ended_at=now, updated_at=now,
                      execution_time=max(0, now - record["created_at"]), end_seq=self.next_seq())
        try:
            self.store.put_instance(record)
        except NotSerializableError as exc:
            # The output or the state cannot be journaled: the run fails, loudly, without them.
            record.update(status="failed", output=None, state={},
                          error={"message": f"workflow result not serialisable: {exc}", "step": None,
                                 "code": "not_serializable", "type": "NotSerializableError"})
            self.store.put_instance(record)
        self.record = record  # its end_seq stands for the workflow_<status> history event
        await self._durable()
        return record

    @property
    def resume_outcome(self) -> "Outcome | None":
        """How the run was ending when its process died, if it had started rolling back."""
        finishing = self.record.get("finishing")
        if finishing is None:
            return None
        return Outcome(finishing["kind"], error=finishing["error"], trigger=finishing["trigger"],
                       reason=finishing["reason"], failed_step=finishing["failed_step"])

    def status_record(self) -> dict:
        """What ``status`` shows for the run while it is live (shares live values: copy it to hand out)."""
        record = dict(self.record)
        record.update(current_step=self.current_step, waiting_for=self.waiting_for,
                      completed_steps=self.completed_steps,
                      state=self.state, checkpoint_name=self.checkpoint_name,
                      checkpoint_data=self.checkpoint_data, updated_at=self.clock.now_ms())
        if self._replay or self._updates_to_replay:  # resumed, still replaying: the journal knows more
            pending_updates = [(0, e) for entries in self._updates_to_replay.values() for e in entries]
            ahead = progress(sorted(self._replay.items()) + pending_updates)
            record["completed_steps"] += [t for t in ahead["completed_steps"] if t not in self.steps]
            for name in ("checkpoint_name", "checkpoint_data", "current_step"):
                if ahead[name] is not None:
                    record[name] = ahead[name]
            if ahead["state"] and not self.state:
                record["state"] = ahead["state"]
        return record


