"""The Actor base class: the hooks a user overrides.

This module owns the contract between user code and the kernel. It must
never schedule anything or catch anything: when and how the hooks run is
lifecycle.py's business.
"""

from __future__ import annotations

from typing import Any

from .ref import ActorRef

__all__ = ["Actor"]


class Actor:
    """Subclass this. One message at a time; state is private to the actor.

    Every hook runs inside the actor's one task, so no two of them ever
    overlap and no lock is needed around the actor's attributes.
    """

    __slots__ = ("ref", "__weakref__")  # a subclass without __slots__ gets a __dict__ as usual

    ref: ActorRef  # set by ActorSystem.spawn before on_start

    async def on_start(self) -> None:
        """Runs before the first message; raising here is a crash."""

    async def receive(self, message: Any) -> Any:
        """Handle one message; the return value is the reply to ask()."""
        raise NotImplementedError(f"{type(self).__name__} does not implement receive()")

    async def on_stop(self) -> None:
        """Runs once when the actor stops, whatever the reason.

        Children are not stopped for you: stop them here, or leave them be.
        """

    async def on_failure(self, error: BaseException) -> None:
        """Runs before on_stop when the actor crashed (tell, on_start or on_child_exit raised)."""

    async def on_child_exit(self, child: ActorRef, error: BaseException | None) -> None:
        """A child ended: error is its crash, or None for a clean stop.

        Delivered as a message, in order with the others; raising here
        crashes this actor in turn, which is how a failure escalates.
        """

    def stop(self) -> None:
        """Stop after the current message; queued asks fail with ActorDeadError.

        A lazy actor whose task never started ends right here, without
        on_start or on_stop (see ``ActorSystem.spawn``).
        """
        self.ref._halted = True
        if not self.ref._end_if_unstarted():
            self.ref.stop()

    @property
    def children(self) -> list[ActorRef]:
        """The children spawned with this actor as parent that have not ended yet."""
        return list(self.ref._children or ())
