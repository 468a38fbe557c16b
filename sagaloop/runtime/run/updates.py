"""Updates into a running workflow, and ``ctx.patched``: the run's calls that change it from outside or mark a code change."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable

from ..boundary import snapshot
from .entries import UPDATE_BASE


class UpdateCalls:
    """Part of ``Run`` (see run.py); uses its state."""

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

    # -- the replay: messages wait for it ----------------------------------------------

    @property
    def replaying(self) -> bool:
        """A resumed run whose handler has not yet walked all of its recorded history.

        Its ``state`` is not the run's state yet, so queries and updates wait
        for ``replay_finished``.
        """
        return bool(self._replay) or bool(self._updates_to_replay)

    async def replay_finished(self) -> None:
        if not self.replaying:
            return
        if self._replay_done is None:
            self._replay_done = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._replay_done)

    def _replay_progressed(self) -> None:
        """Called where recorded history is consumed: wakes what waits for the replay's end."""
        if self._replay_done is not None and not self.replaying:
            self.end_replay()

    def end_replay(self) -> None:
        """The replay is over (history consumed, or the handler ended before that)."""
        done, self._replay_done = self._replay_done, None
        if done is not None and not done.done():
            done.set_result(None)

    # -- updates ---------------------------------------------------------------------

    def update_context(self) -> Any:
        """The ``ctx`` an update's handler gets: the run's state, no journaled calls."""
        from ..handler.context import RestrictedContext  # context builds on run: imported when first needed
        return RestrictedContext(self, "update")

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
                value = handler(self.update_context(), entry["args"])
                if inspect.isawaitable(value):
                    await value
        self._replay_progressed()

    def patched(self, name: str) -> bool:
        """True where this code's change applies to the run; see ``WorkflowContext.patched``."""
        self._check_open()
        position = self._position
        recorded = self._replay.get(position) if self._replay else None
        if recorded is not None:
            if recorded.get("k") == "patch" and recorded.get("name") == name:
                del self._replay[position]
                self._position = position + 1
                self._replay_progressed()
                return True
            return False  # recorded past this point by code without the patch: keep the old path
        if self.replay_only:
            return True
        self._position = position + 1
        self.entries.put(position, {"k": "patch", "name": name, "tag": name})
        return True
