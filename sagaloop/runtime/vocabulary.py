"""The runtime's words, one meaning each, as ``Literal`` types (and their values as tuples).

- *status*: where an execution is (``Status``); a step has its own (``StepStatus``).
- *trigger*: what started a rollback (``Trigger``).
- *phase*: where a live run's actor is (``Phase``): starting -> running -> finishing -> ended.
- *entry kind*: what a journal entry records (``EntryKind``).
- *outcome*: how the handler part of a run ended (``OutcomeKind``).
- *blocked*: a live run waits on a signal, a timer or a child (``execute`` answers ``running``);
  *waiting outside*: it awaits a step's I/O (it holds no admission turn meanwhile);
  *suspended*: a commit of it failed, so it stopped at its last commit and resumes after a pause.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

Status = Literal["running", "completed", "failed", "rolled_back", "cancelled"]
STATUSES: tuple[Status, ...] = get_args(Status)

StepStatus = Literal["running", "completed", "failed", "skipped"]

Strategy = Literal["reverse_all", "critical_only", "to_checkpoint", "none"]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)

Trigger = Literal["step_failed", "manual", "cancel", "timeout", "parent_closed", "parent_rolled_back"]
TRIGGERS: tuple[Trigger, ...] = get_args(Trigger)

Phase = Literal["starting", "running", "finishing", "ended"]

EntryKind = Literal["step", "checkpoint", "signal", "sleep", "rollback", "patch", "update"]

OutcomeKind = Literal["completed", "failed", "cancelled", "timeout", "nondeterminism"]

ParentClosePolicy = Literal["terminate", "abandon", "request_cancel"]
PARENT_CLOSE_POLICIES: tuple[ParentClosePolicy, ...] = get_args(ParentClosePolicy)

Record = dict[str, Any]  # a plain msgpack-able record: an instance, a journal entry, an event, a signal
