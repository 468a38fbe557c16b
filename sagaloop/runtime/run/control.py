"""What a run tells its actor and its engine, and what it needs from its engine.

``Outcome`` is how the handler part of a run ended; ``ReplayExhausted`` is
the control flow of a replay that must not run anything new;
``RunSuspended`` stops a run whose commit failed; ``RunHost`` is what a run
needs from its engine (child workflows, the outside-world components).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..vocabulary import OutcomeKind, ParentClosePolicy, Trigger

if TYPE_CHECKING:
    from ..handler.components import Actions, Fallbacks, Notifications
    from .core import RunCore


class ReplayExhausted(BaseException):
    """Internal: a replay-only run reached the end of its journal.

    A ``BaseException`` so a handler's ``except Exception`` cannot swallow it;
    if you see it, a bare ``except:`` in a workflow handler caught it — re-raise it.
    """


class RunSuspended(BaseException):
    """Internal: a commit of this run failed (``StorageError``); the run stops where it is.

    Its last commit is its state: the engine loads it from the store again
    after a pause and resumes it (see ``front.recovery``). A ``BaseException``
    so a handler's ``except Exception`` cannot swallow it.
    """

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class RunHost(Protocol):
    """What a run needs from its engine: child workflows and the outside-world components."""

    actions: Actions
    fallbacks: Fallbacks
    notifications: Notifications

    async def run_child(self, parent: RunCore, child_id: str, tag: str, input: Any, timeout_ms: float | None,
                        policy: ParentClosePolicy) -> dict[str, Any]: ...

    async def compensate_child(self, product_env: tuple[str, str], child_ids: list[str]) -> None: ...

    async def close_children(self, parent: RunCore, children: dict[str, ParentClosePolicy]) -> None: ...


class Outcome:
    """How the handler part of a run ended; ``Run.finish`` turns it into an end."""

    __slots__ = ("kind", "output", "error", "failed_step", "trigger", "reason")

    def __init__(self, kind: OutcomeKind, *, output: Any = None, error: dict[str, Any] | None = None,
                 failed_step: str | None = None, trigger: Trigger = "step_failed", reason: str | None = None) -> None:
        self.kind = kind
        self.output = output
        self.error = error
        self.failed_step = failed_step
        self.trigger = trigger
        self.reason = reason
