"""The LMDB backend of ``Store``: one environment per data directory.

Layout (named databases in one environment):

    instances    workflow_id                              -> instance record
    journal      workflow_id \\0 position (4 bytes, BE)   -> journal entry
    events       workflow_id \\0 seq (4 bytes, BE)        -> event
    idempotency  scope                                    -> workflow_id (UTF-8)
    inbox        workflow_id \\0 seq (4 bytes, BE)        -> signal (the durable signal inbox)
    listing, facets, meta                                 the listing index (``lmdb_listing``)

Keys are UTF-8; a workflow id may not be empty or contain NUL, so the NUL
after it ends the prefix (``"wf-1"`` never matches ``"wf-10"``'s keys).
Records are msgpack (``codec``). ``created_at`` is milliseconds since the
epoch (an int, or a float that is truncated for the index).

The listing index is kept in the transaction that writes the instance records
(see ``lmdb_listing``). A data directory written before it (its ``meta`` has no
version) gets it built at ``open`` from the instance records, in transactions of
20,000 records, the version written with the last (a build cut short starts over
at the next open); the old ``by_time`` index (created_at, id, scanned and filtered
by ``list``) and ``running`` index (the ids of the instances last put running) are
dropped then. The instances in flight (``running_instances``) are those under the
``running`` facets of the listing index: one index kept up per put, not two.

Group commit
------------
``put_*`` encodes at once and adds the record to the *pending group*, one dict
per database, so a second put of a key in the same group replaces the first.
``put_entry_deferred`` adds the function instead, and the group calls the ones
still there (encoding what they return) when it starts. The first put of a
group schedules a flush with ``loop.call_soon``: everything queued in the same
event-loop turn lands in one write transaction.

* ``durable``: the environment syncs on commit. By default the transaction
  runs inline on the loop thread, like ``fast``: every waiter of a group is
  blocked on that very fsync anyway, and a writer thread measured 4x slower
  under concurrent reads (the thread and the loop convoy on the GIL at every
  fsync). ``commit_in_thread=True`` runs transactions on one dedicated writer
  thread while the loop collects the next group (pipelining, at most one
  group in flight); when a group finishes its future resolves on the loop and
  the next pending group starts at once.
* ``fast``: no fsync. A commit reaches the OS page cache, which survives the
  process dying in any way; a machine crash may lose the last commits.
  Transactions run inline on the loop thread (measured faster than handing
  off to the writer thread; see ``commit_in_thread``).

A group future cannot be cancelled (``cancel()`` returns False) since many
callers share it: a task awaiting one and cancelled is woken when the group
completes. A failing transaction fails that group's future with a
``StorageError`` (cause attached); the store stays usable. A group whose
failure nobody awaits is not reported as "exception never retrieved".

Map growth: ``lmdb.MapFullError`` aborts the transaction; the map doubles on
the loop thread between groups (the writer thread is then idle and reads are
short synchronous transactions on the loop thread, so no transaction is
open) and the same group is retried.

Threading: every method must be called on the loop thread the store was
opened on; reads run synchronously in a short read transaction there.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, cast

import lmdb

from sagaloop.errors import CorruptRecordError, InvalidArgumentError, StorageError
from sagaloop.storage.base import (
    Entry,
    EntryWriter,
    InstancePage,
    Position,
    Record,
    Store,
    StoredEntry,
    StoreStats,
)
from sagaloop.storage.codec import ENCODE_ERRORS, decode, not_serialisable, thread_encoder
from sagaloop.storage.lmdb_listing import MAX_TIME, Listed, ListingIndex, created_ms, listed_fields, upper_bound
from sagaloop.storage.lock import DirectoryLock

__all__ = ["LmdbStore"]

log = logging.getLogger(__name__)

_MiB = 1 << 20
DEFAULT_MAP_SIZE = 64 * _MiB
MAX_MAP_SIZE = 1 << 40  # 1 TiB of address space
DURABILITIES = ("durable", "fast")

_SEQ = struct.Struct(">xI")  # b"\x00" + 4-byte big-endian position / seq
_pack_seq = _SEQ.pack
_U32 = struct.Struct(">I")

MAX_KEY = 511  # LMDB's compile-time key limit (mdb_env_get_maxkeysize)
MAX_ID = MAX_KEY - 8  # room for a listing entry's 8-byte prefix (and the journal's 5-byte suffix)


# A pending journal value: the encoded entry, or the function of a deferred one (put_entry_deferred).
_PendingEntry = bytes | Callable[[], Entry]

_REBUILD_BATCH = 20_000  # instance records per transaction when the listing index is built


class _GroupFuture(asyncio.Future[None]):
    """A group's future, shared by every caller of ``commit()``: not cancellable."""

    def cancel(self, msg: Any = None) -> bool:  # noqa: ARG002
        return False


class _Group:
    __slots__ = ("instances", "listed", "journal", "events", "idempotency", "inbox", "future", "jobs")

    def __init__(self, instances: dict[bytes, bytes], listed: dict[bytes, Listed],
                 journal: dict[bytes, bytes], events: dict[bytes, bytes],
                 idempotency: dict[bytes, bytes], inbox: dict[bytes, bytes],
                 future: asyncio.Future[None]) -> None:
        self.instances = instances
        self.listed = listed
        self.journal = journal
        self.events = events
        self.idempotency = idempotency
        self.inbox = inbox
        self.future = future
        self.jobs: dict[bytes, bytes | None] = {}  # job records (None: removed); set by _start_group

    def records(self) -> int:
        return (len(self.instances) + len(self.journal) + len(self.events) + len(self.idempotency)
                + len(self.inbox) + len(self.jobs))


def _bad_id(workflow_id: Any) -> InvalidArgumentError:
    if not isinstance(workflow_id, str):
        return InvalidArgumentError(
            f"workflow_id must be a str, not {type(workflow_id).__name__}")
    if not workflow_id:
        return InvalidArgumentError("workflow_id must not be empty")
    if "\x00" in workflow_id:
        return InvalidArgumentError(f"workflow_id {workflow_id!r} contains a NUL character")
    try:
        size = len(workflow_id.encode())
    except UnicodeEncodeError:
        size = 0
    if size > MAX_ID:
        return InvalidArgumentError(
            f"workflow_id is {size} bytes long in UTF-8; at most {MAX_ID} are allowed")
    return InvalidArgumentError(f"workflow_id {workflow_id!r} is not valid UTF-8")


def _id_key(workflow_id: Any) -> bytes:
    """The key bytes of a workflow id (validated)."""
    try:
        if type(workflow_id) is str and workflow_id and "\x00" not in workflow_id:
            key = workflow_id.encode()
            if len(key) <= MAX_ID:
                return key
    except UnicodeEncodeError:
        pass
    raise _bad_id(workflow_id)


def _bad_number(what: str, value: Any) -> InvalidArgumentError:
    return InvalidArgumentError(f"{what} must be an int in 0..4294967295, not {value!r}")


def _decoded(raw: bytes, kind: str, workflow_id: str, seq: int | None = None) -> Any:
    """``decode(raw)``, or ``CorruptRecordError`` naming the instance and the record's key."""
    try:
        return decode(raw)
    except Exception as exc:  # msgpack raises several types (ExtraData, FormatError, ValueError, ...)
        key = kind if seq is None else f"{kind} #{seq}"
        error = CorruptRecordError(f"workflow {workflow_id!r}: its {key} record does not decode "
                                   f"({type(exc).__name__}: {exc})", workflow_id=workflow_id, key=key)
        raise error from exc


def _instance_or_none(raw: bytes, key: bytes) -> Record | None:
    """An instance record for a scan (list, recovery): one that does not decode is logged and
    left out, so it cannot stop the others; ``get_instance`` of it raises ``CorruptRecordError``."""
    workflow_id = key.decode(errors="replace")
    try:
        record = _decoded(raw, "instance", workflow_id)
        if isinstance(record, dict):
            return record
        raise CorruptRecordError(f"workflow {workflow_id!r}: its instance record is not a map",
                                 workflow_id=workflow_id, key="instance")
    except CorruptRecordError as exc:
        log.error("%s; left out", exc, extra={"workflow_id": workflow_id})
        return None


def _abort(txn: lmdb.Transaction) -> None:
    try:
        txn.abort()
    except Exception:  # noqa: BLE001 - already aborted by a failed commit
        pass


class LmdbStore(Store):
    """``Store`` on an LMDB environment in directory ``path``.

    ``durability``: ``"durable"`` (fsync per group commit) or ``"fast"``
    (no fsync; survives a process crash, not a machine crash).
    ``map_size``: initial map size in bytes (grows by doubling when full; an
    existing larger environment keeps its size). ``writemap``: write through
    a writable shared memory map (default: on for fast, where it measured
    ~1.6x faster; off for durable, where it measured ~10% slower on small
    groups). ``commit_in_thread``: run transactions on a writer thread
    (default no: inline measured 1.3x-8x faster for fast, and for durable as
    fast alone and 4x faster beside a stream of reads).
    """

    def __init__(self, path: str | os.PathLike[str], *, durability: str = "durable",
                 map_size: int = DEFAULT_MAP_SIZE, max_map_size: int = MAX_MAP_SIZE,
                 writemap: bool | None = None, commit_in_thread: bool | None = None) -> None:
        if durability not in DURABILITIES:
            raise InvalidArgumentError(
                f"durability must be 'durable' or 'fast', not {durability!r}")
        if not isinstance(map_size, int) or map_size <= 0:
            raise InvalidArgumentError(f"map_size must be a positive int, not {map_size!r}")
        self.path = os.fspath(path)
        self.durability = durability
        self._initial_map_size = map_size
        self._max_map_size = max(max_map_size, map_size)
        self._writemap = (durability == "fast") if writemap is None else writemap
        self._threaded = False if commit_in_thread is None else commit_in_thread
        self._stats = StoreStats()
        self._pack = thread_encoder()  # again at open(), on the loop thread that calls the puts
        self._env: lmdb.Environment | None = None
        self._lock: DirectoryLock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = True  # until open()
        self._closing: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._resolved: asyncio.Future[None] | None = None
        self._pending: _GroupFuture | None = None
        self._inflight: _Group | None = None
        self._map_size = map_size
        self._new_dicts()

    def _new_dicts(self) -> None:
        self._deferred = False  # whether _p_journal may hold a deferred entry
        self._p_instances: dict[bytes, bytes] = {}
        self._p_listed: dict[bytes, Listed] = {}
        self._p_journal: dict[bytes, _PendingEntry] = {}
        self._p_events: dict[bytes, bytes] = {}
        self._p_idempotency: dict[bytes, bytes] = {}
        self._p_inbox: dict[bytes, bytes] = {}
        self._p_jobs: dict[bytes, bytes | None] = {}

    def __repr__(self) -> str:
        state = "open" if self._env is not None else "closed"
        return f"<LmdbStore {self.path!r} {self.durability} {state}>"

    @property
    def stats(self) -> StoreStats:
        return self._stats

    # -- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        if self._env is not None:
            return
        loop = asyncio.get_running_loop()
        lock = DirectoryLock(self.path)
        lock.acquire()  # creates the directory
        durable = self.durability == "durable"
        try:
            env = lmdb.open(self.path, map_size=self._initial_map_size, max_dbs=16,
                            subdir=True, sync=durable, metasync=durable,
                            writemap=self._writemap, max_spare_txns=4)
        except lmdb.Error as exc:
            lock.release()
            raise StorageError(f"cannot open the store at {self.path}: {exc}") from exc
        except BaseException:
            lock.release()
            raise
        try:
            self._db_instances = env.open_db(b"instances")
            self._db_journal = env.open_db(b"journal")
            self._db_events = env.open_db(b"events")
            self._db_idempotency = env.open_db(b"idempotency")
            self._db_inbox = env.open_db(b"inbox")
            self._db_jobs = env.open_db(b"jobs")
            self._listing = ListingIndex(env, self._db_instances, self._stats, _instance_or_none)
            self._map_size = env.info()["map_size"]
            self._env = env
            with env.begin() as txn:
                current = self._listing.is_current(txn)
            if not current:
                await self._build_listing()
        except BaseException as exc:
            self._env = None
            env.close()
            lock.release()
            if isinstance(exc, lmdb.Error):
                raise StorageError(f"cannot open the store at {self.path}: {exc}") from exc
            raise
        self._lock = lock
        self._loop = loop
        self._pack = thread_encoder()
        self._resolved = loop.create_future()
        self._resolved.set_result(None)
        if self._threaded:
            self._executor = ThreadPoolExecutor(max_workers=1,
                                                thread_name_prefix="sagaloop-lmdb-writer")
        self._pending = None
        self._inflight = None
        self._drain = None
        self._closing = None
        self._new_dicts()
        self._closed = False

    async def close(self) -> None:
        if self._env is None:
            return
        if self._closing is not None:  # another close() is under way: wait for it
            await asyncio.shield(self._closing)
            return
        loop = self._loop
        assert loop is not None
        self._closing = loop.create_future()
        self._closed = True  # no more puts; drain what is queued
        try:
            if self._pending is not None or self._inflight is not None:
                self._drain = loop.create_future()
                await self._drain
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
            env, self._env = self._env, None
            try:
                if self.durability == "fast":
                    env.sync(True)  # a clean shutdown is durable in fast mode too
            except lmdb.Error:
                pass
            finally:
                env.close()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None
            self._closing.set_result(None)

    # -- queued writes ------------------------------------------------------------------

    def put_instance(self, record: Record) -> bytes:
        if self._closed:
            raise StorageError("store is closed")
        try:
            value = self._pack(record)
        except ENCODE_ERRORS as exc:
            raise not_serialisable(record, exc) from None
        try:
            workflow_id = record["workflow_id"]
            created_at = record["created_at"]
        except (KeyError, TypeError):
            raise InvalidArgumentError(
                "an instance record needs 'workflow_id' and 'created_at'") from None
        key = _id_key(workflow_id)
        if type(created_at) is not int or not 0 <= created_at <= MAX_TIME:
            created_ms(created_at)  # a float to truncate, or a bad value to refuse
        self._p_instances[key] = value
        get = record.get  # what the listing keeps (lmdb_listing.listed_fields), inline: on every put
        self._p_listed[key] = (created_at, get("product"), get("env"), get("tag"), get("status"), get("family"))
        if self._pending is None:
            self._open_group()
        return value

    def put_entry(self, workflow_id: str, position: int, entry: Entry) -> bytes:
        return self.entry_writer(workflow_id).put(position, entry)

    def put_entry_deferred(self, workflow_id: str, position: int, make_entry: Callable[[], Entry]) -> None:
        self.entry_writer(workflow_id).put_deferred(position, make_entry)

    def entry_writer(self, workflow_id: str) -> EntryWriter:
        prefix = _id_key(workflow_id)  # checked once, here
        pack = self._pack  # the writer is called on this (the loop) thread only

        # The per-step path of every run: closures, measured cheaper than bound partials.
        def put(position: int, entry: Entry) -> bytes:
            if self._closed:
                raise StorageError("store is closed")
            try:
                value = pack(entry)
            except ENCODE_ERRORS as exc:
                raise not_serialisable(entry, exc) from None
            try:
                key = prefix + _pack_seq(position)
            except struct.error:
                raise _bad_number("position", position) from None
            self._p_journal[key] = value
            if self._pending is None:
                self._open_group()
            return value

        def put_deferred(position: int, make_entry: Callable[[], Entry]) -> None:
            if self._closed:
                raise StorageError("store is closed")
            try:
                key = prefix + _pack_seq(position)
            except struct.error:
                raise _bad_number("position", position) from None
            self._p_journal[key] = make_entry  # encoded when its group starts, unless replaced first
            self._deferred = True
            if self._pending is None:
                self._open_group()

        return EntryWriter(put, put_deferred)

    def put_event(self, workflow_id: str, seq: int, event: Record) -> bytes:
        return self._put_seq_record(self._p_events, workflow_id, seq, event)

    def put_signal(self, workflow_id: str, seq: int, signal: Record) -> bytes:
        return self._put_seq_record(self._p_inbox, workflow_id, seq, signal)

    def _put_seq_record(self, pending: dict[bytes, bytes], workflow_id: str, seq: int, record: Record) -> bytes:
        """Queue a record keyed (workflow_id, seq): history events and the signal inbox."""
        if self._closed:
            raise StorageError("store is closed")
        try:
            value = self._pack(record)
        except ENCODE_ERRORS as exc:
            raise not_serialisable(record, exc) from None
        try:
            key = _id_key(workflow_id) + _pack_seq(seq)
        except struct.error:
            raise _bad_number("seq", seq) from None
        pending[key] = value
        if self._pending is None:
            self._open_group()
        return value

    def put_idempotency(self, scope: str, workflow_id: str) -> None:
        if self._closed:
            raise StorageError("store is closed")
        if not isinstance(scope, str) or not scope:
            raise InvalidArgumentError(f"idempotency scope must be a non-empty str, not {scope!r}")
        try:
            key = scope.encode()
        except UnicodeEncodeError:
            raise InvalidArgumentError(f"idempotency scope {scope!r} is not valid UTF-8") from None
        if len(key) > MAX_KEY:
            raise InvalidArgumentError(
                f"idempotency scope is {len(key)} bytes long in UTF-8; at most {MAX_KEY} are allowed")
        self._p_idempotency[key] = _id_key(workflow_id)
        if self._pending is None:
            self._open_group()

    def commit(self) -> asyncio.Future[None]:
        if self._pending is not None:
            return self._pending
        if self._inflight is not None:
            return self._inflight.future
        if self._resolved is None:
            raise StorageError("store is not open")
        return self._resolved

    # -- group machinery (loop thread unless noted) --------------------------------

    def _open_group(self) -> None:
        self._pending = _GroupFuture(loop=self._loop)
        if self._inflight is None:
            self._loop.call_soon(self._flush)  # type: ignore[union-attr]

    def _flush(self) -> None:
        if self._pending is not None and self._inflight is None:
            self._start_group()

    def _start_group(self) -> None:
        future = self._pending
        assert future is not None
        if self._deferred:
            journal = self._materialise(self._p_journal)
        else:  # nothing but put_entry's bytes
            journal = cast("dict[bytes, bytes]", self._p_journal)
        group = _Group(self._p_instances, self._p_listed, journal,
                       self._p_events, self._p_idempotency, self._p_inbox, future)
        group.jobs = self._p_jobs
        self._new_dicts()
        self._pending = None
        self._inflight = group
        self._submit(group)

    def _materialise(self, journal: dict[bytes, _PendingEntry]) -> dict[bytes, bytes]:
        """The group's journal with its deferred entries made and encoded (on the loop thread:
        they read live state); one that raises or does not encode is logged and left out."""
        encoded: dict[bytes, bytes] = {}
        pack = self._pack
        for key, value in journal.items():
            if isinstance(value, bytes):
                encoded[key] = value
                continue
            try:
                encoded[key] = pack(value())
            except Exception:  # a deferred entry is a courtesy record; never fail the group for it
                log.exception("could not encode a deferred journal entry")
        return encoded

    def _submit(self, group: _Group) -> None:
        if self._executor is not None:
            self._executor.submit(self._write_in_thread, group)
        else:
            self._group_done(group, self._write(group))

    def _write_in_thread(self, group: _Group) -> None:  # writer thread
        outcome = self._write(group)
        try:
            self._loop.call_soon_threadsafe(self._group_done, group, outcome)  # type: ignore[union-attr]
        except RuntimeError:  # the loop is closed: nobody is left to tell
            pass

    def _write(self, group: _Group) -> BaseException | None:
        """Run one group's transaction: None, or the exception (``lmdb.MapFullError``: out of map)."""
        env = self._env
        if env is None:
            return StorageError("store is closed")
        try:
            txn = env.begin(write=True)
        except Exception as exc:  # noqa: BLE001 - reported on the group's future (MapFullError: grown)
            return exc
        try:
            if group.instances:  # the index first: it reads the records these replace
                self._listing.update(txn, group.listed)
                txn.cursor(self._db_instances).putmulti(group.instances.items())
            if group.journal:
                txn.cursor(self._db_journal).putmulti(group.journal.items())
            if group.events:
                txn.cursor(self._db_events).putmulti(group.events.items())
            if group.idempotency:
                txn.cursor(self._db_idempotency).putmulti(group.idempotency.items())
            if group.inbox:
                txn.cursor(self._db_inbox).putmulti(group.inbox.items())
            if group.jobs:
                self._write_jobs(txn, group.jobs)
            txn.commit()
            return None
        except BaseException as exc:  # noqa: BLE001 - MapFullError included: the map grows, the group is retried
            _abort(txn)
            if group.instances:
                self._listing.forget()
            return exc

    async def _build_listing(self) -> None:
        """Index every instance record (a data directory written before the listing index).

        In transactions of ``_REBUILD_BATCH`` records; the version is written with the last, so
        a build cut short starts again from scratch at the next open.
        """
        env, listing = self._env, self._listing
        assert env is not None
        began = time.monotonic()

        def clear(txn: lmdb.Transaction[bytes]) -> None:
            listing.clear(txn)
            for old_index in (b"by_time", b"running"):
                try:
                    txn.drop(env.open_db(old_index, txn=txn, create=False), delete=True)
                except lmdb.NotFoundError:
                    pass

        self._growing(clear)
        after: bytes | None = None
        count = 0
        while True:
            batch: list[tuple[bytes, bytes]] = []
            with self._reader() as txn:
                cursor = txn.cursor(self._db_instances)
                found = cursor.set_range(after + b"\x00") if after is not None else cursor.first()
                while found and len(batch) < _REBUILD_BATCH:
                    batch.append((cursor.key(), cursor.value()))
                    found = cursor.next()
            listed: dict[bytes, Listed] = {}
            for key, raw in batch:
                record = _instance_or_none(raw, key)
                if record is None:
                    continue
                try:
                    created_ms(record.get("created_at"))
                except InvalidArgumentError:
                    log.error("workflow %r: its instance record has no valid created_at; not listed",
                              key.decode(errors="replace"))
                    continue
                listed[key] = listed_fields(record)
            last = len(batch) < _REBUILD_BATCH

            def index(txn: lmdb.Transaction[bytes]) -> None:
                listing.update(txn, listed, fresh=True)
                if last:
                    listing.finish_build(txn)

            self._growing(index)
            count += len(listed)
            if last:
                break
            after = batch[-1][0]
            await asyncio.sleep(0)
        log.info("built the listing index of %s: %d instances in %.1f s", self.path, count,
                 time.monotonic() - began)

    def _growing(self, write: Callable[[lmdb.Transaction[bytes]], None]) -> None:
        """Run ``write`` in a write transaction, again with a bigger map as long as it runs out
        (an old data directory opens with a map just the size of its data)."""
        env = self._env
        assert env is not None
        while True:
            try:
                with env.begin(write=True) as txn:
                    write(txn)
                return
            except lmdb.MapFullError:
                self._listing.forget()
                error = self._grow()
                if error is not None:
                    raise error from None

    def _group_done(self, group: _Group, outcome: BaseException | None) -> None:
        if isinstance(outcome, lmdb.MapFullError):
            outcome = self._grow()
            if outcome is None:
                self._submit(group)  # retry the same group with the bigger map
                return
        self._inflight = None
        future = group.future
        if outcome is None:
            stats = self._stats
            stats.groups += 1
            stats.records += group.records()
            if not future.done():
                future.set_result(None)
        else:
            self._stats.failed_groups += 1
            if isinstance(outcome, StorageError):
                error = outcome
            else:
                error = StorageError(f"commit failed: {type(outcome).__name__}: {outcome}")
                error.__cause__ = outcome
            if not future.done():
                future.set_exception(error)
                future.exception()  # mark retrieved: no "never retrieved" noise
        if self._pending is not None:
            self._start_group()
        elif self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def _grow(self) -> StorageError | None:
        """Double the map (no transaction is open now); an error if it cannot."""
        new_size = self._map_size * 2
        if new_size > self._max_map_size:
            return StorageError(
                f"the store at {self.path} is full: the map cannot grow past "
                f"{self._max_map_size} bytes")
        try:
            self._env.set_mapsize(new_size)  # type: ignore[union-attr]
        except lmdb.Error as exc:
            error = StorageError(f"cannot grow the map of {self.path} to {new_size} bytes: {exc}")
            error.__cause__ = exc
            return error
        self._map_size = new_size
        self._stats.map_resizes += 1
        return None

    # -- reads --------------------------------------------------------------------------

    def _reader(self) -> lmdb.Transaction[bytes]:
        env = self._env
        if env is None:
            raise StorageError("store is closed")
        return env.begin()

    async def get_instance(self, workflow_id: str) -> Record | None:
        key = _id_key(workflow_id)
        with self._reader() as txn:
            raw = txn.get(key, db=self._db_instances)
        if raw is None:
            return None
        record = _decoded(raw, "instance", workflow_id)
        if not isinstance(record, dict):
            raise CorruptRecordError(f"workflow {workflow_id!r}: its instance record is not a map",
                                     workflow_id=workflow_id, key="instance")
        return record

    def _scan(self, db: lmdb._Database, workflow_id: str) -> list[tuple[int, bytes]]:
        prefix = _id_key(workflow_id) + b"\x00"
        start = len(prefix)
        unpack = _U32.unpack_from
        out = []
        with self._reader() as txn:
            cursor = txn.cursor(db)
            if cursor.set_range(prefix):
                for key, value in cursor:
                    if not key.startswith(prefix):
                        break
                    out.append((unpack(key, start)[0], value))
        return out

    async def load_journal(self, workflow_id: str) -> list[tuple[int, StoredEntry]]:
        return [(position, _decoded(raw, "journal", workflow_id, position))
                for position, raw in self._scan(self._db_journal, workflow_id)]

    async def load_signals(self, workflow_id: str) -> list[tuple[int, Record]]:
        return [(seq, _decoded(raw, "inbox", workflow_id, seq)) for seq, raw in self._scan(self._db_inbox, workflow_id)]

    async def load_events(self, workflow_id: str) -> list[Record]:
        return [_decoded(raw, "event", workflow_id, seq) for seq, raw in self._scan(self._db_events, workflow_id)]

    async def get_idempotency(self, scope: str) -> str | None:
        if not isinstance(scope, str) or not scope:
            raise InvalidArgumentError(f"idempotency scope must be a non-empty str, not {scope!r}")
        try:
            key = scope.encode()
        except UnicodeEncodeError:
            return None
        with self._reader() as txn:
            raw = txn.get(key, db=self._db_idempotency)
        return None if raw is None else raw.decode()

    async def list_instances(self, *, product: str, env: str, tag: str | None = None,
                             status: str | None = None, family: str | None = None,
                             created_after: int | None = None, created_before: int | None = None,
                             cursor: Position | None = None, limit: int = 100) -> InstancePage:
        for name, given in (("product", product), ("env", env)):
            if type(given) is not str or not given:
                raise InvalidArgumentError(f"{name} must be a non-empty str, not {given!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidArgumentError(f"limit must be an int >= 1, not {limit!r}")
        upper, some = upper_bound(created_before, cursor)
        if not some:
            return InstancePage([], None)
        with self._reader() as txn:
            return self._listing.page(txn, product=product, env=env, tag=tag, status=status, family=family,
                                      upper=upper, lower=-1 if created_after is None else created_after,
                                      limit=limit)

    async def running_instances(self) -> list[Record]:
        with self._reader() as txn:
            return self._listing.running(txn)

    # -- dispatched jobs ---------------------------------------------------------------------

    def put_job(self, job_id: str, record: Record | None) -> None:
        if self._closed:
            raise StorageError("store is closed")
        key = _id_key(job_id)
        if record is None:
            self._p_jobs[key] = None
        else:
            try:
                self._p_jobs[key] = self._pack(record)
            except ENCODE_ERRORS as exc:
                raise not_serialisable(record, exc) from None
        if self._pending is None:
            self._open_group()

    def _write_jobs(self, txn: lmdb.Transaction[bytes], jobs: dict[bytes, bytes | None]) -> None:
        db = self._db_jobs
        for key, value in jobs.items():
            if value is None:
                txn.delete(key, db=db)
            else:
                txn.put(key, value, db=db)

    async def load_jobs(self) -> list[Record]:
        out: list[Record] = []
        with self._reader() as txn:
            for key, raw in txn.cursor(self._db_jobs):
                record = _decoded(raw, "job", key.decode(errors="replace"))
                if isinstance(record, dict):
                    out.append(record)
        return out
