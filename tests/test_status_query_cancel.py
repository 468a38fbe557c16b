"""``status``, query handlers and ``cancel``.

Status and queries read a running instance without disturbing its handler
and also answer for ended ones; cancel interrupts the handler at its
current await, rolls back by the strategy and ends ``cancelled``; a cancel
of an ended instance changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from helpers import Gate

import sagaloop
from sagaloop.testing import VirtualClock

P, E = "shop", "test"


def progress(ctx):
    return {"completed": len(ctx.completed_steps), "current": ctx.current_step,
            "percent": len(ctx.completed_steps) / 3 * 100}


def details(ctx, args):
    return {"order": ctx.input["orderId"], "status": ctx.state.get("orderStatus"),
            "payment": (ctx.steps.get("payment") or {}).get("id"), "args": args}


async def async_query(ctx):
    await asyncio.sleep(0)
    return list(ctx.completed_steps)


def define_order(engine, gate: Gate, ran: Counter, **options):
    @engine.workflows.define(product=P, tag="order", options=options or None,
                             queries={"getProgress": {"handler": progress}, "getOrderDetails": details,
                                      "steps": {"handler": async_query}})
    async def order(ctx):
        async def payment():
            ran["payment"] += 1
            return {"id": "pay-1"}

        async def fulfil():
            ran["fulfil"] += 1
            return "ok"

        ctx.state["orderStatus"] = "new"
        await ctx.step("payment", payment)
        ctx.state["orderStatus"] = "paid"
        await ctx.checkpoint("paid", {"charge": "pay-1"})
        await ctx.step("slow", gate)
        ctx.state["orderStatus"] = "fulfilling"
        await ctx.step("fulfil", fulfil)
        ctx.state["orderStatus"] = "done"
        return "finished"


# -- status ----------------------------------------------------------------------------------------


async def test_status_of_running_and_ended_instance(tmp_path):
    async with sagaloop.Engine(tmp_path / "data", durability="fast") as engine:
        gate, ran = Gate(), Counter()
        define_order(engine, gate, ran)
        before = int(time.time() * 1000)
        await engine.workflows.execute(product=P, env=E, tag="order", workflow_id="wf-s",
                                       input={"orderId": "o-1"}, wait=False)
        await asyncio.wait_for(gate.entered.wait(), 5)

        status = await engine.workflows.status(product=P, env=E, workflow_id="wf-s")
        assert isinstance(status, sagaloop.WorkflowStatus)
        assert status.workflow_id == "wf-s" and status.tag == "order"
        assert (status.product, status.env) == (P, E)
        assert status.status == "running"
        assert status.current_step == "slow"
        assert status.completed_steps == ["payment"]
        assert status.state == {"orderStatus": "paid"}
        assert status.checkpoint_name == "paid"
        assert status.checkpoint_data == {"charge": "pay-1"}
        assert before - 5 <= status.created_at <= status.updated_at <= int(time.time() * 1000) + 5
        assert status.ended_at is None
        assert status.error is None
        assert status["status"] == "running"
        assert status.to_dict()["completed_steps"] == ["payment"]

        gate.open.set()
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-s")
        assert result.status == "completed"

        ended = await engine.workflows.status(product=P, env=E, workflow_id="wf-s")
        assert ended.status == "completed"
        assert ended.current_step is None
        assert ended.completed_steps == ["payment", "slow", "fulfil"]
        assert ended.state == {"orderStatus": "done"}
        assert ended.checkpoint_name == "paid"
        assert ended.ended_at is not None
        assert ended.created_at == status.created_at
        assert ended.created_at <= ended.ended_at <= int(time.time() * 1000) + 5
        assert ended.updated_at >= status.updated_at
        assert ran == Counter(payment=1, fulfil=1)


def define_waiting(engine):
    @engine.workflows.define(product=P, tag="wait")
    async def wait(ctx):
        ctx.state["phase"] = "before"
        await ctx.step("a", lambda: 1)
        ctx.state["phase"] = "waiting"
        await ctx.checkpoint("cp", {"x": 1})
        got = await ctx.wait_for_signal("go")
        ctx.state["phase"] = "after"
        return got


async def test_status_while_waiting_for_a_signal(tmp_path):
    async with sagaloop.Engine(tmp_path / "data", durability="fast") as engine:
        define_waiting(engine)
        first = await engine.workflows.execute(product=P, env=E, tag="wait", workflow_id="wf-w")
        assert first.status == "running"
        status = await engine.workflows.status(product=P, env=E, workflow_id="wf-w")
        assert status.status == "running"
        assert status.current_step is None
        assert status.completed_steps == ["a"]
        assert status.state == {"phase": "waiting"}
        assert status.checkpoint_name == "cp" and status.checkpoint_data == {"x": 1}
        assert status.ended_at is None


@pytest.mark.parametrize("when", ["before-define", "right-after-define"])
async def test_status_after_reopen_shows_the_recorded_progress(tmp_path, when):
    """A reopened in-flight instance: status shows the steps it had completed, not an empty run."""
    data = tmp_path / "data"
    async with sagaloop.Engine(data, durability="fast") as engine:
        define_waiting(engine)
        await engine.workflows.execute(product=P, env=E, tag="wait", workflow_id="wf-w")

    clock = VirtualClock()
    async with sagaloop.Engine(data, durability="fast", clock=clock) as engine:
        if when == "right-after-define":
            define_waiting(engine)
        status = await engine.workflows.status(product=P, env=E, workflow_id="wf-w")
        assert status.status == "running"
        assert status.completed_steps == ["a"], status
        assert status.checkpoint_name == "cp", status
        assert status.checkpoint_data == {"x": 1}, status
        if when == "before-define":
            define_waiting(engine)
        await clock.settle()  # the recovered run has replayed and blocked on its wait again
        later = await engine.workflows.status(product=P, env=E, workflow_id="wf-w")
        assert later.status == "running"
        assert later.completed_steps == ["a"]
        assert later.state == {"phase": "waiting"}
        await engine.workflows.signal(product=P, env=E, workflow_id="wf-w", signal="go")
        await engine.workflows.result(product=P, env=E, workflow_id="wf-w")
        ended = await engine.workflows.status(product=P, env=E, workflow_id="wf-w")
        assert ended.status == "completed"
        assert ended.completed_steps == ["a"]
        assert ended.state == {"phase": "after"}


async def test_status_of_unknown_instance_raises(tmp_path):
    async with sagaloop.Engine(tmp_path / "data", durability="fast") as engine:
        with pytest.raises(sagaloop.WorkflowNotFoundError):
            await engine.workflows.status(product=P, env=E, workflow_id="nope")
        with pytest.raises(sagaloop.WorkflowNotFoundError):
            await engine.workflows.query(product=P, env=E, workflow_id="nope", query="getProgress")
        with pytest.raises(sagaloop.WorkflowNotFoundError):
            await engine.workflows.cancel(product=P, env=E, workflow_id="nope", reason="x")


# -- queries -------------------------------------------------------------------------------------------


async def test_queries_run_against_current_state_without_disturbing_the_handler(tmp_path):
    async with sagaloop.Engine(tmp_path / "data", durability="fast") as engine:
        gate, ran = Gate(), Counter()
        define_order(engine, gate, ran)
        await engine.workflows.execute(product=P, env=E, tag="order", workflow_id="wf-q",
                                       input={"orderId": "o-9"}, wait=False)
        await asyncio.wait_for(gate.entered.wait(), 5)

        q = engine.workflows.query
        assert await q(product=P, env=E, workflow_id="wf-q", query="getProgress") == {
            "completed": 1, "current": "slow", "percent": pytest.approx(100 / 3)}
        assert await q(product=P, env=E, workflow_id="wf-q", query="getOrderDetails", args={"k": 1}) == {
            "order": "o-9", "status": "paid", "payment": "pay-1", "args": {"k": 1}}
        assert await q(product=P, env=E, workflow_id="wf-q", query="steps") == ["payment"]
        # Many queries at once while the step is running: the step is neither cancelled nor re-run.
        answers = await asyncio.gather(*(q(product=P, env=E, workflow_id="wf-q", query="getProgress")
                                         for _ in range(50)))
        assert all(a["completed"] == 1 and a["current"] == "slow" for a in answers)
        with pytest.raises(sagaloop.QueryNotFoundError) as info:
            await q(product=P, env=E, workflow_id="wf-q", query="noSuchQuery")
        assert info.value.code == "query_not_found"
        assert not gate.cancelled

        gate.open.set()
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-q")
        assert result.status == "completed"
        assert result.output == "finished"
        assert result.completed_steps == ["payment", "slow", "fulfil"]
        assert ran == Counter(payment=1, fulfil=1)

        # Queries also answer for the ended instance, against its final state.
        assert await q(product=P, env=E, workflow_id="wf-q", query="getProgress") == {
            "completed": 3, "current": None, "percent": pytest.approx(100.0)}
        assert await q(product=P, env=E, workflow_id="wf-q", query="getOrderDetails", args=[2]) == {
            "order": "o-9", "status": "done", "payment": "pay-1", "args": [2]}
        assert await q(product=P, env=E, workflow_id="wf-q", query="steps") == ["payment", "slow", "fulfil"]
        with pytest.raises(sagaloop.QueryNotFoundError):
            await q(product=P, env=E, workflow_id="wf-q", query="noSuchQuery")
        assert ran == Counter(payment=1, fulfil=1)


async def test_queries_on_ended_instance_after_reopen(tmp_path):
    data = tmp_path / "data"
    gate, ran = Gate(), Counter()
    gate.open.set()
    async with sagaloop.Engine(data, durability="fast") as engine:
        define_order(engine, gate, ran)
        result = await engine.workflows.execute(product=P, env=E, tag="order", workflow_id="wf-qr",
                                                input={"orderId": "o-2"})
        assert result.status == "completed"
    async with sagaloop.Engine(data, durability="fast") as engine:
        define_order(engine, Gate(), ran)
        got = await engine.workflows.query(product=P, env=E, workflow_id="wf-qr", query="getOrderDetails",
                                           args="a")
        assert got == {"order": "o-2", "status": "done", "payment": "pay-1", "args": "a"}
        with pytest.raises(sagaloop.QueryNotFoundError):
            await engine.workflows.query(product=P, env=E, workflow_id="wf-qr", query="missing")
    assert ran == Counter(payment=1, fulfil=1)


async def test_query_that_raises_does_not_disturb_the_run(tmp_path):
    async with sagaloop.Engine(tmp_path / "data", durability="fast") as engine:
        def broken(ctx):
            raise KeyError("boom")

        @engine.workflows.define(product=P, tag="w", queries={"broken": broken})
        async def w(ctx):
            await ctx.step("a", lambda: 1)
            return await ctx.wait_for_signal("go")

        await engine.workflows.execute(product=P, env=E, tag="w", workflow_id="wf-b")
        with pytest.raises(Exception):
            await engine.workflows.query(product=P, env=E, workflow_id="wf-b", query="broken")
        status = await engine.workflows.status(product=P, env=E, workflow_id="wf-b")
        assert status.status == "running"
        await engine.workflows.signal(product=P, env=E, workflow_id="wf-b", signal="go", payload={"v": 1})
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-b")
        assert result.status == "completed"
        assert result.output == {"v": 1, "_signal": "go"}


# -- cancel --------------------------------------------------------------------------------------------


def define_cancellable(engine, undone: list, ran: Counter, block: str, strategy: str = "reverse_all",
                       gate: Gate | None = None):
    @engine.workflows.define(product=P, tag=f"cancel-{block}-{strategy}",
                             options={"rollback_strategy": strategy})
    async def flow(ctx):
        async def reserve():
            ran["reserve"] += 1
            return {"r": 1}

        async def charge():
            ran["charge"] += 1
            return {"c": 2}

        async def ship():
            ran["ship"] += 1
            return "shipped"

        await ctx.step("reserve", reserve, lambda out: undone.append(("reserve", out)))
        await ctx.checkpoint("reserved")
        await ctx.step("charge", charge, lambda out: undone.append(("charge", out)))
        if block == "signal":
            await ctx.wait_for_signal("approve")
        elif block == "sleep":
            await ctx.sleep("1h")
        else:
            await ctx.step("slow", gate)
        await ctx.step("ship", ship, lambda out: undone.append(("ship", out)))
        return "shipped"

    return f"cancel-{block}-{strategy}"


@pytest.mark.parametrize("block", ["signal", "sleep", "step"])
async def test_cancel_interrupts_the_handler_and_rolls_back(tmp_path, block):
    clock = VirtualClock()
    async with sagaloop.Engine(tmp_path / "data", durability="fast", clock=clock) as engine:
        undone, ran, gate = [], Counter(), Gate()
        tag = define_cancellable(engine, undone, ran, block, gate=gate)
        wf = f"wf-cancel-{block}"
        await engine.workflows.execute(product=P, env=E, tag=tag, workflow_id=wf, wait=False)
        if block == "step":
            await asyncio.wait_for(gate.entered.wait(), 5)
        else:
            await clock.advance("30m")  # blocked, halfway through the 1 h sleep for "sleep"
            first = await engine.workflows.result(product=P, env=E, workflow_id=wf, timeout=0)
            assert first.status == "running"

        t0 = time.monotonic()
        cancelled = await engine.workflows.cancel(product=P, env=E, workflow_id=wf, reason="User requested")
        assert time.monotonic() - t0 < 5, "cancel waited for the blocked await instead of interrupting it"
        assert isinstance(cancelled, sagaloop.CancelResult)
        assert cancelled.cancelled is True
        assert cancelled.rolled_back_steps == ["charge", "reserve"]
        assert undone == [("charge", {"c": 2}), ("reserve", {"r": 1})]
        assert ran == Counter(reserve=1, charge=1)  # ship never ran
        if block == "step":
            assert gate.cancelled, "the slow step was not interrupted at its await"
        assert clock.pending_timers == 0  # an interrupted sleep leaves no timer behind

        result = await engine.workflows.result(product=P, env=E, workflow_id=wf)
        assert result.status == "cancelled"
        assert result.rollback_result is not None
        assert result.rollback_result.trigger == "cancel"
        assert result.rollback_result.rolled_back_steps == ["charge", "reserve"]
        assert result.rollback_result.reason == "User requested"
        assert result.error is not None and result.error.code == "cancelled"
        status = await engine.workflows.status(product=P, env=E, workflow_id=wf)
        assert status.status == "cancelled"
        assert status.ended_at is not None

        history = await engine.workflows.history(product=P, env=E, workflow_id=wf)
        types = [e.type for e in history.events]
        assert types[-1] == "workflow_cancelled", types
        assert types.count("step_rolled_back") == 2
        assert types.index("rollback_started") < types.index("workflow_cancelled")
        with pytest.raises(sagaloop.WorkflowEndedError):
            await engine.workflows.signal(product=P, env=E, workflow_id=wf, signal="approve")


async def test_cancel_rolls_back_by_the_strategy(tmp_path):
    async with sagaloop.Engine(tmp_path / "data", durability="fast") as engine:
        undone, ran = [], Counter()
        tag = define_cancellable(engine, undone, ran, "signal", strategy="to_checkpoint")
        await engine.workflows.execute(product=P, env=E, tag=tag, workflow_id="wf-cp")
        cancelled = await engine.workflows.cancel(product=P, env=E, workflow_id="wf-cp", reason="stop")
        assert cancelled.cancelled is True
        assert cancelled.rolled_back_steps == ["charge"]  # only what came after the checkpoint
        assert undone == [("charge", {"c": 2})]

        undone2 = []
        tag2 = define_cancellable(engine, undone2, Counter(), "signal", strategy="none")
        await engine.workflows.execute(product=P, env=E, tag=tag2, workflow_id="wf-none")
        cancelled = await engine.workflows.cancel(product=P, env=E, workflow_id="wf-none", reason="stop")
        assert cancelled.cancelled is True
        assert cancelled.rolled_back_steps == []
        assert undone2 == []
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-none")
        assert result.status == "cancelled"


async def test_cancel_of_ended_instance_changes_nothing(tmp_path):
    data = tmp_path / "data"
    undone, ran = [], Counter()
    async with sagaloop.Engine(data, durability="fast") as engine:
        tag = define_cancellable(engine, undone, ran, "signal")
        await engine.workflows.execute(product=P, env=E, tag=tag, workflow_id="wf-done")
        await engine.workflows.signal(product=P, env=E, workflow_id="wf-done", signal="approve")
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-done")
        assert result.status == "completed"
        history = (await engine.workflows.history(product=P, env=E, workflow_id="wf-done")).to_dict()
        status = (await engine.workflows.status(product=P, env=E, workflow_id="wf-done")).to_dict()

        again = await engine.workflows.cancel(product=P, env=E, workflow_id="wf-done", reason="too late")
        assert again.cancelled is False
        assert again.rolled_back_steps == []
        assert undone == []
        assert (await engine.workflows.history(product=P, env=E, workflow_id="wf-done")).to_dict() == history
        assert (await engine.workflows.status(product=P, env=E, workflow_id="wf-done")).to_dict() == status
        assert (await engine.workflows.result(product=P, env=E, workflow_id="wf-done")).status == "completed"

        # A cancelled one cancelled again: also unchanged.
        await engine.workflows.execute(product=P, env=E, tag=tag, workflow_id="wf-c2")
        first = await engine.workflows.cancel(product=P, env=E, workflow_id="wf-c2", reason="once")
        assert first.cancelled is True
        history2 = (await engine.workflows.history(product=P, env=E, workflow_id="wf-c2")).to_dict()
        second = await engine.workflows.cancel(product=P, env=E, workflow_id="wf-c2", reason="twice")
        assert second.cancelled is False
        assert (await engine.workflows.history(product=P, env=E, workflow_id="wf-c2")).to_dict() == history2
        assert undone == [("charge", {"c": 2}), ("reserve", {"r": 1})]

    async with sagaloop.Engine(data, durability="fast") as engine:
        tag = define_cancellable(engine, undone, ran, "signal")
        again = await engine.workflows.cancel(product=P, env=E, workflow_id="wf-done", reason="after reopen")
        assert again.cancelled is False
        assert (await engine.workflows.history(product=P, env=E, workflow_id="wf-done")).to_dict() == history
    assert ran == Counter(reserve=2, charge=2, ship=1)


async def test_concurrent_cancels_roll_back_once(tmp_path):
    async with sagaloop.Engine(tmp_path / "data", durability="fast") as engine:
        undone, ran = [], Counter()
        tag = define_cancellable(engine, undone, ran, "signal")
        await engine.workflows.execute(product=P, env=E, tag=tag, workflow_id="wf-cc")
        answers = await asyncio.gather(*(engine.workflows.cancel(product=P, env=E, workflow_id="wf-cc",
                                                                 reason=f"r{i}") for i in range(5)))
        assert any(a.cancelled for a in answers)
        assert undone == [("charge", {"c": 2}), ("reserve", {"r": 1})]
        types = [e.type for e in (await engine.workflows.history(product=P, env=E, workflow_id="wf-cc")).events]
        assert types.count("workflow_cancelled") == 1
        assert types.count("step_rolled_back") == 2


# -- load: status and queries while many workflows run ---------------------------------------------------


async def test_many_concurrent_status_and_query_calls_lose_and_duplicate_no_step(tmp_path):
    n_workflows, n_steps = 1000, 5
    tags = [f"s{i}" for i in range(n_steps)]
    ran: Counter = Counter()

    async with sagaloop.Engine(tmp_path / "data", durability="fast") as engine:
        def done_query(ctx):
            return {"done": list(ctx.completed_steps), "state": dict(ctx.state)}

        @engine.workflows.define(product=P, tag="load", queries={"done": done_query})
        async def load(ctx):
            for tag in tags:
                async def handler(tag=tag):
                    await asyncio.sleep(0)
                    ran[(ctx.workflow_id, tag)] += 1
                    await asyncio.sleep(0)
                    return tag

                await ctx.step(tag, handler)
                ctx.state["n"] = len(ctx.completed_steps)
            return ctx.workflow_id

        ids = [f"wf-load-{i}" for i in range(n_workflows)]
        problems: list[str] = []
        calls = Counter()

        async def observe(wf: str) -> None:
            """Alternate status and query calls on one instance until it has ended; check each answer."""
            last = -1
            while True:
                try:
                    status = await engine.workflows.status(product=P, env=E, workflow_id=wf)
                except sagaloop.WorkflowNotFoundError:
                    await asyncio.sleep(0)  # not started yet
                    continue
                calls["status"] += 1
                done = status.completed_steps
                if done != tags[:len(done)] or status.status not in ("running", "completed"):
                    problems.append(f"{wf}: malformed status {status}")
                    return
                if status.current_step not in (None, *tags):
                    problems.append(f"{wf}: bad current_step {status.current_step!r}")
                if len(done) < last:
                    problems.append(f"{wf}: completed_steps went back from {last} to {len(done)}")
                last = len(done)
                answer = await engine.workflows.query(product=P, env=E, workflow_id=wf, query="done")
                calls["query"] += 1
                if answer["done"] != tags[:len(answer["done"])] or len(answer["done"]) < last:
                    problems.append(f"{wf}: bad query answer {answer} after status with {last} steps")
                last = max(last, len(answer["done"]))
                if status.status == "completed":
                    if done != tags or status.state != {"n": n_steps}:
                        problems.append(f"{wf}: ended status {status}")
                    return

        t0 = time.monotonic()
        starts = [engine.workflows.execute(product=P, env=E, tag="load", workflow_id=wf) for wf in ids]
        results = await asyncio.gather(*starts, *(observe(wf) for wf in ids))
        elapsed = time.monotonic() - t0

        assert problems == [], problems[:10]
        finals = results[:n_workflows]
        assert all(r.status == "completed" for r in finals), [r for r in finals if r.status != "completed"][:3]
        assert all(r.completed_steps == tags for r in finals)
        assert sorted(r.output for r in finals) == sorted(ids)
        # Every step of every workflow ran exactly once: nothing lost, nothing duplicated.
        assert len(ran) == n_workflows * n_steps
        assert set(ran.values()) == {1}, [k for k, v in ran.items() if v != 1][:10]
        assert calls["status"] >= n_workflows and calls["query"] >= n_workflows
        assert elapsed < 30, f"took {elapsed:.1f} s"

        # The journal agrees: a sample of step details shows one attempt each.
        for wf in ids[::97]:
            for tag in tags:
                detail = await engine.workflows.step_detail(product=P, env=E, workflow_id=wf, step_tag=tag)
                assert (detail.status, detail.attempts, detail.output) == ("completed", 1, tag)
        listed = await engine.workflows.list(product=P, env=E, tag="load", status="completed", limit=5000)
        assert len(listed) == n_workflows


async def test_status_says_what_a_running_instance_waits_for(tmp_path):
    from sagaloop.testing import VirtualClock

    clock = VirtualClock(start_ms=1_700_000_000_000)
    async with sagaloop.Engine(tmp_path / "db", durability="fast", clock=clock) as engine:
        @engine.workflows.define(product="shop", tag="waits")
        async def waits(ctx):
            await ctx.sleep("1h")
            await ctx.wait_for_signal(["go", "stop"])
            return 1

        await engine.workflows.execute(product="shop", env="prd", tag="waits", workflow_id="w")
        asleep = await engine.workflows.status(product="shop", env="prd", workflow_id="w")
        await clock.advance("1h")
        waiting = await engine.workflows.status(product="shop", env="prd", workflow_id="w")
        await engine.workflows.signal(product="shop", env="prd", workflow_id="w", signal="go")
        await engine.workflows.result(product="shop", env="prd", workflow_id="w")
        ended = await engine.workflows.status(product="shop", env="prd", workflow_id="w")
    assert asleep.waiting_for == "timer 3600000 ms"
    assert waiting.waiting_for == "signal go | stop"
    assert ended.waiting_for is None and ended.status == "completed"
