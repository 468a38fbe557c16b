"""The runtime's pure parts, tested directly against rules stated here (not by re-running their code).

1. The step entry codec (``runtime/run/entries.py``): a ``StepState`` journaled in either form
   (the compact array of ``STEP_KEYS`` or the dict), through the store's codec and
   ``read_journal``, loads back into a fresh ``StepState`` with every field equal; the output
   read from the bytes, and every copy handed out, is a fresh object.
2. History (``runtime/decisions/history.py``): random runs (steps, some in parallel, retries,
   checkpoints, signals, sleeps, patches, manual rollbacks, updates) are generated with the
   history they imply; ``build_history`` gives exactly that history in seq order,
   ``next_history_seq`` continues past every seq used, ``progress`` tells completed steps
   in completion order, the running step, the last checkpoint and the newest state.
3. The signal inbox (``runtime/run/inbox.py``): a state machine against a model. A signal is
   handed out once, the oldest matching one first; a waiter gets the first matching delivery;
   a wait that starts after a matching delivery gets it at once; a signal put back is kept.
4. ``Trampoline``: a coroutine started by hand (``send(None)``) and finished through
   ``await Trampoline(coro, yielded)`` in a real task behaves as ``await coro``: values and
   exceptions thrown in (a ``task.cancel()`` too), the return value, an exception out.
5. Durations and retry policies (``runtime/decisions/durations.py``, ``runtime/decisions/retry.py``): API.md's
   accepted duration forms give their milliseconds, anything else raises
   ``InvalidDurationError`` naming the value; retry delays follow API.md's "Retry policies"
   (the nominal wait is capped by ``max_delay``, jitter draws 80-120 % of the nominal wait).

The rollback planner is tested in ``test_compensation_properties.py``.

Examples: a bounded number by default; ``SAGALOOP_LONG_TESTS=1`` runs at least 1,000 of each.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import sys
import types
from dataclasses import dataclass, field
from datetime import timedelta
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from sagaloop.errors import InvalidArgumentError, InvalidDurationError
from sagaloop.runtime.decisions.durations import parse_duration
from sagaloop.runtime.decisions.history import build_history, next_history_seq, progress
from sagaloop.runtime.run.inbox import Inbox
from sagaloop.runtime.run.entries import (FINAL_ROLLBACK, STEP_KEYS, UPDATE_BASE, StepState, entry_dict,
                                          read_journal, recorded_step_output)
from sagaloop.runtime.run.trampoline import Trampoline
from sagaloop.runtime.decisions.retry import parse_retry_policy
from sagaloop.runtime.decisions.step_options import StepOptions
from sagaloop.storage import codec

LONG = os.environ.get("SAGALOOP_LONG_TESTS") == "1"


def examples(default: int) -> settings:
    """``default`` examples, or 1,000 (at least) with SAGALOOP_LONG_TESTS=1."""
    return settings(max_examples=max(1000, default) if LONG else default, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def finish(coro: Any) -> Any:
    """The result of a coroutine that never suspends (``read_journal`` over an in-memory store)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("the coroutine suspended")


class MemoryStore:
    """The one read ``read_journal`` makes, over entries stored as the LMDB store stores them: encoded."""

    def __init__(self, journal: list[tuple[int, Any]]) -> None:
        self.stored = [(position, codec.encode(entry)) for position, entry in journal]

    async def load_journal(self, workflow_id: str) -> list[tuple[int, Any]]:
        return [(position, codec.decode(data)) for position, data in sorted(self.stored)]


# -- 1. the step entry codec ---------------------------------------------------------------------------

# JSON-like values msgpack keeps as they are (lists, not tuples; no NaN, which is unequal to itself).
scalars = (st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 64 - 1) | st.text(max_size=8)
           | st.binary(max_size=8) | st.floats(allow_nan=False))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
errors = st.none() | st.fixed_dictionaries({"message": st.text(max_size=20), "step": st.none() | st.text(max_size=8),
                                           "code": st.text(max_size=12), "type": st.text(max_size=12)})
STEP_STATUSES = ("running", "completed", "failed", "skipped")
ROLLBACK_STATUSES = ("completed", "failed", "running")


@dataclass
class StepFields:
    """Everything a step's journal entry records, as generated."""

    tag: str
    position: int
    status: str
    output: Any
    error: dict | None
    attempts: int
    started_at: int
    ended_at: int | None
    order: int
    critical: bool
    has_rollback: bool
    seq: int
    end_seq: int
    retry_at: float | None
    rollback: tuple[str, str | None, int] | None  # (rollback_status, rollback_error, rollback_id)

    def state(self) -> StepState:
        st_ = StepState(self.tag, self.position, undo if self.has_rollback else None,
                        StepOptions(critical=self.critical))
        st_.status, st_.output, st_.error, st_.attempts = self.status, self.output, self.error, self.attempts
        st_.started_at, st_.ended_at, st_.order = self.started_at, self.ended_at, self.order
        st_.seq, st_.end_seq, st_.retry_at = self.seq, self.end_seq, self.retry_at
        if self.rollback is not None:
            st_.rollback_status, st_.rollback_error, st_.rollback_id = self.rollback
        return st_


def undo(_output: Any) -> None:
    """A compensation (never called here)."""


step_fields = st.builds(
    StepFields,
    tag=st.text(min_size=1, max_size=10),
    position=st.integers(0, 2 ** 31 - 1),
    status=st.sampled_from(STEP_STATUSES),
    output=values,
    error=errors,
    attempts=st.integers(0, 10 ** 6),
    started_at=st.integers(0, 2 ** 53),
    ended_at=st.none() | st.integers(0, 2 ** 53),
    order=st.integers(-1, 10 ** 6),
    critical=st.booleans(),
    has_rollback=st.booleans(),
    seq=st.integers(-1, 2 ** 40),
    end_seq=st.integers(-1, 2 ** 40),
    retry_at=st.none() | st.floats(0, 1e15, allow_nan=False),
    rollback=st.none() | st.tuples(st.sampled_from(ROLLBACK_STATUSES), st.none() | st.text(max_size=20),
                                   st.sampled_from([FINAL_ROLLBACK]) | st.integers(0, 2 ** 31)),
)


def expected_entry(f: StepFields) -> dict:
    """The entry as a dict: what ``read_journal`` must give back, whichever form was stored."""
    entry = {"k": "step", "tag": f.tag, "status": f.status, "output": f.output, "error": f.error,
             "attempts": f.attempts, "started_at": f.started_at, "ended_at": f.ended_at, "order": f.order,
             "critical": f.critical, "has_rollback": f.has_rollback, "seq": f.seq, "end_seq": f.end_seq}
    if f.retry_at is not None:
        entry["retry_at"] = f.retry_at
    if f.rollback is not None:
        entry["rollback_status"], entry["rollback_error"], entry["rollback_id"] = f.rollback
    return entry


def assert_loaded(loaded: StepState, f: StepFields) -> None:
    """Every recorded field came back; the code's own fields (tag, rollback, options) stayed."""
    rollback_status, rollback_error, rollback_id = f.rollback or (None, None, None)
    assert (loaded.status, loaded.output, loaded.error, loaded.attempts) == (f.status, f.output, f.error, f.attempts)
    assert (loaded.started_at, loaded.ended_at, loaded.order) == (f.started_at, f.ended_at, f.order)
    assert (loaded.seq, loaded.end_seq, loaded.retry_at) == (f.seq, f.end_seq, f.retry_at)
    assert (loaded.rollback_status, loaded.rollback_error, loaded.rollback_id) == \
        (rollback_status, rollback_error, rollback_id)
    assert (loaded.tag, loaded.critical, loaded.rollback is not None) == (f.tag, f.critical, f.has_rollback)


MUTATED = object()  # never in a decoded value


def mutate_everything(value: Any) -> bool:
    """Change every list and dict inside ``value`` in place; False if it holds none (nothing can change)."""
    if isinstance(value, list):
        for item in value:
            mutate_everything(item)
        value.append(MUTATED)
        return True
    if isinstance(value, dict):
        for item in value.values():
            mutate_everything(item)
        value[MUTATED] = MUTATED
        return True
    return False


@examples(300)
@given(step_fields)
def test_a_step_entry_round_trips_through_the_store_in_either_form(f):
    """entry() -> codec -> read_journal -> load gives back every field; the form is compact iff nothing optional."""
    state = f.state()
    stored = state.entry()
    plain = f.retry_at is None and f.rollback is None
    assert isinstance(stored, tuple) == plain  # the compact form is the usual one, the dict the rare one
    if plain:
        assert len(stored) == len(STEP_KEYS) and stored[0] == "step"
    expected = expected_entry(f)
    assert entry_dict(stored) == expected  # before it is stored (what a replay of the live run reads)
    assert state.entry_dict() == expected

    encoded = codec.encode(stored)
    assert recorded_step_output(encoded) == f.output
    decoded = codec.decode(encoded)
    assert isinstance(decoded, list if plain else dict)
    assert entry_dict(decoded) == expected
    [(position, read)] = finish(read_journal(MemoryStore([(f.position, stored)]), "wf"))
    assert position == f.position and read == expected

    fresh = StepState(f.tag, f.position, undo if f.has_rollback else None, StepOptions(critical=f.critical))
    fresh.load(read)
    assert_loaded(fresh, f)
    assert entry_dict(fresh.entry()) == expected  # and it journals the same entry again


@examples(300)
@given(step_fields, st.booleans())
def test_recorded_output_is_a_fresh_equal_copy(f, journaled):
    """recorded_output() equals the output and shares nothing with the step (held as a value or as bytes)."""
    state = f.state()
    if journaled:  # what a completed step with a mutable output keeps: the journal's bytes, not the value
        state.recorded, state.output = codec.encode(state.entry()), None
    entry_before = codec.encode(state.entry())
    copy = state.recorded_output()
    assert copy == f.output
    if mutate_everything(copy):
        assert copy != f.output
        assert state.recorded_output() == f.output
        assert codec.encode(state.entry()) == entry_before
        if not journaled:
            assert state.output == f.output
    second, third = state.recorded_output(), state.recorded_output()
    if mutate_everything(second):
        assert third == f.output


@examples(150)
@given(st.lists(step_fields, min_size=1, max_size=6), st.data())
def test_read_journal_gives_every_entry_as_a_dict_in_position_order(fields, data):
    """A journal of steps in both forms and other entries: read back by position, steps as full dicts."""
    journal, expected = [], {}
    positions = data.draw(st.lists(st.integers(0, 2 ** 32), min_size=len(fields) + 2, max_size=len(fields) + 2,
                                   unique=True))
    for f, position in zip(fields, positions):
        journal.append((position, f.state().entry()))
        expected[position] = expected_entry(f)
    others = [{"k": "checkpoint", "name": "c", "data": [1, b"x"], "at": 5, "seq": 3},
              {"k": "signal", "tag": "a|b", "status": "received", "name": "a", "payload": None, "signal_seq": 9}]
    for entry, position in zip(others, positions[len(fields):]):
        journal.append((position, entry))
        expected[position] = entry
    read = finish(read_journal(MemoryStore(journal), "wf"))
    assert read == sorted(expected.items())


# -- 2. history --------------------------------------------------------------------------------------

END_EVENT = {"completed": "step_completed", "failed": "step_failed", "skipped": "step_skipped"}


@dataclass
class GeneratedRun:
    """A run's records and, beside them, what they imply (built together, so consistent by construction)."""

    record: dict
    journal: list[tuple[int, Any]]       # as journaled (steps in the compact form or the dict)
    events: list[dict]                   # the stored events, as the store gives them (seq order)
    history: dict[int, tuple[str, int, dict]] = field(default_factory=dict)  # seq -> (type, timestamp, data)
    completed: list[str] = field(default_factory=list)  # step tags in the order they completed
    running: list[str] = field(default_factory=list)    # step tags still running, in start order
    checkpoint: tuple[str, Any] | None = None
    state: dict | None = None                           # the newest state written
    seqs_used: list[int] = field(default_factory=list)


# Steps start and end more often than anything else happens, as in a real run.
OPS = ("start",) * 4 + ("end",) * 4 + ("checkpoint", "event", "signal", "sleep", "patch", "update", "rollback", "gap")


@st.composite
def generated_runs(draw) -> GeneratedRun:
    """A run as a sequence of operations, each taking the next history seq where it records an event.

    As the engine does it: steps take call positions and seqs as they start (several may run at
    once), an update is applied only between steps, a manual rollback compensates the completed
    steps newest first. Two writes of ``ctx.state`` are never in the same millisecond here (see
    ``test_progress_state_written_in_one_millisecond``).
    """
    clock = draw(st.integers(1_600_000_000_000, 1_800_000_000_000))
    record = {"workflow_id": "wf", "status": "running", "input": draw(values), "created_at": clock}
    run = GeneratedRun(record=record, journal=[], events=[])
    run.history[0] = ("workflow_started", clock, {"input": record["input"]})
    run.seqs_used.append(0)
    seqs, updates = iter(range(1, 10 ** 6)), iter(range(10 ** 6))
    positions_taken = 0  # call positions: steps, checkpoints, signals, sleeps, patches, rollbacks
    steps: list[StepState] = []       # every step, in start (= call) order
    open_steps: list[StepState] = []  # started, not ended
    state_of: dict[str, dict] = {}    # step tag -> the state its completed entry carries
    last_state_at = -1

    def next_position() -> int:
        nonlocal positions_taken
        positions_taken += 1
        return positions_taken - 1

    def take_seq() -> int:
        seq = next(seqs)
        run.seqs_used.append(seq)
        return seq

    def stored_event(type_: str, data: dict) -> None:
        seq = take_seq()
        run.events.append({"type": type_, "timestamp": clock, "data": data, "seq": seq})
        run.history[seq] = (type_, clock, data)

    def new_state() -> dict:
        nonlocal last_state_at
        assert clock > last_state_at
        last_state_at = clock
        run.state = {"version": len(run.seqs_used), "note": draw(st.text(max_size=4))}
        return run.state

    for _ in range(draw(st.integers(0, 40))):
        op = draw(st.sampled_from(OPS))
        clock += draw(st.integers(0, 2))  # ties happen: many records in one millisecond
        writes_state = draw(st.booleans())  # for a completed step or an update: ctx.state had changed
        if writes_state:
            clock = max(clock, last_state_at + 1)
        if op == "start":
            st_ = StepState(f"step-{len(steps)}", next_position(), undo if draw(st.booleans()) else None)
            st_.started_at, st_.seq = clock, take_seq()
            run.history[st_.seq] = ("step_started", clock, {"step": st_.tag})
            open_steps.append(st_)
            steps.append(st_)
        elif op == "end" and open_steps:
            st_ = open_steps.pop(draw(st.integers(0, len(open_steps) - 1)))
            for _ in range(draw(st.integers(0, 2))):  # failed attempts before this end
                st_.attempts += 1
                stored_event("step_retrying", {"step": st_.tag, "attempt": st_.attempts})
            st_.attempts += 1
            st_.status = draw(st.sampled_from(("completed", "completed", "failed", "skipped")))
            st_.ended_at, st_.end_seq = clock, take_seq()
            if st_.status == "completed":
                st_.output, st_.order = draw(values), len(run.completed)
                run.completed.append(st_.tag)
                run.history[st_.end_seq] = ("step_completed", clock, {"step": st_.tag, "output": st_.output})
                if writes_state:
                    state_of[st_.tag] = new_state()
            else:
                st_.error = {"message": "no", "step": st_.tag, "code": "step_failed", "type": "Boom"}
                run.history[st_.end_seq] = (END_EVENT[st_.status], clock, {"step": st_.tag, "error": st_.error})
        elif op == "checkpoint":
            name, data = draw(st.sampled_from(("paid", "shipped"))), draw(values)
            seq = take_seq()
            run.journal.append((next_position(), {"k": "checkpoint", "name": name, "data": data, "at": clock,
                                                  "seq": seq}))
            run.history[seq] = ("checkpoint_created", clock, {"name": name, "data": data})
            run.checkpoint = (name, data)
        elif op == "event":
            stored_event(draw(st.sampled_from(("signal_received", "workflow_resumed", "child_started"))),
                         {"n": draw(st.integers(0, 9))})
        elif op == "signal":
            if draw(st.booleans()):
                run.journal.append((next_position(), {"k": "signal", "tag": "a|b", "status": "received",
                                                      "name": "a", "payload": None,
                                                      "signal_seq": draw(st.integers(0, 10 ** 9))}))
            else:
                run.journal.append((next_position(), {"k": "signal", "tag": "a|b", "status": "timed_out",
                                                      "deadline": clock, "error": "no signal"}))
                stored_event("signal_timed_out", {"signals": ["a", "b"]})
        elif op == "sleep":
            run.journal.append((next_position(), {"k": "sleep", "tag": "sleep", "ms": 10.0, "deadline": clock + 10,
                                                  "status": draw(st.sampled_from(("waiting", "done")))}))
        elif op == "patch":
            run.journal.append((next_position(), {"k": "patch", "name": "p", "tag": "p"}))
        elif op == "update" and not open_steps:  # an update that arrives during a step waits for its end
            number = next(updates)
            entry = {"k": "update", "name": "u", "args": None, "update_id": None, "reply": number,
                     "after": positions_taken - 1, "at": clock}
            if writes_state:
                entry["state"] = new_state()
            run.journal.append((UPDATE_BASE + number, entry))
            stored_event("update_applied", {"update": "u", "update_id": None})
        elif op == "rollback" and not open_steps:
            position = next_position()
            stored_event("rollback_started", {"trigger": "manual", "reason": "r"})
            done = [s for s in steps
                    if s.status == "completed" and s.rollback is not None and s.rollback_status is None]
            done.sort(key=lambda s: s.order, reverse=True)
            for st_ in done:
                st_.rollback_status, st_.rollback_id = "completed", position
                stored_event("step_rolled_back", {"step": st_.tag})
            run.journal.append((position, {"k": "rollback", "tag": "rollback", "reason": "r", "result": {
                "success": True, "rolled_back_steps": [s.tag for s in done], "failed_steps": [], "reason": "r",
                "trigger": "manual"}}))
        elif op == "gap":  # a seq taken by a record that was lost in a crash: nothing shows it
            next(seqs)
    # The steps' entries, each as the run journals it: the compact form, or a dict when it carries more.
    for st_ in steps:
        entry = st_.entry()
        if st_.tag in state_of:
            entry = {**entry_dict(entry), "state": state_of[st_.tag]}
        run.journal.append((st_.position, entry))
    run.running = [s.tag for s in open_steps]
    if draw(st.booleans()):  # the run ended
        clock += draw(st.integers(0, 2))
        status = draw(st.sampled_from(("completed", "failed", "rolled_back", "cancelled")))
        error = None if status == "completed" else {"message": "m", "code": "c"}
        seq = take_seq()
        record.update(status=status, end_seq=seq, ended_at=clock, error=error)
        run.history[seq] = (f"workflow_{status}", clock, {"error": error} if error else {})
    return run


def journal_of(run: GeneratedRun) -> list[tuple[int, dict]]:
    return finish(read_journal(MemoryStore(run.journal), run.record["workflow_id"]))


def stored_events(run: GeneratedRun) -> list[dict]:
    return [codec.decode(codec.encode(e)) for e in sorted(run.events, key=lambda e: e["seq"])]


@examples(200)
@given(generated_runs())
def test_history_is_every_implied_event_once_in_seq_order(run):
    """build_history gives exactly the generated events, ordered by seq, each step's start and end once."""
    got = build_history(codec.decode(codec.encode(run.record)), journal_of(run), stored_events(run))
    expected = [{"type": t, "timestamp": ts, "data": data} for _, (t, ts, data) in sorted(run.history.items())]
    assert got == expected
    for tag in {e["data"]["step"] for e in expected if e["type"] == "step_started"}:
        starts = [e for e in got if e["type"] == "step_started" and e["data"] == {"step": tag}]
        ends = [e for e in got if e["type"] in END_EVENT.values() and e["data"]["step"] == tag]
        assert len(starts) == 1 and len(ends) == (0 if tag in run.running else 1)
        assert tag in run.running or got.index(starts[0]) < got.index(ends[0])
    assert got[0]["type"] == "workflow_started"
    ends = [e for e in got if e["type"].startswith("workflow_") and e["type"] not in ("workflow_started",
                                                                                      "workflow_resumed")]
    assert len(ends) == (1 if run.record.get("end_seq") is not None else 0)
    assert not ends or got[-1] is ends[0]


@examples(200)
@given(generated_runs())
def test_next_history_seq_continues_past_every_seq_used(run):
    """A resumed run's first new event takes a seq above every seq its records hold."""
    used = [s for s in run.seqs_used if s != run.record.get("end_seq")]  # a resumed run has not ended
    assert next_history_seq(stored_events(run), journal_of(run)) > max(used)
    assert next_history_seq([], []) > 0  # seq 0 is workflow_started, implied by the instance record


@examples(200)
@given(generated_runs())
def test_progress_tells_completed_steps_in_completion_order_and_the_last_checkpoint(run):
    """progress: completed steps as they completed, the step still running, the newest checkpoint."""
    got = progress(journal_of(run))
    assert got["completed_steps"] == run.completed
    assert got["current_step"] == (run.running[-1] if run.running else None)
    name, data = run.checkpoint or (None, None)
    assert (got["checkpoint_name"], got["checkpoint_data"]) == (name, data)
    assert got["state"] == (run.state or {})


def test_progress_state_written_in_one_millisecond():
    """An update applied before step 0 (after=-1), then step 0 ends with a newer state, both at ms 5."""
    step = {**entry_dict(StepState("a", 0, None).entry()), "status": "completed", "ended_at": 5, "order": 0,
            "state": {"v": 2}}
    update = {"k": "update", "name": "u", "args": None, "update_id": None, "reply": None, "after": -1, "at": 5,
              "state": {"v": 1}}
    assert progress([(0, step), (UPDATE_BASE, update)])["state"] == {"v": 2}


# -- 3. the signal inbox -----------------------------------------------------------------------------

SIGNAL_NAMES = ("a", "b", "c")
wanted_names = st.lists(st.sampled_from(SIGNAL_NAMES), min_size=1, max_size=3, unique=True).map(tuple)


class InboxMachine(RuleBasedStateMachine):
    """The inbox against a model: the signals kept (by seq), the one wait pending, the signals handed out.

    Used as the run uses it: one wait at a time; a signal handed out is either consumed (journaled)
    or put back when its wait was interrupted before that.
    """

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.inbox = Inbox()
        self.kept: dict[int, str] = {}            # model: seq -> name of each signal the inbox holds
        self.handed: dict[int, tuple] = {}        # handed out, not consumed yet: seq -> the item
        self.consumed: set[int] = set()
        self.waiter: tuple[asyncio.Future, tuple] | None = None
        self.next_seq = 0

    def teardown(self) -> None:
        self.loop.close()

    def signal(self, seq: int, name: str) -> dict:
        return {"name": name, "payload": {"seq": seq}, "at": seq}

    def oldest(self, names: tuple) -> int | None:
        return min((seq for seq, name in self.kept.items() if name in names), default=None)

    def hand_out(self, item: tuple | None, expected_seq: int | None) -> None:
        """The inbox handed ``item`` out (or nothing); the model says it must be ``expected_seq``'s."""
        if expected_seq is None:
            assert item is None, (item, self.kept)
            return
        assert item == (expected_seq, self.signal(expected_seq, self.kept[expected_seq])), (item, expected_seq)
        assert expected_seq not in self.handed and expected_seq not in self.consumed  # exactly once
        del self.kept[expected_seq]
        self.handed[expected_seq] = item

    @initialize(signals=st.dictionaries(st.integers(0, 50), st.sampled_from(SIGNAL_NAMES), max_size=6),
                data=st.data())
    def start(self, signals, data):
        """An inbox loaded from the store: the signals not consumed yet, whatever order they come in."""
        consumed = data.draw(st.sets(st.sampled_from(sorted(signals)))) if signals else set()
        items = [(seq, self.signal(seq, name)) for seq, name in signals.items()]
        data.draw(st.randoms()).shuffle(items)
        self.inbox = Inbox(items, consumed=consumed, next_seq=51)
        self.kept = {seq: name for seq, name in signals.items() if seq not in consumed}
        self.consumed = set(consumed)
        self.next_seq = 51

    @rule(name=st.sampled_from(SIGNAL_NAMES), gap=st.integers(1, 3))
    def deliver(self, name, gap):
        """A signal arrives: the pending wait for it gets it now, else it is kept."""
        seq, self.next_seq = self.next_seq, self.next_seq + gap
        self.inbox.deliver(seq, self.signal(seq, name))
        self.kept[seq] = name
        if self.waiter is not None and name in self.waiter[1]:
            future, _ = self.waiter
            assert future.done(), "a wait missed a signal delivered while it waited"
            self.hand_out(future.result(), seq)
            self.waiter = None
        elif self.waiter is not None:
            assert not self.waiter[0].done()

    @rule(names=wanted_names)
    def take(self, names):
        """The oldest kept signal with one of ``names``, or nothing."""
        self.hand_out(self.inbox.take(names), self.oldest(names))

    @precondition(lambda self: self.waiter is None)
    @rule(names=wanted_names)
    def wait(self, names):
        """A wait gets the oldest kept match at once, else waits."""
        async def wait() -> asyncio.Future:
            return self.inbox.wait(names)

        future = self.loop.run_until_complete(wait())
        expected = self.oldest(names)
        if expected is None:
            assert not future.done()
            self.waiter = (future, names)
        else:
            assert future.done()
            self.hand_out(future.result(), expected)

    @precondition(lambda self: self.waiter is not None)
    @rule(timed_out=st.booleans(), stop_waiting=st.booleans())
    def end_wait(self, timed_out, stop_waiting):
        """A wait ends without a signal: its timeout resolves it with None, or its task is cancelled."""
        future, _ = self.waiter
        if timed_out:
            future.set_result(None)  # what the wait's timer does
        else:
            future.cancel()
        if stop_waiting:  # what the run's wait does on its way out; a done future alone must do too
            self.inbox.stop_waiting(future)
        self.waiter = None

    @precondition(lambda self: self.handed)
    @rule(data=st.data())
    def consume(self, data):
        """A handed-out signal is journaled: it is gone for good."""
        seq = data.draw(st.sampled_from(sorted(self.handed)))
        del self.handed[seq]
        self.consumed.add(seq)

    @precondition(lambda self: self.handed and self.waiter is None)
    @rule(data=st.data())
    def put_back(self, data):
        """A wait was interrupted after its signal was handed over: the signal goes back, in seq order."""
        item = self.handed.pop(data.draw(st.sampled_from(sorted(self.handed))))
        self.inbox.put_back(item)
        self.kept[item[0]] = item[1]["name"]

    @invariant()
    def holds_what_the_model_keeps(self):
        assert self.inbox.pending() == [self.kept[seq] for seq in sorted(self.kept)]
        assert len(self.inbox) == len(self.kept)


TestInbox = InboxMachine.TestCase
TestInbox.settings = settings(examples(150), stateful_step_count=30)


# -- 4. the trampoline ------------------------------------------------------------------------


class Boom(Exception):
    pass


@dataclass(frozen=True)
class Suspension:
    """One await of the scripted coroutine and what the test does to it meanwhile."""

    # "value": the future gets a result; "error": an exception; "cancel": task.cancel();
    # "value_then_cancel": the result, then task.cancel() before the task runs again (the task
    # throws the cancellation in although the future is done); "sleep0": asyncio.sleep(0)
    kind: str
    value: Any
    catch: bool   # the coroutine catches what this await raises (a Boom, a CancelledError) and goes on


suspensions = st.builds(Suspension, st.sampled_from(("value", "error", "cancel", "value_then_cancel", "sleep0")),
                        st.integers(0, 99) | st.text(max_size=3), st.booleans())
endings = st.tuples(st.sampled_from(("return", "raise")), st.integers(0, 99))


async def scripted(script: list[Suspension], end: tuple, futures: list, reached: list, log: list) -> Any:
    """The handler under test: awaits as the script says, logs what each await gives or raises."""
    for i, step in enumerate(script):
        if step.kind == "sleep0":
            await asyncio.sleep(0)
            log.append(("slept", i))
            continue
        reached[i].set()  # no suspension between this and the await: the test acts once it sees it
        try:
            got = await futures[i]
        except (Boom, asyncio.CancelledError) as exc:
            log.append(("raised", i, type(exc).__name__, exc.args))
            if not step.catch:
                raise
        else:
            log.append(("got", i, got))
    if end[0] == "raise":
        raise Boom("end", end[1])
    return ("end", end[1])


async def awaited_directly(make: Any) -> Any:
    return await make()


async def awaited_through_resume(make: Any) -> Any:
    """What the step hot path does: run the handler by hand to its first suspension, then Trampoline it."""
    coro = make()
    try:
        yielded = coro.send(None)
    except StopIteration as done:
        return done.value
    return await Trampoline(coro, yielded)


async def drive(runner: Any, script: list[Suspension], end: tuple) -> tuple:
    """Run the script in a task through ``runner``; (log, outcome, the task's cancelling count)."""
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in script]
    reached = [asyncio.Event() for _ in script]
    log: list = []
    task = asyncio.create_task(runner(lambda: scripted(script, end, futures, reached, log)))
    for i, step in enumerate(script):
        if step.kind == "sleep0":
            continue
        at_await = asyncio.ensure_future(reached[i].wait())
        await asyncio.wait({at_await, task}, return_when=asyncio.FIRST_COMPLETED)
        if not reached[i].is_set():  # the coroutine ended before this await
            at_await.cancel()
            break
        if step.kind == "value":
            futures[i].set_result(step.value)
        elif step.kind == "error":
            futures[i].set_exception(Boom(step.value))
        elif step.kind == "cancel":
            task.cancel(f"cancel {step.value}")
        else:
            futures[i].set_result(step.value)
            task.cancel(f"cancel {step.value}")
    await asyncio.wait({task})
    if task.cancelled():
        outcome: tuple = ("cancelled",)
    elif task.exception() is not None:
        outcome = ("raised", type(task.exception()).__name__, task.exception().args)
    else:
        outcome = ("returned", task.result())
    return log, outcome, task.cancelling()


def expected_run(script: list[Suspension], end: tuple) -> tuple[list, tuple]:
    """The log and outcome the script implies (so neither side can pass by doing nothing)."""
    log: list = []
    for i, step in enumerate(script):
        if step.kind == "sleep0":
            log.append(("slept", i))
        elif step.kind == "value":
            log.append(("got", i, step.value))
        else:
            name, args = ("Boom", (step.value,)) if step.kind == "error" else ("CancelledError",
                                                                             (f"cancel {step.value}",))
            log.append(("raised", i, name, args))
            if not step.catch:
                return log, ("raised", "Boom", args) if step.kind == "error" else ("cancelled",)
    return log, ("raised", "Boom", ("end", end[1])) if end[0] == "raise" else ("returned", ("end", end[1]))


@examples(300)
@given(st.lists(suspensions, max_size=8), endings)
def test_resume_in_a_task_behaves_as_awaiting_the_coroutine(script, end):
    """Results, errors and cancellations thrown in, and the return or the error out: the same both ways."""
    async def both() -> tuple:
        return await drive(awaited_directly, script, end), await drive(awaited_through_resume, script, end)

    direct, resumed = asyncio.run(both())
    assert resumed == direct
    log, outcome, _ = direct
    assert (log, outcome) == expected_run(script, end)


@types.coroutine
def bare_suspensions(count: int, catches: list[bool], log: list) -> Any:
    """Yield ``count`` times, logging what is sent in or thrown in (a Boom is caught where ``catches`` says)."""
    for i in range(count):
        try:
            got = yield ("suspended", i)
        except Boom as exc:
            log.append(("thrown", i, exc.args))
            if not catches[i]:
                raise
        else:
            log.append(("sent", i, got))
    return ("returned", count)


async def handler_over(count: int, catches: list[bool], log: list) -> Any:
    return await bare_suspensions(count, catches, log)


def drive_by_hand(outer: Any, actions: list[tuple[str, Any]]) -> list:
    """Send values and throw exceptions into ``outer`` by hand; what comes out each time."""
    seen: list = []
    try:
        seen.append(("yielded", outer.send(None)))
        for kind, value in actions:
            seen.append(("yielded", outer.send(value) if kind == "send" else outer.throw(Boom(value))))
        outer.close()
    except StopIteration as done:
        seen.append(("returned", done.value))
    except Boom as exc:
        seen.append(("raised", exc.args))
    return seen


@examples(300)
@given(st.integers(0, 6), st.lists(st.booleans(), min_size=6, max_size=6),
       st.lists(st.tuples(st.sampled_from(("send", "throw")), values), max_size=8))
def test_resume_passes_any_sent_value_and_thrown_exception_through(count, catches, actions):
    """Driven by hand (any value sent, not just a task's None): the same yields, log and ending both ways."""
    direct_log: list = []
    resumed_log: list = []

    async def direct() -> Any:
        return ("outer", await handler_over(count, catches, direct_log))

    async def resumed() -> Any:
        return ("outer", await awaited_through_resume(lambda: handler_over(count, catches, resumed_log)))

    seen = drive_by_hand(direct(), actions)
    assert drive_by_hand(resumed(), actions) == seen
    assert resumed_log == direct_log
    assert (direct_log, seen) == expected_by_hand(count, catches, actions)


def expected_by_hand(count: int, catches: list[bool], actions: list[tuple[str, Any]]) -> tuple[list, list]:
    """The log and what comes out, from the script alone."""
    if count == 0:
        return [], [("returned", ("outer", ("returned", 0)))]
    log, seen = [], [("yielded", ("suspended", 0))]
    for i, (kind, value) in enumerate(actions[:count]):
        if kind == "send":
            log.append(("sent", i, value))
        else:
            log.append(("thrown", i, (value,)))
            if not catches[i]:
                seen.append(("raised", (value,)))
                break
        if i + 1 < count:
            seen.append(("yielded", ("suspended", i + 1)))
        else:
            seen.append(("returned", ("outer", ("returned", count))))
    return log, seen


def test_an_exception_thrown_in_and_caught_is_not_the_context_of_later_ones():
    """Once its except block is left, the coroutine handles nothing: sys.exception() is None, a new error
    has no context. Under Trampoline both still show the cancellation it caught."""
    async def handler(future: asyncio.Future, seen: list) -> None:
        try:
            await future
        except asyncio.CancelledError:
            pass
        seen.append(sys.exception())
        raise Boom("after")

    async def run(runner: Any) -> tuple:
        seen: list = []
        future = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(runner(lambda: handler(future, seen)))
        await asyncio.sleep(0)  # the task runs to its await of the future
        task.cancel()
        await asyncio.wait({task})
        return seen[0], task.exception().__context__

    async def both() -> tuple:
        return await run(awaited_directly), await run(awaited_through_resume)

    direct, resumed = asyncio.run(both())
    assert direct == (None, None)
    assert resumed == direct


# -- 5. durations and retry policies ---------------------------------------------------------------

UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}  # API.md's units
BLANKS = st.text(alphabet=" \t", max_size=2)


def accepted_string(text: str) -> Fraction | None:
    """API.md's string form, read independently: a number (digits, maybe a fraction part), then one unit."""
    text = text.strip()
    for unit in ("ms", "s", "m", "h", "d"):  # "ms" before "s" and "m"
        if text.endswith(unit):
            number = text[: -len(unit)].rstrip()
            whole, dot, fraction = number.partition(".")
            digits = "0123456789"
            if whole and all(c in digits for c in whole) and (not dot or (fraction and all(c in digits
                                                                                         for c in fraction))):
                return Fraction(number) * UNIT_MS[unit]
            return None
    return None


def assert_rejected(value: Any) -> None:
    with pytest.raises(InvalidDurationError) as info:
        parse_duration(value, name="sleep duration")
    assert isinstance(info.value, ValueError)  # API.md: "raises ValueError naming the bad value"
    assert repr(value) in str(info.value) and "sleep duration" in str(info.value), str(info.value)


@examples(300)
@given(st.integers(0, 10 ** 6), st.none() | st.integers(0, 10 ** 6), st.sampled_from(sorted(UNIT_MS)),
       BLANKS, BLANKS, BLANKS)
def test_a_duration_string_is_its_number_times_its_unit(whole, fraction, unit, before, between, after):
    """"500ms" "30s" "5m" "24h" "7d" (blanks around, a fraction part allowed): the number times the unit, in ms."""
    number = str(whole) if fraction is None else f"{whole}.{fraction}"
    ms = parse_duration(f"{before}{number}{between}{unit}{after}")
    assert math.isclose(ms, float(Fraction(number) * UNIT_MS[unit]), rel_tol=1e-12)


@examples(300)
@given(st.integers(0, 2 ** 53) | st.floats(0, 1e300))
def test_a_number_is_milliseconds(value):
    """An int or a float is milliseconds already."""
    assert parse_duration(value) == value


@examples(300)
@given(st.timedeltas(min_value=timedelta(0)))
def test_a_timedelta_is_its_milliseconds(value):
    """A timedelta is its days, seconds and microseconds, in ms."""
    expected = (value.days * 86_400 + value.seconds) * 1000 + Fraction(value.microseconds, 1000)
    assert math.isclose(parse_duration(value), float(expected), rel_tol=1e-12)


@examples(300)
@given(st.text(alphabet="0123456789.smhdx- \te+", max_size=8))
def test_a_string_is_a_duration_only_in_the_documented_form(text):
    """Strings near the grammar ("5", ".5s", "5 s s", "1e3ms", "-5s", "5S"...): the documented form or an error."""
    expected = accepted_string(text)
    if expected is None:
        assert_rejected(text)
    else:
        assert math.isclose(parse_duration(text), float(expected), rel_tol=1e-12)


not_durations = st.one_of(
    st.integers(max_value=-1), st.floats(max_value=-1e-300), st.sampled_from([math.nan, math.inf, -math.inf]),
    st.booleans(), st.none(), st.binary(max_size=4), st.lists(st.integers(0, 9), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(0, 9), max_size=1), st.complex_numbers(),
    st.decimals(allow_nan=False), st.timedeltas(max_value=-timedelta(microseconds=1)),
    st.integers(min_value=10 ** 309),  # beyond a float
)


@examples(300)
@given(not_durations)
def test_anything_else_is_an_invalid_duration_naming_the_value(value):
    """Negative, NaN, infinite, beyond a float, a bool, None, bytes, containers, Decimal, complex."""
    assert_rejected(value)


class Declined(Exception):
    pass


class FraudSuspected(Declined):
    pass


class Timeout(Exception):
    pass


ERROR_CLASSES = (Declined, FraudSuspected, Timeout, ValueError, KeyError)

durations_ms = st.integers(0, 10 ** 7)


def as_duration(ms: int, form: str) -> Any:
    """``ms`` in one of API.md's forms."""
    return {"int": ms, "float": float(ms), "string": f"{ms}ms", "timedelta": timedelta(milliseconds=ms)}[form]


retry_specs = st.fixed_dictionaries({}, optional={
    "max_attempts": st.integers(1, 20),
    "initial_delay": st.tuples(durations_ms, st.sampled_from(("int", "float", "string", "timedelta"))),
    "backoff": st.integers(1, 5) | st.floats(1, 10),
    "max_delay": st.tuples(durations_ms, st.sampled_from(("int", "float", "string", "timedelta"))),
    "jitter": st.booleans(),
    "non_retryable": st.lists(st.sampled_from(ERROR_CLASSES), max_size=3),
})


def nominal_wait(initial: float, backoff: float, max_delay: float, failed: int) -> float:
    """API.md: initial_delay, times backoff per failure after the first, never above max_delay (exact)."""
    grown = Fraction(initial) * Fraction(backoff) ** (failed - 1)
    return float(min(grown, Fraction(max_delay)))


@examples(300)
@given(retry_specs, st.integers(1, 40), st.floats(0, 1, exclude_max=True), st.sampled_from(ERROR_CLASSES))
def test_a_retry_policy_waits_and_stops_as_documented(spec, failed, random, error_class):
    """Defaults, capped exponential waits (exact without jitter, 80-120 % with), attempts and non_retryable."""
    given_spec = {key: as_duration(*value) if key in ("initial_delay", "max_delay") else value
                  for key, value in spec.items()}
    policy = parse_retry_policy(given_spec, what="step 'charge'")
    max_attempts = spec.get("max_attempts", 3)
    initial = spec["initial_delay"][0] if "initial_delay" in spec else 1000
    max_delay = spec["max_delay"][0] if "max_delay" in spec else 60_000
    backoff = spec.get("backoff", 2.0)
    jitter = spec.get("jitter", True)
    non_retryable = tuple(spec.get("non_retryable", ()))

    nominal = nominal_wait(initial, backoff, max_delay, failed)
    delay = policy.delay_ms(failed, lambda: random)
    if jitter:  # "each wait drawn from 80-120 % of its nominal value"
        assert 0.8 * nominal * (1 - 1e-12) <= delay <= 1.2 * nominal * (1 + 1e-12)
        assert math.isclose(policy.delay_ms(failed, lambda: 0.0), 0.8 * nominal, rel_tol=1e-12)
        # API.md caps the nominal wait, and jitter is relative to it: a jittered wait may pass
        # max_delay by up to 20 % (the contract does not say max_delay bounds the jittered wait).
        assert delay <= 1.2 * max_delay * (1 + 1e-12)
    else:
        assert math.isclose(delay, nominal, rel_tol=1e-12)
        assert delay <= max_delay
    error = error_class("declined")
    expected = failed < max_attempts and not any(c in non_retryable for c in type(error).__mro__)
    assert policy.retries_after(failed, error) is expected


bad_retry_values = st.one_of(
    st.tuples(st.just("max_attempts"), st.integers(max_value=0) | st.floats() | st.booleans() | st.text(max_size=3)),
    st.tuples(st.just("backoff"), st.floats(max_value=0.999) | st.sampled_from([math.nan, math.inf, True, "2"])),
    st.tuples(st.just("initial_delay"), not_durations),
    st.tuples(st.just("max_delay"), not_durations),
    st.tuples(st.just("non_retryable"), st.sampled_from(["ValueError", [ValueError, "x"], [int], 3])),
)


@examples(300)
@given(bad_retry_values)
def test_a_bad_retry_value_is_refused_naming_it_and_the_step(bad):
    """max_attempts not an int >= 1, backoff not a finite number >= 1, a bad duration, a non-class."""
    key, value = bad
    with pytest.raises(InvalidArgumentError) as info:
        parse_retry_policy({key: value}, what="step 'charge'")
    message = str(info.value)
    assert "step 'charge'" in message, message
    assert repr(value) in message or repr(tuple(value)) in message, message


@examples(100)
@given(st.text(min_size=1, max_size=8).filter(lambda k: k not in {"max_attempts", "initial_delay", "backoff",
                                                                    "max_delay", "jitter", "non_retryable"}))
def test_an_unknown_retry_key_is_refused_naming_it(key):
    """A misspelt key is an error, not silently ignored."""
    with pytest.raises(InvalidArgumentError, match=re.escape(repr(key))):
        parse_retry_policy({key: 1}, what="step 'charge'")
