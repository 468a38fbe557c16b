"""sagaloop: durable saga workflows for Python services.

Everything public is importable from here; submodules are private except
``sagaloop.testing``.
"""

import logging as _logging

from .api import Engine, Workflows, run
from .errors import (
    ActionNotFoundError,
    ChildWorkflowError,
    CorruptRecordError,
    DefinitionNotFoundError,
    DuplicateStepError,
    EngineClosedError,
    FallbackFailedError,
    HandlerCrashedError,
    InvalidArgumentError,
    InvalidDurationError,
    NonDeterminismError,
    NotSerializableError,
    QueryNotFoundError,
    ReadOnlyError,
    SagaloopError,
    SignalTimeoutError,
    StepFailedError,
    StepNotFoundError,
    StepTimeoutError,
    StorageError,
    StoreLockedError,
    UpdateNotFoundError,
    UpdateRejectedError,
    UsageError,
    WorkflowCancelledError,
    WorkflowEndedError,
    WorkflowStillRunningError,
    WorkflowError,
    WorkflowExistsError,
    WorkflowNotFoundError,
    WorkflowTimeoutError,
)
from .results import (
    CancelResult,
    Comparison,
    DispatchResult,
    ErrorInfo,
    ExecutionList,
    ExecutionSummary,
    FailedCompensation,
    History,
    HistoryEvent,
    Job,
    JobList,
    RelatedExecution,
    RelatedExecutions,
    RollbackResult,
    StepDetail,
    WorkflowResult,
    WorkflowStatus,
)
from .runtime.handler.context import WorkflowContext
from .runtime.decisions.durations import parse_duration

__version__ = "0.1.0"

# The library never prints: a service's own logging set-up decides what happens to the
# ``sagaloop`` logger's records. One convention: every module logs to ``logging.getLogger(__name__)``
# as ``log`` (so under ``sagaloop``); a workflow's own ``ctx.log`` lines go to ``sagaloop.workflow``.
_logging.getLogger("sagaloop").addHandler(_logging.NullHandler())

__all__ = [
    "Engine", "Workflows", "run", "WorkflowContext", "parse_duration",
    # results
    "CancelResult", "Comparison", "ErrorInfo", "ExecutionList", "RelatedExecution", "RelatedExecutions", "ExecutionSummary", "FailedCompensation", "History", "HistoryEvent",
    "RollbackResult", "StepDetail", "WorkflowResult", "WorkflowStatus", "DispatchResult", "Job", "JobList",
    # errors
    "SagaloopError", "WorkflowError", "StepFailedError", "StepTimeoutError", "NotSerializableError",
    "SignalTimeoutError", "WorkflowTimeoutError", "WorkflowCancelledError", "ChildWorkflowError",
    "NonDeterminismError", "HandlerCrashedError", "UsageError", "InvalidArgumentError",
    "InvalidDurationError", "DefinitionNotFoundError", "WorkflowNotFoundError", "WorkflowExistsError",
    "WorkflowEndedError", "WorkflowStillRunningError", "DuplicateStepError", "StepNotFoundError", "QueryNotFoundError",
    "UpdateRejectedError", "StorageError", "StoreLockedError", "EngineClosedError", "ActionNotFoundError",
    "FallbackFailedError", "UpdateNotFoundError", "ReadOnlyError", "CorruptRecordError",
]

# Everything public is sagaloop.X, also in reprs, tracebacks and docs.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "sagaloop") != "sagaloop":
        try:
            _obj.__module__ = "sagaloop"
        except (AttributeError, TypeError):
            pass
del _name, _obj
