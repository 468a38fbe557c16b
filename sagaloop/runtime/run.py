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
import logging
import random
from types import CoroutineType
from typing import Any, Callable, Protocol

from ..errors import (
    ChildWorkflowError,
    DuplicateStepError,
    HandlerCrashedError,
    InvalidArgumentError,
    NonDeterminismError,
    NotSerializableError,
    SignalTimeoutError,
    StepFailedError,
    StepTimeoutError,
)
from ..results import RollbackResult
from ..storage import Store
from .clock import Clock
from .definitions import Definition
from .durations import parse_duration, parse_optional_duration
from .history import progress
from .inbox import Inbox
from .rollback import StepFacts, ending_status, plan_rollback
from .step_options import DEFAULT_STEP_OPTIONS, StepOptions

log = logging.getLogger("sagaloop.run")

PARENT_CLOSE_POLICIES = ("terminate", "abandon", "request_cancel")
UPDATE_BASE = 1 << 31  # journal positions from here on hold updates, which arrive outside the call order


class ReplayExhausted(BaseException):
    """Internal: a replay-only run reached the end of its journal.

    A ``BaseException`` so a handler's ``except Exception`` cannot swallow it;
    if you see it, a bare ``except:`` in a workflow handler caught it — re-raise it.
    """


class RunHost(Protocol):
    """What a run needs from its engine: child workflows and the outside-world components."""

    actions: Any
    fallbacks: Any
    notifications: Any

    async def run_child(self, parent: "Run", child_id: str, tag: str, input: Any, timeout_ms: float | None,
                        policy: str) -> dict: ...

    async def compensate_child(self, product_env: tuple[str, str], child_ids: list[str]) -> None: ...

    async def close_children(self, parent: "Run", children: dict[str, str]) -> None: ...


# The rollback that ends a run; manual rollbacks are told apart by their journal position.
_FINAL_ROLLBACK = -1


class StepState:
    """A step of this run, as the journal and the rollback planner see it."""

    __slots__ = ("tag", "position", "order", "status", "output", "error", "attempts", "started_at",
                 "ended_at", "critical", "rollback", "has_rollback", "rollback_status",
                 "rollback_error", "rollback_id", "seq", "end_seq", "retry_at", "compensation")

    def __init__(self, tag: str, position: int, critical: bool, rollback: Callable[..., Any] | None) -> None:
        self.tag = tag
        self.position = position
        self.order = -1
        self.status = "running"
        self.output: Any = None
        self.error: dict | None = None
        self.attempts = 0
        self.started_at = 0
        self.ended_at: int | None = None
        self.critical = critical
        self.rollback = rollback
        self.has_rollback = rollback is not None
        self.rollback_status: str | None = None
        self.rollback_error: str | None = None
        self.rollback_id: int | None = None
        self.seq = -1       # history seq of its step_started event
        self.end_seq = -1   # history seq of its step_completed / step_failed / step_skipped event
        self.retry_at: float | None = None  # deadline of the durable wait before the next attempt
        self.compensation = DEFAULT_STEP_OPTIONS.compensation  # rollback_options (from code, not journaled)

    def entry(self) -> dict:
        """The journal entry; it also stands for the step's start and end history events."""
        entry = {"k": "step", "tag": self.tag, "status": self.status, "output": self.output,
                 "error": self.error, "attempts": self.attempts, "started_at": self.started_at,
                 "ended_at": self.ended_at, "order": self.order, "critical": self.critical,
                 "has_rollback": self.has_rollback, "seq": self.seq, "end_seq": self.end_seq}
        if self.retry_at is not None:
            entry["retry_at"] = self.retry_at
        if self.rollback_status is not None:  # rare: only written once a compensation ran
            entry.update(rollback_status=self.rollback_status, rollback_error=self.rollback_error,
                         rollback_id=self.rollback_id)
        return entry

    def load(self, entry: dict) -> None:
        """Take the recorded facts; the rollback handler stays the one given by this call."""
        self.status = entry["status"]
        self.output = entry["output"]
        self.error = entry["error"]
        self.attempts = entry["attempts"]
        self.started_at = entry["started_at"]
        self.ended_at = entry["ended_at"]
        self.order = entry["order"]
        self.seq = entry.get("seq", -1)
        self.end_seq = entry.get("end_seq", -1)
        self.rollback_status = entry.get("rollback_status")
        self.rollback_error = entry.get("rollback_error")
        self.rollback_id = entry.get("rollback_id")
        self.retry_at = entry.get("retry_at")

    def facts(self) -> StepFacts:
        return StepFacts(tag=self.tag, position=self.position, order=self.order, critical=self.critical,
                         has_rollback=self.rollback is not None, completed=self.status == "completed",
                         rolled_back=self.rollback_status == "completed")


def error_dict(exc: BaseException, *, step: str | None = None, default_code: str = "step_failed") -> dict:
    code = getattr(exc, "code", None)
    if not isinstance(code, str):
        code = default_code
    message = str(exc) or type(exc).__name__
    return {"message": message, "step": step, "code": code, "type": type(exc).__name__}


class Run:
    """The journaled state and journaled calls of one execution."""

    def __init__(self, *, store: Store, clock: Clock, definition: Definition, record: dict,
                 journal: list[tuple[int, dict]] = (), event_seq: int = 0,
                 signals: list[tuple[int, dict]] = ()) -> None:
        self.store = store
        self.clock = clock
        self.definition = definition
        self.record = record
        self.workflow_id: str = record["workflow_id"]
        self.state: dict = {}
        self.steps: dict[str, StepState] = {}
        self.outputs: dict[str, Any] = {}
        self.completed_steps: list[str] = []
        self.current_step: str | None = None
        self.checkpoint_name: str | None = None
        self.checkpoint_data: Any = None
        self.checkpoint_position: int | None = None
        self.failed_step: StepState | None = None
        self.manual_rollbacks: list[dict] = []
        self.interrupt: tuple[str, str] | None = None  # (trigger, reason) of a cancel or timeout
        self.interrupted_step: StepState | None = None
        self._replay: dict[int, dict] = {}
        # Updates applied by an earlier process, re-applied at the same point of the replay.
        self._updates_to_replay: dict[int, list[dict]] = {}
        self.update_replies: dict[str, Any] = {}
        self._update_seq = 0
        self._order = 0
        consumed: set[int] = set()
        if journal:  # a resumed run; a new one skips all of this
            self._load_journal(journal, consumed)
        self.ctx: Any = None  # the handler's WorkflowContext (set by its actor), passed to update handlers
        self._step_running = False
        self._between_steps: asyncio.Future | None = None  # an update waiting for the step to end
        self._position = 0
        self._event_seq = event_seq
        self._now = clock.now_ms
        self.inbox = Inbox(signals, consumed, next_seq=1 + max((seq for seq, _ in signals), default=-1))
        # Told when the handler blocks on a signal or a timer (execute returns "running" then).
        self.on_block: Callable[[], None] | None = None
        self.waiting_for: str | None = None
        self.host: RunHost | None = None        # the engine: child workflows, actions, ...
        self.replay_only = False                 # compensating an ended run: never run anything new
        self.faults: dict[str, list] = {}        # injected step failures (sagaloop.testing.fail_step)
        self.children: dict[str, str] = {}      # live children started by this run -> close policy

    def _load_journal(self, journal: list[tuple[int, dict]], consumed: set[int]) -> None:
        for position, entry in journal:
            kind = entry.get("k")
            if position >= UPDATE_BASE:
                self._updates_to_replay.setdefault(entry["after"], []).append(entry)
                if entry.get("update_id") is not None:
                    self.update_replies[entry["update_id"]] = entry["reply"]
                self._update_seq = max(self._update_seq, position - UPDATE_BASE + 1)
                continue
            self._replay[position] = entry
            if kind == "step":
                self._order = max(self._order, entry.get("order", -1) + 1)
            elif kind == "signal" and entry.get("status") == "received":
                consumed.add(entry["signal_seq"])

    # -- plumbing -------------------------------------------------------------------

    @property
    def replaying(self) -> bool:
        return bool(self._replay)

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
        await self.store.commit()

    # -- updates and patches -----------------------------------------------------------

    async def wait_between_steps(self) -> None:
        """Return once no step handler is running (updates run between steps)."""
        while self._step_running:
            if self._between_steps is None or self._between_steps.done():
                self._between_steps = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._between_steps)

    async def apply_update(self, name: str, handler: Callable[..., Any], args: Any, update_id: str | None) -> Any:
        """Run an update's handler now and journal it (with its reply) before returning the reply."""
        value = handler(self.ctx, args)
        if inspect.isawaitable(value):
            value = await value
        position = UPDATE_BASE + self._update_seq
        self._update_seq += 1
        entry = {"k": "update", "name": name, "args": args, "update_id": update_id, "reply": value,
                 "after": self._position - 1, "at": self._now()}
        if self.state:
            entry["state"] = self.state
        self.store.put_entry(self.workflow_id, position, entry)  # NotSerializableError: nothing journaled
        self.event("update_applied", {"update": name, "update_id": update_id})
        if update_id is not None:
            self.update_replies[update_id] = value
        await self.store.commit()
        return value

    async def replay_updates(self, upto: int | None = None) -> None:
        """Re-apply recorded updates that came after call ``upto`` (all that are left if None)."""
        due = sorted(k for k in self._updates_to_replay if upto is None or k <= upto)
        for key in due:
            for entry in self._updates_to_replay.pop(key):
                handler = self.definition.updates.get(entry["name"])
                if handler is None:
                    continue  # the update is gone from the code; its state change is not replayed
                value = handler(self.ctx, entry["args"])
                if inspect.isawaitable(value):
                    await value

    def patched(self, name: str) -> bool:
        """True where this code's change applies to the run; see ``WorkflowContext.patched``."""
        position = self._position
        recorded = self._replay.get(position) if self._replay else None
        if recorded is not None:
            if recorded.get("k") == "patch" and recorded.get("name") == name:
                del self._replay[position]
                self._position = position + 1
                return True
            return False  # recorded past this point by code without the patch: keep the old path
        if self.replay_only:
            return True
        self._position = position + 1
        self.store.put_entry(self.workflow_id, position, {"k": "patch", "name": name, "tag": name})
        return True

    def _take_position(self, kind: str, name: str) -> tuple[int, dict | None]:
        position = self._position
        self._position = position + 1
        if not self._replay:
            if self.replay_only:
                raise ReplayExhausted()
            return position, None
        recorded = self._replay.pop(position, None)
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
        position, recorded = self._take_position("step", tag)
        st = StepState(tag, position, opts.critical, rollback)
        st.compensation = opts.compensation
        self.steps[tag] = st
        if recorded is not None:
            st.load(recorded)
            if st.status == "completed":
                self.completed_steps.append(tag)
                self.outputs[tag] = st.output
                return st.output
            if st.status == "skipped":
                return None
            if st.status == "failed":
                self.failed_step = st
                raise StepFailedError(st.error["message"], step=tag, code=st.error["code"])
            # "running": it was in flight when the process died; run it again (at-least-once),
            # unless the run is only replaying to get its compensations back.
            if self.replay_only:
                raise ReplayExhausted()
        store, wf, now = self.store, self.workflow_id, self._now
        self.current_step = tag
        if st.seq < 0:
            st.started_at = now()
            st.seq = self._event_seq
            self._event_seq += 1
        if st.retry_at is not None:  # resumed in a retry wait: only the time that is left
            await self.clock.sleep_until(st.retry_at)
            st.retry_at = None
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
                                store.put_entry(wf, position, st.entry)  # lazy: encoded if still running at the flush
                                output = await _Resume(output, suspended_on)
                        elif inspect.isawaitable(output):
                            store.put_entry(wf, position, st.entry)
                            output = await output
                    else:
                        store.put_entry(wf, position, st.entry)
                        output = await self._with_timeout(tag, handler, opts.timeout_ms)
                    st.status = "completed"
                    st.output = output
                    st.end_seq = self._event_seq
                    self._event_seq += 1
                    st.ended_at = now()
                    st.order = self._order
                    self._order += 1
                    entry = st.entry()
                    if self.state:  # so status shows it even before a resumed run has replayed
                        entry["state"] = self.state
                    store.put_entry(wf, position, entry)
                    break
                except asyncio.CancelledError:
                    if self.interrupt is not None:  # cancel or timeout; a shutdown leaves it "running"
                        self.interrupted_step = st
                    raise
                except NotSerializableError as exc:
                    st.status, st.output, st.order = "running", None, -1
                    return await self._fail(st, exc, opts)
                except Exception as exc:
                    if opts.retry.retries_after(st.attempts, exc):
                        await self._wait_to_retry(st, exc, opts)
                        continue
                    return await self._fail(st, exc, opts)
                except BaseException as exc:  # not an Exception: never retried, never skipped
                    crash = HandlerCrashedError(f"step {tag!r} raised {type(exc).__name__}({exc}), "
                                                f"which is not an Exception")
                    crash.__cause__ = exc
                    return await self._fail(st, crash, DEFAULT_STEP_OPTIONS)
        finally:
            self._step_running = False
            if self._between_steps is not None and not self._between_steps.done():
                self._between_steps.set_result(None)  # an update was waiting for this step to end
        self.completed_steps.append(tag)
        self.outputs[tag] = output
        self.current_step = None
        await store.commit()
        return output

    async def _wait_to_retry(self, st: StepState, exc: Exception, opts: StepOptions) -> None:
        """The wait between attempts is a durable timer: journaled before it starts, resumed after a crash."""
        self.event("step_retrying", {"step": st.tag, "attempt": st.attempts, "error": error_dict(exc, step=st.tag)})
        st.retry_at = self._now() + opts.retry.delay_ms(st.attempts, random.random)
        self.store.put_entry(self.workflow_id, st.position, st.entry())
        await self.store.commit()
        await self.clock.sleep_until(st.retry_at)
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
        self.store.put_entry(self.workflow_id, st.position, st.entry())
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
        if self._updates_to_replay:
            await self.replay_updates(self._position - 1)
        position, recorded = self._take_position("checkpoint", name)
        if recorded is None:
            # The entry also stands for the checkpoint_created history event.
            self.store.put_entry(self.workflow_id, position, {"k": "checkpoint", "name": name, "data": data,
                                                             "at": self.clock.now_ms(), "seq": self.next_seq()})
            await self._durable()
        self.checkpoint_name, self.checkpoint_data, self.checkpoint_position = name, data, position

    # -- child workflows ------------------------------------------------------------

    async def child(self, child_id: str, tag: str, input: Any, *, timeout: Any = None, retries: int = 0,
                    parent_close_policy: str = "terminate") -> Any:
        """Run a child workflow as a step of this run: its output, or ``ChildWorkflowError``."""
        if parent_close_policy not in PARENT_CLOSE_POLICIES:
            raise InvalidArgumentError(f"parent_close_policy {parent_close_policy!r} is not one of "
                                       f"{', '.join(PARENT_CLOSE_POLICIES)}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidArgumentError(f"retries of child workflow {child_id!r} must be a non-negative int")
        timeout_ms = parse_optional_duration(timeout, name=f"timeout of child workflow {child_id!r}")
        host = self.host
        if host is None:
            raise InvalidArgumentError("child workflows need a running engine")

        async def compensate(_output: Any) -> None:
            await host.compensate_child(self.product_env, self.child_ids(child_id, st.attempts))

        if child_id in self.steps:
            raise DuplicateStepError(f"step tag {child_id!r} is used twice in workflow {self.workflow_id!r}")
        if self._updates_to_replay:
            await self.replay_updates(self._position - 1)
        position, recorded = self._take_position("step", child_id)
        st = StepState(child_id, position, False, compensate)
        self.steps[child_id] = st
        if recorded is not None:
            st.load(recorded)
            if st.status == "completed":
                self.completed_steps.append(child_id)
                self.outputs[child_id] = st.output
                return st.output
            if st.status == "failed":
                self.failed_step = st
                raise ChildWorkflowError(st.error["message"], child_id=child_id, error=st.error.get("child_error"))
        self.current_step = child_id
        if st.seq < 0:
            st.started_at = self._now()
            st.seq = self.next_seq()
        if self.replay_only:
            raise ReplayExhausted()
        reattach = st.attempts > 0  # it was running when the process died: wait for that child again
        if not reattach:
            st.attempts = 1
        while True:
            current = self.child_ids(child_id, st.attempts)[-1]
            if not reattach:
                self.store.put_entry(self.workflow_id, position, st.entry())
                self.event("child_started", {"child_id": current, "tag": tag, "attempt": st.attempts})
                await self.store.commit()
            reattach = False
            # run_child registers the child in self.children once it is ours; it stays there if we are
            # interrupted while waiting, so its parent-close policy applies when this run ends.
            end = await host.run_child(self, current, tag, input, timeout_ms, parent_close_policy)
            self.children.pop(current, None)
            if end["status"] == "completed":
                break
            self.event("child_failed", {"child_id": current, "status": end["status"], "error": end.get("error")})
            if st.attempts <= retries:
                st.attempts += 1
                continue
            message = f"child workflow {current!r} ended {end['status']}"
            if end.get("error"):
                message += f": {end['error']['message']}"
            st.status, st.ended_at, st.end_seq = "failed", self._now(), self.next_seq()
            st.error = {"message": message, "step": child_id, "code": "child_failed", "type": "ChildWorkflowError",
                        "child_error": end.get("error")}
            self.store.put_entry(self.workflow_id, position, st.entry())
            self.current_step = None
            await self.store.commit()
            self.failed_step = st
            raise ChildWorkflowError(message, child_id=current, error=end.get("error"), status=end["status"])
        st.status, st.output, st.ended_at = "completed", end.get("output"), self._now()
        st.end_seq = self.next_seq()
        st.order = self._order
        self._order += 1
        self.store.put_entry(self.workflow_id, position, st.entry())
        self.event("child_completed", {"child_id": current})
        self.completed_steps.append(child_id)
        self.outputs[child_id] = st.output
        self.current_step = None
        await self.store.commit()
        return st.output

    @staticmethod
    def child_ids(child_id: str, attempts: int) -> list[str]:
        """The ids of a child's attempts: the id itself, then ``<id>~2``, ``<id>~3`` for retries."""
        return [child_id] + [f"{child_id}~{n}" for n in range(2, attempts + 1)]

    @property
    def product_env(self) -> tuple[str, str]:
        return self.record["product"], self.record["env"]

    # -- signals and timers ---------------------------------------------------------

    def _blocked(self, what: str) -> None:
        self.waiting_for = what
        if self.on_block is not None:
            self.on_block()

    async def wait_for_signal(self, names: str | list[str] | tuple[str, ...], timeout: Any = None) -> dict:
        wanted = (names,) if isinstance(names, str) else tuple(names)
        if not wanted or not all(isinstance(n, str) and n for n in wanted):
            raise InvalidArgumentError(f"wait_for_signal needs a signal name or a list of names, got {names!r}")
        timeout_ms = parse_optional_duration(timeout, name="signal timeout")
        key = "|".join(wanted)
        if self._updates_to_replay:
            await self.replay_updates(self._position - 1)
        position, recorded = self._take_position("signal", key)
        if recorded is not None and recorded["status"] == "received":
            return _signal_value(recorded["name"], recorded["payload"])
        if recorded is not None and recorded["status"] == "timed_out":
            raise SignalTimeoutError(recorded["error"])
        deadline = recorded["deadline"] if recorded is not None else (
            None if timeout_ms is None else self._now() + timeout_ms)
        item = self.inbox.take(wanted)
        if item is None:
            if recorded is None:  # the deadline must be durable before we block on it
                self.store.put_entry(self.workflow_id, position, {"k": "signal", "tag": key, "status": "waiting",
                                                                 "deadline": deadline})
                await self.store.commit()
            item = await self._await_signal(wanted, deadline)
            if item is None:
                message = f"no signal {' or '.join(map(repr, wanted))} arrived within {timeout_ms or 0:g} ms"
                self.store.put_entry(self.workflow_id, position, {"k": "signal", "tag": key, "status": "timed_out",
                                                                 "deadline": deadline, "error": message})
                self.event("signal_timed_out", {"signals": list(wanted)})
                await self.store.commit()
                raise SignalTimeoutError(message)
        seq, signal = item
        self.store.put_entry(self.workflow_id, position, {"k": "signal", "tag": key, "status": "received",
                                                         "name": signal["name"], "payload": signal["payload"],
                                                         "signal_seq": seq})
        await self.store.commit()
        return _signal_value(signal["name"], signal["payload"])

    async def _await_signal(self, wanted: tuple[str, ...], deadline: float | None) -> tuple[int, dict] | None:
        """Block until a wanted signal is delivered (its tuple) or the deadline passes (None)."""
        future = self.inbox.wait(wanted)
        timer = None
        if deadline is not None:
            timer = self.clock.call_at(deadline, lambda: future.done() or future.set_result(None))
        self._blocked(f"signal {' | '.join(wanted)}")
        try:
            return await future
        finally:
            self.waiting_for = None
            self.inbox.stop_waiting()
            if timer is not None:
                timer.cancel()

    async def sleep(self, duration: Any) -> None:
        ms = parse_duration(duration, name="sleep duration")
        if self._updates_to_replay:
            await self.replay_updates(self._position - 1)
        position, recorded = self._take_position("sleep", "sleep")
        if recorded is not None and recorded["status"] == "done":
            return
        if recorded is None:
            deadline = self._now() + ms
            self.store.put_entry(self.workflow_id, position, {"k": "sleep", "tag": "sleep", "status": "waiting",
                                                             "deadline": deadline, "ms": ms})
            await self.store.commit()
        else:
            deadline = recorded["deadline"]  # resumed: only the time that is left
        self._blocked(f"timer {ms:g} ms")
        try:
            await self.clock.sleep_until(deadline)
        finally:
            self.waiting_for = None
        self.store.put_entry(self.workflow_id, position, {"k": "sleep", "tag": "sleep", "status": "done",
                                                         "deadline": deadline, "ms": ms})
        await self.store.commit()

    # -- rollback -------------------------------------------------------------------

    async def trigger_rollback(self, reason: str) -> RollbackResult:
        if self._updates_to_replay:
            await self.replay_updates(self._position - 1)
        position, recorded = self._take_position("rollback", "rollback")
        if recorded is not None:
            result = recorded["result"]
        else:
            result = await self.rollback(trigger="manual", reason=reason, manual=True, rollback_id=position)
            self.store.put_entry(self.workflow_id, position,
                                 {"k": "rollback", "tag": "rollback", "reason": reason, "result": result})
            await self._durable()
        self.manual_rollbacks.append(result)
        return RollbackResult.from_dict(result)

    async def _compensate(self, st: StepState) -> None:
        """Run one compensation with its ``rollback_options``: retries, waits, a timeout per attempt."""
        options = st.compensation
        argument = st.output if st.status == "completed" else None
        attempts = 0
        while True:
            attempts += 1
            try:
                if options.timeout_ms is None:
                    value = st.rollback(argument)
                    if inspect.isawaitable(value):
                        await value
                else:
                    await self._with_timeout(f"rollback of {st.tag}", lambda: st.rollback(argument),
                                             options.timeout_ms)
                return
            except Exception as exc:
                if not options.retry.retries_after(attempts, exc):
                    raise
                self.event("rollback_retrying", {"step": st.tag, "attempt": attempts,
                                                 "error": error_dict(exc, step=st.tag)})
                await self.clock.sleep(options.retry.delay_ms(attempts, random.random))

    async def rollback(self, *, trigger: str, reason: str | None, manual: bool = False,
                       failed_step: StepState | None = None, rollback_id: int = _FINAL_ROLLBACK) -> dict:
        """Run the compensations the strategy selects; each one's end is committed before the next."""
        facts = [st.facts() for st in self.steps.values()
                 if st.status == "completed" and not (st.rollback_status == "completed" and st.rollback_id != rollback_id)]
        plan = plan_rollback(self.definition.rollback_strategy, facts,
                             checkpoint_position=self.checkpoint_position,
                             failed_step=failed_step.facts() if failed_step is not None else None,
                             manual=manual)
        self.event("rollback_started", {"trigger": trigger, "reason": reason, "steps": plan})
        rolled: list[str] = []
        failed: list[dict] = []
        for tag in plan:
            st = self.steps[tag]
            if st.rollback_status == "completed" and st.rollback_id == rollback_id:
                rolled.append(tag)  # done before a crash; never run it twice
                continue
            try:
                # A failed step may have left partial effects; its compensation gets None.
                await self._compensate(st)
            except Exception as exc:
                st.rollback_status, st.rollback_error = "failed", str(exc) or type(exc).__name__
                failed.append({"tag": tag, "error": st.rollback_error})
                self.event("step_rollback_failed", {"step": tag, "error": st.rollback_error})
            else:
                st.rollback_status, st.rollback_error = "completed", None
                rolled.append(tag)
                self.event("step_rolled_back", {"step": tag})
            st.rollback_id = rollback_id
            self.store.put_entry(self.workflow_id, st.position, st.entry())
            await self._durable()
        return {"success": not failed, "rolled_back_steps": rolled, "failed_steps": failed,
                "reason": reason, "trigger": trigger}

    # -- the end ----------------------------------------------------------------------

    async def finish(self, outcome: "Outcome") -> dict:
        """Roll back if the outcome asks for it, then journal the end. Returns the instance record."""
        if self._updates_to_replay and outcome.kind == "completed":
            await self.replay_updates()  # updates that came after the last journaled call
        if self.children and self.host is not None:  # parent-close policies, before our own rollback
            await self.host.close_children(self, dict(self.children))
            self.children.clear()
        rollback_result: dict | None = _merge_rollbacks(self.manual_rollbacks)
        error = outcome.error
        failed_step = outcome.failed_step
        if outcome.kind == "completed":
            status = "completed"
            if rollback_result is not None:
                status = "rolled_back" if rollback_result["success"] else "failed"
        elif outcome.kind == "nondeterminism":
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
                await self.store.commit()
            result = await self.rollback(trigger=outcome.trigger, reason=outcome.reason or error["message"],
                                         failed_step=failed_state)
            rollback_result = _merge_rollbacks([*self.manual_rollbacks, result])
            if outcome.kind == "cancelled":
                status = "cancelled"
            else:
                status = ending_status(rolled_back=len(rollback_result["rolled_back_steps"]),
                                       failed_compensations=len(rollback_result["failed_steps"]))
        return await self._record_end(status, outcome.output, error, failed_step, rollback_result)

    async def _record_end(self, status: str, output: Any, error: dict | None, failed_step: str | None,
                          rollback_result: dict | None) -> dict:
        now = self.clock.now_ms()
        record = dict(self.record)
        record.pop("finishing", None)
        record.update(status=status, output=output, error=error, failed_step=failed_step,
                      completed_steps=list(self.completed_steps), rollback_result=rollback_result,
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

    def snapshot(self) -> dict:
        """What ``status`` shows for the run while it is live."""
        record = dict(self.record)
        record.update(current_step=self.current_step, waiting_for=self.waiting_for,
                      completed_steps=list(self.completed_steps),
                      state=self.state, checkpoint_name=self.checkpoint_name,
                      checkpoint_data=self.checkpoint_data, updated_at=self.clock.now_ms())
        if self._replay or self._updates_to_replay:  # resumed, still replaying: the journal knows more
            pending_updates = [(0, e) for entries in self._updates_to_replay.values() for e in entries]
            ahead = progress(sorted(self._replay.items()) + pending_updates)
            record["completed_steps"] += [t for t in ahead["completed_steps"] if t not in self.outputs]
            for name in ("checkpoint_name", "checkpoint_data", "current_step"):
                if ahead[name] is not None:
                    record[name] = ahead[name]
            if ahead["state"] and not self.state:
                record["state"] = ahead["state"]
        return record


class _Resume:
    """Await the rest of a coroutine that was started by hand (``send``) and suspended.

    Passes what the coroutine yields to the task and what the task sends or
    throws (a cancellation) back into it — what ``await`` itself does.
    """

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Any, yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Any:
        coro, yielded = self._coro, self._yielded
        while True:
            try:
                sent = yield yielded
            except BaseException as exc:  # thrown in by the task: a cancellation, most likely
                try:
                    yielded = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration as done:
                    return done.value


class Outcome:
    """How the handler part of a run ended; ``Run.finish`` turns it into an end."""

    __slots__ = ("kind", "output", "error", "failed_step", "trigger", "reason")

    def __init__(self, kind: str, *, output: Any = None, error: dict | None = None, failed_step: str | None = None,
                 trigger: str = "step_failed", reason: str | None = None) -> None:
        self.kind = kind  # completed | failed | cancelled | timeout | nondeterminism
        self.output = output
        self.error = error
        self.failed_step = failed_step
        self.trigger = trigger
        self.reason = reason


def _merge_rollbacks(results: list[dict]) -> dict | None:
    if not results:
        return None
    if len(results) == 1:
        return results[0]
    rolled: list[str] = []
    for r in results:
        rolled.extend(t for t in r["rolled_back_steps"] if t not in rolled)
    failed = [f for r in results for f in r["failed_steps"]]
    last = results[-1]
    return {"success": not failed, "rolled_back_steps": rolled, "failed_steps": failed,
            "reason": last["reason"], "trigger": last["trigger"]}


def _signal_value(name: str, payload: Any) -> dict:
    value = dict(payload) if isinstance(payload, dict) else {}
    value["_signal"] = name
    return value
