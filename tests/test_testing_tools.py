"""``sagaloop.testing.wait_idle`` and the idleness rule ``VirtualClock.advance`` shares with it.

Idle: every queued write committed, every live run blocked on a signal, a
timer or a child (or ended), nothing being loaded back, no background task
of the engine pending. No test here checks how long anything took (the
machine is shared): each checks what is true once ``wait_idle`` returns.
"""

from __future__ import annotations

import asyncio

import pytest
from helpers import FailingStore

import sagaloop
from sagaloop.testing import VirtualClock, wait_idle

P, E = "tools", "test"
START = 1_700_000_000_000
HOUR = 3_600_000


def runtime_of(engine):
    return engine._runtime


async def status_of(engine, wf):
    return await engine.workflows.status(product=P, env=E, workflow_id=wf)


def all_committed(engine) -> bool:
    return runtime_of(engine).store.commit().done()


async def test_it_returns_on_an_idle_engine_an_empty_one_and_a_closed_one(tmp_path):
    engine = sagaloop.Engine(tmp_path / "db", durability="fast")
    await wait_idle(engine, timeout=5)  # not opened yet
    async with engine:
        await wait_idle(engine, timeout=5)  # open, nothing defined

        @engine.workflows.define(product=P, tag="quick")
        async def quick(ctx):
            return await ctx.step("s", lambda: 1)

        done = await engine.workflows.execute(product=P, env=E, tag="quick")
        assert done.status == "completed"
        await wait_idle(engine, timeout=5)
        assert all_committed(engine)
    await wait_idle(engine, timeout=5)  # closed


async def test_it_waits_for_a_step_that_really_runs(tmp_path):
    events: list[str] = []

    async def work():
        events.append("began")
        await asyncio.sleep(0.2)  # the step's real work: what wait_idle must wait for
        events.append("ended")
        return "worked"

    async with sagaloop.Engine(tmp_path / "db", durability="fast") as engine:
        @engine.workflows.define(product=P, tag="work")
        async def wf(ctx):
            out = await ctx.step("work", work)
            await ctx.wait_for_signal("go")
            return out

        await engine.workflows.execute(product=P, env=E, tag="work", workflow_id="wf-w", wait=False)
        await wait_idle(engine)
        assert events == ["began", "ended"]
        assert all_committed(engine)
        status = await status_of(engine, "wf-w")
        assert status.status == "running" and status.completed_steps == ["work"]
        assert status.waiting_for == "signal go"


async def test_it_waits_for_a_run_to_end(tmp_path):
    async with sagaloop.Engine(tmp_path / "db", durability="fast") as engine:
        @engine.workflows.define(product=P, tag="steps")
        async def wf(ctx):
            for i in range(5):
                async def step(i=i):
                    await asyncio.sleep(0.01)  # real work
                    return i
                await ctx.step(f"s{i}", step)
            return "done"

        await engine.workflows.execute(product=P, env=E, tag="steps", workflow_id="wf-s", wait=False)
        await wait_idle(engine)
        status = await status_of(engine, "wf-s")
        assert status.status == "completed", status
        assert status.completed_steps == [f"s{i}" for i in range(5)]


async def test_it_returns_when_runs_are_blocked_on_a_signal_a_timer_and_a_child(tmp_path):
    async with sagaloop.Engine(tmp_path / "db", durability="fast") as engine:
        @engine.workflows.define(product=P, tag="signal")
        async def on_signal(ctx):
            await ctx.step("before", lambda: 1)
            return await ctx.wait_for_signal("go")

        @engine.workflows.define(product=P, tag="timer")
        async def on_timer(ctx):
            await ctx.step("before", lambda: 1)
            await ctx.sleep("1h")  # the real clock: it stays blocked for the whole test

        @engine.workflows.define(product=P, tag="parent")
        async def parent(ctx):
            await ctx.step("before", lambda: 1)
            return await ctx.workflow("child-1", "signal", None)

        for tag in ("signal", "timer", "parent"):
            await engine.workflows.execute(product=P, env=E, tag=tag, workflow_id=f"wf-{tag}", wait=False)
        await wait_idle(engine)
        assert all_committed(engine)
        waits = {wf: (await status_of(engine, wf)).waiting_for
                 for wf in ("wf-signal", "wf-timer", "wf-parent", "child-1")}
        assert waits["wf-signal"] == "signal go"
        assert waits["wf-timer"].startswith("timer ")
        assert waits["wf-parent"] == "child child-1"
        assert waits["child-1"] == "signal go"

        # The child's signal: it ends, its parent takes its output and ends too.
        await engine.workflows.signal(product=P, env=E, workflow_id="child-1", signal="go", payload={"n": 1})
        await wait_idle(engine)
        parent_end = await status_of(engine, "wf-parent")
        assert parent_end.status == "completed", parent_end
        assert (await status_of(engine, "wf-signal")).waiting_for == "signal go"


async def test_it_raises_timeout_error_naming_the_busy_run_and_its_step(tmp_path):
    gate = asyncio.Event()
    async with sagaloop.Engine(tmp_path / "db", durability="fast") as engine:
        @engine.workflows.define(product=P, tag="held")
        async def held(ctx):
            await ctx.step("held-step", gate.wait)
            return "released"

        @engine.workflows.define(product=P, tag="waits")
        async def waits(ctx):
            await ctx.wait_for_signal("go")

        await engine.workflows.execute(product=P, env=E, tag="waits", workflow_id="wf-blocked", wait=False)
        await engine.workflows.execute(product=P, env=E, tag="held", workflow_id="wf-held", wait=False)
        with pytest.raises(TimeoutError) as info:
            await wait_idle(engine, timeout=0.3)
        message = str(info.value)
        assert "wf-held" in message and "held-step" in message and "'held'" in message, message
        assert "wf-blocked" not in message, message  # blocked on its signal: not busy

        gate.set()
        await wait_idle(engine)
        assert (await status_of(engine, "wf-held")).status == "completed"


async def test_a_run_stopped_by_a_failed_commit_is_busy_until_it_resumes(tmp_path):
    store = FailingStore(tmp_path / "db", durability="fast")
    engine = sagaloop.Engine(tmp_path / "db", durability="fast", store=store)  # the runtime only sees the Store
    fail = {"wf-once": 2, "wf-stuck": 10_000}  # group commits to fail, from the one holding step "b"'s end
    runs: list[str] = []
    async with engine:
        @engine.workflows.define(product=P, tag="steps")
        async def wf(ctx):
            await ctx.step("a", lambda: 1)

            async def b():
                runs.append(ctx.workflow_id)
                if ctx.workflow_id in fail:  # once per run
                    store.fail_groups = fail.pop(ctx.workflow_id)
                await asyncio.sleep(0)
                return 2
            await ctx.step("b", b)
            return await ctx.wait_for_signal("go")

        await engine.workflows.execute(product=P, env=E, tag="steps", workflow_id="wf-once", wait=False)
        await wait_idle(engine)  # stopped at its last commit, resumed after a pause, then blocked
        status = await status_of(engine, "wf-once")
        assert status.status == "running" and status.waiting_for == "signal go", status
        assert status.completed_steps == ["a", "b"]
        assert runs == ["wf-once", "wf-once"]  # "b" ran again after the resume

        # While the store keeps failing, the run is stopped and resumed again and again: busy.
        await engine.workflows.execute(product=P, env=E, tag="steps", workflow_id="wf-stuck", wait=False)
        with pytest.raises(TimeoutError) as info:
            await wait_idle(engine, timeout=0.3)
        assert "wf-stuck" in str(info.value), str(info.value)
        assert "wf-once" not in str(info.value), str(info.value)
        store.fail_groups = 0
        await wait_idle(engine)
        assert (await status_of(engine, "wf-stuck")).waiting_for == "signal go"


async def test_it_waits_for_the_runs_loaded_back_at_open(tmp_path):
    def define(engine):
        @engine.workflows.define(product=P, tag="two-waits")
        async def wf(ctx):
            await ctx.wait_for_signal("first")
            await ctx.step("between", lambda: 1)
            await ctx.wait_for_signal("second")

    async with sagaloop.Engine(tmp_path / "db", durability="fast") as engine:
        define(engine)
        for i in range(3):
            await engine.workflows.execute(product=P, env=E, tag="two-waits", workflow_id=f"wf-{i}", wait=False)
        await wait_idle(engine)
        for i in range(3):
            await engine.workflows.signal(product=P, env=E, workflow_id=f"wf-{i}", signal="first")
        await wait_idle(engine)

    async with sagaloop.Engine(tmp_path / "db", durability="fast") as engine:
        define(engine)  # the three runs are loaded back and replayed up to their second wait
        await wait_idle(engine)
        assert not runtime_of(engine).registry.resuming
        for i in range(3):
            status = await status_of(engine, f"wf-{i}")
            assert status.waiting_for == "signal second", status
            assert status.completed_steps == ["between"]


# -- the virtual clock shares the rule ----------------------------------------------------------------


async def test_advance_fires_timers_in_order_with_real_work_between_them(tmp_path):
    """Between two timers a step does real work (a real sleep): advance waits for it, so the timer
    the run sets after it still fires within the span, at the right virtual time."""
    clock = VirtualClock(start_ms=START)
    woke: list[tuple[str, int]] = []

    async def work():
        await asyncio.sleep(0.05)  # real work, in real time
        return clock.now_ms()

    async with sagaloop.Engine(tmp_path / "db", durability="fast", clock=clock) as engine:
        @engine.workflows.define(product=P, tag="naps")
        async def naps(ctx):
            for i in range(3):
                await ctx.sleep(ctx.input["every"])
                woke.append((ctx.workflow_id, clock.now_ms()))
                await ctx.step(f"work-{i}", work)
            return "done"

        await engine.workflows.execute(product=P, env=E, tag="naps", workflow_id="a", input={"every": "1h"},
                                       wait=False)
        await engine.workflows.execute(product=P, env=E, tag="naps", workflow_id="b", input={"every": "100m"},
                                       wait=False)
        await clock.advance("300m")
        for wf in ("a", "b"):
            assert (await status_of(engine, wf)).status == "completed", wf
    minute = 60_000
    assert woke == [("a", START + 60 * minute), ("b", START + 100 * minute), ("a", START + 120 * minute),
                    ("a", START + 180 * minute), ("b", START + 200 * minute), ("b", START + 300 * minute)]


async def test_advance_names_a_step_held_on_purpose_unless_told_not_to_wait_for_steps(tmp_path):
    clock = VirtualClock(start_ms=START)
    gate = asyncio.Event()
    async with sagaloop.Engine(tmp_path / "db", durability="fast", clock=clock) as engine:
        @engine.workflows.define(product=P, tag="held")
        async def held(ctx):
            await ctx.step("held-step", gate.wait)
            await ctx.sleep("1h")
            return clock.now_ms()

        await engine.workflows.execute(product=P, env=E, tag="held", workflow_id="wf-h", wait=False)
        with pytest.raises(TimeoutError) as info:
            await clock.advance("1m", timeout=0.3)
        assert "wf-h" in str(info.value) and "held-step" in str(info.value)
        assert clock.now_ms() == START  # it gave up before moving time
        await clock.advance("1m", wait_for_steps=False)  # the step is held: time moves regardless
        assert clock.now_ms() == START + 60_000
        gate.set()
        await clock.advance("1h")  # the step ends, the sleep it starts then (at 1 min) falls due
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-h", timeout="1s")
    assert result.output == START + 60_000 + HOUR
