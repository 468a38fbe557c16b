"""ActorRef, the only handle the outside world holds on an actor.

This module owns how messages get *into* an actor (tell, ask, stop) and how
to wait for its end. It must never run actor code or touch actor state: that
happens only in the actor's own task (see lifecycle.py).
"""

from __future__ import annotations

import asyncio
import enum
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

from .mailbox import Mailbox, MailboxClosed

if TYPE_CHECKING:
    from .actor import Actor
    from .system import ActorSystem

__all__ = ["ActorDeadError", "ActorRef"]


class _Notice(enum.Enum):
    CHILD_EXIT = "child exit"


# The reply slot of an envelope says how the actor answers: None for a tell,
# a Future for an ask, CHILD_EXIT for a supervision notice whose message is
# (child_ref, error).
CHILD_EXIT: Final = _Notice.CHILD_EXIT
Reply: TypeAlias = "asyncio.Future[Any] | Literal[_Notice.CHILD_EXIT] | None"
Envelope: TypeAlias = "tuple[Any, Reply]"  # (message, reply slot); a message is anything


class ActorDeadError(Exception):
    """The actor has stopped (or is stopping) and takes no more messages."""

    def __init__(self, actor_id: str) -> None:
        # args holds just the id so the error pickles and compares cleanly.
        super().__init__(actor_id)
        self.actor_id = actor_id

    def __str__(self) -> str:
        return f"actor {self.actor_id!r} is not alive"


class ActorRef:
    """Handle on a spawned actor; created by ActorSystem.spawn only."""

    __slots__ = ("id", "parent", "_mailbox", "_task", "_children", "_halted", "_lazy")

    def __init__(self, actor_id: str, parent: ActorRef | None) -> None:
        self.id = actor_id
        self.parent = parent
        self._mailbox: Mailbox[Envelope] = Mailbox()
        # Set by the system: at spawn, or for a lazy actor when something first needs it (_ensure_started).
        self._task: asyncio.Task[BaseException | None] | None = None
        # A lazy actor whose task has not started yet: (its system, the actor).
        self._lazy: tuple[ActorSystem, Actor] | None = None
        # Live children in spawn order; a dict because sets are unordered.
        self._children: dict[ActorRef, None] | None = None  # made with the first child
        # Set by Actor.stop(): leave after the current message, dropping the rest.
        self._halted = False

    def __repr__(self) -> str:
        return f"<ActorRef {self.id!r} {'alive' if self.is_alive else 'dead'}>"

    @property
    def is_alive(self) -> bool:
        """True while the actor accepts messages, i.e. tell/ask would not raise."""
        return not self._mailbox.closed

    def tell(self, message: Any) -> None:
        """Queue a message without waiting; a failing receive() crashes the actor."""
        if not self._enqueue((message, None)):
            raise ActorDeadError(self.id)

    async def ask(self, message: Any, timeout: float | None = None) -> Any:
        """Queue a message and wait for receive()'s return value.

        receive()'s exception is raised here and the actor lives on. If the
        caller gives up (timeout or cancellation) the message is still
        handled; only the reply is dropped.
        """
        if asyncio.current_task() is self._task:
            # The reply could only come from this very task: it would hang forever.
            raise RuntimeError(f"actor {self.id!r} cannot ask itself")
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self._enqueue((message, reply)):
            raise ActorDeadError(self.id)
        if timeout is None:
            return await reply
        async with asyncio.timeout(timeout):
            return await reply

    def _notify_child_exit(self, child: ActorRef, error: BaseException | None) -> bool:
        """Queue a supervision notice; False if this actor takes no more messages."""
        return self._enqueue(((child, error), CHILD_EXIT))

    def _enqueue(self, envelope: Envelope) -> bool:
        """Put an envelope in the mailbox (starting a lazy actor); False if it is closed."""
        try:
            self._mailbox.put(envelope)
        except MailboxClosed:
            return False
        self._ensure_started()
        return True

    def stop(self) -> None:
        """Stop after the messages already queued; later tell/ask raise ActorDeadError."""
        self._mailbox.close()
        self._ensure_started()  # so on_start and on_stop run, in the actor's task

    def _ensure_started(self) -> None:
        """Start a lazy actor's task, if it has none yet: something needs it now."""
        if self._lazy is not None:
            system, actor = self._lazy
            self._lazy = None
            system._start_task(self, actor)

    def _end_if_unstarted(self) -> bool:
        """End a lazy actor whose task never started, right here and without one; True if it was one."""
        if self._lazy is None:
            return False
        system, _ = self._lazy
        self._lazy = None
        system._end_unstarted(self)
        return True

    async def wait_stopped(self) -> BaseException | None:
        """Wait until on_stop has run; return the crash error, or None for a clean stop."""
        self._ensure_started()
        task = self._task
        if task is None:
            return None  # a lazy actor that ended before anything needed its task
        if not task.done():
            # asyncio.wait, unlike awaiting the task, never cancels it when
            # this waiter is cancelled.
            await asyncio.wait((task,))
        # A task cancelled before it ever ran never got to crash.
        return None if task.cancelled() else task.result()
