"""Awaiting the rest of a coroutine that was started by hand.

``ctx.step`` runs a step's coroutine up to its first suspension itself
(``coro.send(None)``): a step that finishes without suspending needs no
"running" record and no extra frame. ``Trampoline`` then awaits the rest,
doing for the task what ``await`` would have done. No asyncio, no I/O.
"""

from __future__ import annotations

from typing import Any, Generator


class Trampoline:
    """Await the rest of a coroutine that was started by hand (``send``) and suspended.

    Passes what the coroutine yields to the task and what the task sends or
    throws (a cancellation) back into it — what ``await`` itself does.
    """

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Any, yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, yielded = self._coro, self._yielded
        while True:
            thrown: BaseException | None = None
            try:
                sent = yield yielded
            except BaseException as exc:  # thrown in by the task: a cancellation, most likely
                thrown = exc
            # Thrown in outside the except block: inside it, the exception would stay the
            # "current" one for the coroutine (sys.exception(), __context__), as await never leaves it.
            try:
                yielded = coro.send(sent) if thrown is None else coro.throw(thrown)
            except StopIteration as done:
                return done.value
