"""The one interface the runtime uses to reach durable storage.

A backend (LMDB today, PostgreSQL later) implements ``Store``. The runtime
never names a backend module; it builds a store with ``open_store``.

Writes are *queued*: each ``put_*`` encodes its record at once (so a value
that cannot be serialised raises ``NotSerializableError`` right there and
queues nothing) and returns the bytes it queued (the runtime decodes them
for a copy of exactly what was recorded: ``codec.decode``), and the backend commits everything queued in one event-loop
turn in a single transaction (group commit). ``commit()`` returns the future
of the group that holds every write queued so far; it resolves once that
group is durable (``durable``) or written (``fast``). Groups commit in the
order they were queued, so a later future resolving implies every earlier
one did.

Reads see committed data only; the runtime keeps what it has queued but not
yet committed in memory.

Records are plain dicts of msgpack-able values:

* instance  — one per execution, keyed by ``workflow_id``; has at least
  ``workflow_id, product, env, tag, status, created_at``. The store keeps
  an index of instances by creation time (for ``list``) and of instances whose
  status is ``"running"`` (for recovery).
* journal entry — the memo table of a run, keyed by ``(workflow_id, position)``;
  position 0, 1, 2 ... in call order of ``ctx.step``, ``ctx.checkpoint`` ...
* event — the history, keyed by ``(workflow_id, seq)``; ``{type, timestamp, data}``.
* idempotency — ``scope`` (product, env, tag, key) to ``workflow_id``.
* signal — the durable inbox, keyed by ``(workflow_id, seq)``; ``{name, payload, at}``.
"""

from __future__ import annotations

import asyncio
import functools
from abc import ABC, abstractmethod
from typing import Any, Callable

Record = dict[str, Any]


class Store(ABC):
    """Durable storage for instances, journals, history and idempotency keys."""

    durability: str  # "durable" | "fast"

    @abstractmethod
    async def open(self) -> None:
        """Open (creating if missing) and take the writer lock."""

    @abstractmethod
    async def close(self) -> None:
        """Commit what is queued, then release everything. Idempotent."""

    # -- queued writes ------------------------------------------------------------

    @abstractmethod
    def put_instance(self, record: Record) -> bytes:
        """Queue the instance record (insert or replace); the encoded bytes."""

    @abstractmethod
    def put_entry(self, workflow_id: str, position: int, entry: Record | Callable[[], Record]) -> bytes | None:
        """Queue a journal entry (insert or replace); the encoded bytes (None for a deferred one).

        An entry is a record, or a tuple, which is stored as a list (the
        runtime's compact form of its commonest entry; it reads them back).

        ``entry`` may be a zero-argument callable returning the entry: it is
        called once, on the loop thread, when its group starts to commit —
        unless a later put of the same key replaced it first. The runtime
        uses it for "step running" entries, which a step that ends within
        the same turn replaces at no cost.
        """

    def journal_writer(self, workflow_id: str) -> Callable[[int, Record | Callable[[], Record]], bytes | None]:
        """``put_entry`` bound to one run: ``writer(position, entry)``.

        A run calls it once per step, so a store may check the id once here
        rather than on every call.
        """
        return functools.partial(self.put_entry, workflow_id)

    @abstractmethod
    def put_event(self, workflow_id: str, seq: int, event: Record) -> bytes:
        """Queue a history event; the encoded bytes."""

    @abstractmethod
    def put_signal(self, workflow_id: str, seq: int, signal: Record) -> bytes:
        """Queue a signal into the instance's durable inbox (append-only, in seq order); the encoded bytes."""

    @abstractmethod
    def put_idempotency(self, scope: str, workflow_id: str) -> None:
        """Queue an idempotency-key mapping."""

    @abstractmethod
    def commit(self) -> asyncio.Future[None]:
        """The future of the group holding every write queued so far."""

    # -- reads (committed data) --------------------------------------------------

    @abstractmethod
    async def get_instance(self, workflow_id: str) -> Record | None: ...

    @abstractmethod
    async def load_journal(self, workflow_id: str) -> list[tuple[int, Record]]:
        """Every journal entry of the run, ordered by position."""

    @abstractmethod
    async def load_events(self, workflow_id: str) -> list[Record]:
        """Every history event of the run, ordered by seq."""

    @abstractmethod
    async def load_signals(self, workflow_id: str) -> list[tuple[int, Record]]:
        """Every signal ever sent to the instance, ordered by seq (consumption is journaled apart)."""

    @abstractmethod
    async def get_idempotency(self, scope: str) -> str | None: ...

    @abstractmethod
    async def list_instances(self, *, product: str | None = None, env: str | None = None,
                             tag: str | None = None, status: str | None = None,
                             limit: int = 100) -> list[Record]:
        """Instance records, newest first, filtered by the given fields."""

    @abstractmethod
    async def running_instances(self) -> list[Record]:
        """Instance records whose status is ``"running"`` (in flight when the last process stopped)."""
