"""The end of a run: its rollback if the outcome asks for one, its end record, and what status shows."""

from __future__ import annotations

from typing import Any

from ...errors import NotSerializableError
from ..decisions.history import progress
from ..decisions.outcome import merge_rollbacks
from ..decisions.rollback import ending_status
from ..vocabulary import Status
from .compensation import Compensation
from .control import Outcome


class Ending(Compensation):
    """Part of ``Run``: ``finish`` turns the handler's outcome into the run's end."""

    __slots__ = ()

    async def finish(self, outcome: Outcome) -> dict[str, Any]:
        """Roll back if the outcome asks for it, then journal the end. Returns the instance record."""
        if self._updates_to_replay and outcome.kind == "completed":
            await self.replay_updates()  # updates that came after the last journaled call
        if self._replay_done is not None:
            self.end_replay()
        rollback_result: dict[str, Any] | None = merge_rollbacks(self.manual_rollbacks)
        error = outcome.error
        failed_step = outcome.failed_step
        status: Status
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
            result = await self.rollback(trigger=outcome.trigger, reason=outcome.reason or (error or {}).get("message"),
                                         failed_step=failed_state)
            rollback_result = merge_rollbacks([*self.manual_rollbacks, result]) or result  # holds result: never None
            if outcome.kind == "cancelled":
                status = "cancelled"
            else:
                status = ending_status(rolled_back=len(rollback_result["rolled_back_steps"]),
                                       failed_compensations=len(rollback_result["failed_steps"]))
        return await self.record_end(status, outcome.output, error, failed_step, rollback_result)

    async def _close_children(self) -> None:
        """Apply the parent-close policies of the children still running, before our own rollback."""
        if self.children and self.host is not None:
            await self.host.close_children(self, dict(self.children))
            self.children = {}

    async def record_end(self, status: Status, output: Any, error: dict[str, Any] | None, failed_step: str | None,
                         rollback_result: dict[str, Any] | None) -> dict[str, Any]:
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
    def resume_outcome(self) -> Outcome | None:
        """How the run was ending when its process died, if it had started rolling back."""
        finishing = self.record.get("finishing")
        if finishing is None:
            return None
        return Outcome(finishing["kind"], error=finishing["error"], trigger=finishing["trigger"],
                       reason=finishing["reason"], failed_step=finishing["failed_step"])

    def status_record(self) -> dict[str, Any]:
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
