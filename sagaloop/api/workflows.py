"""``engine.workflows``: the public calls of the product document, in Python form.

Every call is a thin translation: keyword arguments in, the runtime's plain
records out as frozen result dataclasses. No logic lives here that a
caller of the runtime would miss.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Mapping, Sequence, TypeVar

from ..results import (
    CancelResult,
    Comparison,
    DispatchResult,
    ErrorInfo,
    ExecutionList,
    ExecutionSummary,
    History,
    HistoryEvent,
    Job,
    JobList,
    RelatedExecution,
    RelatedExecutions,
    StepDetail,
    WorkflowResult,
    WorkflowStatus,
)
from ..runtime.decisions.definitions import build_definition
from ..runtime.front.door import FrontDoor

Handler = TypeVar("Handler", bound=Callable[..., Any])


class Workflows:
    """Define, run, observe and steer workflows."""

    def __init__(self, runtime: FrontDoor) -> None:
        self._runtime = runtime

    def define(self, *, product: str, tag: str, handler: Handler | None = None,
               options: Mapping[str, Any] | None = None, queries: Mapping[str, Any] | None = None,
               updates: Mapping[str, Any] | None = None, name: str | None = None,
               description: str | None = None) -> Any:
        """Register a workflow handler, as a decorator or a plain call.

        Example::

            @engine.workflows.define(product="shop", tag="order",
                                     options={"rollback_strategy": "reverse_all", "timeout": "5m"})
            async def order(ctx):
                ...

        Once registered on an open engine, every instance of it that was in
        flight when the last process stopped resumes under its own id.

        Raises:
            InvalidArgumentError: a bad option, strategy or query, a handler
                that is not ``async def``, or a tag already defined.
        """
        def register(fn: Handler) -> Handler:
            self._runtime.define(build_definition(product=product, tag=tag, handler=fn, options=options,
                                                  queries=queries, updates=updates, name=name,
                                                  description=description))
            return fn

        return register if handler is None else register(handler)

    async def execute(self, *, product: str, env: str, tag: str, input: Any = None,
                      workflow_id: str | None = None, idempotency_key: str | None = None,
                      timeout: Any = None, context: Any = None, wait: bool = True) -> WorkflowResult:
        """Run a workflow; return when it ends (or once its start is durable, with ``wait=False``).

        Raises:
            DefinitionNotFoundError: no such product/tag.
            WorkflowExistsError: ``workflow_id`` is taken.
            NotSerializableError: ``input`` or ``context`` cannot be journaled.
        """
        record = await self._runtime.execute(product=product, env=env, tag=tag, input=input,
                                             workflow_id=workflow_id, idempotency_key=idempotency_key,
                                             timeout=timeout, context=context, wait=wait)
        return WorkflowResult.from_record(record)

    async def result(self, *, product: str, env: str, workflow_id: str, timeout: Any = None) -> WorkflowResult:
        """Wait for the end of an execution (up to ``timeout``; then its running state)."""
        return WorkflowResult.from_record(
            await self._runtime.executions.result(product=product, env=env, workflow_id=workflow_id, timeout=timeout))

    async def status(self, *, product: str, env: str, workflow_id: str) -> WorkflowStatus:
        rec = await self._runtime.executions.status(product=product, env=env, workflow_id=workflow_id)
        return WorkflowStatus(
            workflow_id=rec["workflow_id"], product=rec["product"], env=rec["env"], tag=rec["tag"],
            status=rec["status"], current_step=rec.get("current_step"),
            completed_steps=list(rec.get("completed_steps") or ()), state=rec.get("state") or {},
            checkpoint_name=rec.get("checkpoint_name"), checkpoint_data=rec.get("checkpoint_data"),
            created_at=rec.get("created_at"), updated_at=rec.get("updated_at"), ended_at=rec.get("ended_at"),
            error=ErrorInfo.from_dict(rec.get("error")), waiting_for=rec.get("waiting_for"))

    async def query(self, *, product: str, env: str, workflow_id: str, query: str, args: Any = None) -> Any:
        """Run one of the definition's query handlers against the execution's state."""
        return await self._runtime.executions.query(product=product, env=env, workflow_id=workflow_id, query=query, args=args)

    async def signal(self, *, product: str, env: str, workflow_id: str, signal: str, payload: Any = None) -> None:
        """Send a signal; it is in the instance's durable inbox when this returns.

        Raises:
            WorkflowNotFoundError: no such instance.
            WorkflowEndedError: the instance has ended.
        """
        await self._runtime.executions.signal(product=product, env=env, workflow_id=workflow_id, signal=signal, payload=payload)

    async def update(self, *, product: str, env: str, workflow_id: str, update: str, args: Any = None,
                     update_id: str | None = None) -> Any:
        """Request and response into a running workflow.

        The update's validator runs first (a rejection journals nothing and
        raises ``UpdateRejectedError``); then its handler runs in the
        instance's actor between steps, and its change to ``ctx.state`` is
        journaled before the reply. The same ``update_id`` again returns the
        recorded reply without running anything.
        """
        return await self._runtime.executions.update(product=product, env=env, workflow_id=workflow_id, update=update,
                                          args=args, update_id=update_id)

    async def cancel(self, *, product: str, env: str, workflow_id: str, reason: str | None = None) -> CancelResult:
        """Interrupt a running execution and roll it back; ``cancelled`` is false if it had ended."""
        rec = await self._runtime.executions.cancel(product=product, env=env, workflow_id=workflow_id, reason=reason)
        return CancelResult(cancelled=rec["cancelled"], rolled_back_steps=rec["rolled_back_steps"],
                            status=rec["status"])

    async def history(self, *, product: str, env: str, workflow_id: str) -> History:
        events = await self._runtime.executions.history(product=product, env=env, workflow_id=workflow_id)
        return History(workflow_id=workflow_id,
                       events=[HistoryEvent(e["type"], e["timestamp"], e["data"]) for e in events])

    async def step_detail(self, *, product: str, env: str, workflow_id: str, step_tag: str) -> StepDetail:
        d = await self._runtime.executions.step_detail(product=product, env=env, workflow_id=workflow_id, step_tag=step_tag)
        return StepDetail(tag=d["tag"], status=d["status"], input=d["input"], output=d["output"],
                          error=ErrorInfo.from_dict(d["error"]), attempts=d["attempts"],
                          duration=d["duration"], rollback_status=d["rollback_status"])

    async def list(self, *, product: str, env: str, tag: str | None = None, status: str | None = None,
                   started_after: int | datetime | None = None, started_before: int | datetime | None = None,
                   limit: int = 100, cursor: str | None = None) -> ExecutionList:
        """One page of executions, newest first; pass ``next_cursor`` back as ``cursor`` for the next.

        Example::

            page = await engine.workflows.list(product="shop", env="prd", status="failed")
            while True:
                for execution in page.executions:
                    print(execution.workflow_id, execution.created_at)
                if page.next_cursor is None:
                    break
                page = await engine.workflows.list(product="shop", env="prd", status="failed",
                                                   cursor=page.next_cursor)

        Newest first is by ``created_at``, ties broken by ``workflow_id`` descending. A page is
        served from an index: it costs about ``limit`` record reads however many runs are stored.

        Args:
            tag, status: only the executions of that workflow tag / in that status.
            started_after, started_before: only those with ``created_at`` strictly after / strictly
                before it: milliseconds since the epoch (an int) or an aware ``datetime``.
            limit: at most this many executions on the page.
            cursor: the ``next_cursor`` of the previous page (with the same filters), or None for
                the first page.

        Returns:
            ``ExecutionList``: ``executions`` (``ExecutionSummary``, newest first) and ``next_cursor``
            (None at the end). It is also the sequence of its executions.

        Paging never repeats an execution and never skips one: the cursor is a place in the order,
        not a count. Runs started after the first page are newer than it, so later pages leave them
        out (list again without a cursor to see them). Each page reads the statuses as they are then:
        with ``status=``, a run whose status changed between two pages is on a later page if it is
        older than the cursor and now has that status, and on none if it no longer has it.

        Raises:
            InvalidArgumentError: ``product`` or ``env`` empty, an unknown ``status``, ``limit`` not an
                int >= 1, a naive ``datetime`` or another type for a bound, a cursor ``list`` did not
                return; nothing else changes.
        """
        page = await self._runtime.list(product=product, env=env, tag=tag, status=status,
                                        started_after=started_after, started_before=started_before,
                                        limit=limit, cursor=cursor)
        return ExecutionList(
            executions=[ExecutionSummary(workflow_id=r["workflow_id"], product=r["product"], env=r["env"],
                                         tag=r["tag"], status=r["status"], type=r.get("type", "original"),
                                         created_at=r["created_at"], ended_at=r.get("ended_at"),
                                         execution_time=r.get("execution_time"))
                        for r in page["executions"]],
            next_cursor=page["next_cursor"])

    # -- repairs: new executions made from another ------------------------------------------------

    async def replay(self, *, product: str, env: str, workflow_id: str, reason: str | None = None,
                     options: Mapping[str, Any] | None = None, idempotency_key: str | None = None) -> WorkflowResult:
        """Run an execution again from the start, as a new execution: its input, fresh state.

        Example::

            result = await engine.workflows.replay(product="shop", env="prd", workflow_id="wf-1",
                                                   reason="the card service was down",
                                                   options={"retries": 2, "debug": True})
            result.replayed_from  # "wf-1"

        ``options``: ``retries`` (a failed replay runs again, up to that many times), ``timeout``
        (of the replay), ``debug`` (its history shows each step's attempts, duration and state).
        The handler sees ``ctx.is_replay``, ``ctx.replayed_from``, ``ctx.replay_reason``. A
        repeated ``idempotency_key`` returns the first replay's result and runs nothing.
        """
        return WorkflowResult.from_record(await self._runtime.repairs.replay(
            product=product, env=env, workflow_id=workflow_id, reason=reason, options=options,
            idempotency_key=idempotency_key))

    async def restart(self, *, product: str, env: str, workflow_id: str, input: Any = None,
                      input_override: Any = None, merge_input: bool = False,
                      reason: str | None = None) -> WorkflowResult:
        """Run an execution again with a new input, as a new execution with fresh state.

        ``input`` replaces the original input; ``input_override`` with ``merge_input=True`` is
        merged over it (dicts key by key, nested dicts likewise). ``result.restarted_from`` links back.
        """
        return WorkflowResult.from_record(await self._runtime.repairs.restart(
            product=product, env=env, workflow_id=workflow_id, input=input, input_override=input_override,
            merge_input=merge_input, reason=reason))

    async def resume(self, *, product: str, env: str, workflow_id: str, from_checkpoint: str | None = None,
                     from_step: str | None = None, skip_steps: Sequence[str] | None = None,
                     input: Any = None) -> WorkflowResult:
        """Continue an ended execution in a new one that keeps the steps whose effects still stand.

        Kept: the steps that completed and were not rolled back (before ``from_step``, or before
        checkpoint ``from_checkpoint``, whose state it restores); they return their recorded
        outputs without running, and ``ctx.completed_steps`` names them from the start. The rest
        run. ``skip_steps`` are marked skipped (their ``ctx.step`` returns None); ``input`` is
        merged over the original input. The handler sees ``ctx.is_restored`` and
        ``ctx.restored_checkpoint``.

        Raises:
            WorkflowStillRunningError: the execution has not ended.
        """
        return WorkflowResult.from_record(await self._runtime.repairs.resume(
            product=product, env=env, workflow_id=workflow_id, from_checkpoint=from_checkpoint,
            from_step=from_step, skip_steps=skip_steps, input=input))

    async def replay_from_step(self, *, product: str, env: str, workflow_id: str, from_step: str,
                               step_outputs: Mapping[str, Any] | None = None) -> WorkflowResult:
        """Run an ended execution again from ``from_step``, as a new execution: the steps before it
        take the recorded outputs (or ``step_outputs[tag]``) without running."""
        return WorkflowResult.from_record(await self._runtime.repairs.replay_from_step(
            product=product, env=env, workflow_id=workflow_id, from_step=from_step, step_outputs=step_outputs))

    async def related_executions(self, *, product: str, env: str, workflow_id: str) -> RelatedExecutions:
        """The family of an execution, from any member: the original and every replay, restart and
        resume made from any of them, oldest first."""
        records = await self._runtime.repairs.related_executions(product=product, env=env, workflow_id=workflow_id)
        return RelatedExecutions(workflow_id=workflow_id, executions=[
            RelatedExecution(workflow_id=r["workflow_id"], type=r.get("type") or "original", status=r["status"],
                             started_at=r["created_at"], replayed_from=r.get("replayed_from"),
                             restarted_from=r.get("restarted_from"), resumed_from=r.get("resumed_from"))
            for r in records])

    async def compare(self, *, product: str, env: str, workflow_ids: Sequence[str]) -> Comparison:
        """What differs between two executions: input, output, status and each step that differs."""
        d = await self._runtime.repairs.compare(product=product, env=env, workflow_ids=workflow_ids)
        return Comparison(workflow_ids=d["workflow_ids"], input_diff=d["input_diff"], output_diff=d["output_diff"],
                          status=d["status"], step_diffs=d["step_diffs"])

    # -- dispatch: one-off and cron jobs ------------------------------------------------------

    async def dispatch(self, *, product: str, env: str, workflow: str, input: Any = None,
                       schedule: Mapping[str, Any], options: Mapping[str, Any] | None = None) -> DispatchResult:
        """Run a workflow later, once or on a cron schedule; the job is durable (it survives restarts).

        Example::

            job = await engine.workflows.dispatch(product="shop", env="prd", workflow="daily-report",
                                                  input={"kind": "sales"},
                                                  schedule={"cron": "0 9 * * 1-5", "timezone": "Europe/London"},
                                                  options={"overlap": "skip", "catch_up": "one", "retries": 2})
            job.job_id, job.scheduled_at  # scheduled_at: epoch ms of the first run

        ``schedule``: ``{"start_at": epoch_ms | aware datetime}`` (runs once) or ``{"cron": "m h dom mon dow",
        "timezone": "Area/City"}`` (default timezone UTC). ``options``: ``retries`` (a failed run is run again
        as a new execution, up to that many times), ``timeout`` (of each run), ``overlap`` (``skip`` |
        ``buffer_one`` | ``allow``: a tick while the previous run still goes), ``catch_up`` (``one`` |
        ``none`` | ``all``: ticks missed while no engine ran). Each run is an ordinary execution with
        ``context={"job_id", "scheduled_for"}`` and idempotency key ``f"{job_id}:{scheduled_for}"``.

        Raises:
            InvalidArgumentError: a bad cron string, an unknown timezone, a naive datetime, a
                ``start_at`` in the past, an unknown option or a bad option value (nothing is stored).
            DefinitionNotFoundError: no such workflow.
        """
        d = await self._runtime.scheduler.dispatch(product=product, env=env, workflow=workflow, input=input,
                                                   schedule=schedule, options=options)
        return DispatchResult(job_id=d["job_id"], scheduled_at=d["scheduled_at"])

    async def cancel_dispatch(self, *, product: str, env: str, job_id: str) -> None:
        """Stop a job for good (a run already going goes on). Raises WorkflowNotFoundError for an unknown job."""
        await self._runtime.scheduler.cancel(product=product, env=env, job_id=job_id)

    async def pause_dispatch(self, *, product: str, env: str, job_id: str) -> None:
        """Skip the job's ticks until ``resume_dispatch`` (the skipped ones are not caught up)."""
        await self._runtime.scheduler.set_paused(product=product, env=env, job_id=job_id, paused=True)

    async def resume_dispatch(self, *, product: str, env: str, job_id: str) -> None:
        """Let a paused job run again from its next tick."""
        await self._runtime.scheduler.set_paused(product=product, env=env, job_id=job_id, paused=False)

    async def list_jobs(self, *, product: str, env: str, tag: str | None = None) -> JobList:
        """The jobs of ``product`` / ``env`` (of workflow ``tag`` only, if given), oldest first: each with its
        schedule, next and last run (epoch ms) and whether it is paused."""
        return JobList(jobs=[Job(**r) for r in await self._runtime.scheduler.list_jobs(product=product, env=env, tag=tag)])
