"""The one interface the runtime uses to reach durable storage.

A backend (LMDB today, PostgreSQL later) implements ``Store``. The runtime
never names a backend module; it builds a store with ``open_store``.

Writes are *queued*: each ``put_*`` encodes its record at once (so a value
that cannot be serialised raises ``NotSerializableError`` right there and
queues nothing) and returns the bytes it queued (the runtime decodes them
for a copy of exactly what was recorded: ``codec.decode``), and the backend
commits everything queued in one event-loop turn in a single transaction
(group commit). ``commit()`` returns the future of the group that holds every
write queued so far; it resolves once that group is durable (``durable``) or
written (``fast``). Groups commit in the order they were queued, so a later
future resolving implies every earlier one did. A put of a key already queued
in the pending group replaces it there: only the last one is written.

One write is not encoded at once: ``put_entry_deferred`` queues a journal
entry as a function that makes it, called when its group starts to commit,
unless a later put of the same key replaced it first.

Reads see committed data only; the runtime keeps what it has queued but not
yet committed in memory.

Values are what ``codec`` encodes (msgpack: dicts, lists, tuples, str, bytes,
numbers, bool, None); a tuple is stored as an array and read back as a list.
Records are plain dicts of such values:

* instance  — one per execution, keyed by ``workflow_id``; has at least
  ``workflow_id, product, env, tag, status, created_at``, and ``family`` on a run
  made from another (the ``workflow_id`` of the family's original). The store keeps
  the listing indexes (below) and an index of instances whose status is
  ``"running"`` (for recovery), each updated in the transaction that writes the record.
* journal entry — the memo table of a run, keyed by ``(workflow_id, position)``;
  position 0, 1, 2 ... in call order of ``ctx.step``, ``ctx.checkpoint`` ...
  An entry is a record or a tuple (``Entry``); the store does not look inside it.
* event — the history, keyed by ``(workflow_id, seq)``; ``{type, timestamp, data}``.
* idempotency — ``scope`` (product, env, tag, key) to ``workflow_id``.
* signal — the durable inbox, keyed by ``(workflow_id, seq)``; ``{name, payload, at}``.
* job — a dispatched job (one-off or cron), keyed by ``job_id``; ``{job_id, product, env,
  workflow, schedule, next_run_at, ...}``: the scheduler's own record, the store does not look inside.

Listing
-------
``list_instances`` pages through one product/env's instances newest first: in
descending *position* order, a position being ``(created_at, workflow_id)``
(``created_at`` as whole milliseconds, ties broken by ``workflow_id``
descending, comparing its UTF-8 bytes). A page is served from an index: it reads
about ``limit`` instance records whatever the store holds, for each filter it
takes (all of the product/env's instances; one tag; one status; one tag and one
status; one family). So a backend keeps an index that yields each of those in
position order, updated in the transaction that writes the instance record: a
status change moves the run from its old status's place to the new one's. (LMDB:
one ordered list per product, env, tag and status, merged for the wider filters,
and one per family; PostgreSQL: btree indexes on ``(product, env, created_at,
workflow_id)`` with ``tag``, ``status``, ``tag, status`` or ``family`` after ``env``,
``workflow_id`` in the ``C`` collation so it sorts as UTF-8 bytes.)

Paging is keyset paging: the page ends with ``next``, the position of its last
record, and the next page is the records strictly past it. So no run is listed twice
and none is skipped, whatever is written between two pages: a run started meanwhile
is newer than any position already handed out; a run whose status changed is where
it was (its position does not move) and is listed by a later page if it then
matches the filter, and not at all if it no longer does.

Every method is called on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, TypeAlias

__all__ = ["Record", "Entry", "StoredEntry", "EntryWriter", "StoreStats", "Position", "InstancePage", "Store"]

Record: TypeAlias = dict[str, Any]

Entry: TypeAlias = Record | tuple[Any, ...]
"""A journal entry as written: a record, or a tuple (stored as an array)."""

StoredEntry: TypeAlias = Record | list[Any]
"""A journal entry as read back: a record, or a list (what was written as a tuple)."""


Position: TypeAlias = tuple[int, str]
"""A place in the newest-first listing order: ``(created_at, workflow_id)``, ``created_at`` in whole
milliseconds. Descending positions are newest first."""


@dataclass(frozen=True, slots=True)
class InstancePage:
    """One page of ``list_instances``."""

    records: list[Record]
    """Instance records, newest first (descending position)."""
    next: Position | None
    """The position to pass as ``cursor`` for the next page (the last record's), or None: no more
    instances match."""


@dataclass(slots=True)  # not frozen: a frozen dataclass is built at twice the cost, once per run
class EntryWriter:
    """The journal writes of one run: ``put_entry`` and ``put_entry_deferred`` bound to its id.

    ``put(position, entry)`` and ``put_deferred(position, make_entry)`` are plain
    callables held in the writer (closures or partials, not methods): a run calls one
    of them once per step, one call each, no bound method built.
    """

    put: Callable[[int, Entry], bytes]
    put_deferred: Callable[[int, Callable[[], Entry]], None]


@dataclass(slots=True)
class StoreStats:
    """What a store has committed since it was made; counters only grow.

    ``Store.stats`` is one such object, updated in place, so a reader may keep it.
    """

    groups: int = 0
    """Group commits that succeeded."""
    records: int = 0
    """Records written by those groups: instances, journal entries, events, signals and
    idempotency keys (not index entries); a key put twice in one group counts once."""
    failed_groups: int = 0
    """Group commits that failed (their future got a ``StorageError``)."""
    map_resizes: int = 0
    """Times the storage had to grow to take a group (LMDB: its map doubled, and the group
    was retried); 0 for a backend that never needs to."""
    listed: int = 0
    """Instance records ``list_instances`` has read (also those it then left out): about ``limit``
    per page whatever the store holds, since listings are served from an index."""


class Store(ABC):
    """Durable storage for instances, journals, history and idempotency keys."""

    durability: str  # "durable" | "fast"

    @property
    @abstractmethod
    def stats(self) -> StoreStats:
        """What the store has committed so far: the same object all along, updated in place."""

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
    def put_entry(self, workflow_id: str, position: int, entry: Entry) -> bytes:
        """Queue a journal entry (insert or replace); the encoded bytes.

        ``entry`` is a record or a tuple (stored as an array, read back as a list).
        """

    @abstractmethod
    def put_entry_deferred(self, workflow_id: str, position: int, make_entry: Callable[[], Entry]) -> None:
        """Queue a journal entry that is made later: ``make_entry()`` returns it.

        Nothing is encoded now. ``make_entry`` is called once, on the loop thread, when
        the group holding it starts to commit, and what it returns is encoded and
        written in that group — unless a later put of the same key (``put_entry`` or
        ``put_entry_deferred``) replaced it first, in which case it is never called.
        If it raises, or what it returns cannot be encoded, that entry is left out
        (and logged) and the rest of the group commits.

        The runtime uses it for "step running" entries, which a step that ends
        within the same turn replaces at no cost.
        """

    def entry_writer(self, workflow_id: str) -> EntryWriter:
        """``put_entry`` and ``put_entry_deferred`` bound to one run.

        A run calls them once per step, so a store may check the id once here
        (and raise for a bad one) rather than on every call.
        """
        return EntryWriter(functools.partial(self.put_entry, workflow_id),
                           functools.partial(self.put_entry_deferred, workflow_id))

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
    async def load_journal(self, workflow_id: str) -> list[tuple[int, StoredEntry]]:
        """Every journal entry of the run, ordered by position (a tuple entry reads back as a list)."""

    @abstractmethod
    async def load_events(self, workflow_id: str) -> list[Record]:
        """Every history event of the run, ordered by seq."""

    @abstractmethod
    async def load_signals(self, workflow_id: str) -> list[tuple[int, Record]]:
        """Every signal ever sent to the instance, ordered by seq (consumption is journaled apart)."""

    @abstractmethod
    async def get_idempotency(self, scope: str) -> str | None: ...

    @abstractmethod
    async def list_instances(self, *, product: str, env: str, tag: str | None = None,
                             status: str | None = None, family: str | None = None,
                             created_after: int | None = None, created_before: int | None = None,
                             cursor: Position | None = None, limit: int = 100) -> InstancePage:
        """One page of the product/env's instance records, newest first (see "Listing" above).

        Args:
            tag, status: only the instances with that tag / status (both: both).
            family: only the family's instances: those whose ``family`` is it, and the
                instance whose ``workflow_id`` is it and that has no ``family`` (the original).
            created_after, created_before: only the instances with ``created_at`` strictly
                greater / strictly less than it (ms since the epoch; any int).
            cursor: the ``next`` of the previous page: only the instances strictly past it.
            limit: at most this many records (an int >= 1).

        Served from an index: reads about ``limit`` instance records (``stats.listed``), with
        one exception: with ``family`` and ``tag`` or ``status``, the family's records are
        read and filtered (a family is small).

        Raises:
            InvalidArgumentError: ``product`` or ``env`` is not a non-empty str, or ``limit``
                is not an int >= 1.
        """

    @abstractmethod
    async def running_instances(self) -> list[Record]:
        """Instance records whose status is ``"running"`` (in flight when the last process stopped)."""

    # -- dispatched jobs (the scheduler's records) -----------------------------------------

    @abstractmethod
    def put_job(self, job_id: str, record: Record | None) -> None:
        """Queue a job record (insert or replace), or its removal with ``None``; in the group commit
        like every put (raises ``NotSerializableError`` for a record that cannot be encoded)."""

    @abstractmethod
    async def load_jobs(self) -> list[Record]:
        """Every job record (committed), in ``job_id`` order."""
