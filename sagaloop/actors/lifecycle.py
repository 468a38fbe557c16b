"""The body of an actor's one task: start, drain the mailbox, stop.

This module owns the order of hooks and what counts as a crash. It must
never let anything escape the task: every outcome ends as a return value
(the crash error or None) plus one call to ``on_exit``, so a failing actor
can never take down the loop, the system or another actor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .actor import Actor
from .ref import CHILD_EXIT, ActorDeadError, ActorRef, Reply

__all__ = ["run_actor", "discard_pending"]

log = logging.getLogger(__name__)

ExitCallback = Callable[[ActorRef, BaseException | None], None]


async def run_actor(actor: Actor, ref: ActorRef, on_exit: ExitCallback) -> BaseException | None:
    """Run actor until it stops; return its crash error, or None for a clean stop."""
    task = asyncio.current_task()
    assert task is not None
    mailbox = ref._mailbox
    error: BaseException | None = None
    reply: Reply = None  # the in-flight envelope's reply slot
    try:
        await actor.on_start()
        # Checking the mailbox first means a coroutine is only made when idle.
        while (mailbox or await mailbox.wait_ready()) and not ref._halted:
            message, reply = mailbox.get_nowait()
            if reply is None:
                await actor.receive(message)  # a tell has no one to fail to: raising is a crash
            elif reply is CHILD_EXIT:
                await actor.on_child_exit(*message)
            else:
                try:
                    result = await actor.receive(message)
                except BaseException as exc:
                    if isinstance(exc, asyncio.CancelledError) and task.cancelling():
                        raise  # our task is being cancelled: stop, don't answer with it
                    # The asker owns this failure; the actor carries on.
                    if not reply.done():
                        reply.set_exception(exc)
                else:
                    if not reply.done():  # the asker may have timed out
                        reply.set_result(result)
    except asyncio.CancelledError as exc:
        if task.cancelling():
            # Cancelling the task is how shutdown stops a straggler: a clean
            # stop, so the cancel is consumed and hooks below may await freely.
            task.uncancel()
        else:
            error = exc  # raised by the actor's own code: a failure like any other
    except BaseException as exc:  # KeyboardInterrupt too: it must not kill the process
        error = exc

    try:
        # Fail waiting callers first so none of them waits on the hooks below.
        discard_pending(ref, reply)
        if error is not None:
            await _run_hook(ref, actor.on_failure, error)
        await _run_hook(ref, actor.on_stop)
    finally:
        on_exit(ref, error)
    return error


def discard_pending(ref: ActorRef, in_flight: Reply = None) -> None:
    """Close ref's mailbox and fail every unanswered ask, queued or in flight, with ActorDeadError."""
    ref._mailbox.close()
    _fail_ask(ref, in_flight)
    for _, reply in ref._mailbox.drain():
        _fail_ask(ref, reply)


def _fail_ask(ref: ActorRef, reply: Reply) -> None:
    # Only asks carry a Future; tells and supervision notices are just dropped.
    if isinstance(reply, asyncio.Future) and not reply.done():
        reply.set_exception(ActorDeadError(ref.id))


async def _run_hook(ref: ActorRef, hook: Callable[..., Awaitable[None]], *args: BaseException) -> None:
    """Await a teardown hook; its failure is logged, never allowed to skip the rest."""
    try:
        await hook(*args)
    except BaseException:  # also a shutdown cancel landing in a slow on_stop
        log.exception("actor %r: %s failed while stopping", ref.id, hook.__name__)
