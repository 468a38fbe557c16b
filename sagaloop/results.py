"""The frozen result types every public call returns.

A leaf module (no sagaloop imports) so the runtime can hand a
``RollbackResult`` to a handler and the api can build the rest from stored
records. Each type has ``to_dict()`` giving plain JSON-able data, and
``result["field"]`` works too, for code written against the product
document's plain objects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, overload

__all__ = [
    "ErrorInfo",
    "FailedCompensation",
    "RollbackResult",
    "WorkflowResult",
    "WorkflowStatus",
    "HistoryEvent",
    "History",
    "StepDetail",
    "ExecutionSummary",
    "ExecutionList",
    "CancelResult",
]


class _Record:
    """Shared behaviour: ``to_dict()`` and read-only item access."""

    # Every subclass is a dataclass (declared here, not assigned: what asdict needs to know).
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __getitem__(self, name: str) -> Any:
        try:
            return getattr(self, name)
        except AttributeError:
            raise KeyError(name) from None

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name, default)


@dataclass(frozen=True, slots=True)
class ErrorInfo(_Record):
    message: str
    step: str | None = None
    code: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "ErrorInfo | None":
        if data is None:
            return None
        return cls(message=data.get("message", ""), step=data.get("step"), code=data.get("code"))


@dataclass(frozen=True, slots=True)
class FailedCompensation(_Record):
    """A compensation (rollback handler) that raised."""

    tag: str
    error: str


@dataclass(frozen=True, slots=True)
class RollbackResult(_Record):
    success: bool
    rolled_back_steps: list[str]
    failed_steps: list[FailedCompensation] = field(default_factory=list)
    reason: str | None = None
    trigger: str | None = None  # step_failed | manual | cancel | timeout | parent_closed

    @overload
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RollbackResult": ...

    @overload
    @classmethod
    def from_dict(cls, data: None) -> None: ...

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "RollbackResult | None":
        if data is None:
            return None
        return cls(
            success=data["success"],
            rolled_back_steps=list(data["rolled_back_steps"]),
            failed_steps=[FailedCompensation(f["tag"], f["error"]) for f in data.get("failed_steps") or ()],
            reason=data.get("reason"),
            trigger=data.get("trigger"),
        )


@dataclass(frozen=True, slots=True)
class WorkflowResult(_Record):
    workflow_id: str
    status: str  # completed | failed | rolled_back | running | cancelled
    output: Any = None
    error: ErrorInfo | None = None
    completed_steps: list[str] = field(default_factory=list)
    failed_step: str | None = None
    execution_time: int = 0
    rollback_result: RollbackResult | None = None
    replayed_from: str | None = None
    restarted_from: str | None = None
    resumed_from: str | None = None

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "WorkflowResult":
        return cls(
            workflow_id=rec["workflow_id"],
            status=rec["status"],
            output=rec.get("output"),
            error=ErrorInfo.from_dict(rec.get("error")),
            completed_steps=list(rec.get("completed_steps") or ()),
            failed_step=rec.get("failed_step"),
            execution_time=int(rec.get("execution_time") or 0),
            rollback_result=RollbackResult.from_dict(rec.get("rollback_result")),
            replayed_from=rec.get("replayed_from"),
            restarted_from=rec.get("restarted_from"),
            resumed_from=rec.get("resumed_from"),
        )


@dataclass(frozen=True, slots=True)
class WorkflowStatus(_Record):
    workflow_id: str
    product: str
    env: str
    tag: str
    status: str
    current_step: str | None
    completed_steps: list[str]
    state: dict[str, Any]
    checkpoint_name: str | None = None
    checkpoint_data: Any = None
    created_at: int | None = None
    updated_at: int | None = None
    ended_at: int | None = None
    error: ErrorInfo | None = None
    waiting_for: str | None = None  # what a running instance is blocked on: a signal, a timer, a child


@dataclass(frozen=True, slots=True)
class HistoryEvent(_Record):
    type: str
    timestamp: int
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class History(_Record):
    workflow_id: str
    events: list[HistoryEvent]


@dataclass(frozen=True, slots=True)
class StepDetail(_Record):
    tag: str
    status: str  # pending | running | completed | failed | skipped | rolled_back
    input: Any
    output: Any
    error: ErrorInfo | None
    attempts: int
    duration: int | None
    rollback_status: str | None  # None | completed | failed


@dataclass(frozen=True, slots=True)
class ExecutionSummary(_Record):
    workflow_id: str
    product: str
    env: str
    tag: str
    status: str
    type: str
    created_at: int
    ended_at: int | None
    execution_time: int | None


@dataclass(frozen=True, slots=True)
class ExecutionList(_Record, Sequence[ExecutionSummary]):
    """One page of ``list``: ``executions`` newest first, and the cursor of the next page.

    It is also the sequence of its executions (``len``, iteration, ``page[0]``, ``page[1:]``,
    and ``==`` with a list of them), so code written when ``list`` returned a plain list
    keeps working. ``page["next_cursor"]`` names a field, like the other results.
    """

    executions: list[ExecutionSummary]
    next_cursor: str | None = None
    """Pass it as ``cursor`` for the next page; None when no more executions match."""

    def __len__(self) -> int:
        return len(self.executions)

    def __iter__(self) -> Iterator[ExecutionSummary]:
        return iter(self.executions)

    @overload
    def __getitem__(self, index: int) -> ExecutionSummary: ...

    @overload
    def __getitem__(self, index: slice) -> list[ExecutionSummary]: ...

    @overload
    def __getitem__(self, index: str) -> Any: ...

    def __getitem__(self, index: int | slice | str) -> Any:
        if isinstance(index, str):
            return _Record.__getitem__(self, index)
        return self.executions[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ExecutionList):
            return self.executions == other.executions and self.next_cursor == other.next_cursor
        if isinstance(other, list):
            return self.executions == other
        return NotImplemented


@dataclass(frozen=True, slots=True)
class CancelResult(_Record):
    cancelled: bool
    rolled_back_steps: list[str]
    status: str | None = None


@dataclass(frozen=True, slots=True)
class RelatedExecution(_Record):
    """One member of a family of executions: the original, or a replay, restart or resume of a member."""

    workflow_id: str
    type: str  # original | replay | restart | resume
    status: str
    started_at: int
    replayed_from: str | None = None
    restarted_from: str | None = None
    resumed_from: str | None = None


@dataclass(frozen=True, slots=True)
class RelatedExecutions(_Record):
    """The whole family of an execution, oldest first."""

    workflow_id: str
    executions: list[RelatedExecution]


@dataclass(frozen=True, slots=True)
class Comparison(_Record):
    """What differs between two executions.

    ``input_diff`` and ``output_diff``: ``{key: [a's value, b's value]}``, nested keys dotted
    (``""`` when the values themselves are not dicts); ``status``: each one's status by id;
    ``step_diffs``: ``{step, <a id>: {status, output, error}, <b id>: {...}}`` for each step
    whose status, output or error differs (None where a run has no such step).
    """

    workflow_ids: list[str]
    input_diff: dict[str, list[Any]]
    output_diff: dict[str, list[Any]]
    status: dict[str, str]
    step_diffs: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class DispatchResult(_Record):
    """A dispatched job: its id and its first run's time (epoch ms)."""

    job_id: str
    scheduled_at: int


@dataclass(frozen=True, slots=True)
class Job(_Record):
    """One dispatched job as ``list_jobs`` shows it; ``schedule`` is ``{"start_at": ms}`` or
    ``{"cron": ..., "timezone": ...}``; ``next_run_at`` is None once a one-off job has nothing left to run."""

    job_id: str
    workflow: str
    schedule: dict[str, Any]
    next_run_at: int | None
    last_run_at: int | None
    paused: bool


@dataclass(frozen=True, slots=True)
class JobList(_Record):
    """The jobs of a product and env, oldest first."""

    jobs: list[Job]
