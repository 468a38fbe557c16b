"""The core of a run: every field it has, declared once, and its replay.

A ``Run`` is owned by exactly one workflow actor and only ever touched from
its tasks. It is the memo table of the run (DBOS's model): each journaled
call (``ctx.step``, ``ctx.checkpoint``, ``ctx.sleep`` ...) takes the next
*position*; when the handler runs again after a crash, a position that is
already in the journal returns what was recorded instead of running again,
and a recorded entry of another kind or tag is a loud
``NonDeterminismError``. Updates applied by an earlier process are applied
again at the point of the replay where they first came in.

Writes go to the store's current group; a call returns only once its group
is committed (``_durable``), so what a handler has seen is never lost.

``Run`` is this core and the parts built on it, each on the one before it
(see ``run/__init__.py``): updates, steps, waits, children, compensation,
the end. Only this class declares fields (``__slots__``), each annotated
here, so a type checker follows every part.
"""

from __future__ import annotations

import asyncio
import inspect
import operator
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ...errors import NonDeterminismError, StorageError, WorkflowEndedError
from ...storage import EntryWriter, Store
from ..boundary import snapshot
from ..clock import Clock
from ..decisions.definitions import Definition
from ..vocabulary import EntryKind, ParentClosePolicy, Record, Trigger
from .control import ReplayExhausted, RunHost, RunSuspended
from .entries import RESTORED_CHECKPOINT, RESTORED_POSITION, UPDATE_BASE, StepState
from .inbox import Inbox

if TYPE_CHECKING:
    from ..handler.context import WorkflowContext

_EMPTY: Mapping[Any, Any] = MappingProxyType({})
_ORDER_STATUS_TAG = operator.attrgetter("order", "status", "tag")
Journal = Sequence[tuple[int, dict[str, Any]]]  # (position, entry), in position order
Signals = Sequence[tuple[int, dict[str, Any]]]  # (seq, signal), as the store's inbox holds them


class RunCore:
    """The fields of a run, its plumbing, and the replay every journaled call starts with."""

    # Slots make a run smaller and its fields cheaper to read; slots are laid out in this
    # order, so the ones every step touches come first and share cache lines.
    __slots__ = ("steps", "_updates_to_replay", "_replay", "replay_only", "closed", "_position", "store", "entries",
                 "_now", "current_step", "_event_seq", "_step_running", "faults", "_order", "state", "_between_steps",
                 "_update_seq", "checkpoint_data", "checkpoint_name", "checkpoint_position", "children", "clock",
                 "ctx", "definition", "failed_step", "host", "_inbox", "interrupt", "interrupted_step",
                 "manual_rollbacks", "on_block", "on_wait_outside", "record", "update_replies", "waiting_for",
                 "workflow_id", "input", "context", "_replay_done", "cancel_requested", "updates_waiting",
                 "_updates_applied")

    # -- identity and the outside world
    workflow_id: str
    definition: Definition
    record: dict[str, Any]             # the instance record as last journaled
    store: Store
    entries: EntryWriter               # entries.put / .put_deferred(position, entry): this run's journal entries
    clock: Clock
    _now: Callable[[], int]
    host: RunHost | None               # the engine: child workflows, actions, ...
    ctx: WorkflowContext | None        # the handler's context (set by its actor), passed to update handlers
    faults: Mapping[str, list[Any]]    # injected step failures (the engine's; testing.fail_step)
    # -- the handler's view
    input: Any
    context: Any
    state: dict[str, Any]
    steps: dict[str, StepState]
    current_step: str | None
    checkpoint_name: str | None
    checkpoint_data: Any
    checkpoint_position: int | None
    cancel_requested: bool             # request_cancel, durable
    # -- positions and history
    _position: int                     # the next journal position of a call
    _event_seq: int                    # the next history seq
    _order: int                        # the next completion order of a step
    _update_seq: int                   # the next update's position past UPDATE_BASE
    # -- the replay of a resumed run
    _replay: Mapping[int, dict[str, Any]]                  # recorded entries not yet walked, by position
    _updates_to_replay: Mapping[int, list[dict[str, Any]]]  # recorded updates, by the position they came after
    _replay_done: asyncio.Future[None] | None              # made when a message waits for the replay
    replay_only: bool                  # compensating an ended run: never run anything new
    # -- failure and ending
    closed: bool                       # the handler has ended: no more journaled calls through its ctx
    failed_step: StepState | None
    manual_rollbacks: tuple[dict[str, Any], ...]  # results of ctx.trigger_rollback, in order
    interrupt: tuple[Trigger, str] | None  # (trigger, reason) of a cancel or timeout
    interrupted_step: StepState | None
    children: Mapping[str, ParentClosePolicy]  # live children started by this run -> close policy
    # -- messages from outside
    _inbox: Inbox | None
    update_replies: Mapping[str, Any]  # update_id -> reply
    _step_running: bool
    _between_steps: asyncio.Future[None] | None   # an update waiting for the step to end
    updates_waiting: int                          # updates queued for the step's end (let_updates_in)
    _updates_applied: asyncio.Future[None] | None
    # -- told to the actor
    on_block: Callable[[], None] | None           # the handler blocked on a signal, a timer or a child
    on_wait_outside: Callable[[], None] | None    # the run awaits a step's I/O or a child
    waiting_for: str | None                       # what it is blocked on, for status

    def __init__(self, *, store: Store, clock: Clock, definition: Definition, record: dict[str, Any],
                 journal: Journal = (), event_seq: int = 0, signals: Signals = ()) -> None:
        self.store = store
        self.entries = store.entry_writer(record["workflow_id"])
        self.clock = clock
        self._now = clock.now_ms
        self.definition = definition
        self.record = record
        self.workflow_id = record["workflow_id"]
        self.host = None
        self.ctx = None
        self.faults = _EMPTY
        # The handler's own copies: what it does to them never reaches the record (or a caller).
        self.input = snapshot(record.get("input"))
        self.context = snapshot(record.get("context"))
        self.state = {}
        self.steps = {}
        self.current_step = None
        self.checkpoint_name = None
        self.checkpoint_data = None
        self.checkpoint_position = None
        self.cancel_requested = bool(record.get("cancel_requested"))
        self._position = 0
        self._event_seq = event_seq
        self._order = 0
        self._update_seq = 0
        # A new run shares these empty read-only tables; a resumed one gets its own (_load_journal).
        self._replay = _EMPTY
        self._updates_to_replay = _EMPTY
        self._replay_done = None
        self.replay_only = False
        self.closed = False
        self.failed_step = None
        self.manual_rollbacks = ()
        self.interrupt = None
        self.interrupted_step = None
        self.children = _EMPTY
        self.update_replies = _EMPTY
        self._step_running = False
        self._between_steps = None
        self.updates_waiting = 0
        self._updates_applied = None
        self.on_block = None
        self.on_wait_outside = None
        self.waiting_for = None
        if record.get("restored"):
            self._restore(record["restored"])
        consumed: set[int] = set()
        if journal:  # a resumed run; a new one skips all of this
            self._load_journal(journal, consumed)
        # Made on first use (most runs never see a signal), unless signals are waiting already.
        self._inbox = Inbox(signals, consumed, next_seq=1 + max(seq for seq, _ in signals)) if signals else None

    def _restore(self, restored: Record) -> None:
        """Start from what an execution this one resumes left: its kept steps, state and checkpoint.

        The kept steps are in ``steps`` from the start (so ``ctx.completed_steps`` names them)
        with their recorded outputs; the handler's call of one returns that output without
        running it (``StepCalls.claim_restored``), and journals it as this run's own.
        """
        self.state = snapshot(restored.get("state") or {})
        checkpoint = restored.get("checkpoint")
        if checkpoint is not None:
            self.checkpoint_name, self.checkpoint_data = checkpoint["name"], snapshot(checkpoint["data"])
            self.checkpoint_position = RESTORED_CHECKPOINT
        kept = sorted(restored["steps"].items(), key=lambda item: (item[1].get("order", -1), item[0]))
        for tag, entry in kept:
            st = StepState(tag, RESTORED_POSITION, None)
            st.load(entry)
            st.restored = True
            st.seq = st.end_seq = -1  # this run's history seqs come when the handler calls it
            st.order = self._order if st.status == "completed" else -1
            self._order += st.status == "completed"
            self.steps[tag] = st

    def _load_journal(self, journal: Journal, consumed: set[int]) -> None:
        replay: dict[int, dict[str, Any]] = {}
        updates: dict[int, list[dict[str, Any]]] = {}
        for position, entry in journal:
            kind = entry.get("k")
            if position >= UPDATE_BASE:
                updates.setdefault(entry["after"], []).append(entry)
                if entry.get("update_id") is not None:
                    self.remember_reply(entry["update_id"], entry["reply"])
                self._update_seq = max(self._update_seq, position - UPDATE_BASE + 1)
                continue
            replay[position] = entry
            if kind == "step":
                self._order = max(self._order, entry.get("order", -1) + 1)
            elif kind == "signal" and entry.get("status") == "received":
                consumed.add(entry["signal_seq"])
        self._replay, self._updates_to_replay = replay, updates

    # -- plumbing -------------------------------------------------------------------

    @property
    def completed_steps(self) -> list[str]:
        """The tags of the completed steps (child workflows too), in the order they completed.

        Derived from ``steps`` rather than kept beside it: one dict write per step instead of
        three measured ~7% of W1's time at 1,000 in flight.
        """
        # Sorted by completion order (not-completed steps have none yet: -1), C-level but the filter.
        return [tag for _, status, tag in sorted(map(_ORDER_STATUS_TAG, self.steps.values()))
                if status == "completed"]

    @property
    def inbox(self) -> Inbox:
        if self._inbox is None:
            self._inbox = Inbox()
        return self._inbox

    @property
    def product_env(self) -> tuple[str, str]:
        return self.record["product"], self.record["env"]

    def remember_reply(self, update_id: str, reply: Any) -> None:
        if self.update_replies is _EMPTY:
            self.update_replies = {}
        self.update_replies[update_id] = reply  # type: ignore[index]

    def adopt_child(self, child_id: str, policy: ParentClosePolicy) -> None:
        """A child this run started: its parent-close ``policy`` applies when this run ends."""
        if self.children is _EMPTY:
            self.children = {}
        self.children[child_id] = policy  # type: ignore[index]

    def waiting_outside(self) -> None:
        """The run is about to await something outside it: a step's I/O, a child (see ``admission``)."""
        if self.on_wait_outside is not None:
            self.on_wait_outside()

    def blocked(self, what: str) -> None:
        """The handler blocks on ``what`` (a signal, a timer, a child): ``execute`` may answer now."""
        self.waiting_for = what
        if self.on_block is not None:
            self.on_block()

    def next_seq(self) -> int:
        """Reserve the next history seq (some events are implied by records; see ``history``)."""
        seq = self._event_seq
        self._event_seq = seq + 1
        return seq

    def event(self, type_: str, data: dict[str, Any]) -> None:
        seq = self.next_seq()
        self.store.put_event(self.workflow_id, seq,
                             {"type": type_, "timestamp": self.clock.now_ms(), "data": data, "seq": seq})

    async def _durable(self) -> None:
        """Wait for the commit of what this run queued; a failed commit suspends the run."""
        try:
            await self.store.commit()
        except StorageError as exc:
            raise RunSuspended(exc) from exc

    def _check_open(self) -> None:
        """A ``ctx`` kept past its run's end raises here (``step`` tests ``closed`` inline first: hot path)."""
        if self.closed:
            raise WorkflowEndedError(f"workflow {self.workflow_id!r} has ended: its ctx takes no more "
                                     f"journaled calls (steps, checkpoints, waits, children)",
                                     workflow_id=self.workflow_id)

    # -- the replay ---------------------------------------------------------------------

    async def _next_call(self, kind: EntryKind, name: str) -> tuple[int, dict[str, Any] | None]:
        """Every journaled call starts here: its position, and what was recorded there (None: run it).

        Recorded updates that came in before this call are applied again first.
        """
        if self._updates_to_replay:
            await self.replay_updates(self._position - 1)
        return self._take_position(kind, name)

    def _take_position(self, kind: EntryKind, name: str) -> tuple[int, dict[str, Any] | None]:
        self._check_open()
        position = self._position
        self._position = position + 1
        if not self._replay:
            if self.replay_only:
                raise ReplayExhausted()
            return position, None
        recorded = self._replay.pop(position, None)  # type: ignore[attr-defined]
        if not self._replay:
            self._replay_progressed()
        if self.replay_only and (recorded is None or (kind != "step" and recorded.get("status") == "waiting")):
            raise ReplayExhausted()  # compensating: never start or wait for anything new
        if recorded is not None and (recorded.get("k") != kind or recorded.get("tag", recorded.get("name")) != name):
            was = f"{recorded.get('k')} {recorded.get('tag', recorded.get('name'))!r}"
            raise NonDeterminismError(
                f"workflow {self.workflow_id!r} asked for {kind} {name!r} at position {position}, "
                f"but the journal recorded {was} there: the handler's code changed under a running instance")
        return position, recorded

    @property
    def replaying(self) -> bool:
        """A resumed run whose handler has not yet walked all of its recorded history.

        Its ``state`` is not the run's state yet, so queries and updates wait
        for ``replay_finished``.
        """
        return bool(self._replay) or bool(self._updates_to_replay)

    async def replay_finished(self) -> None:
        if not self.replaying:
            return
        if self._replay_done is None:
            self._replay_done = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._replay_done)

    def _replay_progressed(self) -> None:
        """Called where recorded history is consumed: wakes what waits for the replay's end."""
        if self._replay_done is not None and not self.replaying:
            self.end_replay()

    def end_replay(self) -> None:
        """The replay is over (history consumed, or the handler ended before that)."""
        done, self._replay_done = self._replay_done, None
        if done is not None and not done.done():
            done.set_result(None)

    async def replay_updates(self, upto: int | None = None) -> None:
        """Apply again the recorded updates that came after call ``upto`` (all that are left if None)."""
        pending: dict[int, list[dict[str, Any]]] = self._updates_to_replay  # type: ignore[assignment]
        for key in sorted(k for k in pending if upto is None or k <= upto):
            for entry in pending.pop(key):
                handler = self.definition.updates.get(entry["name"])
                if handler is None:
                    continue  # the update is gone from the code; its state change is not replayed
                assert self.ctx is not None, "a run replays updates only under its handler's ctx"
                value = handler(self.ctx.restricted("update"), entry["args"])
                if inspect.isawaitable(value):
                    await value
        self._replay_progressed()
