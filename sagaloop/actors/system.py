"""ActorSystem: spawning, the registry of live actors, and shutdown.

This module owns which actors exist and where an ended actor's outcome goes
(its parent, or on_crash). It must never run actor code itself nor decide a
parent's policy towards its children: children are only stopped for the
parent at shutdown.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable

from .actor import Actor
from .lifecycle import discard_pending, run_actor
from .ref import ActorDeadError, ActorRef

__all__ = ["ActorSystem"]

log = logging.getLogger(__name__)

CrashHandler = Callable[[ActorRef, BaseException], None]


def _log_crash(ref: ActorRef, error: BaseException) -> None:
    log.error("actor %r crashed", ref.id, exc_info=error)


class ActorSystem:
    """A registry of actors on the running event loop.

    An id stays taken from spawn until the actor has fully stopped (on_stop
    done), so two incarnations of one id never run side by side.
    """

    def __init__(self, *, on_crash: CrashHandler | None = None) -> None:
        self._actors: dict[str, ActorRef] = {}
        self._on_crash = on_crash or _log_crash
        self._ids = itertools.count(1)
        self._closed = False

    def __len__(self) -> int:
        return len(self._actors)

    def get(self, id: str) -> ActorRef | None:
        return self._actors.get(id)

    def spawn(self, actor: Actor, *, id: str | None = None, parent: ActorRef | None = None,
              lazy: bool = False) -> ActorRef:
        """Start actor in its own task; with parent, it becomes that actor's child.

        ``lazy``: the task (and with it on_start) starts only once something
        needs it: a message, a stop from outside, ``wait_stopped``. A lazy
        actor that stops itself before then ends at once, with neither
        on_start nor on_stop: for actors that mostly live and end unasked
        (a workflow run), which then cost no task at all.
        """
        if self._closed:
            raise RuntimeError("the actor system is shut down")
        loop = asyncio.get_running_loop()  # raises RuntimeError outside a loop
        if getattr(actor, "ref", None) is not None:
            raise ValueError(f"{actor!r} was already spawned as {actor.ref.id!r}")
        if id is None:
            id = self._new_id(actor)
        elif id in self._actors:
            raise ValueError(f"actor id {id!r} is already in use")
        if parent is not None and self._actors.get(parent.id) is not parent:
            raise ActorDeadError(parent.id)

        ref = ActorRef(id, parent)
        actor.ref = ref
        if lazy:
            ref._lazy = (self, actor)
        else:
            self._start_task(ref, actor, loop)
        self._actors[id] = ref
        if parent is not None:
            if parent._children is None:
                parent._children = {}
            parent._children[ref] = None
        return ref

    async def stop(self, ref: ActorRef, timeout: float | None = None) -> None:
        """Stop ref after its queued messages and wait for on_stop; TimeoutError if slower."""
        ref.stop()
        async with asyncio.timeout(timeout):
            await ref.wait_stopped()

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Stop every actor, wait up to timeout, then cancel the stragglers.

        Actors stop all at once; a child's exit notice to a parent that is
        itself stopping is dropped, which is fine since everything is going.
        """
        self._closed = True  # also keeps on_stop hooks from spawning replacements
        refs = list(self._actors.values())
        if not refs:
            return
        for ref in refs:
            ref.stop()
        # stop() started the task of every lazy actor still here
        _, pending = await asyncio.wait([ref._task for ref in refs if ref._task is not None], timeout=timeout)
        if pending:
            for task in pending:
                task.cancel()  # run_actor treats this as a clean stop
            await asyncio.wait(pending, timeout=timeout)
        # Left now: tasks cancelled before they first ran (so run_actor never
        # ran to clean up) and tasks that ignore cancellation.
        for ref in list(self._actors.values()):
            if ref._task is not None and not ref._task.done():
                log.warning("actor %r ignored cancellation at shutdown; abandoning it", ref.id)
            discard_pending(ref)
            self._on_exit(ref, None)

    def _start_task(self, ref: ActorRef, actor: Actor, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Give the actor its task (at spawn, or for a lazy actor when something first needs it)."""
        loop = loop or asyncio.get_running_loop()
        ref._task = loop.create_task(run_actor(actor, ref, self._on_exit), name=ref.id)

    def _end_unstarted(self, ref: ActorRef) -> None:
        """A lazy actor that stopped itself before its task started: it ends here, without one."""
        discard_pending(ref)
        self._on_exit(ref, None)

    def _new_id(self, actor: Actor) -> str:
        prefix = type(actor).__name__
        while (id := f"{prefix}-{next(self._ids)}") in self._actors:
            pass  # a caller chose this id explicitly; take the next number
        return id

    def _on_exit(self, ref: ActorRef, error: BaseException | None) -> None:
        """Called once per actor, from its task, after on_stop."""
        # Identity check: an abandoned straggler may end after its id was reused.
        if self._actors.get(ref.id) is ref:
            del self._actors[ref.id]
        parent = ref.parent
        if parent is not None:
            if parent._children:
                parent._children.pop(ref, None)
            if parent._notify_child_exit(ref, error) or error is None:
                return
            # The parent is gone, so nobody supervises this crash: log it.
            log.error("actor %r crashed after its parent %r stopped", ref.id, parent.id, exc_info=error)
        elif error is not None:
            try:
                self._on_crash(ref, error)
            except Exception:
                # on_crash runs in the dead actor's task; it must not fail it.
                log.exception("on_crash failed for actor %r", ref.id)
