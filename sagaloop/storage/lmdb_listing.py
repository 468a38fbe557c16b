"""The listing index of the LMDB backend: which instances ``list_instances`` pages through.

Databases (in the store's environment):

    listing  (DUPSORT)  facet key -> created_at ms (8 bytes, BE) workflow_id, one per instance
    facets              H(scope) H(facet key) -> [product, env, tag, status]  (every facet key)
    meta                b"listing" -> the index's version

A *scope* is ``product \\0 env \\0``. An instance has one entry under the facet
key ``scope x \\0 tag \\0 status``, and a run of another run's family one more
under ``scope f \\0 family`` (a run is the original of its own family, found by
its id, so ordinary runs have no family entry). A key's entries (its duplicates)
sort by their bytes, which is position order: newest first is
``last_dup``/``prev_dup`` from a seek, and a page reads ``limit`` records.

A listing by tag, by status or of everything merges the facet keys of the
scope that match, newest first: a product/env has a few tags and five
statuses, so a few dozen cursors at most, and still ``limit`` records read.
Why one facet per instance, not one per filter: every run puts its instance
record two or more times and changes status once. With four facets (all, tag,
status, tag+status) a start wrote four entries and a status change four more
writes: +7 us per W1 workflow, ~7% of W1 fast x1000. With one, a start costs
a read (is the id new?) and a put, a status change a delete and a put: the
writes the old ``by_time`` and ``running`` indexes took, which this replaces.

A facet key longer than LMDB's 511-byte limit is ``\\xff`` and its BLAKE2b
digest (a UTF-8 key never starts with ``\\xff``); entry values fit, since a
workflow id is at most 503 bytes. ``H`` is a 16-byte BLAKE2b digest. Every
record a page reads is checked against the facet it came from (``_matches``),
so a stale or colliding entry is left out, never listed.

Upkeep is in the writer's transaction, before the group's instance records
are written (``update``): an instance's previous place (its entry and facet)
is in ``_known`` if its committed status is ``running`` (those are put again),
else it is worked out from its committed record (read in one ``getmulti`` for
the group; none for a new run); if the place changed, the old entries go and
the new ones come (in one ``putmulti``). Measured on W1 x1000 (callgrind,
instructions per workflow): 677k before the index, 691k with it (+2%), the
Python of ``update`` and the extra read of a new run's id.

The instances in flight are those under the ``running`` facets (``running``):
the store keeps no other index of them. So every instance is indexed: a field
that is not a str has a facet of its own (``\\x00`` and its repr: no name has a
NUL), which ``running`` reads but no listing does (a page checks that the
record's fields are the facet's).
"""

from __future__ import annotations

import hashlib
import heapq
import struct
from collections.abc import Iterable, Iterator
from typing import Any, Callable, cast

import lmdb

from sagaloop.errors import InvalidArgumentError
from sagaloop.storage.base import InstancePage, Record, StoreStats
from sagaloop.storage.codec import decode, encode

__all__ = ["VERSION", "MAX_TIME", "Listed", "ListingIndex", "listed_fields", "created_ms", "upper_bound"]

VERSION = b"1"
MAX_KEY = 511  # LMDB's compile-time key limit
MAX_TIME = (1 << 64) - 1

_TIME = struct.Struct(">Q")
_pack_time = _TIME.pack
_unpack_time = _TIME.unpack_from

Listed = tuple[Any, Any, Any, Any, Any, Any]
"""What an instance's entries are made of, as the record has them: created_at, product, env, tag,
status, family. Taken at the put (the caller may change the record later)."""

# A facet: its key in ``listing``, its key and value in ``facets``.
_Facet = tuple[bytes, bytes, bytes]


def listed_fields(record: Record) -> Listed:
    """What the index keeps of an instance record: a few ``get``, on the path of every put."""
    get = record.get
    return get("created_at"), get("product"), get("env"), get("tag"), get("status"), get("family")


def created_ms(created_at: Any) -> int:
    """``created_at`` as the index keeps it: whole milliseconds in 0..2**64-1."""
    try:
        if isinstance(created_at, bool):
            raise TypeError
        ms = int(created_at)
        if 0 <= ms <= MAX_TIME:
            return ms
    except (TypeError, ValueError, OverflowError):
        pass
    raise InvalidArgumentError(
        f"created_at must be a non-negative number of milliseconds, not {created_at!r}")


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _key(raw: bytes) -> bytes:
    """A facet key as stored: itself, or ``\\xff`` and its digest if it is too long for LMDB."""
    return raw if len(raw) <= MAX_KEY else b"\xff" + hashlib.blake2b(raw, digest_size=32).digest()


def _h(raw: bytes) -> bytes:
    return hashlib.blake2b(raw, digest_size=16).digest()


def _scope(product: str, env: str) -> bytes:
    return _utf8(product) + b"\x00" + _utf8(env) + b"\x00"


_facets: dict[tuple[str, str, str, str], _Facet] = {}  # a few products x envs x tags x statuses


def _facet(product: str, env: str, tag: str, status: str) -> _Facet:
    """The facet of a product, env, tag and status (cached: it is on the path of every put)."""
    known = _facets.get((product, env, tag, status))
    if known is not None:
        return known
    scope = _scope(product, env)
    key = _key(scope + b"x\x00" + _utf8(tag) + b"\x00" + _utf8(status))
    made = (key, _h(scope) + _h(key), encode([product, env, tag, status]))
    if len(_facets) >= 4096:  # names made up by the thousand: do not keep them all
        _facets.clear()
    _facets[(product, env, tag, status)] = made
    return made


def _family_key(product: str, env: str, family: str) -> bytes:
    return _key(_scope(product, env) + b"f\x00" + _utf8(family))


# Where an instance is in the index: its entry value, its facet, its family's key (None: none).
_Place = tuple[bytes, _Facet, bytes | None]


def _name(value: Any) -> str:
    """A facet's name for a field that is not a str: no str name has a NUL."""
    return value if isinstance(value, str) else "\x00" + repr(value)


def _place(key: bytes, fields: Listed) -> _Place:
    """Where an instance with these fields goes in the index (on the path of every put that moves one)."""
    created, product, env, tag, status, family = fields
    try:
        facet = _facets[(product, env, tag, status)]  # the cache's keys are names (str) only
    except (KeyError, TypeError):
        facet = _facet(_name(product), _name(env), _name(tag), _name(status))
    value = _pack_time(created if type(created) is int else int(created)) + key
    if not family or not isinstance(family, str) or _utf8(family) == key:
        return value, facet, None
    return value, facet, _family_key(_name(product), _name(env), family)


def _matches(record: Record, created: int, wanted: Iterable[tuple[str, Any]]) -> bool:
    """Whether ``record`` is what an entry of ``created`` with those fields stands for."""
    get = record.get
    try:
        if int(cast(Any, get("created_at"))) != created:
            return False
    except (TypeError, ValueError, OverflowError):
        return False
    return all(get(name) == value for name, value in wanted)


# A candidate of a page: an entry's value, and what its record must have (the facet's tag and status).
_Candidate = tuple[bytes, tuple[tuple[str, Any], ...]]


class ListingIndex:
    """The listing index of one environment; used by ``LmdbStore`` on its loop or writer thread."""

    def __init__(self, env: lmdb.Environment, db_instances: lmdb._Database, stats: StoreStats,
                 read_instance: Callable[[bytes, bytes], Record | None]) -> None:
        self.db_entries = env.open_db(b"listing", dupsort=True)
        self.db_facets = env.open_db(b"facets")
        self.db_meta = env.open_db(b"meta")
        self._db_instances = db_instances
        self._stats = stats
        self._read_instance = read_instance  # raw, key -> record, or None (logged) if it does not decode
        # The places of the running instances (those are put again), and the facet keys in
        # ``facets``: as of the last transaction ``update`` wrote to (``forget`` if it failed).
        self._known: dict[bytes, _Place] = {}
        self._registered: set[bytes] = set()

    # -- upkeep (the writer's transaction) ------------------------------------------------------

    def is_current(self, txn: lmdb.Transaction[bytes]) -> bool:
        return txn.get(b"listing", db=self.db_meta) == VERSION

    def clear(self, txn: lmdb.Transaction[bytes]) -> None:
        """Empty the index (a build starts over); it is not current until ``finish_build``."""
        txn.delete(b"listing", db=self.db_meta)
        txn.drop(self.db_entries, delete=False)
        txn.drop(self.db_facets, delete=False)
        self.forget()

    def forget(self) -> None:
        """Drop what is known of the index (a transaction ``update`` wrote to did not commit)."""
        self._known.clear()
        self._registered.clear()

    def update(self, txn: lmdb.Transaction[bytes], listed: dict[bytes, Listed], *, fresh: bool = False) -> None:
        """Bring the entries of these instances up to date; before their records are written.

        ``fresh``: none of them has entries yet (a build). If the transaction then does not
        commit, call ``forget``.
        """
        known, db_entries, registered = self._known, self.db_entries, self._registered
        delete = txn.delete
        added: list[tuple[bytes, bytes]] = []
        add = added.append
        # The committed records of the ids not known running, read in one call (most are new: none).
        stored: dict[bytes, bytes] = {} if fresh else dict(
            txn.cursor(self._db_instances).getmulti([key for key in listed if key not in known]))
        for key, fields in listed.items():
            place = value, facet, family = _place(key, fields)
            old_place = known.get(key)
            if old_place is None:
                raw = stored.get(key)
                old = None if raw is None else self._fields_of(raw, key)
                if old is None:  # a new instance (the first put of every run)
                    add((facet[0], value))
                    if family is not None:
                        add((family, value))
                    if facet[0] not in registered:
                        self._register(txn, facet)
                    if fields[4] == "running":
                        known[key] = place
                    continue
                old_place = _place(key, old)
            if old_place != place:  # a status change (the last put of every run): the entry moves
                old_value, old_facet, old_family = old_place
                if value != old_value or facet[0] != old_facet[0]:
                    delete(old_facet[0], old_value, db=db_entries)
                    add((facet[0], value))
                if family != old_family or (family is not None and value != old_value):
                    if old_family is not None:
                        delete(old_family, old_value, db=db_entries)
                    if family is not None:
                        add((family, value))
                if facet[0] not in registered:
                    self._register(txn, facet)
            if fields[4] == "running":
                known[key] = place
            else:
                known.pop(key, None)
        if added:  # the new entries, in one call (after the deletes: none of them is deleted)
            txn.cursor(db_entries).putmulti(added)

    def _register(self, txn: lmdb.Transaction[bytes], facet: _Facet) -> None:
        """Record a facet key in ``facets`` (so listings and ``running`` find it); once per process."""
        txn.put(facet[1], facet[2], db=self.db_facets)
        self._registered.add(facet[0])

    def finish_build(self, txn: lmdb.Transaction[bytes]) -> None:
        txn.put(b"listing", VERSION, db=self.db_meta)

    def _fields_of(self, raw: bytes, key: bytes) -> Listed | None:
        """The indexed fields of a committed record; None if it does not decode or has no created_at."""
        record = self._read_instance(raw, key)
        if record is None:
            return None
        try:
            created_ms(record.get("created_at"))
        except InvalidArgumentError:
            return None
        return listed_fields(record)

    def running(self, txn: lmdb.Transaction[bytes]) -> list[Record]:
        """The records whose status is ``running``, by id: those under every ``running`` facet."""
        found: dict[bytes, Record] = {}
        read, db_instances = self._read_instance, self._db_instances
        for product, env, tag, status in self._names(txn, b""):
            if status != "running":
                continue
            for value, _ in self._walk(txn, _facet(product, env, tag, status)[0], None, -1, ()):
                key = value[8:]
                raw = txn.get(key, db=db_instances)
                record = None if raw is None or key in found else read(raw, key)
                if record is not None and record.get("status") == "running":
                    found[key] = record
        return [found[key] for key in sorted(found)]

    def _names(self, txn: lmdb.Transaction[bytes], prefix: bytes) -> list[tuple[str, str, str, str]]:
        """The (product, env, tag, status) of the facets whose registration key starts with ``prefix``."""
        out = []
        cursor = txn.cursor(self.db_facets)
        if cursor.set_range(prefix):
            for key, value in cursor:
                if not key.startswith(prefix):
                    break
                try:
                    product, env, tag, status = decode(value)
                except Exception:  # noqa: BLE001 - a damaged registration: that facet is not read
                    continue
                out.append((product, env, tag, status))
        return out

    # -- pages (a read transaction) ---------------------------------------------------------------

    def page(self, txn: lmdb.Transaction[bytes], *, product: str, env: str, tag: str | None, status: str | None,
             family: str | None, upper: bytes | None, lower: int, limit: int) -> InstancePage:
        """The records of the first ``limit`` instances below ``upper`` and created after ``lower``.

        ``upper``: an exclusive bound on entry values (created_at 8 bytes, then the id), or None.
        """
        scope = ((("product", product), ("env", env)))
        if family is not None:
            wanted = scope + tuple((n, v) for n, v in (("tag", tag), ("status", status)) if v is not None)
            return self._page(txn, self._family(txn, product, env, family, upper, lower), wanted,
                              limit, residual=len(wanted) > 2)
        if tag is not None and status is not None:
            facets = [(tag, status)]
        else:
            facets = [(t, s) for _, _, t, s in self._names(txn, _h(_scope(product, env)))
                      if (tag is None or t == tag) and (status is None or s == status)]
        if not facets:
            return InstancePage([], None)
        walks = [self._walk(txn, _facet(product, env, t, s)[0], upper, lower,
                            scope + (("tag", t), ("status", s))) for t, s in facets]
        merged = walks[0] if len(walks) == 1 else heapq.merge(*walks, reverse=True)
        return self._page(txn, merged, (), limit, residual=False)

    def _walk(self, txn: lmdb.Transaction[bytes], facet_key: bytes, upper: bytes | None, lower: int,
              wanted: tuple[tuple[str, Any], ...]) -> Iterator[_Candidate]:
        """A facet's entries below ``upper`` and created after ``lower``, newest first."""
        entries = txn.cursor(self.db_entries)
        if not entries.set_key(facet_key):
            return
        if upper is None:
            found = entries.last_dup()
        elif entries.set_range_dup(facet_key, upper):
            found = entries.prev_dup()  # the first entry below upper
        else:  # every entry is below upper
            found = entries.set_key(facet_key) and entries.last_dup()
        while found:
            value = entries.value()
            if _unpack_time(value)[0] <= lower:
                return
            yield value, wanted
            found = entries.prev_dup()

    def _family(self, txn: lmdb.Transaction[bytes], product: str, env: str, family: str, upper: bytes | None,
                lower: int) -> Iterator[_Candidate]:
        """A family newest first: its members' entries and its original (the record of its id).

        A family is small: its entries are read whole and sorted with the original.
        """
        members = [(value, (("family", family),))
                   for value, _ in self._walk(txn, _family_key(product, env, family), upper, lower, ())]
        key = _utf8(family)
        if 0 < len(key) <= MAX_KEY - 8 and b"\x00" not in key:
            raw = txn.get(key, db=self._db_instances)
            fields = None if raw is None else self._fields_of(raw, key)
            if fields is not None and (not fields[5] or fields[5] == family):
                created = int(fields[0])
                value = _pack_time(created) + key
                if created > lower and (upper is None or value < upper):
                    members.append((value, (("workflow_id", family),)))
                    members.sort(reverse=True)
        return iter(members)

    def _page(self, txn: lmdb.Transaction[bytes], candidates: Iterator[_Candidate],
              wanted: tuple[tuple[str, Any], ...], limit: int, residual: bool) -> InstancePage:
        """The records of the first ``limit`` candidates that hold up (read, checked), and the next position.

        ``residual``: ``wanted`` has a filter the candidates do not serve (a family's tag or status):
        read on until one more record matches, so ``next`` is None at the end.
        """
        out: list[Record] = []
        more = False
        stats, db_instances, read = self._stats, self._db_instances, self._read_instance
        for value, expected in candidates:
            if len(out) >= limit and not residual:
                more = True  # one more entry: a next page (its record is not read)
                break
            key = value[8:]
            raw = txn.get(key, db=db_instances)
            stats.listed += 1
            if raw is None:
                continue
            record = read(raw, key)
            if record is None or not _matches(record, _unpack_time(value)[0], expected + wanted):
                continue  # stale or colliding entry
            if len(out) >= limit:  # residual: one more matches
                more = True
                break
            out.append(record)
        if not more or not out:
            return InstancePage(out, None)
        last = out[-1]
        return InstancePage(out, (int(last["created_at"]), last["workflow_id"]))


def upper_bound(created_before: int | None, cursor: tuple[int, str] | None) -> tuple[bytes | None, bool]:
    """The exclusive upper bound on entry values of ``created_before`` and ``cursor``; and False if
    nothing can be below it."""
    upper: bytes | None = None
    if created_before is not None:
        if created_before <= 0:
            return None, False
        if created_before <= MAX_TIME:
            upper = _pack_time(created_before)
    if cursor is not None:
        at = _pack_time(min(max(cursor[0], 0), MAX_TIME)) + _utf8(cursor[1])
        upper = at if upper is None else min(upper, at)
    return upper, True
