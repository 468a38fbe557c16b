"""Journal entries: the two shapes of a step entry, and reading a run's journal back.

``StepState`` is one step as the journal and the rollback planner see it.
A step entry is journaled in one of two shapes: usually the compact array
(the fields of ``STEP_KEYS``, in order), else a map with extra fields (a
retry wait, a compensation's result, the state). This module is the only
place that knows both; the rest of the runtime reads entries as dicts
(``entry_dict``, ``read_journal``). Other entries are maps whose ``k`` is
their kind (``vocabulary.EntryKind``).
"""

from __future__ import annotations

from typing import Any, Callable

from ...storage import Store
from ...storage.codec import unpackb as _unpackb
from ..boundary import recorded, snapshot
from ..decisions.rollback import StepFacts
from ..decisions.step_options import DEFAULT_STEP_OPTIONS, CompensationOptions, StepOptions

UPDATE_BASE = 1 << 31  # journal positions from here on hold updates, which arrive outside the call order
FINAL_ROLLBACK = -1  # the rollback that ends a run; manual ones are told apart by their journal position
RESTORED_CHECKPOINT = -1  # the position a restored checkpoint stands at: before every call of the run
RESTORED_POSITION = -2  # a restored step's position until the handler calls it: before the checkpoint


class StepState:
    """A step of this run, as the journal and the rollback planner see it."""

    __slots__ = ("tag", "position", "order", "status", "output", "error", "attempts", "started_at",
                 "ended_at", "rollback", "opts", "rollback_status", "rollback_error", "rollback_id", "seq",
                 "end_seq", "retry_at", "recorded", "restored")

    def __init__(self, tag: str, position: int, rollback: Callable[..., Any] | None,
                 opts: StepOptions = DEFAULT_STEP_OPTIONS) -> None:
        self.tag = tag
        self.position = position
        self.order = -1
        self.status = "running"
        self.output: Any = None
        self.error: dict[str, Any] | None = None
        self.attempts = 0
        self.started_at = 0
        self.ended_at: int | None = None
        self.rollback = rollback
        self.opts = opts  # from the code, not journaled: critical, rollback_options, ...
        self.rollback_status: str | None = None
        self.rollback_error: str | None = None
        self.rollback_id: int | None = None
        self.seq = -1       # history seq of its step_started event
        self.end_seq = -1   # history seq of its step_completed / step_failed / step_skipped event
        self.retry_at: float | None = None  # deadline of the durable wait before the next attempt
        # The journaled bytes of the completed entry, when the output is mutable: the handler got a
        # copy decoded from them, and ``output`` is not trusted after that (see recorded_output).
        self.recorded: bytes | None = None
        self.restored = False  # kept from the execution this one resumes (see Run.restore)

    @property
    def critical(self) -> bool:
        return self.opts.critical

    @property
    def compensation(self) -> CompensationOptions:
        """``rollback_options``: how this step's compensation is retried and bounded."""
        return self.opts.compensation

    def entry(self) -> tuple[Any, ...] | dict[str, Any]:
        """The journal entry; it also stands for the step's start and end history events.

        Usually the compact form (the fields of ``STEP_KEYS``, in order), else the dict
        that ``entry_dict`` also reads the compact form back as.
        """
        output = self.output if self.recorded is None else recorded_step_output(self.recorded)
        compact = ("step", self.tag, self.status, output, self.error, self.attempts, self.started_at,
                   self.ended_at, self.order, self.opts.critical, self.rollback is not None, self.seq, self.end_seq)
        if self.retry_at is None and self.rollback_status is None:
            return compact
        entry = dict(zip(STEP_KEYS, compact))
        if self.retry_at is not None:
            entry["retry_at"] = self.retry_at
        if self.rollback_status is not None:  # rare: only written once a compensation ran
            entry.update(rollback_status=self.rollback_status, rollback_error=self.rollback_error,
                         rollback_id=self.rollback_id)
        return entry

    def recorded_output(self) -> Any:
        """A fresh copy of the output as recorded (what ``ctx.steps`` and the compensation get)."""
        if self.recorded is not None:
            return recorded_step_output(self.recorded)
        return snapshot(self.output)

    def entry_dict(self) -> dict[str, Any]:
        """The journal entry as a dict, with every field."""
        return entry_dict(self.entry())

    def load(self, entry: dict[str, Any]) -> None:
        """Take the recorded facts; the rollback handler stays the one given by this call."""
        self.status = entry["status"]
        self.output = entry["output"]
        self.error = entry["error"]
        self.attempts = entry["attempts"]
        self.started_at = entry["started_at"]
        self.ended_at = entry["ended_at"]
        self.order = entry["order"]
        self.seq = entry.get("seq", -1)
        self.end_seq = entry.get("end_seq", -1)
        self.rollback_status = entry.get("rollback_status")
        self.rollback_error = entry.get("rollback_error")
        self.rollback_id = entry.get("rollback_id")
        self.retry_at = entry.get("retry_at")

    def facts(self) -> StepFacts:
        # A restored step came before anything this run did, its restored checkpoint included.
        position = RESTORED_POSITION if self.restored else self.position
        return StepFacts(tag=self.tag, position=position, order=self.order, critical=self.critical,
                         has_rollback=self.rollback is not None, completed=self.status == "completed",
                         rolled_back=self.rollback_status == "completed")


# A step entry with nothing but these fields is journaled as a msgpack array in this order:
# it encodes ~3x faster than the map with its 13 key strings, and every step writes one.
STEP_KEYS = ("k", "tag", "status", "output", "error", "attempts", "started_at", "ended_at", "order", "critical",
             "has_rollback", "seq", "end_seq")


_OUTPUT = STEP_KEYS.index("output")


def recorded_step_output(data: bytes) -> Any:
    """The output in the encoded step entry ``data`` (either form), freshly decoded.

    Every step with a mutable output calls this once: msgpack is called directly (the codec's
    ``decode`` is the fallback, for a map with array keys), one frame instead of three.
    """
    try:
        entry = _unpackb(data, strict_map_key=False)
    except TypeError:
        entry = recorded(data)
    return entry[_OUTPUT] if type(entry) is list else entry["output"]


def entry_dict(stored: Any) -> dict[str, Any]:
    """A journal entry as the runtime reads it: a dict, whichever form was journaled (or is about to be)."""
    if type(stored) in (list, tuple) and stored and stored[0] == "step":
        return dict(zip(STEP_KEYS, stored))
    entry: dict[str, Any] = stored
    return entry


async def read_journal(store: Store, workflow_id: str) -> list[tuple[int, dict[str, Any]]]:
    """The run's journal, ordered by position, every entry a dict (``entry_dict``)."""
    return [(position, entry_dict(stored)) for position, stored in await store.load_journal(workflow_id)]
