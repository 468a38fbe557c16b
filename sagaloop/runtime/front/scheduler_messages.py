"""The messages the scheduler actor answers (its mailbox takes them in order).

The calls (``Dispatch``, ``CancelJob``, ``SetPaused``, ``ListJobs``, ``Ready``) are asked by the
front door's ``Scheduler``; the notices (``Wake``, ``Defined``, ``Started``, ``RunEnded``) are told:
by the clock timer, by ``define``, by a run start when it is done, by a run's end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True, frozen=True)
class Ready:
    """Answered once the jobs are loaded (the first message after ``on_start``)."""


@dataclass(slots=True, frozen=True)
class Dispatch:
    product: str
    env: str
    workflow: str
    input: Any
    schedule: Any
    options: Any


@dataclass(slots=True, frozen=True)
class CancelJob:
    product: str
    env: str
    job_id: str


@dataclass(slots=True, frozen=True)
class SetPaused:
    product: str
    env: str
    job_id: str
    paused: bool


@dataclass(slots=True, frozen=True)
class ListJobs:
    product: str
    env: str
    tag: str | None


@dataclass(slots=True, frozen=True)
class Wake:
    """The clock timer fired: tick every job due."""


@dataclass(slots=True, frozen=True)
class Defined:
    """Workflow ``key`` (product, tag) was defined: its jobs' ticks and starts that waited for it go."""
    key: tuple[str, str]


@dataclass(slots=True, frozen=True)
class Started:
    """The start of run ``attempt`` of ``tick`` is done (``ok``: committed; else it raised)."""
    job_id: str
    tick: int
    attempt: int
    ok: bool


@dataclass(slots=True, frozen=True)
class RunEnded:
    """Run ``attempt`` of ``tick`` ended with ``status`` (None: its end future failed)."""
    job_id: str
    tick: int
    attempt: int
    status: str | None


Call = Ready | Dispatch | CancelJob | SetPaused | ListJobs
Notice = Wake | Defined | Started | RunEnded
