"""The engine's side of child workflows: starting, re-attaching, closing and compensating them.

``Runtime`` mixes this in; it is each run's ``RunHost`` for ``ctx.workflow``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ...actors import ActorDeadError
from ...errors import ChildWorkflowError, StorageError, WorkflowExistsError
from ..handler.context import WorkflowContext
from ..decisions.definitions import require_name
from ..decisions.history import next_history_seq
from ..run import Run
from ..run.control import ReplayExhausted
from ..run.entries import read_journal
from ..actor.workflow_actor import Cancel, RequestCancel, WorkflowActor
from ..vocabulary import Record


class ChildHost:
    """Part of ``Runtime`` (see engine.py); uses its store, live actors and definitions."""

    async def run_child(self, parent: Run, child_id: str, tag: str, input: Any, timeout_ms: float | None,
                        policy: str) -> Record:
        """Start the child (or find the one a previous process started) and wait for its end record."""
        require_name(child_id, "child workflow id")
        while True:
            actor = await self._find_or_start_child(parent, child_id, tag, input, timeout_ms, policy)
            if isinstance(actor, dict):
                return actor  # it ended before (a crash came between its end and ours)
            parent.adopt_child(child_id, policy)  # ours: its parent-close policy applies from now on

            def on_settled(future: asyncio.Future) -> None:
                if not future.cancelled() and future.exception() is None and future.result() is None:
                    parent.blocked(f"child {child_id}")  # the child blocked: so does its parent

            actor.wait_settled().add_done_callback(on_settled)
            try:
                return await asyncio.shield(actor.ended)
            except StorageError:
                continue  # a commit of the child failed: it resumes from the store; wait for it again

    async def _find_or_start_child(self, parent: Run, child_id: str, tag: str, input: Any,
                                   timeout_ms: float | None, policy: str) -> WorkflowActor | Record:
        """The child's live actor (started now if it never was), or its end record if it has ended."""
        product, env = parent.product_env
        while True:
            resuming = self._resuming.get(child_id)
            if resuming is not None:
                await asyncio.shield(resuming)
            actor = self._live.get(child_id)
            if actor is not None:
                if actor.run.record.get("parent_id") != parent.workflow_id:
                    raise WorkflowExistsError(f"child workflow_id {child_id!r} is taken by another execution")
                return actor
            record = await self.store.get_instance(child_id)
            if record is None:
                if child_id in self._reserved:
                    raise WorkflowExistsError(f"workflow_id {child_id!r} already exists")
                definition = self._definition(product, tag)
                extra = {"type": "child", "parent_id": parent.workflow_id, "parent_close_policy": policy}
                return self._start(definition, env, child_id, input, timeout_ms, extra,
                                   parent=self._live.get(parent.workflow_id))
            if record.get("parent_id") != parent.workflow_id:
                raise WorkflowExistsError(f"child workflow_id {child_id!r} is taken by another execution")
            if record["status"] != "running":
                return record
            await asyncio.sleep(0.05)  # in flight, but not live here (not defined yet, or resuming after a failure)

    async def close_children(self, parent: Run, children: dict[str, str]) -> None:
        """Apply each still-running child's parent-close policy as its parent ends."""
        ends = []
        for child_id, policy in children.items():
            if policy == "abandon":
                continue
            resuming = self._resuming.get(child_id)
            if resuming is not None:  # being loaded back after a crash: close it once it is live
                await asyncio.shield(resuming)
            actor = self._live.get(child_id)
            if actor is None:
                continue
            try:
                if policy == "terminate":
                    ended = await actor.ref.ask(Cancel(f"parent {parent.workflow_id!r} closed", "parent_closed"))
                    if ended is not None:
                        ends.append(asyncio.shield(ended))
                else:
                    await actor.ref.ask(RequestCancel())  # durable before this parent's end is
            except ActorDeadError:
                continue
        if ends:
            await asyncio.gather(*ends, return_exceptions=True)

    async def compensate_child(self, product_env: tuple[str, str], child_ids: list[str]) -> None:
        """Roll back a completed child's steps, in reverse, because its parent rolls back.

        The child's compensations are closures of its handler, so the handler
        is replayed from the journal (nothing runs again) to get them back.
        """
        for child_id in child_ids:
            record = await self.store.get_instance(child_id)
            if record is None or record["status"] != "completed":
                continue
            definition = self._definition(record["product"], record["tag"])
            journal = await read_journal(self.store, child_id)
            events = await self.store.load_events(child_id)
            run = Run(store=self.store, clock=self.clock, definition=definition, record=record, journal=journal,
                      event_seq=next_history_seq(events, journal))
            run.host = self
            run.replay_only = True
            try:
                await definition.handler(WorkflowContext(run))
            except ReplayExhausted:
                pass
            result = await run.rollback(trigger="parent_rolled_back", reason="the parent workflow rolled back",
                                        manual=True)
            status = "rolled_back" if result["success"] else "failed"
            await run.record_end(status, record.get("output"), record.get("error"), None, result)
            if not result["success"]:
                failed = ", ".join(f["tag"] for f in result["failed_steps"])
                raise ChildWorkflowError(f"compensations of child {child_id!r} failed: {failed}", child_id=child_id)
