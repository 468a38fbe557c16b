"""An instance's signal inbox in memory: arrival order, its waits, exactly-once takes.

The durable copy is the store's inbox (append-only); which signals were
consumed is journaled by the run. This object only holds the signals not
yet consumed, in the order ``signal()`` returned (their seq), and the waits
pending on them (a handler may wait for several at once, e.g. with
``asyncio.gather``). No I/O.

The rule that keeps delivery exact: a wait looks at what is already here
before it waits (``wait`` hands over a pending signal at once), a delivered
signal goes to the oldest wait that wants it, and a signal that nobody
waits for is kept, never dropped.
"""

from __future__ import annotations

import asyncio
import bisect
from typing import AbstractSet, Any, Iterable

Item = tuple[int, dict[str, Any]]  # (seq, {"name", "payload", "at"})


class Inbox:
    __slots__ = ("_signals", "_waits", "next_seq")

    def __init__(self, signals: Iterable[Item] = (), consumed: AbstractSet[int] = frozenset(),
                 next_seq: int = 0) -> None:
        # Lists, not deques: most runs never get a signal, and an empty list is 10x smaller.
        self._signals: list[Item] = sorted((s for s in signals if s[0] not in consumed), key=_seq)
        self._waits: list[tuple[asyncio.Future[Item | None], tuple[str, ...]]] = []
        self.next_seq = next_seq

    def __len__(self) -> int:
        return len(self._signals)

    def take(self, names: tuple[str, ...]) -> Item | None:
        """Remove and return the oldest signal with one of ``names``, if any."""
        for i, item in enumerate(self._signals):
            if item[1]["name"] in names:
                del self._signals[i]
                return item
        return None

    def wait(self, names: tuple[str, ...]) -> asyncio.Future[Item | None]:
        """A future for the oldest signal with one of ``names``: resolved at once if one is here."""
        future: asyncio.Future[Item | None] = asyncio.get_running_loop().create_future()
        item = self.take(names)
        if item is not None:
            future.set_result(item)
        else:
            self._waits.append((future, names))
        return future

    def stop_waiting(self, future: asyncio.Future[Item | None]) -> None:
        """The wait on ``future`` is over (it got its signal, timed out or was cancelled)."""
        self._waits = [w for w in self._waits if w[0] is not future]

    def put_back(self, item: Item) -> None:
        """A taken signal that was not consumed after all (its wait was interrupted): keep it, in order."""
        bisect.insort(self._signals, item, key=_seq)

    def deliver(self, seq: int, signal: dict[str, Any]) -> None:
        """A signal arrived (already durable): hand it to the oldest wait for it, or keep it in order."""
        name = signal["name"]
        for i, (future, names) in enumerate(self._waits):
            if not future.done() and name in names:
                del self._waits[i]
                future.set_result((seq, signal))
                return
        bisect.insort(self._signals, (seq, signal), key=_seq)

    def pending(self) -> list[str]:
        return [s["name"] for _, s in self._signals]


def _seq(item: Item) -> int:
    return item[0]
