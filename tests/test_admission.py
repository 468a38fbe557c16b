"""Admission (max_active_runs): how many runs may be in their first burst of work at once.

The promises: never more than the limit busy at once, first come first served,
a run that waits on a signal, a timer or a step's I/O gives its turn away, and
nothing can deadlock behind the limit (a turn held too long stops counting).
"""

from __future__ import annotations

import asyncio

import pytest

import sagaloop
from sagaloop.runtime.actor.admission import Admission

P, E = "shop", "prd"


def engine_with(tmp_path, limit, **kw) -> sagaloop.Engine:
    return sagaloop.Engine(tmp_path / "db", durability="fast", max_active_runs=limit, **kw)


async def execute(engine, tag: str, **kw) -> sagaloop.WorkflowResult:
    return await engine.workflows.execute(product=P, env=E, tag=tag, **kw)


# -- the Admission object --------------------------------------------------------------------


async def test_slots_go_first_come_first_served_and_a_cancelled_waiter_loses_its_turn():
    admission = Admission(2)
    assert admission.enter() is None and admission.enter() is None  # two slots, taken at once
    third, fourth, fifth = admission.enter(), admission.enter(), admission.enter()
    assert not any(w.done() for w in (third, fourth, fifth)) and admission.active == 2
    fourth.cancel()
    admission.leave()
    assert third.done() and not fifth.done()  # the slot went to the oldest waiter
    admission.leave()
    assert fifth.done()  # the cancelled one was skipped
    admission.leave()
    admission.leave()
    assert admission.active == 0
    admission.close()


async def test_no_limit_admits_everyone_and_bad_limits_are_refused():
    unlimited = Admission(None)
    assert all(unlimited.enter() is None for _ in range(10_000))
    for bad in (0, -1, 1.5, True, "100"):
        with pytest.raises(sagaloop.InvalidArgumentError, match="max_active_runs"):
            Admission(bad)


async def test_a_waiter_is_let_in_beyond_the_limit_once_overdue():
    admission = Admission(1, overdue_s=0.05)
    assert admission.enter() is None
    waiter = admission.enter()  # the slot is never given back
    await asyncio.wait_for(waiter, timeout=2)
    assert admission.active == 2
    admission.close()


# -- runs ------------------------------------------------------------------------------------


async def test_never_more_runs_busy_at_once_than_the_limit(tmp_path):
    busy: set[str] = set()
    most = 0
    async with engine_with(tmp_path, 3) as engine:
        @engine.workflows.define(product=P, tag="cpu")
        async def cpu(ctx):
            nonlocal most
            busy.add(ctx.workflow_id)
            most = max(most, len(busy))
            for i in range(5):
                await ctx.step(f"s{i}", lambda: i)
            busy.discard(ctx.workflow_id)
            return 5

        results = await asyncio.gather(*[execute(engine, "cpu") for _ in range(20)])
    assert [r.status for r in results] == ["completed"] * 20
    assert most == 3  # it was reached, and never passed


async def test_runs_start_in_the_order_they_were_executed(tmp_path):
    started: list[int] = []
    async with engine_with(tmp_path, 1) as engine:
        @engine.workflows.define(product=P, tag="ordered")
        async def ordered(ctx):
            started.append(ctx.input)
            await ctx.step("a", lambda: 1)
            return ctx.input

        await asyncio.gather(*[execute(engine, "ordered", input=i) for i in range(10)])
    assert started == list(range(10))


async def test_a_run_waiting_on_a_signal_or_a_steps_io_holds_no_turn(tmp_path):
    io_done = asyncio.Event()
    async with engine_with(tmp_path, 1) as engine:
        @engine.workflows.define(product=P, tag="waits-signal")
        async def waits_signal(ctx):
            await ctx.step("before", lambda: 1)
            return await ctx.wait_for_signal("go")

        @engine.workflows.define(product=P, tag="waits-io")
        async def waits_io(ctx):
            async def call():
                await io_done.wait()
                return "answered"
            return await ctx.step("call", call)

        @engine.workflows.define(product=P, tag="quick")
        async def quick(ctx):
            return await ctx.step("a", lambda: "quick")

        waiting = await execute(engine, "waits-signal", workflow_id="w-signal")
        assert waiting.status == "running"
        io = asyncio.ensure_future(execute(engine, "waits-io"))
        # With a limit of 1, both of these would hang behind the waiting runs if they held their turn.
        assert (await asyncio.wait_for(execute(engine, "quick"), timeout=0.5)).output == "quick"
        assert not io.done()
        io_done.set()
        assert (await io).output == "answered"
        await engine.workflows.signal(product=P, env=E, workflow_id="w-signal", signal="go", payload={"n": 1})
        final = await engine.workflows.result(product=P, env=E, workflow_id="w-signal")
        assert final.status == "completed" and final.output["n"] == 1


async def test_a_run_rolling_back_holds_no_turn_while_its_compensations_wait(tmp_path):
    undo_started, undo_may_finish = asyncio.Event(), asyncio.Event()
    async with engine_with(tmp_path, 1) as engine:
        engine._runtime._admission.overdue_s = 60  # no overdue rescue in this test

        async def slow_undo(_output):
            undo_started.set()
            await undo_may_finish.wait()

        def fail():
            raise RuntimeError("no stock")

        @engine.workflows.define(product=P, tag="fails", options={"rollback_strategy": "reverse_all"})
        async def fails(ctx):
            await ctx.step("reserve", lambda: 1, slow_undo)
            await ctx.step("ship", fail)

        @engine.workflows.define(product=P, tag="quick")
        async def quick(ctx):
            return await ctx.step("a", lambda: "quick")

        failing = asyncio.ensure_future(execute(engine, "fails"))
        await undo_started.wait()  # it is in its rollback, waiting on the compensation's I/O
        assert (await asyncio.wait_for(execute(engine, "quick"), timeout=1)).output == "quick"
        undo_may_finish.set()
        assert (await failing).status == "rolled_back"


async def test_a_handler_awaiting_another_run_directly_cannot_deadlock_behind_the_limit(tmp_path):
    """Run A holds the only turn while it awaits, in its own body, what run B will do: B is let in
    once A has held the turn too long, and both complete."""
    holding, handed_over = asyncio.Event(), asyncio.Event()
    async with engine_with(tmp_path, 1) as engine:
        engine._runtime._admission.overdue_s = 0.05  # the real default is a second

        @engine.workflows.define(product=P, tag="a")
        async def a(ctx):
            await ctx.step("first", lambda: 1)
            holding.set()
            await handed_over.wait()  # not through ctx: no hook sees it
            return await ctx.step("then", lambda: "a done")

        @engine.workflows.define(product=P, tag="b")
        async def b(ctx):
            return await ctx.step("hand over", handed_over.set) or "b done"

        first = asyncio.ensure_future(execute(engine, "a"))
        await holding.wait()  # A holds the turn
        second = asyncio.ensure_future(execute(engine, "b"))
        done = await asyncio.wait_for(asyncio.gather(first, second), timeout=3)
    assert [r.output for r in done] == ["a done", "b done"]


async def test_a_run_cancelled_while_it_waits_for_its_turn_ends_and_leaks_no_turn(tmp_path):
    holding, release = asyncio.Event(), asyncio.Event()
    async with engine_with(tmp_path, 1) as engine:
        engine._runtime._admission.overdue_s = 60  # no overdue rescue in this test

        @engine.workflows.define(product=P, tag="holder")
        async def holder(ctx):
            holding.set()
            await release.wait()  # holds the only turn
            return "held"

        @engine.workflows.define(product=P, tag="queued")
        async def queued(ctx):
            return await ctx.step("a", lambda: "ran")

        held = asyncio.ensure_future(execute(engine, "holder"))
        await holding.wait()
        waiting = await execute(engine, "queued", workflow_id="w-queued", wait=False)
        assert waiting.status == "running"
        cancelled = await engine.workflows.cancel(product=P, env=E, workflow_id="w-queued", reason="no longer")
        assert cancelled.status == "cancelled"
        release.set()
        assert (await held).output == "held"
        # The turn went back: a run after them gets in at once.
        assert (await asyncio.wait_for(execute(engine, "queued"), timeout=1)).output == "ran"
        st = await engine.workflows.status(product=P, env=E, workflow_id="w-queued")
        assert st.status == "cancelled" and st.completed_steps == []


def test_engine_refuses_a_bad_limit_and_auto_limits_fast_only(tmp_path):
    for bad in (0, "all", 2.5):
        with pytest.raises(sagaloop.InvalidArgumentError, match="max_active_runs"):
            sagaloop.Engine(tmp_path / "db", max_active_runs=bad)
    assert sagaloop.Engine(tmp_path / "f", durability="fast")._runtime._admission.limit == 100
    assert sagaloop.Engine(tmp_path / "d", durability="durable")._runtime._admission.limit is None
    assert sagaloop.Engine(tmp_path / "n", durability="fast", max_active_runs=None)._runtime._admission.limit is None
