"""The records a run keeps and the small types its parts share.

``StepState`` is one step as the journal and the rollback planner see it;
``Outcome`` is how the handler part of a run ended; ``ReplayExhausted`` is the
control flow of a replay that must not run anything new; ``RunHost`` is what
a run needs from its engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from ...storage import Store
from ...storage.codec import unpackb as _unpackb
from ..boundary import recorded, snapshot
from ..decisions.rollback import StepFacts
from ..decisions.step_options import DEFAULT_STEP_OPTIONS, CompensationOptions, StepOptions

if TYPE_CHECKING:
    from .core import Run

PARENT_CLOSE_POLICIES = ("terminate", "abandon", "request_cancel")
UPDATE_BASE = 1 << 31  # journal positions from here on hold updates, which arrive outside the call order
FINAL_ROLLBACK = -1  # the rollback that ends a run; manual ones are told apart by their journal position


class ReplayExhausted(BaseException):
    """Internal: a replay-only run reached the end of its journal.

    A ``BaseException`` so a handler's ``except Exception`` cannot swallow it;
    if you see it, a bare ``except:`` in a workflow handler caught it — re-raise it.
    """


class RunSuspended(BaseException):
    """Internal: a commit of this run failed (``StorageError``); the run stops where it is.

    Its last commit is its state: the engine loads it from the store again
    after a pause and resumes it (see ``Runtime._forget``). A ``BaseException``
    so a handler's ``except Exception`` cannot swallow it.
    """

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class RunHost(Protocol):
    """What a run needs from its engine: child workflows and the outside-world components."""

    actions: Any
    fallbacks: Any
    notifications: Any

    async def run_child(self, parent: "Run", child_id: str, tag: str, input: Any, timeout_ms: float | None,
                        policy: str) -> dict: ...

    async def compensate_child(self, product_env: tuple[str, str], child_ids: list[str]) -> None: ...

    async def close_children(self, parent: "Run", children: dict[str, str]) -> None: ...


class StepState:
    """A step of this run, as the journal and the rollback planner see it."""

    __slots__ = ("tag", "position", "order", "status", "output", "error", "attempts", "started_at",
                 "ended_at", "rollback", "opts", "rollback_status", "rollback_error", "rollback_id", "seq",
                 "end_seq", "retry_at", "recorded")

    def __init__(self, tag: str, position: int, rollback: Callable[..., Any] | None,
                 opts: StepOptions = DEFAULT_STEP_OPTIONS) -> None:
        self.tag = tag
        self.position = position
        self.order = -1
        self.status = "running"
        self.output: Any = None
        self.error: dict | None = None
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

    @property
    def critical(self) -> bool:
        return self.opts.critical

    @property
    def compensation(self) -> CompensationOptions:
        """``rollback_options``: how this step's compensation is retried and bounded."""
        return self.opts.compensation

    def entry(self) -> tuple | dict:
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

    def entry_dict(self) -> dict:
        """The journal entry as a dict, with every field."""
        return entry_dict(self.entry())

    def load(self, entry: dict) -> None:
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
        return StepFacts(tag=self.tag, position=self.position, order=self.order, critical=self.critical,
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


def entry_dict(stored: Any) -> dict:
    """A journal entry as the runtime reads it: a dict, whichever form was journaled (or is about to be)."""
    if type(stored) in (list, tuple) and stored and stored[0] == "step":
        return dict(zip(STEP_KEYS, stored))
    return stored


async def read_journal(store: Store, workflow_id: str) -> list[tuple[int, dict]]:
    """The run's journal, ordered by position, every entry a dict (``entry_dict``)."""
    return [(position, entry_dict(stored)) for position, stored in await store.load_journal(workflow_id)]


def error_dict(exc: BaseException, *, step: str | None = None, default_code: str = "step_failed") -> dict:
    code = getattr(exc, "code", None)
    if not isinstance(code, str):
        code = default_code
    message = str(exc) or type(exc).__name__
    return {"message": message, "step": step, "code": code, "type": type(exc).__name__}


class Resume:
    """Await the rest of a coroutine that was started by hand (``send``) and suspended.

    Passes what the coroutine yields to the task and what the task sends or
    throws (a cancellation) back into it — what ``await`` itself does.
    """

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Any, yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Any:
        coro, yielded = self._coro, self._yielded
        while True:
            thrown: BaseException | None = None
            try:
                sent = yield yielded
            except BaseException as exc:  # thrown in by the task: a cancellation, most likely
                thrown = exc
            # Thrown in outside the except block: inside it, the exception would stay the
            # "current" one for the coroutine (sys.exception(), __context__), as await never leaves it.
            try:
                yielded = coro.send(sent) if thrown is None else coro.throw(thrown)
            except StopIteration as done:
                return done.value


class Outcome:
    """How the handler part of a run ended; ``Run.finish`` turns it into an end."""

    __slots__ = ("kind", "output", "error", "failed_step", "trigger", "reason")

    def __init__(self, kind: str, *, output: Any = None, error: dict | None = None, failed_step: str | None = None,
                 trigger: str = "step_failed", reason: str | None = None) -> None:
        self.kind = kind  # completed | failed | cancelled | timeout | nondeterminism
        self.output = output
        self.error = error
        self.failed_step = failed_step
        self.trigger = trigger
        self.reason = reason


def merge_rollbacks(results: Sequence[dict]) -> dict | None:
    if not results:
        return None
    if len(results) == 1:
        return results[0]
    rolled: list[str] = []
    for r in results:
        rolled.extend(t for t in r["rolled_back_steps"] if t not in rolled)
    failed = [f for r in results for f in r["failed_steps"]]
    last = results[-1]
    return {"success": not failed, "rolled_back_steps": rolled, "failed_steps": failed,
            "reason": last["reason"], "trigger": last["trigger"]}


def signal_value(name: str, payload: Any) -> dict:
    value = dict(payload) if isinstance(payload, dict) else {}
    value["_signal"] = name
    return value
