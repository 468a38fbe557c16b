"""Talking to one execution by id: its live actor if it has one here, else the store.

Every call resolves the id first (``record``: the product and env must
match), then asks the live actor (``Registry.ask``) and, when the run is not
live here, answers from the store (``reads``). Values handed out are copies
(``boundary``).

The read gate: calls that only read (``status``, ``query``, ``history``,
``step_detail``, and the door's ``list``) hold its read side, so the
door's ``close`` (the write side) never pulls the store from under them.
Calls that write (``signal``, ``update``, ``cancel``) and ``result`` need no
gate: they reach a live actor, which a close answers with
``EngineClosedError``, or the store's queue, which refuses writes once it
is closed.
"""

from __future__ import annotations

import asyncio
import functools
from typing import (
    Any,
    Awaitable,
    Callable,
    Concatenate,
    Coroutine,
    ParamSpec,
    Protocol,
    TypeVar,
)

import aiorwlock

from ...errors import (
    InvalidArgumentError,
    StorageError,
    WorkflowEndedError,
    WorkflowNotFoundError,
)
from ...storage import Store
from ..actor.messages import Cancel, Query, Signal, Status, Update
from ..actor.workflow_actor import WorkflowActor
from ..boundary import copy_in, snapshot
from ..clock import Clock
from ..decisions.definitions import Definition, require_name
from ..decisions.durations import parse_optional_duration
from ..run.signals import record_signal_not_live
from ..vocabulary import Record
from . import reads
from .registry import NOT_LIVE, Registry


class Gated(Protocol):
    _gate: aiorwlock.RWLock

    def _require_open(self) -> object: ...


G = TypeVar("G", bound=Gated)
P = ParamSpec("P")
T = TypeVar("T")


def reading(method: Callable[Concatenate[G, P], Awaitable[T]]) -> Callable[Concatenate[G, P], Coroutine[Any, Any, T]]:
    """Run a call that only reads under the read side of the gate (see the module docstring)."""

    @functools.wraps(method)
    async def read(self: G, /, *args: P.args, **kwargs: P.kwargs) -> T:
        async with self._gate.reader_lock:
            self._require_open()
            return await method(self, *args, **kwargs)

    return read


class Executions:
    """The calls about one execution: result, status, query, signal, update, cancel, history, step."""

    def __init__(self, store: Store, clock: Clock, registry: Registry, definition: Callable[[str, str], Definition],
                 gate: aiorwlock.RWLock, require_open: Callable[[], object]) -> None:
        self._store = store
        self._clock = clock
        self._registry = registry
        self._definition = definition
        self._gate = gate
        self._require_open = require_open

    @staticmethod
    async def blocked_or_ended(actor: WorkflowActor) -> Record:
        """The end record, or the running record as soon as the run blocks on a signal, a timer or a child."""
        if await actor.blocked_or_ended() is not None:
            return actor.end_record()
        running: Record = snapshot(actor.run.status_record())
        return running

    async def wait_record(self, workflow_id: str, wait: bool) -> Record:
        """The record of a run this process started: as ``execute`` answers (``wait``), or as it is now."""
        actor = self._registry.live.get(workflow_id)
        if actor is not None:
            return await self.blocked_or_ended(actor) if wait else snapshot(actor.run.status_record())
        record = await self._store.get_instance(workflow_id)
        if record is None:  # started in this process, not yet committed
            await self._store.commit()
            record = await self._store.get_instance(workflow_id)
        assert record is not None
        return record

    async def result(self, *, product: str, env: str, workflow_id: str, timeout: Any = None) -> Record:
        timeout_ms = parse_optional_duration(timeout, name="timeout")
        loop = asyncio.get_running_loop()
        deadline = None if timeout_ms is None else loop.time() + timeout_ms / 1000.0
        while True:
            record = await self.record(product, env, workflow_id)
            actor = self._registry.live.get(workflow_id)
            if actor is None:
                if workflow_id in self._registry.suspended and (deadline is None or loop.time() < deadline):
                    await asyncio.sleep(0.02)  # stopped by a failed commit: it resumes shortly
                    continue
                return record  # ended (a fresh read of the store), or in flight but not live here
            try:
                async with asyncio.timeout_at(deadline):
                    await asyncio.shield(actor.ended)
            except TimeoutError:
                running: Record = snapshot(actor.run.status_record())
                return running
            except StorageError:
                continue  # a commit of the run failed: wait for it to resume
            return actor.end_record()

    async def record(self, product: str, env: str, workflow_id: str) -> Record:
        """The latest record of an execution: the live actor's view, else the store's."""
        self._require_open()
        actor = await self._registry.loaded(workflow_id)
        record = actor.run.record if actor is not None else await self._store.get_instance(workflow_id)
        if record is None or record["product"] != product or record["env"] != env:
            raise WorkflowNotFoundError(f"no workflow {workflow_id!r} in product {product!r}, env {env!r}",
                                        workflow_id=workflow_id)
        return record

    async def _stored(self, workflow_id: str, known: Record) -> Record:
        """The store's record, once the live actor is gone (``known`` if the store has none yet)."""
        return await self._store.get_instance(workflow_id) or known

    @reading
    async def status(self, *, product: str, env: str, workflow_id: str) -> Record:
        record = await self.record(product, env, workflow_id)
        answer = await self._registry.ask(workflow_id, Status())
        if answer is not NOT_LIVE:
            return answer  # type: ignore[no-any-return]
        return await reads.status(self._store, await self._stored(workflow_id, record))

    @reading
    async def query(self, *, product: str, env: str, workflow_id: str, query: str, args: Any = None) -> Any:
        record = await self.record(product, env, workflow_id)
        args = copy_in(args, "query args")
        answer = await self._registry.ask(workflow_id, Query(query, args))
        if answer is not NOT_LIVE:
            return await asyncio.shield(answer)  # a copy, made by the actor in its turn
        record = await self._stored(workflow_id, record)
        definition = self._definition(record["product"], record["tag"])
        return await reads.query(self._store, self._clock, definition, record, query, args)

    async def signal(self, *, product: str, env: str, workflow_id: str, signal: str, payload: Any = None) -> None:
        """Append a signal to the instance's durable inbox, then deliver it; returns once it is durable."""
        require_name(signal, "signal")
        if payload is not None and not isinstance(payload, dict):
            raise InvalidArgumentError(f"a signal payload must be a dict or None, got {type(payload).__name__}")
        record = await self.record(product, env, workflow_id)
        payload = copy_in(payload, "signal payload")
        if await self._registry.ask(workflow_id, Signal(signal, payload)) is not NOT_LIVE:
            return
        record = await self._stored(workflow_id, record)
        if record["status"] != "running":
            raise WorkflowEndedError(f"workflow {workflow_id!r} has ended ({record['status']}); "
                                     f"it takes no more signals", workflow_id=workflow_id)
        async with self._registry.inbox_locks.setdefault(workflow_id, asyncio.Lock()):
            await record_signal_not_live(self._store, workflow_id, name=signal, payload=payload,
                                         now=self._clock.now_ms())

    async def update(self, *, product: str, env: str, workflow_id: str, update: str, args: Any = None,
                     update_id: str | None = None) -> Any:
        """Run an update inside the instance's actor; its reply once the change is journaled."""
        require_name(update, "update")
        if update_id is not None:
            require_name(update_id, "update_id")
        record = await self.record(product, env, workflow_id)
        args = copy_in(args, "update args")
        answer = await self._registry.ask(workflow_id, Update(update, args, update_id))
        if answer is not NOT_LIVE:
            return await asyncio.shield(answer)  # a copy, made by the actor in its turn
        record = await self._stored(workflow_id, record)
        if update_id is not None:  # sent again after the end (or after a restart): the recorded reply
            reply = await reads.update_reply(self._store, workflow_id, update_id)
            if reads.has_reply(reply):
                return reply
        if record["status"] != "running":
            raise WorkflowEndedError(f"workflow {workflow_id!r} has ended ({record['status']}); "
                                     f"it takes no more updates", workflow_id=workflow_id)
        raise WorkflowNotFoundError(f"workflow {workflow_id!r} is in flight but not live in this process yet "
                                    f"(define its workflow {record['tag']!r} first)", workflow_id=workflow_id)

    async def cancel(self, *, product: str, env: str, workflow_id: str, reason: str | None = None) -> Record:
        if reason is not None and not isinstance(reason, str):
            raise InvalidArgumentError(f"a cancel reason must be a string or None, got {reason!r}")
        record = await self.record(product, env, workflow_id)
        ended = await self._registry.ask(workflow_id, Cancel(reason))
        if ended is NOT_LIVE or ended is None:
            final = await self._stored(workflow_id, record)
            return {"cancelled": False, "rolled_back_steps": [], "status": final["status"]}
        final = await asyncio.shield(ended)
        rolled = (final.get("rollback_result") or {}).get("rolled_back_steps", [])
        return {"cancelled": final["status"] == "cancelled", "rolled_back_steps": list(rolled),
                "status": final["status"]}

    @reading
    async def history(self, *, product: str, env: str, workflow_id: str) -> list[Record]:
        await self.record(product, env, workflow_id)
        await self._store.commit()  # include what this process has queued
        return await reads.history(self._store, workflow_id)

    @reading
    async def step_detail(self, *, product: str, env: str, workflow_id: str, step_tag: str) -> Record:
        await self.record(product, env, workflow_id)
        await self._store.commit()
        return await reads.step_detail(self._store, workflow_id, step_tag)
