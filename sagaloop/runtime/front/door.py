"""The front door: every call into the runtime, on one store.

It owns the store, the actor system and the ``Registry`` of the runs in
this process (``registry``); it starts executions and lists them. Results
leave as plain records; the api turns them into result dataclasses.

The calls about one execution by id are ``executions`` (see there for the
read gate, which ``close`` takes the write side of).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, Coroutine

import aiorwlock

from ...actors import ActorRef, ActorSystem
from ...errors import (
    DefinitionNotFoundError,
    EngineClosedError,
    InvalidArgumentError,
    WorkflowExistsError,
)
from ...storage import Store, open_store
from ..actor.admission import DEFAULT_MAX_ACTIVE, Admission, resolve_limit
from ..actor.workflow_actor import WorkflowActor
from ..boundary import copy_in, snapshot
from ..clock import SYSTEM_CLOCK, Clock
from ..decisions.definitions import Definition, require_name
from ..decisions.durations import parse_optional_duration
from ..run import Run
from ..run.core import Signals
from ..vocabulary import Record
from . import reads
from .executions import Executions, reading
from .hosting import Hosting
from .recovery import Recovery
from .registry import Registry
from .repairs import Repairs
from .scheduler import Scheduler
from .starts import first_record, idempotency_scope, new_workflow_id

log = logging.getLogger(__name__)

class FrontDoor:
    """Runs workflow definitions durably on one store."""

    def __init__(self, path: str, *, durability: str = "durable", clock: Clock | None = None,
                 store: Store | None = None, max_active_runs: int | str | None = DEFAULT_MAX_ACTIVE) -> None:
        if durability not in ("durable", "fast"):
            raise InvalidArgumentError(f"durability must be 'durable' or 'fast', got {durability!r}")
        if clock is not None and not all(callable(getattr(clock, n, None)) for n in ("now_ms", "call_at", "sleep_until")):
            raise InvalidArgumentError(f"clock must be a sagaloop clock (now_ms, call_at, sleep_until), got {clock!r}")
        self.path, self.durability = path, durability
        self.clock = clock or SYSTEM_CLOCK
        self.store: Store = store if store is not None else open_store(path, durability=durability)
        self._admission = Admission(resolve_limit(max_active_runs, durability))  # checked now; open() renews it
        self.definitions: dict[tuple[str, str], Definition] = {}
        self.registry = Registry()
        self.hosting = Hosting(self.store, self.clock, self.registry, self._definition, self._start)
        self.actions, self.fallbacks, self.notifications = (
            self.hosting.actions, self.hosting.fallbacks, self.hosting.notifications)
        self.recovery = Recovery(self.store, self.clock, self.registry, self.definitions, self._spawn_recovered,
                                 self._in_background)
        self._system: ActorSystem | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._open = False
        # fast=True: acquiring does not yield, so a read keeps its place in an instance's mailbox order.
        self._gate = aiorwlock.RWLock(fast=True)
        self.repairs = Repairs(self)
        self.scheduler = Scheduler(self)  # dispatched jobs: one actor, one clock timer (none when no job exists)
        self.executions = Executions(self.store, self.clock, self.registry, self._definition, self._gate,
                                     self._require_open)
        self.faults: dict[str, list[Any]] = {}  # step tag -> [times left, error]: sagaloop.testing.fail_step
        self._bind_clock()

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
        await self.recovery.find_orphans()
        for key in list(self.definitions):
            self.recovery.recover(key)
        await self.scheduler.start()

    async def close(self) -> None:
        if not self._open:
            return
        async with self._gate.writer_lock:  # reads under way finish first; later ones see a closed engine
            if not self._open:
                return
            self._open = False
            await self.scheduler.stop()
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

    def _on_crash(self, ref: ActorRef, error: BaseException) -> None:
        log.error("actor %s crashed: %r", ref.id, error)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- definitions and live runs ----------------------------------------------------

    def define(self, definition: Definition) -> None:
        key = (definition.product, definition.tag)
        if key in self.definitions:
            raise InvalidArgumentError(f"workflow {definition.tag!r} of product {definition.product!r} is already defined")
        self.definitions[key] = definition
        if self._open:
            self.recovery.recover(key)
            self.scheduler.defined(key)

    def _definition(self, product: str, tag: str) -> Definition:
        definition = self.definitions.get((product, tag))
        if definition is None:
            raise DefinitionNotFoundError(f"no workflow {tag!r} is defined for product {product!r}")
        return definition

    def _spawn(self, run: Run, parent: WorkflowActor | None = None) -> WorkflowActor:
        system = self._require_open()
        run.host, run.faults = self.hosting, self.faults
        self.registry.inbox_locks.pop(run.workflow_id, None)  # live now: its actor owns the inbox
        actor = WorkflowActor(run, self._let_go, self._admission)
        self.registry.live[run.workflow_id] = actor
        parent_ref = parent.ref if parent is not None and parent.ref.is_alive else None
        system.spawn(actor, id=run.workflow_id, parent=parent_ref, lazy=True)
        actor.begin()
        return actor

    def _spawn_recovered(self, run: Run, parent: WorkflowActor | None = None) -> WorkflowActor:
        actor = self._spawn(run, parent)
        self.scheduler.recovered(actor)  # a run of a dispatched job: its end is told to the scheduler
        return actor

    def _let_go(self, workflow_id: str, failure: BaseException | None = None) -> None:
        """The actor of ``workflow_id`` let go of its run: it ended, or one of its commits failed."""
        attempt = self.registry.ended(workflow_id, failure)
        if failure is not None and attempt is not None and self._open:
            self.recovery.resume_after(workflow_id, failure, attempt)

    def _start(self, definition: Definition, env: str, workflow_id: str, input: Any, timeout_ms: float | None,
               extra: Record, *, scope: str | None = None, parent: WorkflowActor | None = None,
               signals: Signals = ()) -> WorkflowActor:
        """Journal a new instance (with ``signals`` already in its inbox) and spawn its actor (the id is
        already checked free)."""
        record = first_record(definition, env, workflow_id, input, timeout_ms, self.clock.now_ms(), extra)
        self.store.put_instance(record)  # raises NotSerializableError for a bad input; nothing queued
        for seq, signal in signals:
            self.store.put_signal(workflow_id, seq, signal)
        if scope is not None:
            self.store.put_idempotency(scope, workflow_id)
            self.registry.idempotency[scope] = workflow_id
        run = Run(store=self.store, clock=self.clock, definition=definition, record=record, event_seq=1,
                  signals=signals)
        return self._spawn(run, parent=parent)

    # -- execute and result ---------------------------------------------------------------

    async def execute(self, *, product: str, env: str, tag: str, input: Any = None, workflow_id: str | None = None,
                      idempotency_key: str | None = None, timeout: Any = None, context: Any = None,
                      wait: bool = True) -> Record:
        """Start an execution; return its instance record (ended, or running if ``wait`` is false)."""
        self._require_open()
        require_name(product, "product")
        require_name(env, "env")
        definition = self._definition(product, tag)
        timeout_ms = parse_optional_duration(timeout, name="timeout")
        scope = None if idempotency_key is None else idempotency_scope(product, env, tag, idempotency_key)
        # The instance keeps a copy: the caller's later writes to its input never reach it.
        input, context = copy_in(input, "input"), copy_in(context, "context")
        extra = {"context": context, "idempotency_key": idempotency_key, "type": "original"}
        return await self.launch(definition, env, input, definition.timeout_ms if timeout_ms is None else timeout_ms,
                                 extra, workflow_id=workflow_id, scope=scope, wait=wait)

    async def launch(self, definition: Definition, env: str, input: Any, timeout_ms: float | None, extra: Record, *,
                     workflow_id: str | None = None, scope: str | None = None, wait: bool = True,
                     signals: Signals = ()) -> Record:
        """Start a new execution (``execute``, and the executions made from another: see ``repairs``).

        With an idempotency ``scope`` that a run already holds, that run's record instead.
        """
        if scope is not None:
            first = self.registry.idempotency.get(scope) or await self.store.get_idempotency(scope)
            if first is not None:
                return await self.executions.wait_record(first, wait)
        generated = workflow_id is None
        workflow_id = new_workflow_id() if workflow_id is None else require_name(workflow_id, "workflow_id")
        if self.registry.taken(workflow_id):
            raise WorkflowExistsError(f"workflow_id {workflow_id!r} already exists")
        self.registry.reserved.add(workflow_id)
        try:
            if not generated and await self.store.get_instance(workflow_id) is not None:
                raise WorkflowExistsError(f"workflow_id {workflow_id!r} already exists")
            first = None if scope is None else self.registry.idempotency.get(scope)
            if first is not None:  # another execute took the key meanwhile
                return await self.executions.wait_record(first, wait)
            actor = self._start(definition, env, workflow_id, input, timeout_ms, extra, scope=scope, signals=signals)
        finally:
            self.registry.reserved.discard(workflow_id)
        if scope is not None:
            actor.ended.add_done_callback(functools.partial(self._release_scope, scope))
        if not wait:
            await self.store.commit()  # the start is durable before we answer
            running: Record = snapshot(actor.run.status_record())
            return running
        return await self.executions.blocked_or_ended(actor)

    def _release_scope(self, scope: str, _ended: object) -> None:
        self.registry.idempotency.pop(scope, None)  # the run ended: the store answers for the key now

    @reading
    async def list(self, /, **query: Any) -> Record:
        """One page of executions (``reads.list_page``: it checks every argument)."""
        return await reads.list_page(self.store, **query)
