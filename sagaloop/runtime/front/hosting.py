"""What the engine does for a run (its ``RunHost``): child workflows and the outside-world components.

Children are started, re-attached after a crash, closed by their parent's
close policy, and compensated when their parent rolls back.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from ...errors import ChildWorkflowError, StorageError, WorkflowExistsError
from ...storage import Store
from ..actor.messages import Cancel, RequestCancel
from ..actor.workflow_actor import WorkflowActor
from ..clock import Clock
from ..decisions.definitions import Definition, require_name
from ..decisions.history import next_history_seq
from ..handler.components import Actions, Fallbacks, Notifications
from ..handler.context import WorkflowContext
from ..run import Run
from ..run.control import ReplayExhausted
from ..run.core import RunCore
from ..run.entries import read_journal
from ..vocabulary import ParentClosePolicy, Record
from .registry import NOT_LIVE, Registry

# start(definition, env, workflow_id, input, timeout_ms, extra fields, parent=actor): a new run's actor
Start = Callable[..., WorkflowActor]


class Hosting:
    """The ``RunHost`` of every run of one engine."""

    def __init__(self, store: Store, clock: Clock, registry: Registry, definition: Callable[[str, str], Definition],
                 start: Start) -> None:
        self._store = store
        self._clock = clock
        self._registry = registry
        self._definition = definition
        self._start = start
        self.actions = Actions(clock)
        self.fallbacks = Fallbacks(self.actions)
        self.notifications = Notifications()

    async def run_child(self, parent: RunCore, child_id: str, tag: str, input: Any, timeout_ms: float | None,
                        policy: ParentClosePolicy) -> Record:
        """Start the child (or find the one a previous process started) and wait for its end record."""
        require_name(child_id, "child workflow id")
        while True:
            actor = await self._find_or_start_child(parent, child_id, tag, input, timeout_ms, policy)
            if isinstance(actor, dict):
                return actor  # it ended before (a crash came between its end and ours)
            parent.adopt_child(child_id, policy)  # ours: its parent-close policy applies from now on

            def on_blocked_or_ended(future: asyncio.Future[Record | None]) -> None:
                if not future.cancelled() and future.exception() is None and future.result() is None:
                    parent.blocked(f"child {child_id}")  # the child blocked: so does its parent

            actor.blocked_or_ended().add_done_callback(on_blocked_or_ended)
            try:
                return await asyncio.shield(actor.ended)
            except StorageError:
                continue  # a commit of the child failed: it resumes from the store; wait for it again

    async def _find_or_start_child(self, parent: RunCore, child_id: str, tag: str, input: Any,
                                   timeout_ms: float | None, policy: ParentClosePolicy) -> WorkflowActor | Record:
        """The child's live actor (started now if it never was), or its end record if it has ended."""
        product, env = parent.product_env
        while True:
            actor = await self._registry.loaded(child_id)
            if actor is not None:
                if actor.run.record.get("parent_id") != parent.workflow_id:
                    raise WorkflowExistsError(f"child workflow_id {child_id!r} is taken by another execution")
                return actor
            record = await self._store.get_instance(child_id)
            if record is None:
                if child_id in self._registry.reserved:
                    raise WorkflowExistsError(f"workflow_id {child_id!r} already exists")
                extra = {"type": "child", "parent_id": parent.workflow_id, "parent_close_policy": policy}
                return self._start(self._definition(product, tag), env, child_id, input, timeout_ms, extra,
                                   parent=self._registry.live.get(parent.workflow_id))
            if record.get("parent_id") != parent.workflow_id:
                raise WorkflowExistsError(f"child workflow_id {child_id!r} is taken by another execution")
            if record["status"] != "running":
                return record
            await asyncio.sleep(0.05)  # in flight, but not live here (not defined yet, or resuming after a failure)

    async def close_children(self, parent: RunCore, children: dict[str, ParentClosePolicy]) -> None:
        """Apply each still-running child's parent-close policy as its parent ends."""
        ends = []
        for child_id, policy in children.items():
            if policy == "abandon":
                continue
            # One being loaded back is closed once live; one not live here is left to itself.
            if policy == "terminate":
                ended = await self._registry.ask(child_id, Cancel(f"parent {parent.workflow_id!r} closed",
                                                                  "parent_closed"))
                if ended is not None and ended is not NOT_LIVE:
                    ends.append(asyncio.shield(ended))
            else:
                await self._registry.ask(child_id, RequestCancel())  # durable before this parent's end is
        if ends:
            await asyncio.gather(*ends, return_exceptions=True)

    async def compensate_child(self, product_env: tuple[str, str], child_ids: list[str]) -> None:
        """Roll back a completed child's steps, in reverse, because its parent rolls back.

        The child's compensations are closures of its handler, so the handler
        is replayed from the journal (nothing runs again) to get them back.
        """
        for child_id in child_ids:
            record = await self._store.get_instance(child_id)
            if record is None or record["status"] != "completed":
                continue
            definition = self._definition(record["product"], record["tag"])
            journal = await read_journal(self._store, child_id)
            events = await self._store.load_events(child_id)
            run = Run(store=self._store, clock=self._clock, definition=definition, record=record, journal=journal,
                      event_seq=next_history_seq(events, journal))
            run.host, run.ctx = self, WorkflowContext(run)
            run.replay_only = True
            try:
                await definition.handler(run.ctx)
            except ReplayExhausted:
                pass
            result = await run.rollback(trigger="parent_rolled_back", reason="the parent workflow rolled back",
                                        manual=True)
            await run.record_end("rolled_back" if result["success"] else "failed", record.get("output"), record.get("error"), None, result)
            if not result["success"]:
                failed = ", ".join(f["tag"] for f in result["failed_steps"])
                raise ChildWorkflowError(f"compensations of child {child_id!r} failed: {failed}", child_id=child_id)
