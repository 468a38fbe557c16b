"""The mailbox: a closable FIFO with exactly one consumer.

This module owns queueing and waking the consumer. It must never know what
an item means, run user code, or create tasks: an actor's single task pulls
from it, and that is the only concurrency there is.

Modelled on CPython's asyncio/queues.py, made lighter for a hot path where
mailboxes are created and closed thousands of times a second: no size bound
(so no putter waiters), one consumer (so one waiter future, not a deque of
them), and the consumer reads without a coroutine per item.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

__all__ = ["Mailbox", "MailboxClosed"]

T = TypeVar("T")


class MailboxClosed(Exception):
    """Raised by put() once the mailbox is closed."""


class Mailbox(Generic[T]):
    """Unbounded FIFO that one consumer drains; producers never block.

    The consumer loops as::

        while mailbox or await mailbox.wait_ready():
            item = mailbox.get_nowait()

    so a coroutine is only created when the mailbox is empty.
    """

    __slots__ = ("_items", "_waiter", "_closed")

    def __init__(self) -> None:
        # Made at the first put: most actors of a busy system never get a message, and an
        # empty deque is ~600 bytes, a tenth of a workflow run's memory.
        self._items: deque[T] | None = None
        # The one consumer parked in wait_ready(), if any.
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def __len__(self) -> int:
        return 0 if self._items is None else len(self._items)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Mailbox {state} items={len(self)}>"

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: T) -> None:
        """Append an item; raises MailboxClosed after close()."""
        if self._closed:
            raise MailboxClosed
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        self._wake()

    def get_nowait(self) -> T:
        """Remove and return the oldest item; raises IndexError when empty."""
        if self._items is None:
            raise IndexError("pop from an empty mailbox")
        return self._items.popleft()

    async def wait_ready(self) -> bool:
        """Wait until an item is queued (True) or the mailbox is closed and empty (False).

        Items queued before close() are still delivered: closing stops
        producers, not the consumer.
        """
        while not self._items:  # None or empty
            if self._closed:
                return False
            if self._waiter is not None:
                raise RuntimeError("a Mailbox has exactly one consumer")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return True

    def close(self) -> None:
        """Refuse further puts and wake the consumer so it can see the end."""
        self._closed = True
        self._wake()

    def drain(self) -> list[T]:
        """Remove and return every queued item, oldest first."""
        items = list(self._items or ())
        self._items = None
        return items

    def _wake(self) -> None:
        waiter = self._waiter
        # The waiter may already be done: woken by an earlier put in the same
        # loop iteration, or cancelled along with the consumer.
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
