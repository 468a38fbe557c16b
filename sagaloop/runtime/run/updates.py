"""Updates into a running workflow, and ``ctx.patched``: the run's calls that change it from outside or mark a code change."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable

from ..boundary import snapshot
from .core import RunCore
from .entries import UPDATE_BASE


class UpdateCalls(RunCore):
    """Part of ``Run``: updates run between steps, each journaled with its reply."""

    __slots__ = ()

    @property
    def step_running(self) -> bool:
        return self._step_running

    async def let_updates_in(self) -> None:
        """At a step's end: wait until the updates that waited for it are applied, so that back-to-back
        steps cannot keep them out for ever. (Not while replaying: an update waits for the replay,
        which this very task drives.)"""
        if self.replaying:
            return
        if self._updates_applied is None or self._updates_applied.done():
            self._updates_applied = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._updates_applied)

    def update_done(self) -> None:
        """A queued update was applied (or refused): the step that waits for it may go on."""
        self.updates_waiting -= 1
        if self.updates_waiting == 0 and self._updates_applied is not None and not self._updates_applied.done():
            self._updates_applied.set_result(None)

    async def wait_between_steps(self) -> None:
        """Return once no step handler is running (updates run between steps)."""
        while self._step_running:
            if self._between_steps is None or self._between_steps.done():
                self._between_steps = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._between_steps)

    async def apply_update(self, name: str, handler: Callable[..., Any], ctx: Any, args: Any,
                           update_id: str | None) -> Any:
        """Run an update's handler now and journal it (with its reply) before returning the reply."""
        if self._updates_to_replay:  # recorded updates come first: they arrived first
            await self.replay_updates(self._position - 1)
        before = snapshot(self.state)  # put back if the update cannot be journaled
        try:
            value = handler(ctx, args)
            if inspect.isawaitable(value):
                value = await value
            value = snapshot(value)  # the reply as recorded
            position = UPDATE_BASE + self._update_seq
            entry = {"k": "update", "name": name, "args": args, "update_id": update_id, "reply": value,
                     "after": self._position - 1, "at": self._now()}
            if self.state:
                entry["state"] = self.state
            self.entries.put(position, entry)
        except BaseException:
            self.state = before  # a failed update changes nothing: nothing journaled, nothing kept
            raise
        self._update_seq += 1
        self.event("update_applied", {"update": name, "update_id": update_id})
        if update_id is not None:
            self.remember_reply(update_id, value)
        await self.store.commit()  # a failed commit is this update's error, not the run's
        return value

    def patched(self, name: str) -> bool:
        """True where this code's change applies to the run; see ``WorkflowContext.patched``."""
        self._check_open()
        position = self._position
        recorded = self._replay.get(position) if self._replay else None
        if recorded is not None:
            if recorded.get("k") == "patch" and recorded.get("name") == name:
                del self._replay[position]  # type: ignore[attr-defined]
                self._position = position + 1
                self._replay_progressed()
                return True
            return False  # recorded past this point by code without the patch: keep the old path
        if self.replay_only:
            return True
        self._position = position + 1
        self.entries.put(position, {"k": "patch", "name": name, "tag": name})
        return True
