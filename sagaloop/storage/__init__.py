"""Durable storage: the ``Store`` interface, its LMDB backend and the record codec.

The runtime builds its store with ``open_store`` and never names a backend.
"""

from __future__ import annotations

import os

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
from sagaloop.storage.codec import decode, encode
from sagaloop.storage.lmdb_store import LmdbStore
from sagaloop.storage.paging import decode_cursor, encode_cursor, time_bound

__all__ = ["Record", "Entry", "StoredEntry", "EntryWriter", "StoreStats", "Position", "InstancePage", "Store",
           "LmdbStore", "open_store", "encode", "decode", "encode_cursor", "decode_cursor", "time_bound"]


def open_store(path: str | os.PathLike[str], durability: str = "durable") -> Store:
    """The store for data directory ``path`` (LMDB today), not yet opened.

    ``durability`` is ``"durable"`` (every group commit is fsynced) or ``"fast"``
    (no fsync: survives a process crash, not a machine crash).
    Call ``await store.open()`` to take the writer lock and open it.
    """
    return LmdbStore(path, durability=durability)
