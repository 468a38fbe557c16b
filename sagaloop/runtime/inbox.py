"""An instance's signal inbox in memory: arrival order, one waiter, exactly-once takes.

The durable copy is the store's inbox (append-only); which signals were
consumed is journaled by the run. This object only holds the signals not
yet consumed, in the order they arrived, and the one wait that may be
pending on them. No I/O.
"""

from __future__ import annotations

import asyncio
from typing import Iterable


class Inbox:
    __slots__ = ("_signals", "_waiter", "_wanted", "next_seq")

    def __init__(self, signals: Iterable[tuple[int, dict]] = (), consumed: set[int] = frozenset(),
                 next_seq: int = 0) -> None:
        # A list, not a deque: most runs never get a signal, and an empty list is 10x smaller.
        self._signals: list[tuple[int, dict]] = [s for s in signals if s[0] not in consumed]
        self._waiter: asyncio.Future | None = None
        self._wanted: tuple[str, ...] = ()
        self.next_seq = next_seq

    def __len__(self) -> int:
        return len(self._signals)

    def take(self, names: tuple[str, ...]) -> tuple[int, dict] | None:
        """Remove and return the oldest signal with one of ``names``, if any."""
        for item in self._signals:
            if item[1]["name"] in names:
                self._signals.remove(item)
                return item
        return None

    def wait(self, names: tuple[str, ...]) -> asyncio.Future:
        """A future for the next signal with one of ``names`` (call after ``take`` found none)."""
        self._waiter = asyncio.get_running_loop().create_future()
        self._wanted = names
        return self._waiter

    def stop_waiting(self) -> None:
        self._waiter = None
        self._wanted = ()

    def deliver(self, seq: int, signal: dict) -> None:
        """A signal arrived (already durable): hand it to the waiter, or keep it in order."""
        waiter = self._waiter
        if waiter is not None and not waiter.done() and signal["name"] in self._wanted:
            self.stop_waiting()
            waiter.set_result((seq, signal))
        else:
            self._signals.append((seq, signal))

    def pending(self) -> list[str]:
        return [s["name"] for _, s in self._signals]
