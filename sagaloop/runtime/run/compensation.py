"""Running compensations: manual rollbacks and the rollback that ends a run, one compensation at a time, each journaled."""

from __future__ import annotations

import asyncio
import inspect
import random
from typing import Any

from ...errors import InvalidArgumentError
from ...results import RollbackResult
from ..decisions.outcome import error_dict
from ..decisions.rollback import plan_rollback
from ..vocabulary import Record, Trigger
from .children import ChildCalls
from .entries import FINAL_ROLLBACK, StepState
from .steps import with_timeout


class Compensation(ChildCalls):
    """Part of ``Run``: manual rollbacks, and running the compensations a rollback plans."""

    __slots__ = ()

    async def trigger_rollback(self, reason: str) -> RollbackResult:
        if not isinstance(reason, str):
            raise InvalidArgumentError(f"a rollback reason must be a string, got {reason!r}")
        position, recorded = await self._next_call("rollback", "rollback")
        if recorded is not None:
            result: Record = recorded["result"]
            self.manual_rollbacks = (*self.manual_rollbacks, result)
            return RollbackResult.from_dict(result)
        # Shielded: a cancel or the workflow timeout arriving now lets the rollback finish (each
        # compensation once) and takes effect after it; only an engine shutdown cuts it short,
        # and the next process resumes it (done compensations are journaled).
        rollback = asyncio.ensure_future(
            self.rollback(trigger="manual", reason=reason, manual=True, rollback_id=position))
        interrupted: BaseException | None = None
        while not rollback.done():
            try:
                await asyncio.shield(rollback)
            except asyncio.CancelledError as exc:
                if self.interrupt is None:  # shutdown
                    rollback.cancel()
                    await asyncio.gather(rollback, return_exceptions=True)
                    raise
                interrupted = exc
        result = rollback.result()
        self.entries.put(position, {"k": "rollback", "tag": "rollback", "reason": reason, "result": result})
        self.manual_rollbacks = (*self.manual_rollbacks, result)
        await self._durable()
        if interrupted is not None:
            raise interrupted
        return RollbackResult.from_dict(result)

    async def _compensate(self, st: StepState) -> None:
        """Run one compensation with its ``rollback_options``: retries, waits, a timeout per attempt."""
        options, rollback = st.compensation, st.rollback
        assert rollback is not None  # the planner selects only steps that have one
        argument = st.recorded_output() if st.status == "completed" else None
        attempts = 0
        while True:
            attempts += 1
            try:
                if options.timeout_ms is None:
                    value = rollback(argument)
                    if inspect.isawaitable(value):
                        await value
                else:
                    await with_timeout(f"rollback of {st.tag}", lambda: rollback(argument), options.timeout_ms)
                return
            except Exception as exc:
                if not options.retry.retries_after(attempts, exc):
                    raise
                self.event("rollback_retrying", {"step": st.tag, "attempt": attempts,
                                                 "error": error_dict(exc, step=st.tag)})
                await self.clock.sleep(options.retry.delay_ms(attempts, random.random))

    async def rollback(self, *, trigger: Trigger, reason: str | None, manual: bool = False,
                       failed_step: StepState | None = None, rollback_id: int = FINAL_ROLLBACK) -> dict[str, Any]:
        """Run the compensations the strategy selects; each one's end is committed before the next."""
        facts = [st.facts() for st in self.steps.values()
                 if st.status == "completed" and not (st.rollback_status == "completed" and st.rollback_id != rollback_id)]
        plan = plan_rollback(self.definition.rollback_strategy, facts,
                             checkpoint_position=self.checkpoint_position,
                             failed_step=failed_step.facts() if failed_step is not None else None,
                             manual=manual)
        self.event("rollback_started", {"trigger": trigger, "reason": reason, "steps": plan})
        rolled: list[str] = []
        failed: list[dict[str, Any]] = []
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
            self.entries.put(st.position, st.entry())
            await self._durable()
        return {"success": not failed, "rolled_back_steps": rolled, "failed_steps": failed,
                "reason": reason, "trigger": trigger}
