"""The public surface is exactly this list: a leaked import never becomes API."""

import sagaloop

EXPORTED = sorted([
    "ActionNotFoundError", "CancelResult", "ChildWorkflowError", "CorruptRecordError", "DefinitionNotFoundError",
    "DuplicateStepError", "ReadOnlyError",
    "Engine", "EngineClosedError", "ErrorInfo", "ExecutionList", "ExecutionSummary", "FailedCompensation",
    "FallbackFailedError",
    "HandlerCrashedError", "History", "HistoryEvent", "InvalidArgumentError", "InvalidDurationError",
    "NonDeterminismError", "NotSerializableError", "QueryNotFoundError", "RollbackResult", "SagaloopError",
    "SignalTimeoutError", "StepDetail", "StepFailedError", "StepNotFoundError", "StepTimeoutError",
    "StorageError", "StoreLockedError", "UpdateNotFoundError", "UpdateRejectedError", "UsageError", "WorkflowCancelledError",
    "WorkflowContext", "WorkflowEndedError", "WorkflowError", "WorkflowExistsError", "WorkflowNotFoundError",
    "WorkflowResult", "WorkflowStatus", "WorkflowTimeoutError", "Workflows", "parse_duration", "run",
])
SUBPACKAGES = {"api", "runtime", "actors", "storage", "errors", "results", "testing"}


def test_all_is_pinned():
    assert sorted(sagaloop.__all__) == EXPORTED


def test_every_export_exists_and_nothing_else_leaks():
    for name in EXPORTED:
        assert hasattr(sagaloop, name), name
    public = {n for n in dir(sagaloop) if not n.startswith("_")}
    assert public - set(EXPORTED) - SUBPACKAGES == set()


def test_every_error_has_a_code_and_derives_from_the_root():
    codes = set()
    for name in EXPORTED:
        obj = getattr(sagaloop, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, sagaloop.SagaloopError), name
            assert isinstance(obj.code, str) and obj.code, name
            codes.add(obj.code)
    assert len(codes) >= 25  # one distinct code per class


def test_usage_errors_stand_apart_from_workflow_outcomes():
    assert not issubclass(sagaloop.UsageError, sagaloop.WorkflowError)
    assert issubclass(sagaloop.InvalidDurationError, ValueError)
    assert issubclass(sagaloop.NotSerializableError, TypeError)


def test_every_export_says_it_is_sagaloops():
    for name in EXPORTED:
        assert getattr(sagaloop, name).__module__ == "sagaloop", name


def test_the_library_logs_under_sagaloop_and_never_prints():
    import logging
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("sagaloop").handlers)


def test_not_found_and_ended_errors_name_the_workflow():
    assert sagaloop.WorkflowNotFoundError("x", workflow_id="wf-1").workflow_id == "wf-1"
    assert sagaloop.WorkflowEndedError("x", workflow_id="wf-1").workflow_id == "wf-1"
