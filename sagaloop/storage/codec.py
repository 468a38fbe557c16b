"""The one byte format of everything sagaloop stores: msgpack.

``encode`` turns a record (plain dicts, lists, str, bytes, int, float, bool,
None) into bytes; ``decode`` turns them back. Round-trip notes:

* tuples come back as lists (msgpack has one array type);
* ``bytes``/``bytearray``/``memoryview`` come back as ``bytes``, ``str`` as ``str``;
* a dict key that was a tuple comes back as a tuple (lists are unhashable),
  and non-str keys (int, None, ...) are kept.

A value msgpack cannot represent (a set, a datetime, an object, an int beyond
64 bits, a structure nested too deeply) raises ``NotSerializableError``, whose
message names the offending type and where it sits in the value.

Each thread encodes with its own ``msgpack.Packer`` (a Packer keeps an internal
buffer and is not thread-safe); reusing one is about twice as fast as
``msgpack.packb``, which builds a new Packer per call.
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack

from sagaloop.errors import NotSerializableError

__all__ = ["encode", "decode", "unpackb"]

_SCALARS = (type(None), bool, int, float, str, bytes, bytearray, memoryview)


class _PerThread(threading.local):
    def __init__(self) -> None:
        self.pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack


_local = _PerThread()


def encode(obj: Any) -> bytes:
    """msgpack bytes of ``obj``; raises ``NotSerializableError`` naming the offending type."""
    try:
        return _local.pack(obj)
    except (TypeError, OverflowError, ValueError) as exc:
        raise _not_serialisable(obj, exc) from None


def _not_serialisable(obj: Any, exc: BaseException) -> NotSerializableError:
    """Build the error for a value ``encode`` rejected (the slow path only)."""
    found = _find_offender(obj, "", 0)
    if found is None:
        # Nothing obviously wrong at a walkable depth: report what msgpack said.
        return NotSerializableError(
            f"value of type {type(obj).__name__} is not msgpack-serialisable ({exc})")
    where, value, why = found
    at = f" at {where}" if where else ""
    return NotSerializableError(
        f"value of type {type(value).__name__} is not msgpack-serialisable{at}{why}")


def _find_offender(obj: Any, where: str, depth: int) -> tuple[str, Any, str] | None:
    if depth > 500:
        return where, obj, " (nested too deeply)"
    t = type(obj)
    if t is int or (isinstance(obj, int) and t is not bool):
        if not -(2 ** 63) <= obj < 2 ** 64:
            return where, obj, " (integer out of the 64-bit range)"
        return None
    if isinstance(obj, _SCALARS):
        return None
    if isinstance(obj, dict):
        for key, value in obj.items():
            found = _find_offender(key, f"{where}[key {key!r}]", depth + 1)
            if found is None:
                found = _find_offender(value, f"{where}[{key!r}]", depth + 1)
            if found is not None:
                return found
        return None
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            found = _find_offender(value, f"{where}[{i}]", depth + 1)
            if found is not None:
                return found
        return None
    return where, obj, ""


def _pairs_hook(pairs: list[tuple[Any, Any]]) -> dict:
    return {(_hashable(k) if isinstance(k, list) else k): v for k, v in pairs}


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


# The bare decoder, for a hot path that handles ``decode``'s fallback itself (a TypeError: a map
# with array keys) and calls it with ``strict_map_key=False``.
unpackb = msgpack.unpackb


def decode(data: bytes, *, dict_type: type[dict] = dict) -> Any:
    """The value ``encode`` produced ``data`` from (tuples read back as lists).

    ``dict_type``: the class every map is read back as (a ``dict`` subclass).
    """
    if dict_type is dict:
        try:
            return msgpack.unpackb(data, raw=False, strict_map_key=False)
        except TypeError:
            pass  # a map with an array key (a tuple key when encoded): rebuild keys as tuples
    return msgpack.unpackb(data, raw=False, strict_map_key=False,
                           object_pairs_hook=lambda pairs: dict_type(_pairs_hook(pairs)))
