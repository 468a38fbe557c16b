"""Every error sagaloop raises, in one tree.

This module is a leaf: it imports nothing from sagaloop, so every layer
(api, runtime, storage) raises the same public classes.

    SagaloopError                      code
    ├── WorkflowError                  an outcome inside a workflow run
    │   ├── StepFailedError            step_failed
    │   ├── StepTimeoutError           step_timeout
    │   ├── NotSerializableError       not_serializable   (also a TypeError)
    │   ├── SignalTimeoutError         signal_timeout
    │   ├── WorkflowTimeoutError       workflow_timeout
    │   ├── WorkflowCancelledError     cancelled
    │   ├── ChildWorkflowError         child_failed
    │   ├── NonDeterminismError        nondeterminism
    │   ├── HandlerCrashedError        handler_crashed
    │   └── FallbackFailedError        fallback_failed
    ├── UsageError                     the caller made a mistake
    │   ├── InvalidArgumentError       invalid_argument   (also a ValueError)
    │   │   └── InvalidDurationError   invalid_duration
    │   ├── DefinitionNotFoundError    definition_not_found
    │   ├── WorkflowNotFoundError      workflow_not_found
    │   ├── WorkflowExistsError        workflow_exists
    │   ├── WorkflowEndedError         workflow_ended
    │   ├── DuplicateStepError         duplicate_step
    │   ├── StepNotFoundError          step_not_found
    │   ├── QueryNotFoundError         query_not_found
    │   ├── ActionNotFoundError        action_not_found
    │   ├── UpdateNotFoundError        update_not_found
    │   └── UpdateRejectedError        update_rejected
    ├── StorageError                   storage_error
    │   └── StoreLockedError           store_locked
    └── EngineClosedError              engine_closed

Workflow outcomes are what a handler may catch and react to; usage errors
are bugs in the calling code and stand apart so ``except WorkflowError``
never hides one.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "SagaloopError",
    "WorkflowError",
    "StepFailedError",
    "StepTimeoutError",
    "NotSerializableError",
    "SignalTimeoutError",
    "WorkflowTimeoutError",
    "WorkflowCancelledError",
    "ChildWorkflowError",
    "NonDeterminismError",
    "HandlerCrashedError",
    "FallbackFailedError",
    "UsageError",
    "InvalidArgumentError",
    "InvalidDurationError",
    "DefinitionNotFoundError",
    "WorkflowNotFoundError",
    "WorkflowExistsError",
    "WorkflowEndedError",
    "DuplicateStepError",
    "StepNotFoundError",
    "QueryNotFoundError",
    "ActionNotFoundError",
    "UpdateNotFoundError",
    "UpdateRejectedError",
    "ReadOnlyError",
    "StorageError",
    "StoreLockedError",
    "CorruptRecordError",
    "EngineClosedError",
]


class SagaloopError(Exception):
    """Root of every sagaloop error; ``code`` is a stable machine-readable name."""

    code = "sagaloop_error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


# -- outcomes inside a workflow run --------------------------------------------------


class WorkflowError(SagaloopError):
    """Something ended or interrupted a workflow run; the workflow may react."""

    code = "workflow_error"


class StepFailedError(WorkflowError):
    """A step's handler raised after all its attempts; ``__cause__`` holds the last error."""

    code = "step_failed"

    def __init__(self, message: str = "", *, step: str | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.step = step


class StepTimeoutError(WorkflowError, TimeoutError):
    """A step attempt ran longer than its ``timeout``."""

    code = "step_timeout"


class NotSerializableError(WorkflowError, TypeError):
    """A value that must be journaled (step output, input, state) is not msgpack-serialisable."""

    code = "not_serializable"


class SignalTimeoutError(WorkflowError, TimeoutError):
    """``ctx.wait_for_signal`` waited longer than its ``timeout``."""

    code = "signal_timeout"


class WorkflowTimeoutError(WorkflowError, TimeoutError):
    """The run passed the workflow-level ``timeout``."""

    code = "workflow_timeout"


class WorkflowCancelledError(WorkflowError):
    """The run was cancelled by ``workflows.cancel`` or its parent closing."""

    code = "cancelled"


class ChildWorkflowError(WorkflowError):
    """A child workflow ended without completing; ``error`` is the child's error dict."""

    code = "child_failed"

    def __init__(self, message: str = "", *, child_id: str | None = None,
                 error: dict[str, Any] | None = None, status: str | None = None) -> None:
        super().__init__(message)
        self.child_id = child_id
        self.error = error
        self.status = status


class NonDeterminismError(WorkflowError):
    """A re-run handler asked for another step than the one recorded at that position."""

    code = "nondeterminism"


class HandlerCrashedError(WorkflowError):
    """The handler raised something that is not an ``Exception`` (a bare ``BaseException``)."""

    code = "handler_crashed"


class FallbackFailedError(WorkflowError):
    """Every provider of a fallback chain failed; the message lists their errors."""

    code = "fallback_failed"


# -- misuse: the caller's fault -----------------------------------------------------------


class UsageError(SagaloopError):
    """The calling code used sagaloop wrongly; nothing was changed."""

    code = "usage_error"


class InvalidArgumentError(UsageError, ValueError):
    """An argument has a value sagaloop cannot accept; the message names it."""

    code = "invalid_argument"


class InvalidDurationError(InvalidArgumentError):
    """A duration is not milliseconds, ``"500ms" "30s" "5m" "24h" "7d"`` or a timedelta."""

    code = "invalid_duration"


class DefinitionNotFoundError(UsageError, LookupError):
    """No workflow is defined for that product and tag."""

    code = "definition_not_found"


class WorkflowNotFoundError(UsageError, LookupError):
    """No execution has that ``workflow_id`` (in that product and env); ``.workflow_id`` names it."""

    code = "workflow_not_found"

    def __init__(self, message: str = "", *, workflow_id: str | None = None) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id


class WorkflowExistsError(UsageError):
    """An execution with that ``workflow_id`` already exists."""

    code = "workflow_exists"


class WorkflowEndedError(UsageError):
    """The execution has ended and cannot take this message; ``.workflow_id`` names it."""

    code = "workflow_ended"

    def __init__(self, message: str = "", *, workflow_id: str | None = None) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id


class WorkflowStillRunningError(UsageError):
    """The execution is still running, and the call needs one that has ended (``resume``,
    ``replay_from_step``); ``.workflow_id`` names it."""

    code = "still_running"

    def __init__(self, message: str = "", *, workflow_id: str | None = None) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id


class DuplicateStepError(UsageError):
    """A step tag was used twice within one execution."""

    code = "duplicate_step"


class StepNotFoundError(UsageError, LookupError):
    """The execution has no step with that tag."""

    code = "step_not_found"


class QueryNotFoundError(UsageError, LookupError):
    """The workflow's definition has no query of that name."""

    code = "query_not_found"


class ActionNotFoundError(UsageError, LookupError):
    """No action, fallback or notification sender is registered under that name."""

    code = "action_not_found"


class UpdateNotFoundError(UsageError, LookupError):
    """The workflow's definition has no update of that name."""

    code = "update_not_found"


class UpdateRejectedError(UsageError):
    """An update's validator rejected it; nothing was journaled."""

    code = "update_rejected"


class ReadOnlyError(UsageError):
    """A query (or an update validator) tried to change its instance, or a ``ctx`` was used
    for a journaled call where none belongs (a query, an update, a run that has ended)."""

    code = "read_only"


# -- infrastructure -----------------------------------------------------------------------


class StorageError(SagaloopError):
    """The durable store failed or cannot be used."""

    code = "storage_error"


class StoreLockedError(StorageError):
    """Another live process holds the data directory for writing."""

    code = "store_locked"

    def __init__(self, message: str = "", *, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class CorruptRecordError(StorageError):
    """A stored record does not decode. Names the instance and the record's key; that
    instance fails loudly and every other one runs on."""

    code = "corrupt_record"

    def __init__(self, message: str = "", *, workflow_id: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id
        self.key = key


class EngineClosedError(SagaloopError):
    """The engine is not open (not yet started, or already closed)."""

    code = "engine_closed"
