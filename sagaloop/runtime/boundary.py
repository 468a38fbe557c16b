"""Values that cross the actor boundary are copies of what was recorded.

Everything that goes into an instance (input, context, signal payloads,
update and query arguments, checkpoint data) and everything that comes out
(results, status, query values, update replies, the step outputs a handler
and its compensations get) passes through here. The copy is the journal's
own msgpack round trip, so

* nobody shares a mutable object with a running instance: a caller's later
  write never reaches it, and the instance's later writes never show
  through a value it handed out;
* a live run and a recovered run see the same values (a tuple is a list
  either way).

Where the bytes were encoded for the journal anyway, the copy costs one
decode (``recorded``); otherwise ``snapshot`` encodes and decodes.
"""

from __future__ import annotations

from typing import Any, NoReturn

from ..errors import NotSerializableError, ReadOnlyError
from ..storage.codec import decode, encode
from .vocabulary import Record

# Values that cannot change: handed over as they are, at no cost.
IMMUTABLE_TYPES = frozenset({type(None), bool, int, float, str, bytes})
_IMMUTABLE = IMMUTABLE_TYPES


def snapshot(value: Any) -> Any:
    """A copy of ``value`` as the journal records it (``NotSerializableError`` if it cannot be)."""
    if type(value) in _IMMUTABLE:
        return value
    if is_flat_dict(value):
        return dict(value)
    return decode(encode(value))


def is_flat_dict(value: Any) -> bool:
    """A plain dict whose values cannot change: ``dict(value)`` is then already a full copy
    (what the codec's round trip would give, at a fraction of its cost)."""
    if type(value) is not dict:
        return False
    for item in value.values():
        if type(item) not in _IMMUTABLE:
            return False
    return True


def result_record(record: Record) -> Record:
    """An end record to build a ``WorkflowResult`` from: its ``output`` is a copy.

    The output is the one user value a result carries; the rest of it (error,
    completed_steps, rollback_result) is rebuilt by ``WorkflowResult.from_record``.
    Every caller of one run gets its own (one copy per caller, not per field).
    """
    output = record.get("output")
    if type(output) in _IMMUTABLE:
        return record
    return {**record, "output": snapshot(output)}


def recorded(data: bytes) -> Any:
    """A fresh copy of the record that was encoded as ``data``."""
    return decode(data)


class ReadOnlyDict(dict[str, Any]):
    """A dict a query sees: any write raises ``ReadOnlyError`` (queries change nothing)."""

    __slots__ = ()

    def _refuse(self, *_args: Any, **_kwargs: Any) -> NoReturn:
        raise ReadOnlyError("a query is read-only: it cannot change ctx.state (use an update)")

    __setitem__ = __delitem__ = _refuse
    clear = pop = popitem = setdefault = update = __ior__ = _refuse


def read_only(value: Any) -> Any:
    """A copy of ``value`` whose dicts refuse writes (lists stay lists; changing them changes nothing)."""
    if type(value) in _IMMUTABLE:
        return value
    return decode(encode(value), dict_type=ReadOnlyDict)


def copy_in(value: Any, what: str) -> Any:
    """The instance's own copy of a value a caller hands in (``snapshot``), naming ``what`` on error."""
    if type(value) in IMMUTABLE_TYPES:
        return value
    try:
        return snapshot(value)
    except NotSerializableError as exc:
        raise NotSerializableError(f"{what}: {exc}") from None
