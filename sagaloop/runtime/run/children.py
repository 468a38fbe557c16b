"""``ctx.workflow``: a child workflow as a step of its parent run."""

from __future__ import annotations

from typing import Any

from ...errors import ChildWorkflowError, InvalidArgumentError
from ..boundary import snapshot
from ..decisions.durations import parse_optional_duration
from ..decisions.step_options import DEFAULT_STEP_OPTIONS
from ..vocabulary import PARENT_CLOSE_POLICIES, ParentClosePolicy
from .control import ReplayExhausted
from .entries import StepState
from .waits import WaitCalls


class ChildCalls(WaitCalls):
    """Part of ``Run``: a child workflow as a step of its parent (it blocks while the child blocks)."""

    __slots__ = ()

    async def child(self, child_id: str, tag: str, input: Any, *, timeout: Any = None, retries: int = 0,
                    parent_close_policy: ParentClosePolicy = "terminate") -> Any:
        """Run a child workflow as a step of this run: its output, or ``ChildWorkflowError``."""
        if parent_close_policy not in PARENT_CLOSE_POLICIES:
            raise InvalidArgumentError(f"parent_close_policy {parent_close_policy!r} is not one of "
                                       f"{', '.join(PARENT_CLOSE_POLICIES)}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidArgumentError(f"retries of child workflow {child_id!r} must be a non-negative int, "
                                       f"got {retries!r}")
        timeout_ms = parse_optional_duration(timeout, name=f"timeout of child workflow {child_id!r}")
        input = snapshot(input)  # the child's own: the parent's later writes never reach it
        host = self.host
        if host is None:
            raise InvalidArgumentError("child workflows need a running engine")

        async def compensate(_output: Any) -> None:
            attempts = self.steps[child_id].attempts
            await host.compensate_child(self.product_env, self.child_ids(child_id, attempts))

        if child_id in self.steps:  # a child this run restored, else DuplicateStepError
            return await self.claim_restored(child_id, compensate, DEFAULT_STEP_OPTIONS)
        position, recorded = await self._next_call("step", child_id)
        st = StepState(child_id, position, compensate)
        self.steps[child_id] = st
        if recorded is not None:
            st.load(recorded)
            if st.status == "completed":
                return snapshot(st.output)
            if st.status == "failed":
                self.failed_step = st
                error = st.error or {}
                raise ChildWorkflowError(error.get("message", ""), child_id=child_id, error=error.get("child_error"))
        self.current_step = child_id
        if st.seq < 0:
            st.started_at = self._now()
            st.seq = self.next_seq()
        if self.replay_only:
            if st.attempts > 0:  # it was running when we died: its parent-close policy still applies
                self.adopt_child(self.child_ids(child_id, st.attempts)[-1], parent_close_policy)
            raise ReplayExhausted()
        reattach = st.attempts > 0  # it was running when the process died: wait for that child again
        if not reattach:
            st.attempts = 1
        while True:
            current = self.child_ids(child_id, st.attempts)[-1]
            if not reattach:
                self.entries.put(position, st.entry())
                self.event("child_started", {"child_id": current, "tag": tag, "attempt": st.attempts})
                await self._durable()
            reattach = False
            # run_child registers the child in self.children once it is ours; it stays there if we are
            # interrupted while waiting, so its parent-close policy applies when this run ends.
            self.waiting_outside()
            try:
                end = await host.run_child(self, current, tag, input, timeout_ms, parent_close_policy)
            finally:
                self.waiting_for = None  # "child ..." while it blocked; not once it has ended
            if current in self.children:
                del self.children[current]  # type: ignore[attr-defined]
            if end["status"] == "completed":
                break
            self.event("child_failed", {"child_id": current, "status": end["status"], "error": end.get("error")})
            if st.attempts <= retries:
                st.attempts += 1
                continue
            message = f"child workflow {current!r} ended {end['status']}"
            if end.get("error"):
                message += f": {end['error']['message']}"
            st.status, st.ended_at, st.end_seq = "failed", self._now(), self.next_seq()
            st.error = {"message": message, "step": child_id, "code": "child_failed", "type": "ChildWorkflowError",
                        "child_error": end.get("error")}
            self.entries.put(position, st.entry())
            self.current_step = None
            await self._durable()
            self.failed_step = st
            raise ChildWorkflowError(message, child_id=current, error=end.get("error"), status=end["status"])
        st.status, st.output, st.ended_at = "completed", snapshot(end.get("output")), self._now()
        st.end_seq = self.next_seq()
        st.order = self._order
        self._order += 1
        self.entries.put(position, st.entry())
        self.event("child_completed", {"child_id": current})
        self.current_step = None
        await self._durable()
        return snapshot(st.output)

    @staticmethod
    def child_ids(child_id: str, attempts: int) -> list[str]:
        """The ids of a child's attempts: the id itself, then ``<id>~2``, ``<id>~3`` for retries."""
        return [child_id] + [f"{child_id}~{n}" for n in range(2, attempts + 1)]
