"""What a caller hands ``list``, in the store's terms: the opaque cursor and the time bounds.

Backend-neutral: a cursor is a ``Position`` (``created_at`` ms, ``workflow_id``) in a
string, the same for every backend, so a cursor outlives a change of store as long as
the data does. The string is URL-safe base64 of a version byte, ``created_at`` (8
bytes, big-endian) and the id's UTF-8 bytes; callers treat it as opaque.
"""

from __future__ import annotations

import base64
import binascii
import struct
from datetime import datetime, timedelta, timezone
from typing import Any

from sagaloop.errors import InvalidArgumentError
from sagaloop.storage.base import Position

__all__ = ["encode_cursor", "decode_cursor", "time_bound"]

_VERSION = b"\x01"
_TIME = struct.Struct(">Q")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)


def encode_cursor(position: Position) -> str:
    """The cursor string of a listing position."""
    created_at, workflow_id = position
    raw = _VERSION + _TIME.pack(created_at) + workflow_id.encode("utf-8", "surrogatepass")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def decode_cursor(cursor: Any) -> Position:
    """The position in a cursor string ``encode_cursor`` made; ``InvalidArgumentError`` naming it else."""
    bad = InvalidArgumentError(f"cursor {_shown(cursor)} is not a cursor that list returned "
                               f"(pass a next_cursor back unchanged, or None for the first page)")
    if type(cursor) is not str or not cursor:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        if cursor != base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii"):
            raise bad  # not the canonical form of its bytes: not one of ours
        if len(raw) < 10 or raw[:1] != _VERSION:
            raise bad
        workflow_id = raw[9:].decode("utf-8")
    except (binascii.Error, ValueError, UnicodeError):
        raise bad from None
    if "\x00" in workflow_id:
        raise bad
    return _TIME.unpack_from(raw, 1)[0], workflow_id


def time_bound(value: Any, name: str, *, upper: bool) -> int | None:
    """``started_after`` / ``started_before`` as whole ms since the epoch, for a strict bound.

    An int is taken as it is; an aware ``datetime`` is rounded so the strict bound on
    whole-ms ``created_at`` means the same: down for a lower bound (after 1500.5 ms is
    after 1500), up for an upper one (before 1500.5 ms is before 1501).

    Raises:
        InvalidArgumentError: a naive datetime, or neither an int nor a datetime.
    """
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise InvalidArgumentError(
                f"{name} must be an aware datetime (with a tzinfo, e.g. timezone.utc), not the naive "
                f"{value!r}")
        micros = (value - _EPOCH) // _US
        return -(-micros // 1000) if upper else micros // 1000
    raise InvalidArgumentError(
        f"{name} must be milliseconds since the epoch (an int) or an aware datetime, not {_shown(value)}")
