"""``ctx``: what a workflow handler sees and calls.

A thin face over the run's journaled state (``run.Run``): every attribute
reads the run, every journaled call goes through it. Handlers must be
deterministic between journaled calls: on recovery the handler runs again
from the top and each journaled call returns what was recorded.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Iterator, Literal, Mapping

from ...errors import EngineClosedError, InvalidArgumentError, ReadOnlyError
from ...results import RollbackResult
from ..boundary import read_only, snapshot
from ..decisions.step_options import DEFAULT_STEP_OPTIONS, parse_step_options
from ..run import Run
from ..run.control import RunHost
from ..run.entries import StepState
from ..vocabulary import Record
from .components import Actions, Fallbacks, Notifications

_log = logging.getLogger("sagaloop.workflow")


class StepOutputs(Mapping[str, Any]):
    """``ctx.steps``: the outputs of the completed steps, by tag, read live from the run."""

    __slots__ = ("_steps",)

    def __init__(self, steps: dict[str, StepState]) -> None:
        self._steps = steps

    def __getitem__(self, tag: str) -> Any:
        st = self._steps[tag]
        if st.status != "completed":
            raise KeyError(tag)
        return st.recorded_output()

    def __iter__(self) -> Iterator[str]:
        return (tag for tag, st in self._steps.items() if st.status == "completed")

    def __len__(self) -> int:
        return sum(1 for st in self._steps.values() if st.status == "completed")

    def __repr__(self) -> str:
        return repr(dict(self))


class WorkflowLog:
    """``ctx.log``: structured log lines tagged with the workflow id."""

    __slots__ = ("_workflow_id", "_tag")

    def __init__(self, workflow_id: str, tag: str) -> None:
        self._workflow_id = workflow_id
        self._tag = tag

    def _emit(self, level: int, message: str, fields: Mapping[str, Any] | None) -> None:
        if _log.isEnabledFor(level):
            _log.log(level, "%s [%s %s] %s", message, self._tag, self._workflow_id, dict(fields or {}),
                     extra={"workflow_id": self._workflow_id, "fields": dict(fields or {})})

    def info(self, message: str, fields: Mapping[str, Any] | None = None) -> None:
        self._emit(logging.INFO, message, fields)

    def warn(self, message: str, fields: Mapping[str, Any] | None = None) -> None:
        self._emit(logging.WARNING, message, fields)

    warning = warn

    def error(self, message: str, fields: Mapping[str, Any] | None = None) -> None:
        self._emit(logging.ERROR, message, fields)

    def debug(self, message: str, fields: Mapping[str, Any] | None = None) -> None:
        self._emit(logging.DEBUG, message, fields)


class WorkflowContext:
    """The handler's view of its execution.

    Example::

        async def order(ctx):
            charge = await ctx.step("charge", lambda: pay(ctx.input["amount"]), refund, critical=True)
            await ctx.checkpoint("paid", {"charge": charge["id"]})
            await ctx.step("ship", ship, cancel_shipment, {"retries": 3, "retry_delay": "2s"})
            return {"charge": charge["id"]}
    """

    __slots__ = ("_run", "_log")

    def __init__(self, run: Run) -> None:
        self._run = run
        self._log: WorkflowLog | None = None

    def restricted(self, role: Literal["query", "validator", "update"]) -> RestrictedContext:
        """The ``ctx`` of a query, an update's validator or an update's handler of this run."""
        return RestrictedContext(self._run, role)

    @property
    def cancel_requested(self) -> bool:
        """True once a parent closing with policy ``request_cancel`` (or a cancel) asked this run to stop."""
        return self._run.cancel_requested

    @property
    def log(self) -> WorkflowLog:
        """Structured log lines tagged with this workflow's id (``ctx.log.info(message, fields)``)."""
        if self._log is None:  # made on first use: most handlers never log
            self._log = WorkflowLog(self._run.workflow_id, self._run.definition.tag)
        return self._log

    # -- identity and inputs ----------------------------------------------------------

    @property
    def workflow_id(self) -> str:
        return self._run.workflow_id

    @property
    def product(self) -> str:
        return self._run.definition.product

    @property
    def env(self) -> str:
        return self._run.product_env[1]

    @property
    def tag(self) -> str:
        return self._run.definition.tag

    @property
    def input(self) -> Any:
        return self._run.input

    @property
    def context(self) -> Any:
        context = self._run.context
        if context is None:
            self._run.context = context = {}
        return context

    # -- progress ---------------------------------------------------------------------

    @property
    def steps(self) -> Mapping[str, Any]:
        """Outputs of the completed steps, by tag (a live, read-only view)."""
        return StepOutputs(self._run.steps)

    @property
    def state(self) -> Record:
        return self._run.state

    @state.setter
    def state(self, value: Record) -> None:
        self._run.state = value

    @property
    def completed_steps(self) -> list[str]:
        return self._run.completed_steps

    @property
    def current_step(self) -> str | None:
        return self._run.current_step

    @property
    def checkpoint_name(self) -> str | None:
        return self._run.checkpoint_name

    @property
    def checkpoint_data(self) -> Any:
        return snapshot(self._run.checkpoint_data)  # a copy: the recorded data stays as recorded

    # -- lineage (replay / restart / resume create linked executions) -------------------

    @property
    def is_replay(self) -> bool:
        return self._run.record.get("type") == "replay"

    @property
    def replayed_from(self) -> str | None:
        return self._run.record.get("replayed_from")

    @property
    def replay_reason(self) -> str | None:
        return self._run.record.get("reason") if self.is_replay else None

    @property
    def is_restored(self) -> bool:
        """True in an execution that started from what another left (``resume``, ``replay_from_step``)."""
        return bool(self._run.record.get("restored"))

    @property
    def restored_checkpoint(self) -> Record | None:
        """``{name, data}`` of the checkpoint a ``resume(from_checkpoint=)`` restored, else None."""
        restored = self._run.record.get("restored") or {}
        checkpoint: Record | None = snapshot(restored.get("checkpoint"))
        return checkpoint

    # -- the outside world (call these inside a step, so their result is journaled) ---------

    @property
    def action(self) -> Actions:
        """``await ctx.action.run(app=, event=, input=, retries=0, timeout=None)``."""
        return self._host().actions

    @property
    def fallback(self) -> Fallbacks:
        """``await ctx.fallback.execute(fallback=, input=, timeout=None)``."""
        return self._host().fallbacks

    @property
    def notification(self) -> Notifications:
        """``await ctx.notification.email(...)`` calls the registered ``email`` sender."""
        return self._host().notifications

    def _host(self) -> RunHost:
        if self._run.host is None:
            raise EngineClosedError("this context is not attached to a running engine")
        return self._run.host

    # -- journaled calls ------------------------------------------------------------------

    def step(self, tag: str, handler: Callable[[], Any], rollback: Callable[[Any], Any] | None = None,
             options: Mapping[str, Any] | None = None, **kw: Any) -> Awaitable[Any]:
        """Run ``handler()`` once, durably; return its (recorded) output.

        Args:
            tag: unique within the execution.
            handler: a function or async function of no arguments.
            rollback: the compensation, called with the step's output.
            options: ``allow_fail, retries, retry_delay, timeout, critical``
                (a dict, as in the product document, or keywords).

        Raises:
            StepFailedError: the step failed after all its attempts.
        """
        # A plain function handing back the run's coroutine: one frame less on the hot path.
        opts = DEFAULT_STEP_OPTIONS if not options and not kw else parse_step_options(tag, options, kw)
        return self._run.step(tag, handler, rollback, opts)

    async def checkpoint(self, name: str, data: Any = None) -> None:
        """Record a named checkpoint; ``to_checkpoint`` rolls back only the steps after it."""
        await self._run.checkpoint(name, data)

    async def trigger_rollback(self, reason: str) -> RollbackResult:
        """Roll back now, by the strategy (``none`` acts as ``reverse_all``); the handler goes on."""
        return await self._run.trigger_rollback(reason)

    async def workflow(self, child_id: str, tag: str, input: Any = None, options: Mapping[str, Any] | None = None,
                       *, timeout: Any = None, retries: int = 0, parent_close_policy: str = "terminate") -> Any:
        """Run a child workflow (same product and env) under this one's supervision; return its output.

        A completed child is a step of this run: it is not run again on
        recovery, and when this run rolls back, the child's steps roll back too.
        ``parent_close_policy``: ``terminate`` (cancel the child when this run
        ends), ``abandon`` (let it run on), ``request_cancel`` (set its
        ``ctx.cancel_requested``). Retries run the child again as ``<id>~2``, ...

        Raises:
            ChildWorkflowError: the child ended without completing.
        """
        if options is not None and not isinstance(options, Mapping):
            raise InvalidArgumentError(f"options of child workflow {child_id!r} must be a dict, got {options!r}")
        opts = dict(options or {})
        return await self._run.child(child_id, tag, input, timeout=opts.get("timeout", timeout),
                                     retries=opts.get("retries", retries),
                                     parent_close_policy=opts.get("parent_close_policy", parent_close_policy))

    async def wait_for_signal(self, names: str | list[str], timeout: Any = None) -> Record:
        """Wait for a signal sent with ``workflows.signal``; return its payload with ``_signal`` set.

        Signals sent earlier (also while the process was down) are kept in
        order and each is taken exactly once.

        Raises:
            SignalTimeoutError: none of ``names`` arrived within ``timeout``.
        """
        return await self._run.wait_for_signal(names, timeout)

    async def sleep(self, duration: Any) -> None:
        """A durable timer: after a restart only the remaining time is waited."""
        await self._run.sleep(duration)

    def patched(self, name: str) -> bool:
        """Whether this execution runs the code path of change ``name``.

        True for an execution that reaches this point running code that
        contains the call (new runs, and runs in flight that had not got
        this far); False for one that had already recorded steps past this
        point without it. Keep the old path under ``else`` until no such
        run is left::

            if ctx.patched("add-fraud-check"):
                await ctx.step("fraud-check", check)
        """
        return self._run.patched(name)

    def idempotency_key(self, tag: str | None = None) -> str:
        """A key stable across retries and recovery, for the external call a step makes."""
        return f"{self._run.workflow_id}:{tag if tag is not None else self._run.current_step}"


class RestrictedContext(WorkflowContext):
    """The ``ctx`` a query, an update's validator or an update's handler gets.

    None of them may make a journaled call: a query or a validator runs
    outside the handler's order of calls, and an update is re-applied at a
    point of the replay, not re-run there. A query's or a validator's
    ``ctx.state`` is a read-only copy (they change nothing); an update's is the
    run's own, whose change is journaled with the update.
    """

    __slots__ = ("_role", "_state")

    def __init__(self, run: Run, role: Literal["query", "validator", "update"]) -> None:
        super().__init__(run)
        self._role = role  # "query" | "validator" | "update"
        self._state: Any = None

    @property
    def state(self) -> Record:
        if self._role == "update":
            return self._run.state
        if self._state is None:
            self._state = read_only(self._run.state)
        state: Record = self._state
        return state

    @state.setter
    def state(self, value: Record) -> None:
        if self._role != "update":
            raise ReadOnlyError(f"a {self._role} is read-only: it cannot set ctx.state (use an update)")
        self._run.state = value

    def _refuse(self, call: str) -> ReadOnlyError:
        return ReadOnlyError(f"ctx.{call} is not allowed in {'an' if self._role == 'update' else 'a'} "
                             f"{self._role} of workflow {self._run.workflow_id!r}: only the workflow's "
                             f"handler makes journaled calls")

    def step(self, tag: str, *_args: Any, **_kw: Any) -> Awaitable[Any]:
        raise self._refuse("step")

    async def checkpoint(self, name: str, data: Any = None) -> None:
        raise self._refuse("checkpoint")

    async def trigger_rollback(self, reason: str) -> RollbackResult:
        raise self._refuse("trigger_rollback")

    async def workflow(self, *_args: Any, **_kw: Any) -> Any:
        raise self._refuse("workflow")

    async def wait_for_signal(self, names: str | list[str], timeout: Any = None) -> Record:
        raise self._refuse("wait_for_signal")

    async def sleep(self, duration: Any) -> None:
        raise self._refuse("sleep")

    def patched(self, name: str) -> bool:
        raise self._refuse("patched")
