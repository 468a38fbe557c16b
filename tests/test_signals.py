"""Signals: ``ctx.wait_for_signal`` and ``workflows.signal``.

A signal is appended to the instance's durable inbox before ``signal``
returns; signals that arrive before the wait, or while the process is
down, are kept and delivered in order, each exactly once. Step handlers
count their runs, so "exactly once" is checked against what really ran.
"""

from __future__ import annotations

import asyncio
import functools
import signal as signal_module
import subprocess
import sys
import time
from collections import Counter

import helpers
import pytest
from helpers import Gate
from processes import TESTS_DIR, child_env, load_module

import sagaloop
from sagaloop.testing import VirtualClock, wait_idle

WORKER_PATH = TESTS_DIR / "timer_worker.py"

P, E = "shop", "test"
HOUR = 3_600_000
START = 1_700_000_000_000
send = functools.partial(helpers.send, product=P, env=E)
history_types = functools.partial(helpers.history_types, product=P, env=E)


worker = load_module(WORKER_PATH, "sagaloop_tests_timer_worker_signals")


async def signal_events(engine, wf):
    return [e.data for e in (await engine.workflows.history(product=P, env=E, workflow_id=wf)).events
            if e.type == "signal_received"]


# -- the basic round trip ------------------------------------------------------------------------------


async def test_wait_for_signal_returns_payload_with_signal_name(tmp_path):
    clock = VirtualClock(start_ms=START)
    async with sagaloop.Engine(tmp_path / "data", durability="fast", clock=clock) as engine:
        ran = Counter()

        async def create():
            ran["create"] += 1
            return {"order": 1}

        async def fulfil():
            ran["fulfil"] += 1
            return "shipped"

        @engine.workflows.define(product=P, tag="approval")
        async def approval(ctx):
            await ctx.step("create-order", create)
            approved = await ctx.wait_for_signal("order-approved", timeout="24h")
            await ctx.step("fulfil", fulfil)
            return approved

        t0 = time.monotonic()
        first = await engine.workflows.execute(product=P, env=E, tag="approval", workflow_id="wf-1")
        assert time.monotonic() - t0 < 5
        # execute returns as soon as the instance blocks on the signal.
        assert first.status == "running", first
        assert first.completed_steps == ["create-order"]
        assert ran == Counter({"create": 1})
        status = await engine.workflows.status(product=P, env=E, workflow_id="wf-1")
        assert status.status == "running"

        # Without the signal it waits the whole 24 h: still running 1 ms before its timeout.
        await clock.advance(24 * HOUR - 1)
        waiting = await engine.workflows.result(product=P, env=E, workflow_id="wf-1", timeout=0)
        assert waiting.status == "running"
        assert ran == Counter({"create": 1})

        payload = {"approvedBy": "manager@company.com", "comments": "ok", "timestamp": 12}
        assert await send(engine, "wf-1", "order-approved", payload) is None
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-1")
        assert result.status == "completed", result
        assert result.output == {**payload, "_signal": "order-approved"}
        assert result.completed_steps == ["create-order", "fulfil"]
        assert ran == Counter({"create": 1, "fulfil": 1})

        events = await signal_events(engine, "wf-1")
        assert len(events) == 1, events
        assert events[0]["signal"] == "order-approved"
        assert clock.pending_timers == 0  # the timeout was cancelled with the wait
        types = await history_types(engine, "wf-1")
        assert types.index("step_completed") < types.index("signal_received") < types.index("workflow_completed")


async def test_none_payload_gives_only_signal_name(tmp_path):
    async with sagaloop.Engine(tmp_path / "data", durability="fast") as engine:
        @engine.workflows.define(product=P, tag="w")
        async def w(ctx):
            return await ctx.wait_for_signal("go")

        await engine.workflows.execute(product=P, env=E, tag="w", workflow_id="wf-none")
        await send(engine, "wf-none", "go")
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-none")
        assert result.output == {"_signal": "go"}


async def test_multiple_names_tell_which_arrived(tmp_path):
    clock = VirtualClock(start_ms=START)
    async with sagaloop.Engine(tmp_path / "data", durability="fast", clock=clock) as engine:
        ran = Counter()

        @engine.workflows.define(product=P, tag="decide")
        async def decide(ctx):
            got = await ctx.wait_for_signal(["approved", "rejected", "escalated"], timeout="48h")
            if got["_signal"] == "approved":
                await ctx.step("process", lambda: ran.update(["process"]))
            elif got["_signal"] == "rejected":
                await ctx.step("reject", lambda: ran.update(["reject"]))
            else:
                await ctx.step("notify-manager", lambda: ran.update(["notify"]))
            return got

        for wf, name in (("wf-a", "approved"), ("wf-r", "rejected"), ("wf-e", "escalated")):
            first = await engine.workflows.execute(product=P, env=E, tag="decide", workflow_id=wf)
            assert first.status == "running"
            await send(engine, wf, name, {"who": wf})
            result = await engine.workflows.result(product=P, env=E, workflow_id=wf)
            assert result.status == "completed"
            assert result.output == {"who": wf, "_signal": name}
        assert ran == Counter({"process": 1, "reject": 1, "notify": 1})

        # A signal of another name does not satisfy the wait.
        await engine.workflows.execute(product=P, env=E, tag="decide", workflow_id="wf-other")
        await send(engine, "wf-other", "unrelated", {"x": 1})
        await clock.advance(47 * HOUR)
        still = await engine.workflows.result(product=P, env=E, workflow_id="wf-other", timeout=0)
        assert still.status == "running"
        await send(engine, "wf-other", "rejected")
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-other")
        assert result.output == {"_signal": "rejected"}


# -- signals sent before the wait ----------------------------------------------------------------------


async def test_signals_sent_before_the_wait_are_consumed_in_order(tmp_path):
    clock = VirtualClock()
    async with sagaloop.Engine(tmp_path / "data", durability="fast", clock=clock) as engine:
        gate = Gate()

        @engine.workflows.define(product=P, tag="collect")
        async def collect(ctx):
            await ctx.step("gate", gate)
            got = []
            for _ in range(4):
                got.append(await ctx.wait_for_signal("item"))
            return got

        await engine.workflows.execute(product=P, env=E, tag="collect", workflow_id="wf-order", wait=False)
        await asyncio.wait_for(gate.entered.wait(), 5)
        for n in range(1, 4):
            await send(engine, "wf-order", "item", {"n": n})
        gate.open.set()
        # The three early ones are taken by three waits; the fourth wait blocks (the engine goes idle).
        await clock.settle()
        blocked = await engine.workflows.result(product=P, env=E, workflow_id="wf-order", timeout=0)
        assert blocked.status == "running"
        await send(engine, "wf-order", "item", {"n": 4})
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-order")
        assert result.status == "completed"
        assert result.output == [{"n": n, "_signal": "item"} for n in range(1, 5)]
        assert [d["payload"] for d in await signal_events(engine, "wf-order")] == [{"n": n} for n in range(1, 5)]


async def test_waiting_for_the_second_name_leaves_the_first_for_a_later_wait(tmp_path):
    async with sagaloop.Engine(tmp_path / "data", durability="fast") as engine:
        gate = Gate()

        @engine.workflows.define(product=P, tag="pick")
        async def pick(ctx):
            await ctx.step("gate", gate)
            b = await ctx.wait_for_signal("b")
            either = await ctx.wait_for_signal(["a", "b"])
            a_again = await ctx.wait_for_signal("a")
            return [b, either, a_again]

        await engine.workflows.execute(product=P, env=E, tag="pick", workflow_id="wf-pick", wait=False)
        await asyncio.wait_for(gate.entered.wait(), 5)
        await send(engine, "wf-pick", "a", {"n": 1})
        await send(engine, "wf-pick", "b", {"n": 2})
        await send(engine, "wf-pick", "a", {"n": 3})
        gate.open.set()
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-pick", timeout="10s")
        assert result.status == "completed", result
        # "b" is taken first though "a" came earlier; then the oldest of a/b is the first "a".
        assert result.output == [{"n": 2, "_signal": "b"}, {"n": 1, "_signal": "a"}, {"n": 3, "_signal": "a"}]


async def test_signal_arriving_while_a_step_runs_is_kept_for_the_next_wait(tmp_path):
    async with sagaloop.Engine(tmp_path / "data", durability="fast") as engine:
        gate = Gate()

        @engine.workflows.define(product=P, tag="mid")
        async def mid(ctx):
            first = await ctx.wait_for_signal("go")
            await ctx.step("gate", gate)
            second = await ctx.wait_for_signal("go")
            return [first, second]

        await engine.workflows.execute(product=P, env=E, tag="mid", workflow_id="wf-mid")
        await send(engine, "wf-mid", "go", {"n": 1})
        await asyncio.wait_for(gate.entered.wait(), 5)
        await send(engine, "wf-mid", "go", {"n": 2})
        gate.open.set()
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-mid", timeout="10s")
        assert result.output == [{"n": 1, "_signal": "go"}, {"n": 2, "_signal": "go"}]


# -- across restarts: exactly once ---------------------------------------------------------------------


def define_two_waits(engine, ran: Counter) -> None:
    """``first`` step, wait ``go``, step ``s1``, wait ``go``, step ``s2``."""

    async def first():
        ran["first"] += 1
        return 0

    async def s1():
        ran["s1"] += 1
        return 1

    async def s2():
        ran["s2"] += 1
        return 2

    @engine.workflows.define(product=P, tag="twice")
    async def twice(ctx):
        await ctx.step("first", first)
        one = await ctx.wait_for_signal("go")
        await ctx.step("s1", s1)
        two = await ctx.wait_for_signal("go")
        await ctx.step("s2", s2)
        return [one, two]


async def test_consumed_signal_is_not_delivered_again_after_reopen(tmp_path):
    data = tmp_path / "data"
    ran = Counter()
    async with sagaloop.Engine(data, durability="fast") as engine:
        define_two_waits(engine, ran)
        first = await engine.workflows.execute(product=P, env=E, tag="twice", workflow_id="wf-twice")
        assert first.status == "running"
        await send(engine, "wf-twice", "go", {"n": 1})
        await wait_idle(engine)  # the handler took it and blocked again on the second wait
        status = await engine.workflows.status(product=P, env=E, workflow_id="wf-twice")
        assert status.completed_steps == ["first", "s1"]
    assert ran == Counter(first=1, s1=1)

    clock = VirtualClock()
    async with sagaloop.Engine(data, durability="fast", clock=clock) as engine:
        define_two_waits(engine, ran)
        # The recovered run replays the first wait from its journal; the second must stay blocked.
        await clock.settle()  # until the recovered run is idle
        still = await engine.workflows.result(product=P, env=E, workflow_id="wf-twice", timeout=0)
        assert still.status == "running", f"the consumed signal was delivered again: {still}"
        assert ran == Counter(first=1, s1=1)
        await send(engine, "wf-twice", "go", {"n": 2})
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-twice", timeout="10s")
        assert result.status == "completed", result
        assert result.output == [{"n": 1, "_signal": "go"}, {"n": 2, "_signal": "go"}]
        assert ran == Counter(first=1, s1=1, s2=1)
        assert [d["payload"] for d in await signal_events(engine, "wf-twice")] == [{"n": 1}, {"n": 2}]


async def test_pending_signal_survives_close_and_is_delivered_exactly_once(tmp_path):
    """Sent before the wait that takes it, engine closed, reopened: delivered once, in order."""
    data = tmp_path / "data"
    ran = Counter()

    def define(engine):
        async def done():
            ran["done"] += 1
            return "done"

        @engine.workflows.define(product=P, tag="ab")
        async def ab(ctx):
            a = await ctx.wait_for_signal("a")
            b1 = await ctx.wait_for_signal("b")
            b2 = await ctx.wait_for_signal("b")
            await ctx.step("done", done)
            return [a, b1, b2]

    async with sagaloop.Engine(data, durability="fast") as engine:
        define(engine)
        await engine.workflows.execute(product=P, env=E, tag="ab", workflow_id="wf-ab")
        await send(engine, "wf-ab", "b", {"n": 1})  # waits in the inbox: the handler wants "a"
        await send(engine, "wf-ab", "b", {"n": 2})

    async with sagaloop.Engine(data, durability="fast") as engine:
        define(engine)
        await send(engine, "wf-ab", "a", {"n": 0})
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-ab", timeout="10s")
        assert result.status == "completed", result
        assert result.output == [{"n": 0, "_signal": "a"}, {"n": 1, "_signal": "b"}, {"n": 2, "_signal": "b"}]
        assert ran == Counter(done=1)
        events = await signal_events(engine, "wf-ab")
        assert [(d["signal"], d["payload"]) for d in events] == [("b", {"n": 1}), ("b", {"n": 2}),
                                                                ("a", {"n": 0})]


async def test_signal_to_instance_not_yet_defined_after_reopen_is_delivered_on_define(tmp_path):
    data = tmp_path / "data"
    ran = Counter()
    clock = VirtualClock()
    async with sagaloop.Engine(data, durability="fast", clock=clock) as engine:
        define_two_waits(engine, ran)
        await engine.workflows.execute(product=P, env=E, tag="twice", workflow_id="wf-orphan")
        await send(engine, "wf-orphan", "go", {"n": 1})
        await clock.settle()  # it takes the signal, runs s1 and blocks on the second wait
    assert ran == Counter(first=1, s1=1)

    async with sagaloop.Engine(data, durability="fast") as engine:
        # The workflow is in flight but its definition is not registered in this process yet.
        status = await engine.workflows.status(product=P, env=E, workflow_id="wf-orphan")
        assert status.status == "running"
        await send(engine, "wf-orphan", "go", {"n": 2})  # kept in the durable inbox
        assert ran == Counter(first=1, s1=1)
        define_two_waits(engine, ran)
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-orphan", timeout="10s")
        assert result.status == "completed", result
        assert result.output == [{"n": 1, "_signal": "go"}, {"n": 2, "_signal": "go"}]
        assert ran == Counter(first=1, s1=1, s2=1)
        # Every signal is in the history once, including the one sent while the definition was missing.
        events = await signal_events(engine, "wf-orphan")
        assert [d["payload"] for d in events] == [{"n": 1}, {"n": 2}], events


async def test_signal_sent_to_undefined_instance_after_engine_closed_twice(tmp_path):
    """Two signals sent to an orphan across two process lives keep their order and are each taken once."""
    data = tmp_path / "data"
    ran = Counter()
    async with sagaloop.Engine(data, durability="fast") as engine:
        define_two_waits(engine, ran)
        await engine.workflows.execute(product=P, env=E, tag="twice", workflow_id="wf-o2")
    async with sagaloop.Engine(data, durability="fast") as engine:
        await send(engine, "wf-o2", "go", {"n": 1})
    async with sagaloop.Engine(data, durability="fast") as engine:
        await send(engine, "wf-o2", "go", {"n": 2})
        define_two_waits(engine, ran)
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-o2", timeout="10s")
    assert result.status == "completed", result
    assert result.output == [{"n": 1, "_signal": "go"}, {"n": 2, "_signal": "go"}]
    assert ran == Counter(first=1, s1=1, s2=1)


async def test_concurrent_signals_to_undefined_instance_are_all_kept(tmp_path):
    """Signals sent at once to an instance whose definition is not registered: none overwrites another."""
    data = tmp_path / "data"

    def define(engine):
        @engine.workflows.define(product=P, tag="many")
        async def many(ctx):
            return [await ctx.wait_for_signal("item") for _ in range(ctx.input["n"])]

    async with sagaloop.Engine(data, durability="fast") as engine:
        define(engine)
        await engine.workflows.execute(product=P, env=E, tag="many", workflow_id="wf-many", input={"n": 6})
    async with sagaloop.Engine(data, durability="fast") as engine:
        await asyncio.gather(*(send(engine, "wf-many", "item", {"i": i}) for i in range(6)))
        define(engine)
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-many", timeout=3000)
        assert result.status == "completed", f"signals were lost: {result}"
        assert sorted(item["i"] for item in result.output) == list(range(6))


@pytest.mark.slow  # real processes, SIGKILLed
def test_signal_is_durable_when_signal_returns(tmp_path):
    """A real process sends two signals and SIGKILLs itself the moment ``signal`` returns: none is lost."""
    if not hasattr(signal_module, "SIGKILL"):
        pytest.skip("needs SIGKILL")
    datadir, sidefile = tmp_path / "data", tmp_path / "side.log"
    proc = subprocess.run([sys.executable, str(WORKER_PATH), "signal-die", str(datadir), str(sidefile),
                           "--workflow-id", "wf-die"],
                          capture_output=True, text=True, timeout=30, env=child_env(unbuffered=False),
                          cwd=str(tmp_path))
    assert proc.returncode == -signal_module.SIGKILL, (proc.returncode, proc.stdout, proc.stderr)
    assert "STARTED wf-die running" in proc.stdout, proc.stdout + proc.stderr

    async def resume():
        async with sagaloop.Engine(datadir) as engine:
            worker.define_workflows(engine, sidefile)
            result = await worker.wait_until_ended(engine, "wf-die", timeout=20)
            history = await engine.workflows.history(product=worker.PRODUCT, env=worker.ENV, workflow_id="wf-die")
            return result, [e for e in history.events if e.type == "signal_received"]

    result, received = asyncio.run(resume())
    assert result.status == "completed", result
    assert result.output == {"a": {"n": 1, "_signal": "a"}, "b": {"n": 2, "_signal": "b"}}
    assert [(e.data["signal"], e.data["payload"]) for e in received] == [("b", {"n": 2}), ("a", {"n": 1})]
    assert 1 <= Counter(n for n, _ in worker.read_side_effects(sidefile))["done"] <= 2


# -- timeouts ----------------------------------------------------------------------------------------


async def test_signal_timeout_caught_by_the_handler(tmp_path):
    clock = VirtualClock(start_ms=START)
    async with sagaloop.Engine(tmp_path / "data", durability="fast", clock=clock) as engine:
        @engine.workflows.define(product=P, tag="patient")
        async def patient(ctx):
            t0 = clock.now_ms()
            try:
                await ctx.wait_for_signal(["yes", "no"], timeout=150)
            except sagaloop.SignalTimeoutError as exc:
                assert isinstance(exc, sagaloop.SagaloopError)
                return {"code": exc.code, "waited": clock.now_ms() - t0}
            return {"code": None}

        first = await engine.workflows.execute(product=P, env=E, tag="patient", workflow_id="wf-t")
        assert first.status == "running"
        await clock.advance(149)
        assert (await engine.workflows.status(product=P, env=E, workflow_id="wf-t")).status == "running"
        await clock.advance(1)
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-t", timeout="5s")
        assert result.status == "completed", result
        assert result.output["code"] == "signal_timeout"
        assert result.output["waited"] == 150
        # Once it ended, a late signal is refused.
        with pytest.raises(sagaloop.WorkflowEndedError):
            await send(engine, "wf-t", "yes")


async def test_signal_arriving_before_the_timeout_wins(tmp_path):
    clock = VirtualClock(start_ms=START)
    async with sagaloop.Engine(tmp_path / "data", durability="fast", clock=clock) as engine:
        @engine.workflows.define(product=P, tag="quick")
        async def quick(ctx):
            return await ctx.wait_for_signal("go", timeout="5s")

        await engine.workflows.execute(product=P, env=E, tag="quick", workflow_id="wf-q")
        await clock.advance(4999)  # the last millisecond before the timeout
        t0 = time.monotonic()
        await send(engine, "wf-q", "go", {"ok": True})
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-q")
        assert result.status == "completed"
        assert result.output == {"ok": True, "_signal": "go"}
        assert time.monotonic() - t0 < 2
        assert clock.pending_timers == 0  # the timeout was cancelled
        await clock.advance("1h")
        assert (await engine.workflows.result(product=P, env=E, workflow_id="wf-q")).output == result.output


async def test_uncaught_signal_timeout_fails_and_rolls_back(tmp_path):
    clock = VirtualClock(start_ms=START)
    async with sagaloop.Engine(tmp_path / "data", durability="fast", clock=clock) as engine:
        undone = []

        @engine.workflows.define(product=P, tag="impatient")
        async def impatient(ctx):
            await ctx.step("reserve", lambda: {"r": 1}, lambda out: undone.append(("reserve", out)))
            await ctx.step("charge", lambda: {"c": 2}, lambda out: undone.append(("charge", out)))
            await ctx.wait_for_signal("approved", timeout=100)
            await ctx.step("ship", lambda: undone.append(("ship-ran", None)))
            return "unreachable"

        first = await engine.workflows.execute(product=P, env=E, tag="impatient", workflow_id="wf-u")
        assert first.status == "running"
        await clock.advance(99)
        assert undone == []
        await clock.advance(1)
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-u", timeout="5s")
        assert result.status == "rolled_back", result
        assert result.error is not None and result.error.code == "signal_timeout", result.error
        assert result.rollback_result is not None
        assert result.rollback_result.rolled_back_steps == ["charge", "reserve"]
        assert result.rollback_result.success is True
        assert undone == [("charge", {"c": 2}), ("reserve", {"r": 1})]
        assert result.output is None
        types = await history_types(engine, "wf-u")
        assert "signal_received" not in types
        assert types[-1] == "workflow_rolled_back"


# -- errors --------------------------------------------------------------------------------------------


async def test_signal_to_unknown_or_ended_instance_raises(tmp_path):
    async with sagaloop.Engine(tmp_path / "data", durability="fast") as engine:
        @engine.workflows.define(product=P, tag="quick")
        async def quick(ctx):
            return await ctx.wait_for_signal("go")

        with pytest.raises(sagaloop.WorkflowNotFoundError) as info:
            await send(engine, "wf-missing", "go")
        assert info.value.code == "workflow_not_found"
        assert "wf-missing" in str(info.value)

        await engine.workflows.execute(product=P, env=E, tag="quick", workflow_id="wf-x")
        # Right id, wrong env or product: not found either.
        with pytest.raises(sagaloop.WorkflowNotFoundError):
            await engine.workflows.signal(product=P, env="other", workflow_id="wf-x", signal="go")
        with pytest.raises(sagaloop.WorkflowNotFoundError):
            await engine.workflows.signal(product="other", env=E, workflow_id="wf-x", signal="go")

        await send(engine, "wf-x", "go", {"n": 1})
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-x")
        assert result.status == "completed"
        history_before = await history_types(engine, "wf-x")
        with pytest.raises(sagaloop.WorkflowEndedError) as info:
            await send(engine, "wf-x", "go", {"n": 2})
        assert info.value.code == "workflow_ended"
        assert "wf-x" in str(info.value)
        assert await history_types(engine, "wf-x") == history_before
        final = await engine.workflows.result(product=P, env=E, workflow_id="wf-x")
        assert final.output == {"n": 1, "_signal": "go"}


async def test_signal_to_ended_instance_after_reopen_raises(tmp_path):
    data = tmp_path / "data"
    async with sagaloop.Engine(data, durability="fast") as engine:
        @engine.workflows.define(product=P, tag="quick")
        async def quick(ctx):
            return await ctx.wait_for_signal("go")

        await engine.workflows.execute(product=P, env=E, tag="quick", workflow_id="wf-y")
        await send(engine, "wf-y", "go")
        await engine.workflows.result(product=P, env=E, workflow_id="wf-y")
    async with sagaloop.Engine(data, durability="fast") as engine:
        with pytest.raises(sagaloop.WorkflowEndedError):
            await send(engine, "wf-y", "go")
        with pytest.raises(sagaloop.WorkflowNotFoundError):
            await send(engine, "wf-nope", "go")


@pytest.mark.parametrize("payload", [[1, 2], "text", 5, ("a",), {1, 2}])
async def test_payload_must_be_dict_or_none(tmp_path, payload):
    clock = VirtualClock()
    async with sagaloop.Engine(tmp_path / "data", durability="fast", clock=clock) as engine:
        @engine.workflows.define(product=P, tag="quick")
        async def quick(ctx):
            return await ctx.wait_for_signal("go")

        await engine.workflows.execute(product=P, env=E, tag="quick", workflow_id="wf-p")
        with pytest.raises(sagaloop.InvalidArgumentError):
            await send(engine, "wf-p", "go", payload)
        # Nothing was delivered: the instance still waits, and the next good signal is the one it gets.
        await clock.settle()
        still = await engine.workflows.result(product=P, env=E, workflow_id="wf-p", timeout=0)
        assert still.status == "running"
        await send(engine, "wf-p", "go", {"good": True})
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-p")
        assert result.output == {"good": True, "_signal": "go"}
        assert len(await signal_events(engine, "wf-p")) == 1


async def test_bad_signal_names_are_refused(tmp_path):
    async with sagaloop.Engine(tmp_path / "data", durability="fast") as engine:
        @engine.workflows.define(product=P, tag="quick")
        async def quick(ctx):
            return await ctx.wait_for_signal("go")

        @engine.workflows.define(product=P, tag="bad-wait")
        async def bad_wait(ctx):
            return await ctx.wait_for_signal([])

        await engine.workflows.execute(product=P, env=E, tag="quick", workflow_id="wf-n")
        for bad in ("", None, 3):
            with pytest.raises(sagaloop.InvalidArgumentError):
                await send(engine, "wf-n", bad)
        result = await engine.workflows.execute(product=P, env=E, tag="bad-wait")
        assert result.status == "failed"
        assert result.error.code == "invalid_argument"
