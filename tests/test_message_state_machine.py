"""A hypothesis state machine over the messages live workflow instances take.

Hypothesis chooses the program: which instances to start (each runs a *plan*: signal waits,
some with a timeout, and steps gated by events the machine opens), then an interleaving of
signals (one at a time, back to back, or all in flight at once; while the handler waits or
while it is inside a step), queries, updates, cancels, signal timeouts (virtual time) and
engine restarts (close, open a new engine on the same directory, define again: in-flight
instances resume on their own). A model follows what each instance must have received and
where its handler must be. Checked as the program goes and at its end (API.md: Engine,
Execution and results, The context ctx, Updates):

1. every signal ``signal()`` accepted is consumed exactly once, in the order ``signal()``
   returned: the workflow's own record of what it received (``ctx.state``, its output) and
   the ``signal_received`` events of its history;
2. no instance is left waiting on a message it was sent: each reaches the point the model
   says (blocked on its next wait, inside its next step, or ended), given ``PATIENCE_S``;
3. every value handed out is a snapshot: a caller mutating ``status().state``, a query's
   value, an update's reply or ``result().output`` changes no later answer and nothing in
   the workflow, and a signal payload mutated after ``signal()`` returned reaches it unchanged.

``TestSignalDelivery`` runs the machine without mutating anything (promises 1 and 2 alone, so
a snapshot defect cannot end a program before a delivery defect shows); ``TestSnapshots``
mutates too. Every await is bounded: a hang fails with a message instead of stalling the run.
``SAGALOOP_LONG_TESTS=1`` runs many more programs.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NoReturn

import pytest
from helpers import Gate
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

import sagaloop
from sagaloop.testing import VirtualClock

P, E, TAG = "shop", "sm", "inbox"
WAIT, TIMED, GATE = "wait", "timed", "gate"  # the ops of a plan
TIMEOUT_MS = 60_000  # of a TIMED wait; virtual time, so it passes only when the machine advances the clock
TIMED_OUT = "timed-out"  # what the workflow records for a wait that timed out
START_MS = 1_700_000_000_000
# An instance is stuck when it is not where the model expects after PATIENCE_S *and* LOOKS looks
# (each look lets the event loop turn at least once), so neither a slow machine nor a pause of the
# whole process reads as stuck. The engine needs milliseconds and a few dozen turns; a failing
# program waits this long each time hypothesis replays it while shrinking.
PATIENCE_S, LOOKS = 0.5, 1000
ANSWER_S = 5.0  # the bound on one engine call the machine waits on
RULE_S = 20.0  # the bound on any one rule, teardown included
MAX_INSTANCES = 4
MAX_CANCELS, MAX_RESTARTS = 1, 3  # per program: rules are picked uniformly, and these would crowd out the rest
JUNK = "MUTATED-BY-CALLER"
LONG = os.environ.get("SAGALOOP_LONG_TESTS") == "1"

plans = st.lists(st.sampled_from([WAIT, WAIT, TIMED, GATE]), min_size=1, max_size=8).map(tuple)


class DeliveryBroken(AssertionError):
    """Promise 1 or 2: a signal lost, taken twice or out of order, or an instance left waiting."""


class SnapshotBroken(AssertionError):
    """Promise 3: a value handed out is shared with the instance or with another caller."""


class UpdateBroken(AssertionError):
    """An update's reply, or when it ran, breaks the Updates contract."""


def fail(kind: type[AssertionError], message: str) -> NoReturn:
    # One raise site per kind: hypothesis tells failures apart by type and place, so each kind
    # of broken promise is shrunk once, whichever check saw it first.
    raise kind(message)


def sent_payload(n: int) -> dict:
    """What signal number ``n`` carries (a nested list too: a shallow copy is not a snapshot)."""
    return {"n": n, "tags": [n]}


def is_prefix(short: list, long: list) -> bool:
    return list(short) == list(long[:len(short)])


@dataclass
class Instance:
    """The model of one instance: what it must have received, and where its handler must be."""

    wf: str
    plan: tuple[str, ...]
    gates: dict[int, Gate]
    accepted: list[int] = field(default_factory=list)  # signals signal() accepted, in the order it returned
    pending: deque[int] = field(default_factory=deque)  # accepted, not consumed yet
    got: list = field(default_factory=list)  # what the workflow must record, wait by wait
    notes: list[int] = field(default_factory=list)  # the updates applied, in order
    pos: int = 0  # the plan op the handler is at, once it has caught up
    opened: set[int] = field(default_factory=set)
    ended: str | None = None  # "completed" | "cancelled"
    deadline: int | None = None  # of the TIMED wait it blocks on
    seen: bool = False  # the instance was seen at the model's point since the model last moved
    cut_short: bool = False  # cancelled at a point not seen: its record is only a prefix of ``got``
    update: asyncio.Task | None = None  # an update sent while the handler was inside a step
    update_mutate: bool = False

    @property
    def exact(self) -> bool:
        """Its answers must match the model exactly (else they may lag behind it)."""
        return self.seen and not self.cut_short

    @property
    def at(self) -> str | None:
        return self.plan[self.pos] if self.ended is None else None

    def capacity(self) -> int:
        """How many more signals its remaining waits will consume."""
        return sum(op != GATE for op in self.plan[self.pos:]) - len(self.pending)

    def catch_up(self, now: int) -> None:
        """Move the model as far as the handler can go without the machine's help."""
        self.seen = False
        while self.ended is None and self.pos < len(self.plan):
            op = self.plan[self.pos]
            if op == GATE:
                if self.pos not in self.opened:
                    return
            elif self.pending:
                self.got.append(self.pending.popleft())
                self.deadline = None
            else:
                if op == TIMED and self.deadline is None:
                    self.deadline = now + TIMEOUT_MS
                return
            self.pos += 1
        if self.ended is None:
            self.ended = "completed"

    def expects(self) -> str:
        if self.ended is not None:
            return f"to have ended {self.ended}"
        where = f"step gate-{self.pos}" if self.at == GATE else f"wait #{self.pos} ({self.at})"
        return f"to be in {where} of plan {list(self.plan)} having received {self.got}"


# Which instances a rule may pick.
def can_send(i: Instance) -> bool:
    return i.ended is None and i.update is None and i.capacity() > 0


def at_closed_gate(i: Instance) -> bool:
    return i.at == GATE and i.pos not in i.opened


def reachable(i: Instance) -> bool:
    return i.update is None


def can_update(i: Instance) -> bool:
    """Not inside the plan's last step: an update queued there races the end (refused or applied)."""
    return i.update is None and not (i.at == GATE and i.pos == len(i.plan) - 1)


def running(i: Instance) -> bool:
    return i.ended is None and i.update is None


def has_ended(i: Instance) -> bool:
    return i.ended is not None


class MessageMachine(RuleBasedStateMachine):
    """Drives live instances on one engine (one event loop per program) against the model."""

    snapshots = True  # callers also mutate what they are handed (promise 3)

    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory(prefix="sagaloop-sm-")
        self.path = Path(self._tmp.name) / "data"
        self.loop = asyncio.new_event_loop()
        self.clock = VirtualClock(start_ms=START_MS)
        self.now = START_MS
        self.instances: dict[str, Instance] = {}
        self.counter = 0
        self.cancels = self.restarts = 0
        self.failed = False
        self.tasks: list[asyncio.Task] = []
        self.update_runs: list[tuple[str, int, Any]] = []  # (workflow_id, k, ctx.current_step) of each update run
        self.engine: sagaloop.Engine | None = None
        self.call(self._open(), "opening the engine")

    # -- plumbing ------------------------------------------------------------------------------

    def call(self, coro, what: str, limit: float = RULE_S) -> Any:
        """Run one rule's coroutine on the program's loop, bounded."""
        async def bounded():
            async with asyncio.timeout(limit):
                return await coro
        try:
            return self.loop.run_until_complete(bounded())
        except TimeoutError:
            self.failed = True
            raise AssertionError(f"{what} did not finish within {limit} s") from None
        except BaseException:
            self.failed = True
            raise

    def any(self, eligible: Callable[[Instance], bool]) -> bool:
        return any(eligible(i) for i in self.instances.values())

    def pick(self, data, eligible: Callable[[Instance], bool]) -> Instance:
        wf = data.draw(st.sampled_from([i.wf for i in self.instances.values() if eligible(i)]), label="instance")
        return self.instances[wf]

    def _task(self, coro) -> asyncio.Task:
        """A call the machine does not await at once (ended by ``_close`` if still running)."""
        task = asyncio.get_running_loop().create_task(coro)
        task.add_done_callback(lambda done: done.cancelled() or done.exception())  # its failure is ours to report
        self.tasks.append(task)
        return task

    def next_number(self) -> int:
        self.counter += 1
        return self.counter

    async def _open(self) -> None:
        self.engine = sagaloop.Engine(self.path, durability="fast", clock=self.clock)
        await self.engine.open()
        self._define(self.engine)

    def _define(self, engine: sagaloop.Engine) -> None:
        machine = self

        def note(ctx, args):
            machine.update_runs.append((ctx.workflow_id, args["k"], ctx.current_step))
            ctx.state.setdefault("notes", []).append(args["k"])
            return ctx.state["notes"]  # the live list: handing out a snapshot is the engine's job

        async def inbox(ctx):
            got = ctx.state.setdefault("got", [])
            notes = ctx.state.setdefault("notes", [])
            for i, op in enumerate(ctx.input["plan"]):
                if op == GATE:
                    await ctx.step(f"gate-{i}", machine.instances[ctx.workflow_id].gates[i])
                    continue
                try:
                    payload = await ctx.wait_for_signal("go", timeout=TIMEOUT_MS if op == TIMED else None)
                except sagaloop.SignalTimeoutError:
                    got.append(TIMED_OUT)
                else:
                    n = payload.get("n")
                    got.append(n if payload == {**sent_payload(n), "_signal": "go"} else repr(payload))
            return {"got": got, "notes": notes}

        engine.workflows.define(product=P, tag=TAG, handler=inbox,
                                queries={"state": lambda ctx: ctx.state},  # live too, on purpose
                                updates={"note": note})

    # The engine calls, each bounded: an answer that never comes leaves its caller hanging.
    async def _answer(self, call, what: str, kind: type[AssertionError] = DeliveryBroken) -> Any:
        try:
            async with asyncio.timeout(ANSWER_S):
                return await call
        except TimeoutError:
            pass
        fail(kind, f"{what} did not answer within {ANSWER_S} s")

    async def _status(self, inst: Instance):
        return await self._answer(self.engine.workflows.status(product=P, env=E, workflow_id=inst.wf),
                                  f"status of {inst.wf}")

    async def _query(self, inst: Instance) -> Any:
        return await self._answer(self.engine.workflows.query(product=P, env=E, workflow_id=inst.wf, query="state"),
                                  f"a query to {inst.wf}")

    async def _signal(self, inst: Instance, payload: dict) -> None:
        await self._answer(self.engine.workflows.signal(product=P, env=E, workflow_id=inst.wf, signal="go",
                                                        payload=payload), f"signal to {inst.wf}")

    async def _update(self, inst: Instance, k: int, bounded: bool = True) -> Any:
        call = self.engine.workflows.update(product=P, env=E, workflow_id=inst.wf, update="note", args={"k": k})
        return await (self._answer(call, f"update to {inst.wf}", UpdateBroken) if bounded else call)

    async def _result(self, inst: Instance):
        return await self._answer(self.engine.workflows.result(product=P, env=E, workflow_id=inst.wf),
                                  f"result of {inst.wf}")

    # -- checks -----------------------------------------------------------------------------

    def _check_state(self, inst: Instance, state: dict, what: str, exact: bool) -> None:
        """What the engine answered for the instance's ``ctx.state``, against the model."""
        if JUNK in repr(state) or not set(state) <= {"got", "notes"}:
            fail(SnapshotBroken, f"{what} of {inst.wf} is {state!r}: a change a caller (or a signal's sender) "
                                 f"made to a value it was handed reached the instance")
        got, notes = state.get("got", []), state.get("notes", [])
        if not (got == inst.got if exact else is_prefix(got, inst.got)):
            fail(DeliveryBroken, f"{what} of {inst.wf}: the workflow received {got}, but the signals signal() "
                                 f"accepted, in the order it returned ({inst.accepted}), give "
                                 f"{inst.got if exact else f'{inst.got} (or a start of it)'}")
        if not (notes == inst.notes if exact else is_prefix(notes, inst.notes)):
            fail(UpdateBroken, f"{what} of {inst.wf}: notes {notes}, but the updates applied were {inst.notes}")

    def _check_output(self, inst: Instance, output: Any, what: str) -> None:
        if not isinstance(output, dict):
            fail(DeliveryBroken, f"{what} of {inst.wf} is {output!r}; the model expects it {inst.expects()}")
        self._check_state(inst, output, what, exact=True)
        consumed = [g for g in output["got"] if g != TIMED_OUT]
        if consumed != inst.accepted:
            fail(DeliveryBroken, f"{inst.wf} consumed {consumed}; signal() accepted {inst.accepted}")

    @staticmethod
    def _vandalize(value: dict) -> None:
        """What a careless caller does with a value it was handed."""
        for key in ("got", "notes"):
            if isinstance(value.get(key), list):
                value[key].append(JUNK)
        value[JUNK] = True

    def _stuck(self, inst: Instance, status) -> str:
        got = list((status.state or {}).get("got", []))
        unconsumed = [n for n in inst.accepted if n not in got]
        return (f"{inst.wf} is stuck: after {PATIENCE_S} s it is {status.status!r}, waiting_for="
                f"{status.waiting_for!r}, and has received {got} while signal() accepted {inst.accepted} "
                f"(not consumed: {unconsumed}); the model expects it {inst.expects()}")

    # -- waiting for the point the model expects ---------------------------------------------

    @staticmethod
    async def _eventually(look: Callable[[], Any]) -> bool:
        """Look (``look()``, maybe async) until it says yes; False once PATIENCE_S and LOOKS are spent."""
        start, looks = time.monotonic(), 0
        while True:
            seen = look()
            if asyncio.iscoroutine(seen):
                seen = await seen
            if seen:
                return True
            looks += 1
            if looks >= LOOKS and time.monotonic() - start >= PATIENCE_S:
                return False
            await asyncio.sleep(0)

    async def _entered(self, inst: Instance, index: int) -> None:
        if await self._eventually(inst.gates[index].entered.is_set):
            return
        where = "" if inst.update is not None else (  # (with an update queued, the instance is asked nothing)
            ": " + self._stuck(inst, await self._status(inst)))
        fail(DeliveryBroken, f"{inst.wf} did not enter step gate-{index}{where}")

    async def _blocked_on_wait(self, inst: Instance) -> None:
        """Poll ``status`` until the handler has received what the model says and blocks on its wait."""
        seen = None

        async def there() -> bool:
            nonlocal seen
            seen = await self._status(inst)
            self._check_state(inst, seen.state, "status().state", exact=False)
            if seen.status != "running":
                fail(DeliveryBroken, f"{inst.wf} ended {seen.status!r}; the model expects it {inst.expects()}")
            return seen.state.get("got", []) == inst.got and seen.waiting_for is not None

        if not await self._eventually(there):
            fail(DeliveryBroken, self._stuck(inst, seen))

    async def _settle(self, inst: Instance) -> None:
        """Wait until ``inst`` is where the model says, and check it there."""
        if inst.update is not None:  # inside a step with an update queued behind it: ask it nothing else
            await self._entered(inst, inst.pos)
            return
        if inst.ended == "completed":
            seen = None

            async def ended() -> bool:
                nonlocal seen
                seen = await self._status(inst)
                return seen.status != "running"

            if not await self._eventually(ended) or seen.status != "completed":
                fail(DeliveryBroken, self._stuck(inst, seen))
            result = await self._result(inst)
            self._check_output(inst, result.output, "result().output")
        elif inst.ended == "cancelled":
            status = await self._status(inst)
            if status.status != "cancelled":
                fail(DeliveryBroken, f"{inst.wf} is {status.status!r} after it was cancelled")
            self._check_state(inst, status.state, "status().state", exact=not inst.cut_short)
        elif inst.at == GATE:
            await self._entered(inst, inst.pos)
            self._check_state(inst, (await self._status(inst)).state, "status().state", exact=True)
        else:
            await self._blocked_on_wait(inst)
        inst.seen = True

    # -- rules ---------------------------------------------------------------------------------

    @initialize(plan=plans, wait=st.booleans())
    def first(self, plan, wait):
        self.start(plan, wait)

    @precondition(lambda self: len(self.instances) < MAX_INSTANCES)
    @rule(plan=plans, wait=st.booleans())
    def start(self, plan, wait):
        """Start an instance; with ``wait`` (and a wait first) ``execute`` returns once it blocks."""
        inst = Instance(wf=f"wf-{len(self.instances)}", plan=plan,
                        gates={i: Gate("opened") for i, op in enumerate(plan) if op == GATE})
        self.instances[inst.wf] = inst

        async def go():
            result = await self.engine.workflows.execute(product=P, env=E, tag=TAG, input={"plan": list(plan)},
                                                         workflow_id=inst.wf, wait=wait and plan[0] != GATE)
            if result.status != "running":
                fail(DeliveryBroken, f"execute of {inst.wf} returned {result.status!r}, not 'running'")
        self.call(go(), f"execute {inst.wf}")
        inst.catch_up(self.now)

    # Three rules send signals (hypothesis picks rules uniformly; messages are what this machine is about).
    @precondition(lambda self: self.any(can_send))
    @rule(data=st.data(), settle_first=st.booleans(), mutate=st.booleans())
    def signal(self, data, settle_first, mutate):
        """One signal."""
        self._send(self.pick(data, can_send), 1, False, settle_first, mutate)

    @precondition(lambda self: self.any(can_send))
    @rule(data=st.data(), count=st.integers(2, 3), settle_first=st.booleans(), mutate=st.booleans())
    def signals_back_to_back(self, data, count, settle_first, mutate):
        """Signals one after the other, without waiting for the handler in between."""
        self._send(self.pick(data, can_send), count, False, settle_first, mutate)

    @precondition(lambda self: self.any(can_send))
    @rule(data=st.data(), count=st.integers(2, 3), settle_first=st.booleans(), mutate=st.booleans())
    def signals_at_once(self, data, count, settle_first, mutate):
        """Signals all in flight at once."""
        self._send(self.pick(data, can_send), count, True, settle_first, mutate)

    def _send(self, inst: Instance, count: int, together: bool, settle_first: bool, mutate: bool) -> None:
        """Send up to ``count`` signals (as many as its waits will take), once the handler has reached
        its point (``settle_first``: blocked on a wait or inside a step) or while it may still be
        moving; ``mutate``: the sender changes each payload the moment ``signal()`` returns."""
        mutate = mutate and self.snapshots
        numbers = [self.next_number() for _ in range(min(count, inst.capacity()))]

        async def one(n):
            payload = sent_payload(n)
            await self._signal(inst, payload)
            inst.accepted.append(n)  # in the order signal() returned
            inst.pending.append(n)
            if mutate:
                payload["n"] = JUNK
                payload["tags"].append(JUNK)

        async def go():
            if settle_first:
                await self._settle(inst)
            if together:
                await asyncio.gather(*(one(n) for n in numbers))
            else:
                for n in numbers:
                    await one(n)
        self.call(go(), f"sending {numbers} to {inst.wf}")
        inst.catch_up(self.now)

    @precondition(lambda self: self.any(at_closed_gate))
    @rule(data=st.data(), wait_inside=st.booleans())
    def open_gate(self, data, wait_inside):
        """Let the running step end (``wait_inside``: once the handler is inside it)."""
        inst = self.pick(data, at_closed_gate)

        async def go():
            if wait_inside or inst.update is not None:
                await self._entered(inst, inst.pos)
            await self._open_gate(inst)
        self.call(go(), f"opening gate-{inst.pos} of {inst.wf}")

    async def _open_gate(self, inst: Instance) -> None:
        """Open the gate the handler is in; an update queued behind the step must run now, before
        the handler's next journaled call, and reply."""
        index, update = inst.pos, inst.update
        if update is not None and update.done():
            fail(UpdateBroken, f"the update sent to {inst.wf} while step gate-{index} ran ended before the step "
                               f"did: {update!r}")
        inst.gates[index].open.set()
        inst.opened.add(index)
        if update is not None:
            inst.update = None
            if not await self._eventually(update.done):
                fail(UpdateBroken, f"the update sent to {inst.wf} while step gate-{index} ran got no reply "
                                   f"within {PATIENCE_S} s of the step's end")
            if update.exception() is not None:
                fail(UpdateBroken, f"the update sent to {inst.wf} while step gate-{index} ran was refused: "
                                   f"{update.exception()!r}")
            reply = update.result()
            if reply != inst.notes:
                fail(UpdateBroken, f"update reply {reply!r}, expected {inst.notes!r}")
            steps = [step for wf, k, step in self.update_runs if wf == inst.wf and k == inst.notes[-1]]
            if steps[:1] != [None]:
                fail(UpdateBroken, f"the update ran while step {steps[:1]} of {inst.wf} was running")
            if inst.update_mutate:
                reply.append(JUNK)
        inst.catch_up(self.now)

    @precondition(lambda self: self.any(lambda i: True))
    @rule(data=st.data())
    def settle(self, data):
        """Wait until an instance is where the model says (blocked, inside a step, or ended)."""
        inst = self.pick(data, lambda i: True)
        self.call(self._settle(inst), f"settling {inst.wf}")

    @precondition(lambda self: self.any(reachable))
    @rule(data=st.data(), mutate=st.booleans())
    def query(self, data, mutate):
        """A query's value is what the model allows; mutating it changes nothing."""
        inst = self.pick(data, reachable)
        mutate = mutate and self.snapshots

        async def go():
            value = await self._query(inst)
            self._check_state(inst, value, "the query's value", exact=inst.exact)
            if mutate:
                self._vandalize(value)
                self._check_state(inst, await self._query(inst), "the query's value, after a caller mutated an "
                                                                 "earlier one", exact=inst.exact)
        self.call(go(), f"querying {inst.wf}")

    @precondition(lambda self: self.any(reachable))
    @rule(data=st.data(), mutate=st.booleans())
    def status(self, data, mutate):
        """``status`` agrees with the model; mutating its ``state`` changes nothing."""
        inst = self.pick(data, reachable)
        mutate = mutate and self.snapshots

        async def go():
            status = await self._status(inst)
            if inst.seen and status.status != (inst.ended or "running"):
                fail(DeliveryBroken, f"{inst.wf} is {status.status!r}; the model expects it {inst.expects()}")
            self._check_state(inst, status.state, "status().state", exact=inst.exact)
            if mutate:
                self._vandalize(status.state)
                self._check_state(inst, (await self._status(inst)).state,
                                  "status().state, after a caller mutated an earlier one", exact=inst.exact)
        self.call(go(), f"status of {inst.wf}")

    @precondition(lambda self: self.any(can_update))
    @rule(data=st.data(), mutate=st.booleans())
    def update(self, data, mutate):
        """An update while the handler waits (applied at once), inside a step (applied when the step
        ends, before the handler's next journaled call) or after the end (refused)."""
        inst = self.pick(data, can_update)
        mutate = mutate and self.snapshots
        k = self.next_number()

        async def go():
            await self._settle(inst)
            if inst.ended is not None:
                with pytest.raises(sagaloop.WorkflowEndedError):
                    await self._update(inst, k)
            elif inst.at == GATE:
                inst.notes.append(k)
                inst.update = self._task(self._update(inst, k, bounded=False))
                inst.update_mutate = mutate
            else:
                reply = await self._update(inst, k)
                inst.notes.append(k)
                if reply != inst.notes:
                    fail(UpdateBroken, f"update reply {reply!r}, expected {inst.notes!r}")
                if mutate:
                    reply.append(JUNK)
                    self._check_state(inst, await self._query(inst),
                                      "the query's value, after a caller mutated an update's reply", exact=True)
        self.call(go(), f"update {k} to {inst.wf}")

    @precondition(lambda self: self.cancels < MAX_CANCELS and self.any(running))
    @rule(data=st.data(), settle_first=st.booleans())
    def cancel(self, data, settle_first):
        inst = self.pick(data, running)
        self.cancels += 1

        async def go():
            if settle_first:
                await self._settle(inst)
            result = await self._answer(self.engine.workflows.cancel(product=P, env=E, workflow_id=inst.wf,
                                                                     reason="machine"), f"cancel of {inst.wf}")
            if not (result.cancelled and result.status == "cancelled"):
                fail(DeliveryBroken, f"cancel of running {inst.wf} returned {result!r}")
        self.call(go(), f"cancelling {inst.wf}")
        inst.cut_short = not inst.seen
        inst.ended, inst.deadline, inst.seen = "cancelled", None, False

    def _deadlines(self) -> list[int]:
        return [i.deadline for i in self.instances.values() if i.ended is None and i.deadline is not None]

    @precondition(lambda self: not self.any(lambda i: i.update is not None) and self._deadlines())
    @rule(share=st.integers(1, 99))
    def pass_time(self, share):
        """Let virtual time pass, ``share`` % of the way to the next signal timeout: nothing fires
        (so later waits start, and restarts happen, part-way through other waits)."""
        async def go():
            for inst in self.instances.values():
                await self._settle(inst)  # every wait's deadline is set before time moves
            room = min(self._deadlines()) - self.now - 1
            if room >= 1:
                ms = max(1, room * share // 100)
                await self.clock.advance(ms, wait_for_steps=False)  # gated steps stay held
                self.now += ms
        self.call(go(), "letting time pass")

    @precondition(lambda self: not self.any(lambda i: i.update is not None) and self._deadlines())
    @rule()
    def time_out(self):
        """Advance virtual time to the next signal timeout: those waits (and only those) time out."""
        self.call(self._time_out(), "advancing to the next signal timeout")

    async def _time_out(self) -> None:
        for inst in self.instances.values():
            await self._settle(inst)  # every wait's deadline is set before time moves
        due = min(self._deadlines())
        assert self.clock.now_ms() == self.now
        # Only to the earliest: what follows it starts at `due`. Gated steps stay held meanwhile.
        await self.clock.advance(due - self.now, wait_for_steps=False)
        self.now = due
        for inst in self.instances.values():
            if inst.ended is None and inst.deadline == due:
                inst.got.append(TIMED_OUT)
                inst.pos += 1
                inst.deadline = None
                inst.catch_up(self.now)

    @precondition(lambda self: self.restarts < MAX_RESTARTS and not self.any(lambda i: i.update is not None))
    @rule()
    def restart(self):
        """Close the engine and open a new one on the same directory; in-flight instances resume."""
        self.restarts += 1

        async def go():
            await self.engine.close()
            for inst in self.instances.values():
                for gate in inst.gates.values():
                    gate.rearm()
                inst.seen = False
            await self._open()
        self.call(go(), "restarting the engine")

    @precondition(lambda self: self.any(has_ended))
    @rule(data=st.data())
    def signal_ended(self, data):
        """An ended instance refuses a signal (and it is not in its history)."""
        inst = self.pick(data, has_ended)

        async def go():
            await self._settle(inst)
            with pytest.raises(sagaloop.WorkflowEndedError):
                await self._signal(inst, sent_payload(-1))
        self.call(go(), f"signalling ended {inst.wf}")

    # -- the end of a program ----------------------------------------------------------------

    def teardown(self) -> None:
        try:
            if not self.failed:
                self.call(self._finish(), "finishing every instance")
        finally:
            self._close()

    async def _finish(self) -> None:
        """Let every instance run to its end (gently: one gate, signal or timeout at a time, then
        wait), then check it all."""
        for inst in self.instances.values():
            if inst.update is not None:
                await self._entered(inst, inst.pos)
                await self._open_gate(inst)
        for inst in self.instances.values():
            while True:
                await self._settle(inst)
                if inst.ended is not None:
                    break
                ends_it = inst.pos == len(inst.plan) - 1 and (
                    inst.at != TIMED or inst.deadline == min(self._deadlines()))  # (the next timeout may be another's)
                # Two callers wait for the end: each must get a value of its own.
                waiting = [self._task(self._result(inst)) for _ in range(2)] if ends_it and self.snapshots else []
                if inst.at == GATE:
                    inst.gates[inst.pos].open.set()
                    inst.opened.add(inst.pos)
                    inst.catch_up(self.now)
                elif inst.at == TIMED:
                    await self._time_out()
                else:
                    n = self.next_number()
                    await self._signal(inst, sent_payload(n))
                    inst.accepted.append(n)
                    inst.pending.append(n)
                    inst.catch_up(self.now)
                if waiting:
                    if not await self._eventually(lambda: all(w.done() for w in waiting)):
                        fail(DeliveryBroken, self._stuck(inst, await self._status(inst)))
                    first, second = (w.result() for w in waiting)
                    if first.status != "completed" or second.status != "completed":
                        fail(DeliveryBroken, self._stuck(inst, await self._status(inst)))
                    self._vandalize(first.output)
                    self._check_output(inst, second.output, "result().output, after another caller mutated theirs")
        for inst in self.instances.values():
            await self._settle(inst)
            history = await self._answer(self.engine.workflows.history(product=P, env=E, workflow_id=inst.wf),
                                         f"history of {inst.wf}")
            received = [(e.data.get("signal"), e.data.get("payload")) for e in history.events
                        if e.type == "signal_received"]
            if received != [("go", sent_payload(n)) for n in inst.accepted]:
                fail(SnapshotBroken if JUNK in repr(received) else DeliveryBroken,
                     f"the signal_received history of {inst.wf} is {received}; signal() accepted "
                     f"{inst.accepted}, in that order")
        during_steps = [(wf, k, step) for wf, k, step in self.update_runs if step is not None]
        if during_steps:
            fail(UpdateBroken, f"updates ran while a step was running: {during_steps}")

    def _close(self) -> None:
        """Close the engine, end what a failed program left running, drop the loop and the directory."""
        async def cancel(tasks):
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        loop = self.loop
        try:
            for inst in self.instances.values():  # a failed program may leave steps (and updates) blocked
                for gate in inst.gates.values():
                    gate.open.set()
            loop.run_until_complete(cancel(self.tasks))
            if self.engine is not None:
                loop.run_until_complete(asyncio.wait_for(self.engine.close(), RULE_S))
        finally:
            loop.run_until_complete(cancel([t for t in asyncio.all_tasks(loop) if not t.done()]))
            loop.close()
            self._tmp.cleanup()


class DeliveryMachine(MessageMachine):
    """Promises 1 and 2 alone: nobody mutates what they are handed."""

    snapshots = False


SETTINGS = settings(
    max_examples=3000 if LONG else 300,
    stateful_step_count=50 if LONG else 30,
    deadline=None,
    # No explain phase: it replays a failing program many times, and each replay of a stuck one waits.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
TestSignalDelivery = DeliveryMachine.TestCase
TestSignalDelivery.settings = SETTINGS
TestSnapshots = MessageMachine.TestCase
TestSnapshots.settings = SETTINGS
