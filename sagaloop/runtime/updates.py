"""Updates into a running workflow, and ``ctx.patched``: the run's calls that change it from outside or mark a code change."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable

from .journal import UPDATE_BASE


class UpdateCalls:
    """Part of ``Run`` (see run.py); uses its state."""

    __slots__ = ()

    async def wait_between_steps(self) -> None:
        """Return once no step handler is running (updates run between steps)."""
        while self._step_running:
            if self._between_steps is None or self._between_steps.done():
                self._between_steps = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._between_steps)

    async def apply_update(self, name: str, handler: Callable[..., Any], args: Any, update_id: str | None) -> Any:
        """Run an update's handler now and journal it (with its reply) before returning the reply."""
        if self._updates_to_replay:  # recorded updates come first: they arrived first
            await self.replay_updates(self._position - 1)
        value = handler(self.ctx, args)
        if inspect.isawaitable(value):
            value = await value
        position = UPDATE_BASE + self._update_seq
        self._update_seq += 1
        entry = {"k": "update", "name": name, "args": args, "update_id": update_id, "reply": value,
                 "after": self._position - 1, "at": self._now()}
        if self.state:
            entry["state"] = self.state
        self.journal(position, entry)  # NotSerializableError: nothing journaled
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
        self.journal(position, {"k": "patch", "name": name, "tag": name})
        return True
