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

Hooks for a backend's hot path, which saves ``encode``'s frame by calling the
packer itself (the same bytes, the same error in the end):

* ``thread_encoder()`` — the calling thread's raw encoder; it raises one of
  ``ENCODE_ERRORS`` (msgpack's own) for a value it cannot represent;
* ``not_serialisable(value, exc)`` — the ``NotSerializableError`` ``encode``
  raises for that value (raise it ``from None``);
* ``unpackb`` — msgpack's bare decoder, for a reader that handles ``decode``'s
  fallback itself.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type information (no stubs, no py.typed)

from sagaloop.errors import NotSerializableError

__all__ = ["encode", "decode", "unpackb", "thread_encoder", "not_serialisable", "ENCODE_ERRORS", "Encoder"]

Encoder = Callable[[Any], bytes]
"""A raw encoder: the msgpack bytes of a value, or one of ``ENCODE_ERRORS``."""

ENCODE_ERRORS: tuple[type[Exception], ...] = (TypeError, OverflowError, ValueError)
"""What a raw encoder (``thread_encoder()``) raises for a value msgpack cannot represent."""

_SCALARS = (type(None), bool, int, float, str, bytes, bytearray, memoryview)


class _PerThread(threading.local):
    def __init__(self) -> None:
        self.pack: Encoder = msgpack.Packer(use_bin_type=True, autoreset=True).pack


_local = _PerThread()


def thread_encoder() -> Encoder:
    """The calling thread's raw encoder: ``encode`` without its error handling, one frame less.

    It returns the same bytes as ``encode``; for a value msgpack cannot represent it
    raises msgpack's own error, one of ``ENCODE_ERRORS``, which the caller turns into
    ``not_serialisable(value, exc)``. Call it only on the thread that got it (its packer
    keeps a buffer and is not thread-safe).
    """
    return _local.pack


def encode(obj: Any) -> bytes:
    """msgpack bytes of ``obj``; raises ``NotSerializableError`` naming the offending type."""
    try:
        return _local.pack(obj)
    except ENCODE_ERRORS as exc:
        raise not_serialisable(obj, exc) from None


def not_serialisable(obj: Any, exc: BaseException) -> NotSerializableError:
    """The error ``encode`` raises for ``obj``, which a raw encoder rejected with ``exc``.

    It names the offending type and where it sits in ``obj`` (it walks ``obj``: the slow
    path only).
    """
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


def _pairs_hook(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    return {(_hashable(k) if isinstance(k, list) else k): v for k, v in pairs}


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


unpackb: Callable[..., Any] = msgpack.unpackb
"""msgpack's bare decoder, for a hot path that handles ``decode``'s fallback itself.

Call it as ``unpackb(data, strict_map_key=False)``; it raises ``TypeError`` for a map
with array keys (tuple keys when encoded), which ``decode`` reads back.
"""


def decode(data: bytes, *, dict_type: type[dict[Any, Any]] = dict) -> Any:
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
