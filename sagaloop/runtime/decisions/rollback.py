"""Which steps roll back, and in what order — pure decisions, no I/O.

The planner takes plain facts about the steps of a run and returns the tags
whose compensations must run, in the order to run them. It imports neither
asyncio nor storage, so it is tested with plain data (and hypothesis).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..vocabulary import STRATEGIES, Strategy


@dataclass(slots=True)
class StepFacts:
    """What the planner needs to know of one step."""

    tag: str
    position: int          # call order within the run
    order: int             # completion order (differs from position for concurrent steps)
    critical: bool
    has_rollback: bool
    completed: bool        # ended successfully (not skipped, not failed)
    rolled_back: bool      # its compensation already ran to the end


def plan_rollback(strategy: Strategy, steps: list[StepFacts], *, checkpoint_position: int | None,
                  failed_step: StepFacts | None = None, manual: bool = False) -> list[str]:
    """The tags whose compensations run, in run order.

    - The failed step's own compensation runs first (it may have left partial
      effects), if the strategy selects it.
    - Then the selected completed steps, newest completion first.
    - ``none`` selects nothing, except for a manual ``trigger_rollback``,
      where it behaves as ``reverse_all``.
    - ``to_checkpoint`` selects the steps after the most recent checkpoint,
      or every step when there is none yet.
    - Steps already rolled back are kept in the plan (the runner skips their
      compensation but reports them), so a resumed rollback reports the same
      list it would have reported uninterrupted.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown rollback strategy {strategy!r}")
    if strategy == "none":
        if not manual:
            return []
        strategy = "reverse_all"

    def selected(step: StepFacts) -> bool:
        if not step.has_rollback:
            return False
        if strategy == "critical_only":
            return step.critical
        if strategy == "to_checkpoint" and checkpoint_position is not None:
            return step.position > checkpoint_position
        return True

    plan: list[str] = []
    if failed_step is not None and selected(failed_step):
        plan.append(failed_step.tag)
    done = sorted((s for s in steps if s.completed and selected(s)), key=lambda s: s.order, reverse=True)
    plan.extend(s.tag for s in done)
    return plan


def ending_status(*, rolled_back: int, failed_compensations: int) -> Literal["failed", "rolled_back"]:
    """How a run that failed (or was rolled back) ends."""
    if failed_compensations:
        return "failed"
    return "rolled_back" if rolled_back else "failed"
