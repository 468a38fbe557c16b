"""The runtime engine: definitions, live runs, recovery, and reads.

It owns the store and the actor system. Every execution that is live in
this process is one ``WorkflowActor``; the engine finds it by workflow id
and talks to it through its ref. Results leave the runtime as plain
instance records; the api turns them into result dataclasses.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import random
import time
from typing import Any, Awaitable, Callable, TypeVar

import aiorwlock

from ...actors import ActorDeadError, ActorSystem
from ...errors import (
    CorruptRecordError,
    DefinitionNotFoundError,
    EngineClosedError,
    InvalidArgumentError,
    NotSerializableError,
    QueryNotFoundError,
    StepNotFoundError,
    StorageError,
    WorkflowEndedError,
    WorkflowExistsError,
    WorkflowNotFoundError,
)
from ...storage import Store, open_store
from ..actor.admission import DEFAULT_MAX_ACTIVE, Admission, resolve_limit
from ..boundary import IMMUTABLE_TYPES, snapshot
from .child_hosting import ChildHost
from ..clock import SYSTEM_CLOCK, Clock
from ..handler.components import Actions, Fallbacks, Notifications
from ..handler.context import RestrictedContext
from ..handler.definitions import Definition, require_name
from ..decisions.durations import parse_optional_duration
from ..decisions.history import build_history, next_history_seq, progress
from ..run.entries import StepState, read_journal
from ..run.core import Run
from ..actor.workflow_actor import (
    Cancel,
    Query,
    Signal,
    Status,
    Update,
    WorkflowActor,
)

log = logging.getLogger("sagaloop.runtime")

T = TypeVar("T")


def _reading(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Run a read call under the read side of the engine's gate."""

    @functools.wraps(method)
    async def read(self: "Runtime", *args: Any, **kwargs: Any) -> T:
        async with self._gate.reader_lock:
            self._require_open()
            return await method(self, *args, **kwargs)

    return read


# Seeded from os.urandom, and again in a forked child. Not os.urandom per id: that is a
# syscall, which measured 9% of W1's time on this VM.
_id_bits = random.Random()
os.register_at_fork(after_in_child=_id_bits.seed)


FIRST_RESUME_PAUSE_S, MAX_RESUME_PAUSE_S = 0.05, 5.0  # after a failed commit (doubling)
STATUSES = ("running", "completed", "failed", "rolled_back", "cancelled")
MAX_SCOPE_BYTES = 511  # an idempotency scope is a store key (LMDB's key limit)


def copy_in(value: Any, what: str) -> Any:
    """The instance's own copy of a value a caller hands in (``boundary.snapshot``), naming it on error."""
    if type(value) in IMMUTABLE_TYPES:
        return value
    try:
        return snapshot(value)
    except NotSerializableError as exc:
        raise NotSerializableError(f"{what}: {exc}") from None


def new_workflow_id() -> str:
    # Time-ordered, so ids sort roughly by start; 64 random bits make collisions negligible.
    return f"wf-{time.time_ns():x}-{_id_bits.getrandbits(64):016x}"


class Runtime(ChildHost):
    """Runs workflow definitions durably on one store."""

    def __init__(self, path: str, *, durability: str = "durable", clock: Clock | None = None,
                 store: Store | None = None, max_active_runs: int | str | None = DEFAULT_MAX_ACTIVE) -> None:
        if durability not in ("durable", "fast"):
            raise InvalidArgumentError(f"durability must be 'durable' or 'fast', got {durability!r}")
        self.path = path
        self.durability = durability
        if clock is not None and not all(callable(getattr(clock, n, None)) for n in ("now_ms", "call_at", "sleep_until")):
            raise InvalidArgumentError(f"clock must be a sagaloop clock (now_ms, call_at, sleep_until), got {clock!r}")
        self.clock = clock or SYSTEM_CLOCK
        self.store: Store = store if store is not None else open_store(path, durability=durability)
        # Checks the value now; open() makes a fresh one with the same limit.
        self._admission = Admission(resolve_limit(max_active_runs, durability))
        self.definitions: dict[tuple[str, str], Definition] = {}
        self._system: ActorSystem | None = None
        self._live: dict[str, WorkflowActor] = {}
        self._reserved: set[str] = set()            # ids taken by an execute still on its way in
        self._idempotency: dict[str, str] = {}      # scope -> workflow id, while that run is live
        self._orphans: dict[tuple[str, str], list[dict]] = {}  # in flight at the last stop, not yet defined
        self._resuming: dict[str, asyncio.Future[None]] = {}   # being loaded back; done once live
        self._inbox_locks: dict[str, asyncio.Lock] = {}        # signals to instances not live here
        self._suspended: dict[str, int] = {}                   # runs stopped by a failed commit -> attempts
        self._background: set[asyncio.Task] = set()
        self._open = False
        # Reads (status, query, history, ...) share the store with close(), which must not pull it
        # from under them: they hold the read side, close() the write side.
        # fast=True: acquiring does not yield, so a read keeps its place in an instance's mailbox order.
        self._gate = aiorwlock.RWLock(fast=True)
        self.faults: dict[str, list] = {}  # step tag -> [times left, error]: sagaloop.testing.fail_step
        self._bind_clock()
        self.actions = Actions(self.clock)
        self.fallbacks = Fallbacks(self.actions)
        self.notifications = Notifications()

    # -- lifecycle --------------------------------------------------------------------

    def _bind_clock(self) -> None:
        bind = getattr(self.clock, "bind", None)
        if bind is not None:  # a test clock wants to know when this engine has gone idle
            stats = self.store.stats  # one object, updated in place
            bind(self, lambda: stats.groups)

    async def open(self) -> None:
        if self._open:
            return
        self._bind_clock()  # again, after a close released it
        await self.store.open()
        self._system = ActorSystem(on_crash=self._on_crash)
        self._admission = Admission(self._admission.limit)
        self._open = True
        self._orphans.clear()  # what a previous open found is read again below
        for record in await self.store.running_instances():
            self._orphans.setdefault((record["product"], record["tag"]), []).append(record)
        for key in list(self.definitions):
            self._recover(key)

    async def close(self) -> None:
        if not self._open:
            return
        async with self._gate.writer_lock:  # reads under way finish first; later ones see a closed engine
            await self._close()

    async def _close(self) -> None:
        if not self._open:
            return
        self._open = False
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        assert self._system is not None
        await self._system.shutdown()
        self._admission.close()
        await self.store.close()
        unbind = getattr(self.clock, "unbind", None)
        if unbind is not None:
            unbind(self)

    @property
    def is_open(self) -> bool:
        return self._open

    def _require_open(self) -> ActorSystem:
        if not self._open or self._system is None:
            raise EngineClosedError("the engine is not open; use 'async with Engine(...)' or 'await engine.open()'")
        return self._system

    def _on_crash(self, ref: Any, error: BaseException) -> None:
        log.error("actor %s crashed: %r", ref.id, error)

    # -- definitions and recovery -----------------------------------------------------

    def define(self, definition: Definition) -> None:
        key = (definition.product, definition.tag)
        if key in self.definitions:
            raise InvalidArgumentError(f"workflow {definition.tag!r} of product {definition.product!r} is already defined")
        self.definitions[key] = definition
        if self._open:
            self._recover(key)

    def _definition(self, product: str, tag: str) -> Definition:
        definition = self.definitions.get((product, tag))
        if definition is None:
            raise DefinitionNotFoundError(f"no workflow {tag!r} is defined for product {product!r}")
        return definition

    def _recover(self, key: tuple[str, str]) -> None:
        """Resume, under their own ids, the runs of ``key`` that were in flight at the last stop."""
        records = self._orphans.pop(key, None)
        if not records:
            return
        loop = asyncio.get_running_loop()
        for record in records:
            self._resuming[record["workflow_id"]] = loop.create_future()
        task = asyncio.get_running_loop().create_task(self._resume_all(records))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _resume_all(self, records: list[dict]) -> None:
        for record in records:
            wf = record["workflow_id"]
            try:
                journal = await read_journal(self.store, wf)
                events = await self.store.load_events(wf)
                signals = await self.store.load_signals(wf)
                definition = self.definitions[(record["product"], record["tag"])]
                run = Run(store=self.store, clock=self.clock, definition=definition, record=record,
                          journal=journal, event_seq=next_history_seq(events, journal), signals=signals)
                run.event("workflow_resumed", {"completed_steps": sum(
                    1 for _, e in journal if e.get("k") == "step" and e.get("status") == "completed")})
                self._spawn(run)
            except CorruptRecordError as exc:
                self._fail_corrupt(record, exc)
            except Exception:
                log.exception("could not resume workflow %s", wf)
            finally:
                waiter = self._resuming.pop(wf, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

    def _fail_corrupt(self, record: dict, error: CorruptRecordError) -> None:
        """A record of this in-flight run does not decode: it ends ``failed`` (code ``corrupt_record``,
        naming the record), loudly, instead of being left ``running`` for ever; the rest run on."""
        log.error("workflow %s cannot resume: %s", record["workflow_id"], error,
                  extra={"workflow_id": record["workflow_id"], "tag": record.get("tag")})
        now = self.clock.now_ms()
        self.store.put_instance({**record, "status": "failed", "ended_at": now, "updated_at": now,
                                 "error": {"message": str(error), "step": None, "code": error.code,
                                           "type": type(error).__name__, "key": error.key}})

    def _spawn(self, run: Run, parent: WorkflowActor | None = None) -> WorkflowActor:
        system = self._require_open()
        run.host = self
        run.faults = self.faults
        self._inbox_locks.pop(run.workflow_id, None)  # live now: its actor owns the inbox
        actor = WorkflowActor(run, self._forget, self._admission)
        self._live[run.workflow_id] = actor
        parent_ref = parent.ref if parent is not None and parent.ref.is_alive else None
        system.spawn(actor, id=run.workflow_id, parent=parent_ref, lazy=True)
        actor.begin()
        return actor

    def _forget(self, workflow_id: str, failure: BaseException | None = None) -> None:
        """The actor of ``workflow_id`` let go of its run: it ended, or one of its commits failed."""
        self._live.pop(workflow_id, None)
        if failure is None:
            self._suspended.pop(workflow_id, None)
        elif self._open:
            self._resume_after(workflow_id, failure)

    def _resume_after(self, workflow_id: str, failure: BaseException) -> None:
        """A commit of the run failed: resume it from its last commit after a pause (longer each time)."""
        attempt = self._suspended.get(workflow_id, 0) + 1
        self._suspended[workflow_id] = attempt
        delay = min(MAX_RESUME_PAUSE_S, FIRST_RESUME_PAUSE_S * 2 ** (attempt - 1))
        log.error("workflow %s stopped at its last commit (%s); it resumes in %.2f s (attempt %d)",
                  workflow_id, failure, delay, attempt, extra={"workflow_id": workflow_id})
        loop = asyncio.get_running_loop()

        async def resume() -> None:
            await asyncio.sleep(delay)
            try:
                record = await self.store.get_instance(workflow_id)
            except Exception as exc:  # the store still fails: try again later
                self._resume_after(workflow_id, exc)
                return
            if record is None or record["status"] != "running" or workflow_id in self._live:
                return  # its start was never committed, it ended meanwhile, or it is live again
            self._resuming[workflow_id] = loop.create_future()
            await self._resume_all([record])

        task = loop.create_task(resume())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- execute ------------------------------------------------------------------------

    async def execute(self, *, product: str, env: str, tag: str, input: Any = None, workflow_id: str | None = None,
                      idempotency_key: str | None = None, timeout: Any = None, context: Any = None,
                      wait: bool = True) -> dict:
        """Start an execution; return its instance record (ended, or running if ``wait`` is false)."""
        self._require_open()
        require_name(product, "product")
        require_name(env, "env")
        definition = self._definition(product, tag)
        timeout_ms = parse_optional_duration(timeout, name="timeout")
        if timeout_ms is None:
            timeout_ms = definition.timeout_ms
        scope = None
        if idempotency_key is not None:
            require_name(idempotency_key, "idempotency_key")
            scope = f"{product}\x1f{env}\x1f{tag}\x1f{idempotency_key}"
            if len(scope.encode(errors="replace")) > MAX_SCOPE_BYTES:  # refused before anything is queued
                raise InvalidArgumentError(
                    f"idempotency_key {idempotency_key[:40]!r}... is too long: with product, env and tag it "
                    f"takes {len(scope.encode(errors='replace'))} bytes in UTF-8; at most {MAX_SCOPE_BYTES} "
                    f"are allowed")
            first = self._idempotency.get(scope) or await self.store.get_idempotency(scope)
            if first is not None:
                return await self._wait_record(first, wait)
        # The instance keeps a copy: the caller's later writes to its input never reach it.
        input, context = copy_in(input, "input"), copy_in(context, "context")
        generated = workflow_id is None
        if generated:
            workflow_id = new_workflow_id()  # time-ordered with 64 random bits: cannot be taken already
        else:
            require_name(workflow_id, "workflow_id")
        if workflow_id in self._live or workflow_id in self._reserved or workflow_id in self._resuming:
            raise WorkflowExistsError(f"workflow_id {workflow_id!r} already exists")
        self._reserved.add(workflow_id)
        try:
            if not generated and await self.store.get_instance(workflow_id) is not None:
                raise WorkflowExistsError(f"workflow_id {workflow_id!r} already exists")
            if scope is not None:  # re-check: another execute may have taken the key meanwhile
                first = self._idempotency.get(scope)
                if first is not None:
                    return await self._wait_record(first, wait)
            actor = self._start(definition, env, workflow_id, input, timeout_ms,
                                {"context": context, "idempotency_key": idempotency_key, "type": "original"},
                                scope=scope)
            run = actor.run
        finally:
            self._reserved.discard(workflow_id)
        if scope is not None:
            actor.ended.add_done_callback(lambda _f, s=scope: self._idempotency.pop(s, None))
        if not wait:
            await self.store.commit()  # the start is durable before we answer
            return snapshot(run.status_record())
        return await self._settled(actor)

    def _start(self, definition: Definition, env: str, workflow_id: str, input: Any, timeout_ms: float | None,
               extra: dict, *, scope: str | None = None, parent: WorkflowActor | None = None) -> WorkflowActor:
        """Journal a new instance and spawn its actor (the id is already checked free)."""
        now = self.clock.now_ms()
        record = {"workflow_id": workflow_id, "product": definition.product, "env": env, "tag": definition.tag,
                  "status": "running", "input": input, "created_at": now, "updated_at": now,
                  "timeout": timeout_ms, "deadline": None if timeout_ms is None else now + timeout_ms, **extra}
        self.store.put_instance(record)  # raises NotSerializableError for a bad input; nothing queued
        if scope is not None:
            self.store.put_idempotency(scope, workflow_id)
            self._idempotency[scope] = workflow_id
        # seq 0 of the history is workflow_started, implied by the instance record.
        run = Run(store=self.store, clock=self.clock, definition=definition, record=record, event_seq=1)
        return self._spawn(run, parent=parent)

    @staticmethod
    async def _settled(actor: WorkflowActor) -> dict:
        """The end record, or the running snapshot as soon as the run blocks on a signal or timer."""
        record = await actor.wait_settled()
        return actor.end_record() if record is not None else snapshot(actor.run.status_record())

    async def _wait_record(self, workflow_id: str, wait: bool) -> dict:
        actor = self._live.get(workflow_id)
        if actor is not None:
            return await self._settled(actor) if wait else snapshot(actor.run.status_record())
        record = await self.store.get_instance(workflow_id)
        if record is None:  # started in this process, not yet committed
            await self.store.commit()
            record = await self.store.get_instance(workflow_id)
        assert record is not None
        return record


    # -- talking to executions ----------------------------------------------------------

    async def _record(self, product: str, env: str, workflow_id: str) -> dict:
        """The latest record of an execution: the live actor's view, else the store's."""
        self._require_open()
        resuming = self._resuming.get(workflow_id)
        if resuming is not None:  # recovery is loading it: answer from the live actor
            await asyncio.shield(resuming)
        actor = self._live.get(workflow_id)
        if actor is not None:
            record = actor.run.record
        else:
            record = await self.store.get_instance(workflow_id)
        if record is None or record["product"] != product or record["env"] != env:
            raise WorkflowNotFoundError(f"no workflow {workflow_id!r} in product {product!r}, env {env!r}",
                                        workflow_id=workflow_id)
        return record

    async def result(self, *, product: str, env: str, workflow_id: str, timeout: Any = None) -> dict:
        timeout_ms = parse_optional_duration(timeout, name="timeout")
        loop = asyncio.get_running_loop()
        deadline = None if timeout_ms is None else loop.time() + timeout_ms / 1000.0
        while True:
            record = await self._record(product, env, workflow_id)
            actor = self._live.get(workflow_id)
            if actor is None:
                if workflow_id in self._suspended and (deadline is None or loop.time() < deadline):
                    await asyncio.sleep(0.02)  # stopped by a failed commit: it resumes shortly
                    continue
                return record  # ended (a fresh read of the store), or in flight but not live here
            try:
                async with asyncio.timeout_at(deadline):
                    await asyncio.shield(actor.ended)
            except TimeoutError:
                return snapshot(actor.run.status_record())
            except StorageError:
                continue  # a commit of the run failed: wait for it to resume
            return actor.end_record()

    @_reading
    async def status(self, *, product: str, env: str, workflow_id: str) -> dict:
        record = await self._record(product, env, workflow_id)
        actor = self._live.get(workflow_id)
        if actor is not None:
            try:
                return await actor.ref.ask(Status())
            except ActorDeadError:
                pass
        record = await self.store.get_instance(workflow_id) or record
        if record["status"] == "running":  # in flight, not live here: its journal tells the progress
            record = {**record, **progress(await read_journal(self.store, workflow_id))}
        return record

    @_reading
    async def query(self, *, product: str, env: str, workflow_id: str, query: str, args: Any = None) -> Any:
        await self._record(product, env, workflow_id)
        args = copy_in(args, "query args")
        actor = self._live.get(workflow_id)
        if actor is not None:
            try:
                answer = await actor.ref.ask(Query(query, args))
            except ActorDeadError:
                pass
            else:
                return await asyncio.shield(answer)  # a copy, made by the actor in its turn
        return await self._query_ended(await self.store.get_instance(workflow_id), query, args)

    async def _query_ended(self, record: dict, query: str, args: Any) -> Any:
        """Queries also answer for ended runs, against the state recorded at the end."""
        definition = self._definition(record["product"], record["tag"])
        fn = definition.queries.get(query)
        if fn is None:
            raise QueryNotFoundError(f"workflow {record['tag']!r} has no query {query!r}")
        run = Run(store=self.store, clock=self.clock, definition=definition, record=record)
        run.state = record.get("state") or {}
        run.checkpoint_name, run.checkpoint_data = record.get("checkpoint_name"), record.get("checkpoint_data")
        for position, entry in await read_journal(self.store, record["workflow_id"]):
            if entry.get("k") == "step":
                st = StepState(entry["tag"], position, None)
                st.load(entry)
                run.steps[st.tag] = st
        ctx = RestrictedContext(run, "query")
        value = fn(ctx) if args is None else fn(ctx, args)
        if inspect.isawaitable(value):
            value = await value
        return snapshot(value)

    async def signal(self, *, product: str, env: str, workflow_id: str, signal: str, payload: Any = None) -> None:
        """Append a signal to the instance's durable inbox, then deliver it; returns once it is durable."""
        require_name(signal, "signal")
        if payload is not None and not isinstance(payload, dict):
            raise InvalidArgumentError(f"a signal payload must be a dict or None, got {type(payload).__name__}")
        record = await self._record(product, env, workflow_id)
        payload = copy_in(payload, "signal payload")
        actor = self._live.get(workflow_id)
        if actor is not None:
            try:
                await actor.ref.ask(Signal(signal, payload))
                return
            except ActorDeadError:
                record = await self.store.get_instance(workflow_id) or record
        if record["status"] != "running":
            raise WorkflowEndedError(f"workflow {workflow_id!r} has ended ({record['status']}); "
                                     f"it takes no more signals", workflow_id=workflow_id)
        # In flight but not live here (its definition is not registered yet): the inbox keeps it,
        # and its resumed run takes it from there. One writer per inbox at a time.
        lock = self._inbox_locks.setdefault(workflow_id, asyncio.Lock())
        async with lock:
            await self.store.commit()
            # Every read first: a record that does not decode raises before anything is queued.
            signals = await self.store.load_signals(workflow_id)
            journal = await read_journal(self.store, workflow_id)
            event_seq = next_history_seq(await self.store.load_events(workflow_id), journal)
            seq = 1 + max((s for s, _ in signals), default=-1)
            now = self.clock.now_ms()
            self.store.put_signal(workflow_id, seq, {"name": signal, "payload": payload, "at": now})
            self.store.put_event(workflow_id, event_seq, {"type": "signal_received", "timestamp": now, "seq": event_seq,
                                                          "data": {"signal": signal, "payload": payload}})
            await self.store.commit()

    async def update(self, *, product: str, env: str, workflow_id: str, update: str, args: Any = None,
                     update_id: str | None = None) -> Any:
        """Run an update inside the instance's actor; its reply once the change is journaled."""
        require_name(update, "update")
        if update_id is not None:
            require_name(update_id, "update_id")
        record = await self._record(product, env, workflow_id)
        args = copy_in(args, "update args")
        actor = self._live.get(workflow_id)
        if actor is not None:
            try:
                answer = await actor.ref.ask(Update(update, args, update_id))
            except ActorDeadError:
                record = await self.store.get_instance(workflow_id) or record
            else:
                return await asyncio.shield(answer)  # a copy, made by the actor in its turn
        if update_id is not None:  # sent again after the end (or after a restart): the recorded reply
            for position, entry in await read_journal(self.store, workflow_id):
                if entry.get("k") == "update" and entry.get("update_id") == update_id:
                    return entry["reply"]
        if record["status"] != "running":
            raise WorkflowEndedError(f"workflow {workflow_id!r} has ended ({record['status']}); "
                                     f"it takes no more updates", workflow_id=workflow_id)
        raise WorkflowNotFoundError(f"workflow {workflow_id!r} is in flight but not live in this process yet "
                                    f"(define its workflow {record['tag']!r} first)", workflow_id=workflow_id)

    async def cancel(self, *, product: str, env: str, workflow_id: str, reason: str | None = None) -> dict:
        if reason is not None and not isinstance(reason, str):
            raise InvalidArgumentError(f"a cancel reason must be a string or None, got {reason!r}")
        record = await self._record(product, env, workflow_id)
        actor = self._live.get(workflow_id)
        ended = None
        if actor is not None:
            try:
                ended = await actor.ref.ask(Cancel(reason))
            except ActorDeadError:
                ended = None
        if ended is None:
            final = await self.store.get_instance(workflow_id) or record
            return {"cancelled": False, "rolled_back_steps": [], "status": final["status"]}
        final = await asyncio.shield(ended)
        rolled = (final.get("rollback_result") or {}).get("rolled_back_steps", [])
        return {"cancelled": final["status"] == "cancelled", "rolled_back_steps": list(rolled),
                "status": final["status"]}

    # -- reads ----------------------------------------------------------------------------

    @_reading
    async def history(self, *, product: str, env: str, workflow_id: str) -> list[dict]:
        await self._record(product, env, workflow_id)
        await self.store.commit()  # include what this process has queued
        record = await self.store.get_instance(workflow_id)
        assert record is not None
        return build_history(record, await read_journal(self.store, workflow_id),
                             await self.store.load_events(workflow_id))

    @_reading
    async def step_detail(self, *, product: str, env: str, workflow_id: str, step_tag: str) -> dict:
        await self._record(product, env, workflow_id)
        await self.store.commit()
        for _, entry in await read_journal(self.store, workflow_id):
            if entry.get("k") == "step" and entry["tag"] == step_tag:
                status = entry["status"]
                if status == "completed" and entry.get("rollback_status") == "completed":
                    status = "rolled_back"  # a failed step stays "failed" (the seed's example); see rollback_status
                ended = entry.get("ended_at")
                return {"tag": step_tag, "status": status, "input": entry.get("input"),
                        "output": entry["output"], "error": entry["error"], "attempts": entry["attempts"],
                        "duration": None if ended is None else ended - entry["started_at"],
                        "rollback_status": entry.get("rollback_status")}
        raise StepNotFoundError(f"workflow {workflow_id!r} has no step {step_tag!r}")

    @_reading
    async def list(self, *, product: str, env: str, tag: str | None = None, status: str | None = None,
                   limit: int = 100) -> list[dict]:
        self._require_open()
        require_name(product, "product")
        require_name(env, "env")
        if status is not None and status not in STATUSES:
            raise InvalidArgumentError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidArgumentError(f"limit must be a positive int, got {limit!r}")
        await self.store.commit()
        return await self.store.list_instances(product=product, env=env, tag=tag, status=status, limit=limit)
