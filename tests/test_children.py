"""Child workflows: ``ctx.workflow(child_id, tag, input, timeout=None, retries=0, parent_close_policy=...)``.

Product document section: Child Workflows (and Parent Close Policies); the
contract in API.md, including "Beyond the product document": a child ended
by its parent's close under ``terminate`` ends ``cancelled`` with
``rollback_result.trigger == "parent_closed"``.

A child still running when its parent ends is started in a background task
of the parent (``asyncio.ensure_future(ctx.workflow(...))``). Those runs are
started with ``wait=False`` and awaited with ``result()``: the point here is
how they end, not when ``execute`` returns.

The crash tests run ``tests/children_worker.py`` in a real process, SIGKILL
it, and resume the same directory in this process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers import open_engine, until
from processes import TESTS_DIR, WAIT_S, Spawner, load_module
from worker_common import runs_of, side_names

import sagaloop
from sagaloop.testing import VirtualClock, wait_idle

P, E = "kids", "test"

WORKER_PATH = TESTS_DIR / "children_worker.py"


async def start(engine, tag: str, input=None, workflow_id: str | None = None) -> str:
    started = await engine.workflows.execute(product=P, env=E, tag=tag, input=input, workflow_id=workflow_id,
                                             wait=False)
    return started.workflow_id


async def result(engine, workflow_id: str, timeout: float = 10.0) -> sagaloop.WorkflowResult:
    res = await asyncio.wait_for(engine.workflows.result(product=P, env=E, workflow_id=workflow_id), timeout)
    assert res.status != "running", res
    return res


async def run_to_end(engine, tag: str, input=None, workflow_id: str | None = None,
                     timeout: float = 10.0) -> sagaloop.WorkflowResult:
    return await result(engine, await start(engine, tag, input, workflow_id), timeout)


async def status(engine, workflow_id: str) -> sagaloop.WorkflowStatus:
    return await engine.workflows.status(product=P, env=E, workflow_id=workflow_id)


async def listed(engine) -> dict[str, tuple[str, str, str]]:
    """workflow_id -> (tag, status, type) of every execution."""
    return {s.workflow_id: (s.tag, s.status, s.type) for s in await engine.workflows.list(product=P, env=E)}


async def events(engine, workflow_id: str) -> list[sagaloop.HistoryEvent]:
    return (await engine.workflows.history(product=P, env=E, workflow_id=workflow_id)).events


async def wait_for_steps(engine, workflow_id: str, *tags: str, timeout: float = 5.0) -> None:
    """Poll ``status`` until the (child) instance exists and has completed ``tags``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            st = await status(engine, workflow_id)
            if all(t in st.completed_steps for t in tags):
                return
        except sagaloop.WorkflowNotFoundError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{workflow_id!r} did not complete {tags} within {timeout} s")
        await asyncio.sleep(0.01)


async def child_blocked(engine, workflow_id: str) -> bool:
    return (await status(engine, workflow_id)).waiting_for is not None


def undo(log: list, name: str, outputs: dict | None = None):
    """A compensation that records its name (and the output it was given) in ``log``."""
    async def compensate(output):
        log.append(name)
        if outputs is not None:
            outputs[name] = output
    return compensate


def define_blocker(engine, log: list, tag: str = "blocker", options: dict | None = None) -> None:
    """A child: step ``c1`` (compensated), then blocks on signal ``go``, then step ``c2``."""
    @engine.workflows.define(product=P, tag=tag, options=options)
    async def blocker(ctx):
        await ctx.step("c1", lambda: {"c": 1}, undo(log, "c1-undo"))
        got = await ctx.wait_for_signal("go")

        def c2():
            log.append("c2-ran")
            return {"c": 2}

        await ctx.step("c2", c2, undo(log, "c2-undo"))
        return {"got": got.get("v")}


def consume(tasks: list) -> None:
    """Retrieve the outcome of background child tasks so that nothing is logged as never retrieved."""
    for t in tasks:
        if t.done() and not t.cancelled():
            t.exception()


# -- a child is its own instance; its output returns to the parent --------------------------------


async def test_child_runs_as_its_own_instance_and_returns_its_output(tmp_path):
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="double")
        async def double(ctx):
            v = await ctx.step("calc", lambda: ctx.input["n"] * 2)
            return {"doubled": v, "product": ctx.product, "env": ctx.env, "me": ctx.workflow_id}

        @engine.workflows.define(product=P, tag="calls-double")
        async def parent(ctx):
            out = await ctx.workflow("dbl-1", "double", {"n": ctx.input["n"]})
            return {"from_child": out}

        res = await engine.workflows.execute(product=P, env=E, tag="calls-double", input={"n": 21},
                                             workflow_id="parent-1")
        expected = {"doubled": 42, "product": P, "env": E, "me": "dbl-1"}
        assert res.status == "completed", res
        assert res.output == {"from_child": expected}
        assert res.completed_steps == ["dbl-1"]  # the child counts as a step of its parent

        kid = await status(engine, "dbl-1")
        assert (kid.status, kid.tag, kid.product, kid.env) == ("completed", "double", P, E)
        assert kid.completed_steps == ["calc"]
        assert (await engine.workflows.result(product=P, env=E, workflow_id="dbl-1")).output == expected

        assert await listed(engine) == {"parent-1": ("calls-double", "completed", "original"),
                                        "dbl-1": ("double", "completed", "child")}
        detail = await engine.workflows.step_detail(product=P, env=E, workflow_id="parent-1", step_tag="dbl-1")
        assert (detail.status, detail.output, detail.attempts) == ("completed", expected, 1)

        types = [e.type for e in await events(engine, "parent-1")]
        assert types.index("child_started") < types.index("child_completed") < types.index("workflow_completed")
        started = next(e for e in await events(engine, "parent-1") if e.type == "child_started")
        assert started.data["child_id"] == "dbl-1" and started.data["tag"] == "double"


async def test_child_is_a_separate_actor_supervised_by_the_parent(tmp_path):
    log: list = []
    async with open_engine(tmp_path) as engine:
        define_blocker(engine, log)

        @engine.workflows.define(product=P, tag="waits-for-kid")
        async def parent(ctx):
            out = await ctx.workflow("kid", "blocker", {})
            return {"kid": out}

        res = await engine.workflows.execute(product=P, env=E, tag="waits-for-kid", workflow_id="boss")
        assert res.status == "running"  # the child blocks on a signal, so does its parent
        await wait_for_steps(engine, "kid", "c1")
        kid = await status(engine, "kid")
        assert (kid.status, kid.completed_steps) == ("running", ["c1"])
        assert (await status(engine, "boss")).status == "running"

        # White box: the child is its own actor, spawned with the parent's actor as its parent.
        live = engine._runtime.registry.live
        assert live["kid"] is not live["boss"]
        assert live["kid"].ref.parent is live["boss"].ref

        await engine.workflows.signal(product=P, env=E, workflow_id="kid", signal="go", payload={"v": 5})
        res = await result(engine, "boss")
        assert res.status == "completed"
        assert res.output == {"kid": {"got": 5}}
        assert (await status(engine, "kid")).status == "completed"
        hist = await events(engine, "boss")
        types = [e.type for e in hist]
        assert types.count("child_started") == 1 and types.count("child_completed") == 1, types
        assert [e.data["child_id"] for e in hist if e.type.startswith("child_")] == ["kid", "kid"]
        assert log == ["c2-ran"]


# -- failures ----------------------------------------------------------------------------------------


class CardDeclined(RuntimeError):
    code = "card_declined"


async def test_child_failure_raises_child_workflow_error_with_the_child_error(tmp_path):
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="payment")
        async def payment(ctx):
            def charge():
                raise CardDeclined("card declined for " + ctx.input["customer"])
            await ctx.step("charge", charge)

        @engine.workflows.define(product=P, tag="catches")
        async def parent(ctx):
            try:
                await ctx.workflow("pay-1", "payment", {"customer": "cust-9"})
            except sagaloop.ChildWorkflowError as exc:
                return {"child_id": exc.child_id, "status": exc.status, "error": exc.error, "code": exc.code,
                        "is_sagaloop": isinstance(exc, sagaloop.SagaloopError), "message": str(exc)}
            return "unreachable"

        res = await run_to_end(engine, "catches", workflow_id="catcher")
        assert res.status == "completed", res
        out = res.output
        assert out["child_id"] == "pay-1"
        assert out["status"] == "failed"
        assert out["code"] == "child_failed" and out["is_sagaloop"] is True
        assert out["error"]["message"] == "card declined for cust-9"
        assert out["error"]["code"] == "card_declined"
        assert out["error"]["step"] == "charge"
        assert "card declined for cust-9" in out["message"]

        kid = await engine.workflows.result(product=P, env=E, workflow_id="pay-1")
        assert kid.status == "failed" and kid.failed_step == "charge"
        hist = await events(engine, "catcher")
        failed = [e for e in hist if e.type == "child_failed"]
        assert len(failed) == 1 and failed[0].data["child_id"] == "pay-1"
        assert "child_completed" not in [e.type for e in hist]


async def test_uncaught_child_failure_fails_and_rolls_back_the_parent(tmp_path):
    log: list = []
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="payment")
        async def payment(ctx):
            def charge():
                raise CardDeclined("insufficient funds")
            await ctx.step("charge", charge)

        @engine.workflows.define(product=P, tag="order")
        async def parent(ctx):
            await ctx.step("reserve", lambda: {"r": 1}, undo(log, "reserve-undo"))
            await ctx.workflow("pay-2", "payment", {})
            await ctx.step("ship", lambda: log.append("ship-ran"))

        res = await run_to_end(engine, "order")
        assert res.status == "rolled_back", res
        assert res.error.code == "child_failed"
        assert "insufficient funds" in res.error.message
        assert res.rollback_result.rolled_back_steps == ["reserve"]
        assert res.rollback_result.trigger == "step_failed"
        assert log == ["reserve-undo"]
        assert (await status(engine, "pay-2")).status == "failed"


async def test_retries_rerun_a_failed_child_under_attempt_ids(tmp_path):
    runs: Counter = Counter()
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="flaky")
        async def flaky(ctx):
            def work():
                runs["work"] += 1
                if runs["work"] == 1:
                    raise RuntimeError("first attempt breaks")
                return {"attempt_id": ctx.workflow_id}
            return await ctx.step("work", work)

        @engine.workflows.define(product=P, tag="retrier")
        async def parent(ctx):
            return await ctx.workflow("job", "flaky", {}, retries=2)

        res = await run_to_end(engine, "retrier", workflow_id="retry-parent")
        assert res.status == "completed", res
        assert res.output == {"attempt_id": "job~2"}
        assert runs["work"] == 2  # not a third attempt

        detail = await engine.workflows.step_detail(product=P, env=E, workflow_id="retry-parent", step_tag="job")
        assert detail.attempts == 2 and detail.status == "completed"
        assert detail.output == {"attempt_id": "job~2"}
        assert (await status(engine, "job")).status == "failed"
        assert (await status(engine, "job~2")).status == "completed"
        assert await listed(engine) == {"retry-parent": ("retrier", "completed", "original"),
                                        "job": ("flaky", "failed", "child"),
                                        "job~2": ("flaky", "completed", "child")}
        hist = await events(engine, "retry-parent")
        assert [(e.type, e.data["child_id"]) for e in hist if e.type.startswith("child_")] == [
            ("child_started", "job"), ("child_failed", "job"), ("child_started", "job~2"),
            ("child_completed", "job~2")]
        assert [e.data["attempt"] for e in hist if e.type == "child_started"] == [1, 2]


async def test_retries_exhausted_raise_with_the_last_attempt(tmp_path):
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="broken")
        async def broken(ctx):
            def work():
                raise RuntimeError(f"broken in {ctx.workflow_id}")
            await ctx.step("work", work)

        @engine.workflows.define(product=P, tag="gives-up")
        async def parent(ctx):
            try:
                await ctx.workflow("b", "broken", {}, retries=1)
            except sagaloop.ChildWorkflowError as exc:
                return {"child_id": exc.child_id, "message": exc.error["message"]}

        res = await run_to_end(engine, "gives-up", workflow_id="gu")
        assert res.output == {"child_id": "b~2", "message": "broken in b~2"}
        detail = await engine.workflows.step_detail(product=P, env=E, workflow_id="gu", step_tag="b")
        assert (detail.status, detail.attempts) == ("failed", 2)
        kids = {k: v for k, v in (await listed(engine)).items() if v[2] == "child"}
        assert kids == {"b": ("broken", "failed", "child"), "b~2": ("broken", "failed", "child")}


# -- parent-close policies ----------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["terminate", "abandon"])
async def test_parent_fails_while_child_blocked_on_signal(tmp_path, policy):
    log: list = []
    tasks: list = []
    async with open_engine(tmp_path) as engine:
        define_blocker(engine, log)

        @engine.workflows.define(product=P, tag="fails-with-kid")
        async def parent(ctx):
            await ctx.step("A", lambda: {"a": 1}, undo(log, "A-undo"))
            tasks.append(asyncio.ensure_future(ctx.workflow("kid", "blocker", {}, parent_close_policy=policy)))

            async def b():
                await wait_for_steps(engine, "kid", "c1")
                await until(lambda: child_blocked(engine, "kid"), "the child blocks on its signal")
                raise RuntimeError("B broke")

            await ctx.step("B", b)

        res = await run_to_end(engine, "fails-with-kid", workflow_id="p")
        assert res.status == "rolled_back", res
        assert res.failed_step == "B"
        assert res.rollback_result.rolled_back_steps == ["A"]

        if policy == "terminate":
            kid = await result(engine, "kid")
            assert kid.status == "cancelled", kid
            assert kid.rollback_result.trigger == "parent_closed"
            assert kid.rollback_result.rolled_back_steps == ["c1"]
            assert log == ["c1-undo", "A-undo"]  # the child is closed before the parent's own rollback
            with pytest.raises(sagaloop.WorkflowEndedError):
                await engine.workflows.signal(product=P, env=E, workflow_id="kid", signal="go", payload={"v": 1})
        else:
            assert log == ["A-undo"]
            await wait_idle(engine)
            assert (await status(engine, "kid")).status == "running"  # it runs on
            await engine.workflows.signal(product=P, env=E, workflow_id="kid", signal="go", payload={"v": 3})
            kid = await result(engine, "kid")
            assert kid.status == "completed", kid
            assert kid.output == {"got": 3}
            assert kid.completed_steps == ["c1", "c2"]
            assert log == ["A-undo", "c2-ran"]  # nothing of the child rolled back
        assert (await status(engine, "p")).status == "rolled_back"
    consume(tasks)


@pytest.mark.parametrize("strategy", ["reverse_all", "none"])
async def test_terminate_cancels_a_running_child_when_the_parent_completes(tmp_path, strategy):
    log: list = []
    tasks: list = []
    async with open_engine(tmp_path) as engine:
        define_blocker(engine, log, options={"rollback_strategy": strategy})

        @engine.workflows.define(product=P, tag="done-early")
        async def parent(ctx):
            await ctx.step("A", lambda: {"a": 1}, undo(log, "A-undo"))
            tasks.append(asyncio.ensure_future(ctx.workflow("kid", "blocker", {})))  # terminate is the default
            await ctx.step("wait", lambda: wait_for_steps(engine, "kid", "c1"))
            return "parent-done"

        res = await run_to_end(engine, "done-early")
        assert res.status == "completed", res
        assert res.output == "parent-done"
        assert res.rollback_result is None

        kid = await result(engine, "kid")
        assert kid.status == "cancelled"
        assert kid.rollback_result.trigger == "parent_closed"
        # The child's completed steps are rolled back by the child's own strategy.
        expected = ["c1"] if strategy == "reverse_all" else []
        assert kid.rollback_result.rolled_back_steps == expected
        assert log == (["c1-undo"] if strategy == "reverse_all" else [])
    consume(tasks)


async def test_parent_cancelled_while_awaiting_a_blocked_child_terminates_it(tmp_path):
    log: list = []
    async with open_engine(tmp_path) as engine:
        define_blocker(engine, log)

        @engine.workflows.define(product=P, tag="awaits-kid")
        async def parent(ctx):
            await ctx.step("A", lambda: {"a": 1}, undo(log, "A-undo"))
            return await ctx.workflow("kid", "blocker", {})

        wf = await start(engine, "awaits-kid")
        await wait_for_steps(engine, "kid", "c1")
        await wait_idle(engine)  # the child blocks on its signal, its parent on it
        cancelled = await engine.workflows.cancel(product=P, env=E, workflow_id=wf, reason="user gave up")
        assert cancelled.cancelled is True
        assert cancelled.rolled_back_steps == ["A"]

        res = await result(engine, wf)
        assert res.status == "cancelled"
        assert res.rollback_result.trigger == "cancel"
        kid = await result(engine, "kid")
        assert kid.status == "cancelled"
        assert kid.rollback_result.trigger == "parent_closed"
        assert kid.rollback_result.rolled_back_steps == ["c1"]
        assert log == ["c1-undo", "A-undo"]


async def test_abandoned_child_survives_a_restart_and_completes(tmp_path):
    runs: Counter = Counter()
    tasks: list = []

    def define(engine):
        @engine.workflows.define(product=P, tag="lone")
        async def lone(ctx):
            def c1():
                runs["c1"] += 1
                return {"c": 1}

            def c2():
                runs["c2"] += 1
                return {"c": 2}

            await ctx.step("c1", c1)
            got = await ctx.wait_for_signal("go")
            await ctx.step("c2", c2)
            return {"got": got["v"]}

        @engine.workflows.define(product=P, tag="leaves")
        async def parent(ctx):
            tasks.append(asyncio.ensure_future(ctx.workflow("orphan", "lone", {}, parent_close_policy="abandon")))
            await ctx.step("wait", lambda: wait_for_steps(engine, "orphan", "c1"))
            return "bye"

    async with open_engine(tmp_path) as engine:
        define(engine)
        res = await run_to_end(engine, "leaves", workflow_id="leaver")
        assert (res.status, res.output) == ("completed", "bye")
        await wait_idle(engine)
        assert (await status(engine, "orphan")).status == "running"
    consume(tasks)

    async with open_engine(tmp_path) as engine:
        define(engine)  # registering the definitions resumes what was in flight
        assert (await status(engine, "orphan")).status == "running"
        await engine.workflows.signal(product=P, env=E, workflow_id="orphan", signal="go", payload={"v": 8})
        kid = await result(engine, "orphan")
        assert kid.status == "completed", kid
        assert kid.output == {"got": 8}
        assert kid.completed_steps == ["c1", "c2"]
        assert runs == Counter({"c1": 1, "c2": 1})  # c1 was not run again by the resumed child
        assert await listed(engine) == {"leaver": ("leaves", "completed", "original"),
                                        "orphan": ("lone", "completed", "child")}
    consume(tasks)


async def test_request_cancel_lets_the_child_decide_to_stop(tmp_path):
    log: list = []
    tasks: list = []
    polled = asyncio.Event()
    clock = VirtualClock()
    async with sagaloop.Engine(tmp_path / "db", durability="fast", clock=clock) as engine:
        @engine.workflows.define(product=P, tag="poller")
        async def poller(ctx):
            await ctx.step("begin", lambda: {"b": 1}, undo(log, "begin-undo"))
            loops = 0
            while not ctx.cancel_requested:
                loops += 1
                await ctx.sleep(20)
            await ctx.step("cleanup", lambda: log.append("cleanup-ran") or {"loops": loops})
            return {"stopped": True, "loops": loops}

        @engine.workflows.define(product=P, tag="asks-politely")
        async def parent(ctx):
            tasks.append(asyncio.ensure_future(
                ctx.workflow("poll", "poller", {}, parent_close_policy="request_cancel")))
            await ctx.step("wait", polled.wait)  # until the child has polled a few times
            return "asked"

        wf = await start(engine, "asks-politely")
        await wait_for_steps(engine, "poll", "begin")
        await clock.advance(60)  # the child polls at 0, 20, 40 and 60 ms
        polled.set()
        res = await result(engine, wf)
        assert (res.status, res.output) == ("completed", "asked")
        # Asked, not forced: the child sees the request only when its current sleep ends.
        await clock.advance(19)
        assert (await status(engine, "poll")).status == "running"
        await clock.advance(1)
        kid = await result(engine, "poll")
        assert kid.status == "completed", kid  # it stopped by itself: not cancelled, nothing rolled back
        assert kid.output["stopped"] is True
        assert kid.output["loops"] == 4
        assert kid.completed_steps == ["begin", "cleanup"]
        assert kid.rollback_result is None
        assert log == ["cleanup-ran"]
    consume(tasks)


async def test_request_cancel_does_not_force_a_child_that_ignores_it(tmp_path):
    log: list = []
    tasks: list = []
    async with open_engine(tmp_path) as engine:
        define_blocker(engine, log)

        @engine.workflows.define(product=P, tag="asks")
        async def parent(ctx):
            tasks.append(asyncio.ensure_future(
                ctx.workflow("kid", "blocker", {}, parent_close_policy="request_cancel")))
            await ctx.step("wait", lambda: wait_for_steps(engine, "kid", "c1"))
            raise RuntimeError("parent breaks")

        res = await run_to_end(engine, "asks")
        assert res.status == "failed" and "parent breaks" in res.error.message
        await wait_idle(engine)
        assert (await status(engine, "kid")).status == "running"
        await engine.workflows.signal(product=P, env=E, workflow_id="kid", signal="go", payload={"v": 4})
        kid = await result(engine, "kid")
        assert (kid.status, kid.output) == ("completed", {"got": 4})
        assert log == ["c2-ran"]
    consume(tasks)


# -- a completed child is a step of its parent: it rolls back with it --------------------------------


async def test_completed_child_rolls_back_with_its_parent_in_reverse_order(tmp_path):
    log: list = []
    outputs: dict = {}
    runs: Counter = Counter()
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="two-steps")
        async def two_steps(ctx):
            def c1():
                runs["c1"] += 1
                return {"c": 1, "x": ctx.input["x"]}

            def c2():
                runs["c2"] += 1
                return {"c": 2}

            await ctx.step("c1", c1, undo(log, "c1-undo", outputs))
            await ctx.step("c2", c2, undo(log, "c2-undo", outputs))
            return {"child": "done"}

        @engine.workflows.define(product=P, tag="saga")
        async def saga(ctx):
            await ctx.step("A", lambda: {"a": 1}, undo(log, "A-undo", outputs))
            kid = await ctx.workflow("saga-kid", "two-steps", {"x": 5})
            assert kid == {"child": "done"}

            def b():
                raise RuntimeError("B broke")
            await ctx.step("B", b)

        res = await run_to_end(engine, "saga", workflow_id="saga-1")
        assert res.status == "rolled_back", res
        assert res.failed_step == "B"
        assert res.rollback_result.rolled_back_steps == ["saga-kid", "A"]
        assert res.rollback_result.success is True
        assert log == ["c2-undo", "c1-undo", "A-undo"]
        assert outputs == {"c2-undo": {"c": 2}, "c1-undo": {"c": 1, "x": 5}, "A-undo": {"a": 1}}
        assert runs == Counter({"c1": 1, "c2": 1})  # compensating did not run the child's steps again

        kid = await result(engine, "saga-kid")
        assert kid.status == "rolled_back"
        assert kid.rollback_result.rolled_back_steps == ["c2", "c1"]
        for tag in ("c1", "c2"):
            d = await engine.workflows.step_detail(product=P, env=E, workflow_id="saga-kid", step_tag=tag)
            assert (d.status, d.rollback_status) == ("rolled_back", "completed")
        d = await engine.workflows.step_detail(product=P, env=E, workflow_id="saga-1", step_tag="saga-kid")
        assert d.status == "rolled_back"


async def test_nested_children_roll_back_depth_first_in_reverse(tmp_path):
    log: list = []
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="leaf")
        async def leaf(ctx):
            await ctx.step("g1", lambda: 1, undo(log, "g1-undo"))
            return "leaf"

        @engine.workflows.define(product=P, tag="mid")
        async def mid(ctx):
            await ctx.step("m1", lambda: 1, undo(log, "m1-undo"))
            await ctx.workflow("leaf-1", "leaf", {})
            await ctx.step("m2", lambda: 2, undo(log, "m2-undo"))
            return "mid"

        @engine.workflows.define(product=P, tag="top")
        async def top(ctx):
            await ctx.step("A", lambda: 1, undo(log, "A-undo"))
            await ctx.workflow("mid-1", "mid", {})

            def b():
                raise RuntimeError("B broke")
            await ctx.step("B", b)

        res = await run_to_end(engine, "top")
        assert res.status == "rolled_back", res
        assert log == ["m2-undo", "g1-undo", "m1-undo", "A-undo"]
        assert (await status(engine, "mid-1")).status == "rolled_back"
        assert (await status(engine, "leaf-1")).status == "rolled_back"


# -- bad input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, named", [
    ({"parent_close_policy": "explode"}, "explode"),
    ({"retries": -1}, "retries"),
])
async def test_bad_child_options_fail_the_parent_with_invalid_argument(tmp_path, kwargs, named):
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="double")
        async def double(ctx):
            return 2

        @engine.workflows.define(product=P, tag="bad-options")
        async def parent(ctx):
            return await ctx.workflow("kid-x", "double", {}, **kwargs)

        res = await run_to_end(engine, "bad-options")
        assert res.status == "failed", res
        assert res.error.code == "invalid_argument"
        assert named in res.error.message
        with pytest.raises(sagaloop.WorkflowNotFoundError):
            await status(engine, "kid-x")  # no child was started


@pytest.mark.parametrize("taken_by", ["ended", "running", "the-parent-itself"])
async def test_child_id_taken_by_an_unrelated_execution_fails_the_parent(tmp_path, taken_by):
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="double")
        async def double(ctx):
            return {"doubled": 2 * (ctx.input or {}).get("n", 0)}

        @engine.workflows.define(product=P, tag="waiter")
        async def waiter(ctx):
            got = await ctx.wait_for_signal("go")
            return {"waiter": got["v"]}

        @engine.workflows.define(product=P, tag="reuses-id")
        async def parent(ctx):
            child_id = ctx.workflow_id if taken_by == "the-parent-itself" else "taken"
            return await ctx.workflow(child_id, "double", {"n": 1})

        if taken_by == "ended":
            first = await engine.workflows.execute(product=P, env=E, tag="double", input={"n": 4},
                                                   workflow_id="taken")
            assert first.status == "completed"
        elif taken_by == "running":
            first = await engine.workflows.execute(product=P, env=E, tag="waiter", workflow_id="taken")
            assert first.status == "running"

        res = await run_to_end(engine, "reuses-id", workflow_id="reuser", timeout=3)  # a hang fails fast
        assert res.status == "failed", res
        assert res.error.code == "workflow_exists"

        if taken_by == "ended":
            other = await engine.workflows.result(product=P, env=E, workflow_id="taken")
            assert (other.status, other.output) == ("completed", {"doubled": 8})  # untouched
        elif taken_by == "running":
            assert (await status(engine, "taken")).status == "running"
            await engine.workflows.signal(product=P, env=E, workflow_id="taken", signal="go", payload={"v": 1})
            assert (await result(engine, "taken")).output == {"waiter": 1}
        kids = [wf for wf, (_, _, kind) in (await listed(engine)).items() if kind == "child"]
        assert kids == []


# -- crash recovery with a real process -----------------------------------------------------------------


worker = load_module(WORKER_PATH, "sagaloop_tests_children_worker")
needs_sigkill = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")


@pytest.fixture
def crash(tmp_path):
    """``crash(mode, workflow_id)``: run the worker until its marker, SIGKILL it; returns its pid."""
    with Spawner(tmp_path, WORKER_PATH) as spawn:
        def run_and_kill(mode: str, workflow_id: str, marker: str) -> int:
            w = spawn(mode, "--workflow-id", workflow_id)
            assert w.wait_for("STARTED ") == f"STARTED {workflow_id}"
            w.wait_for(marker)
            w.sigkill()
            return w.pid

        run_and_kill.datadir, run_and_kill.sidefile = spawn.datadir, spawn.sidefile
        yield run_and_kill


async def resume_here(datadir: Path, sidefile: Path, workflow_id: str, order: str = "parent-first") -> dict:
    """Open the directory here, define the workflows (which resumes them), wait for parent and child."""
    kid_id = worker.kid_id(workflow_id)
    wp, we = worker.PRODUCT, worker.ENV
    async with sagaloop.Engine(datadir) as engine:
        worker.define_workflows(engine, sidefile, block=None, order=order)
        parent = await worker.wait_until_ended(engine, workflow_id, timeout=WAIT_S)
        kid = await worker.wait_until_ended(engine, kid_id, timeout=WAIT_S)
        parent_events = (await engine.workflows.history(product=wp, env=we, workflow_id=workflow_id)).events
        kid_events = (await engine.workflows.history(product=wp, env=we, workflow_id=kid_id)).events
        detail = await engine.workflows.step_detail(product=wp, env=we, workflow_id=workflow_id, step_tag=kid_id)
        listed_ = await engine.workflows.list(product=wp, env=we)
        return {"parent": parent, "kid": kid, "parent_events": [e.type for e in parent_events],
                "kid_events": [e.type for e in kid_events], "detail": detail,
                "listed": sorted((s.workflow_id, s.tag, s.status, s.type) for s in listed_), "pid": os.getpid()}


@pytest.mark.slow  # real processes, SIGKILLed
@needs_sigkill
def test_child_completed_before_a_crash_is_not_run_again(crash):
    wf = "order-kid-done"
    dead = crash("child-done", wf, "IN-P2")
    assert side_names(crash.sidefile) == ["p1", "c1", "c2", "p2"]

    seen = asyncio.run(resume_here(crash.datadir, crash.sidefile, wf))
    parent, kid, here = seen["parent"], seen["kid"], seen["pid"]
    assert parent.status == "completed", parent
    assert parent.completed_steps == ["p1", worker.kid_id(wf), "p2"]

    # Ground truth: the child's steps ran exactly once, in the killed process; only p2 ran again.
    assert Counter(side_names(crash.sidefile)) == Counter({"p1": 1, "c1": 1, "c2": 1, "p2": 2})
    [(c1_pid, token)] = runs_of(crash.sidefile, "c1")
    assert c1_pid == dead
    assert [pid for pid, _ in runs_of(crash.sidefile, "p2")] == [dead, here]
    # The parent got the child's recorded output back.
    assert parent.output["kid"] == {"token": token, "c1_pid": dead, "c2_pid": dead, "n": 7}
    assert parent.output["p2"] == {"pid": here}
    assert (kid.status, kid.output) == ("completed", parent.output["kid"])
    assert seen["detail"].attempts == 1

    assert seen["listed"] == sorted([(wf, worker.PARENT_TAG, "completed", "original"),
                                     (worker.kid_id(wf), worker.CHILD_TAG, "completed", "child")])
    assert "workflow_resumed" in seen["parent_events"]
    assert seen["parent_events"].count("child_started") == 1
    assert seen["parent_events"].count("child_completed") == 1
    assert "workflow_resumed" not in seen["kid_events"]  # the ended child was not touched


@pytest.mark.slow  # real processes, SIGKILLed
@needs_sigkill
@pytest.mark.parametrize("order", ["parent-first", "child-first"])
def test_kill_while_child_runs_reattaches_to_the_same_child(crash, order):
    wf = f"order-kid-running-{order}"
    dead = crash("child-running", wf, "IN-C2")
    assert side_names(crash.sidefile) == ["p1", "c1", "c2"]

    seen = asyncio.run(resume_here(crash.datadir, crash.sidefile, wf, order))
    parent, kid, here = seen["parent"], seen["kid"], seen["pid"]
    assert parent.status == "completed", parent
    assert kid.status == "completed", kid

    # c1 was recorded before the kill; c2 was in flight, so it ran again (at-least-once) in this process.
    assert Counter(side_names(crash.sidefile)) == Counter({"p1": 1, "c1": 1, "c2": 2, "p2": 1})
    [(c1_pid, token)] = runs_of(crash.sidefile, "c1")
    assert c1_pid == dead
    assert [pid for pid, _ in runs_of(crash.sidefile, "c2")] == [dead, here]
    assert parent.output["kid"] == {"token": token, "c1_pid": dead, "c2_pid": here, "n": 7}
    assert kid.output == parent.output["kid"]

    # One child instance, under the same id: the parent re-attached to it.
    assert seen["listed"] == sorted([(wf, worker.PARENT_TAG, "completed", "original"),
                                     (worker.kid_id(wf), worker.CHILD_TAG, "completed", "child")])
    assert seen["parent_events"].count("child_started") == 1
    assert seen["parent_events"].count("child_completed") == 1
    assert "workflow_resumed" in seen["parent_events"]
    assert "workflow_resumed" in seen["kid_events"]
    assert seen["detail"].attempts == 1


@pytest.mark.slow  # real processes, SIGKILLed
@needs_sigkill
def test_a_parent_cancelled_and_killed_while_its_child_rolls_back_ends_and_starts_no_new_child(crash):
    """cancel(parent) terminates the running child; the process dies inside the child's compensation.
    After the restart the parent ends its cancel (it never runs its handler again nor starts a
    second attempt of the child it terminated itself), and the child finishes its rollback."""
    wf = "closing-terminate"
    crash("cancel-in-child-rollback", wf, "IN-UNDO-K1")

    async def resume() -> tuple:
        async with sagaloop.Engine(crash.datadir) as engine:
            worker.define_workflows(engine, crash.sidefile, block=None)
            parent = await worker.wait_until_ended(engine, wf, timeout=WAIT_S)
            kid = await worker.wait_until_ended(engine, worker.kid_id(wf), timeout=WAIT_S)
            events = [e.type for e in (await engine.workflows.history(product=worker.PRODUCT, env=worker.ENV,
                                                                      workflow_id=wf)).events]
            listed_ = await engine.workflows.list(product=worker.PRODUCT, env=worker.ENV)
            return parent, kid, events, sorted(s.workflow_id for s in listed_)

    parent, kid, events, ids = asyncio.run(resume())
    assert parent.status == "cancelled", parent
    assert parent.rollback_result.trigger == "cancel"
    assert (kid.status, kid.rollback_result.trigger) == ("cancelled", "parent_closed")
    assert events.count("child_started") == 1 and "child_failed" not in events
    assert ids == sorted([wf, worker.kid_id(wf)])  # no "<kid>~2"
    names = side_names(crash.sidefile)
    assert names.count("k1") == 1 and names.count("p1") == 1
    assert names.count("undo-k1") == 2  # in flight at the kill: run again (at-least-once), then done
    assert names.count("undo-p1") == 1
    # The child's resumed rollback ends before the parent's own starts: the parent waits for it.
    assert names.index("undo-k1-done") < names.index("undo-p1"), names


@pytest.mark.slow  # real processes, SIGKILLed
@needs_sigkill
def test_request_cancel_survives_a_restart(crash):
    """Policy request_cancel: the parent ended and the process died; the resumed child still sees
    ctx.cancel_requested and stops."""
    wf = "closing-request"
    crash("request-cancel", wf, "PARENT-ENDED")

    async def resume():
        async with sagaloop.Engine(crash.datadir) as engine:
            worker.define_workflows(engine, crash.sidefile, block=None)
            return await worker.wait_until_ended(engine, worker.kid_id(wf), timeout=WAIT_S)

    kid = asyncio.run(resume())
    assert (kid.status, kid.output) == ("completed", "stopped on request")
