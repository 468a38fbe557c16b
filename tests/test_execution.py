"""Executing a workflow: execute() and its result, execution options, result(), status(), list().

Product document sections: Executing a Workflow, Execution Options, Execution Result.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import timedelta

import orjson
import pytest
from helpers import Boom, CardDeclined, E, P, execute, open_engine, raiser

import sagaloop
from sagaloop.testing import VirtualClock

SEED_INPUT = {"orderId": "ORD-12345", "customerId": "cust-001", "amount": 99.99, "items": ["SKU-001", "SKU-002"]}


# -- Executing a workflow / Execution Result ------------------------------------------------


async def test_completed_result_carries_every_field(tmp_path):
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="order-fulfillment")
        async def order(ctx):
            v = await ctx.step("validate-order", lambda: {"ok": True, "items": len(ctx.input["items"])})

            async def charge():
                await asyncio.sleep(0.03)
                return {"id": "ch_1", "amount": ctx.input["amount"]}

            c = await ctx.step("charge", charge)
            return {"orderId": ctx.input["orderId"], "items": v["items"], "charge": c["id"], "amount": c["amount"]}

        started = time.monotonic()
        result = await execute(engine, "order-fulfillment", SEED_INPUT, workflow_id="custom-id-123")
        wall_ms = (time.monotonic() - started) * 1000

    assert isinstance(result, sagaloop.WorkflowResult)
    assert result.workflow_id == "custom-id-123"
    assert result.status == "completed"
    assert result.output == {"orderId": "ORD-12345", "items": 2, "charge": "ch_1", "amount": 99.99}
    assert result.error is None
    assert result.completed_steps == ["validate-order", "charge"]
    assert result.failed_step is None
    assert result.rollback_result is None
    assert isinstance(result.execution_time, int)
    assert 25 <= result.execution_time <= wall_ms + 5  # includes the 30 ms step, bounded by wall time


async def test_generated_workflow_ids_are_unique_and_addressable(tmp_path):
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            return ctx.workflow_id

        results = [await execute(engine, "wf", {"n": i}) for i in range(3)]
        ids = [r.workflow_id for r in results]
        assert all(isinstance(i, str) and i for i in ids)
        assert len(set(ids)) == 3
        # the handler saw the same id the caller got back
        assert [r.output for r in results] == ids
        for wid in ids:
            st = await engine.workflows.status(product=P, env=E, workflow_id=wid)
            assert (st.workflow_id, st.status) == (wid, "completed")


@pytest.mark.parametrize(
    "exc, code",
    [
        (Boom("card declined"), "step_failed"),          # a plain exception: the generic step code
        (CardDeclined("card declined"), "card_declined"),  # an exception that carries its own code
    ],
)
async def test_failed_result_names_step_message_and_code(tmp_path, exc, code):
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("validate", lambda: 1)

            async def charge():
                raise exc

            await ctx.step("charge", charge)
            await ctx.step("ship", lambda: 2)
            return "unreachable"

        result = await execute(engine, "wf", {})

    assert result.status == "failed"  # nothing had a rollback handler
    assert result.failed_step == "charge"
    assert result.completed_steps == ["validate"]
    assert result.output is None
    assert result.error is not None
    assert (result.error.message, result.error.step, result.error.code) == ("card declined", "charge", code)


async def test_existing_workflow_id_raises(tmp_path):
    async with open_engine(tmp_path) as engine:
        calls = []

        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            calls.append(ctx.input)
            return ctx.input

        await execute(engine, "wf", 1, workflow_id="dup")
        with pytest.raises(sagaloop.WorkflowExistsError):
            await execute(engine, "wf", 2, workflow_id="dup")
        assert calls == [1]


async def test_unknown_definition_raises(tmp_path):
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            return 1

        with pytest.raises(sagaloop.DefinitionNotFoundError):
            await execute(engine, "no-such-tag", {})
        with pytest.raises(sagaloop.DefinitionNotFoundError):
            await engine.workflows.execute(product="other-product", env=E, tag="wf", input={})


# -- Execution Options ----------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["completed", "failed"])
async def test_idempotency_key_returns_first_result_and_runs_nothing_again(tmp_path, outcome):
    effects: list[str] = []
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="order-fulfillment")
        async def order(ctx):
            def charge():
                effects.append(f"charge {ctx.input['orderId']}")
                if outcome == "failed":
                    raise Boom("declined")
                return {"charged": ctx.input["amount"]}

            return await ctx.step("charge", charge)

        first = await execute(engine, "order-fulfillment", SEED_INPUT, idempotency_key="order-12345")
        again = await execute(engine, "order-fulfillment", {"orderId": "OTHER", "amount": 1},
                              idempotency_key="order-12345")
        assert effects == ["charge ORD-12345"]
        assert first.status == outcome
        assert again.workflow_id == first.workflow_id
        assert again.status == first.status
        assert again.output == first.output
        assert again.completed_steps == first.completed_steps
        assert again.error == first.error

        # another key runs again
        other = await execute(engine, "order-fulfillment", SEED_INPUT, idempotency_key="order-99999")
        assert other.workflow_id != first.workflow_id
        assert effects == ["charge ORD-12345", "charge ORD-12345"]


async def test_idempotency_key_is_scoped_per_env(tmp_path):
    effects: list[str] = []
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("effect", lambda: effects.append(ctx.env))
            return ctx.env

        a = await engine.workflows.execute(product=P, env="prd", tag="wf", input={}, idempotency_key="k")
        b = await engine.workflows.execute(product=P, env="stg", tag="wf", input={}, idempotency_key="k")
        c = await engine.workflows.execute(product=P, env="prd", tag="wf", input={}, idempotency_key="k")
    assert effects == ["prd", "stg"]
    assert a.workflow_id != b.workflow_id
    assert c.workflow_id == a.workflow_id


async def test_idempotency_key_survives_reopening_the_engine(tmp_path):
    effects: list[int] = []

    def define(engine):
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("effect", lambda: effects.append(1))
            return {"done": True}

    async with open_engine(tmp_path) as engine:
        define(engine)
        first = await execute(engine, "wf", {}, idempotency_key="once")
    async with open_engine(tmp_path) as engine:
        define(engine)
        again = await execute(engine, "wf", {}, idempotency_key="once")
    assert effects == [1]
    assert (again.workflow_id, again.status, again.output) == (first.workflow_id, "completed", {"done": True})


async def test_concurrent_executes_with_same_idempotency_key_run_once(tmp_path):
    effects: list[int] = []
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            async def effect():
                effects.append(1)
                await asyncio.sleep(0.02)
                return "ok"

            return await ctx.step("effect", effect)

        results = await asyncio.gather(*(execute(engine, "wf", {}, idempotency_key="same") for _ in range(4)))
    assert effects == [1]
    assert len({r.workflow_id for r in results}) == 1
    assert {r.status for r in results} == {"completed"}


@pytest.mark.parametrize("timeout", [80, 80.0, "80ms", timedelta(milliseconds=80)],
                         ids=["int-ms", "float-ms", "str", "timedelta"])
async def test_execute_timeout_interrupts_and_rolls_back(tmp_path, timeout):
    # The workflow timeout follows the engine's clock: on a virtual one it fires exactly at 80 ms.
    undone: list = []
    slow_cancelled = asyncio.Event()
    clock = VirtualClock(start_ms=1_700_000_000_000)
    async with sagaloop.Engine(tmp_path / "db", durability="fast", clock=clock) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("reserve", lambda: {"r": 1}, lambda out: undone.append(out))

            async def slow():
                try:
                    await asyncio.sleep(60)
                except asyncio.CancelledError:
                    slow_cancelled.set()
                    raise
            await ctx.step("slow", slow)
            return "unreachable"

        await execute(engine, "wf", {}, workflow_id="t", timeout=timeout, wait=False)
        # wait_for_steps=False: step "slow" runs (in real time) until the timeout interrupts it.
        await clock.advance(79, wait_for_steps=False)
        live = await engine.workflows.status(product=P, env=E, workflow_id="t")
        assert (live.status, live.current_step) == ("running", "slow")
        assert undone == []
        await clock.advance(1, wait_for_steps=False)
        result = await engine.workflows.result(product=P, env=E, workflow_id="t", timeout="5s")
    assert slow_cancelled.is_set(), "the timeout did not interrupt the running step"
    assert result.execution_time == 80
    assert result.status == "rolled_back"
    assert result.error is not None and result.error.code == "workflow_timeout"
    assert result.rollback_result is not None
    assert result.rollback_result.rolled_back_steps == ["reserve"]
    assert undone == [{"r": 1}]
    assert result.completed_steps == ["reserve"]


async def test_execute_timeout_with_nothing_to_roll_back_fails(tmp_path):
    clock = VirtualClock()
    async with sagaloop.Engine(tmp_path / "db", durability="fast", clock=clock) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("slow", lambda: asyncio.sleep(60))

        await execute(engine, "wf", {}, workflow_id="t", timeout="50ms", wait=False)
        await clock.advance("50ms", wait_for_steps=False)  # the step hangs until the timeout
        result = await engine.workflows.result(product=P, env=E, workflow_id="t", timeout="5s")
    assert result.status == "failed"
    assert result.error.code == "workflow_timeout"


async def test_definition_timeout_applies_and_execute_timeout_overrides_it(tmp_path):
    clock = VirtualClock()
    gates = {"by-definition": asyncio.Event(), "overridden": asyncio.Event()}
    async with sagaloop.Engine(tmp_path / "db", durability="fast", clock=clock) as engine:
        @engine.workflows.define(product=P, tag="wf", options={"timeout": "60ms"})
        async def wf(ctx):
            await ctx.step("wait", gates[ctx.workflow_id].wait)
            return "done"

        await execute(engine, "wf", {}, workflow_id="by-definition", wait=False)
        await execute(engine, "wf", {}, workflow_id="overridden", timeout="5s", wait=False)
        # wait_for_steps=False: both steps wait on their gates while the clock moves.
        await clock.advance("60ms", wait_for_steps=False)
        by_definition = await engine.workflows.result(product=P, env=E, workflow_id="by-definition", timeout="5s")
        # well past the definition's 60 ms, within the execute's 5 s
        await clock.advance(4000, wait_for_steps=False)
        gates["overridden"].set()
        overridden = await engine.workflows.result(product=P, env=E, workflow_id="overridden", timeout="5s")
    assert by_definition.status == "failed" and by_definition.error.code == "workflow_timeout"
    assert overridden.status == "completed" and overridden.output == "done"


async def test_context_and_input_are_visible_to_the_handler(tmp_path):
    context = {"source": "api", "requestId": "req-abc"}
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            return {"context": ctx.context, "input": ctx.input, "product": ctx.product, "env": ctx.env}

        result = await execute(engine, "wf", {"orderId": "ORD-12345"}, workflow_id="custom-id-123",
                               idempotency_key="order-12345", timeout=300000, context=context)
    assert result.status == "completed"
    assert result.output == {"context": context, "input": {"orderId": "ORD-12345"}, "product": P, "env": E}


async def test_wait_false_then_result_and_status(tmp_path):
    gate = asyncio.Event()
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("first", lambda: 1)

            async def blocked():
                await gate.wait()
                return 2

            second = await ctx.step("gate", blocked)
            return {"second": second}

        started = await execute(engine, "wf", {}, workflow_id="bg-1", wait=False)
        assert started.workflow_id == "bg-1"
        assert started.status == "running"

        # result() with a short timeout returns the running state, it does not block for ever
        still = await engine.workflows.result(product=P, env=E, workflow_id="bg-1", timeout="30ms")
        assert still.status == "running"
        live = await engine.workflows.status(product=P, env=E, workflow_id="bg-1")
        assert live.status == "running"
        assert live.current_step == "gate"
        assert live.completed_steps == ["first"]

        gate.set()
        final = await engine.workflows.result(product=P, env=E, workflow_id="bg-1")
        assert (final.workflow_id, final.status, final.output) == ("bg-1", "completed", {"second": 2})
        assert final.completed_steps == ["first", "gate"]

        # status() of an ended instance
        st = await engine.workflows.status(product=P, env=E, workflow_id="bg-1")
        assert (st.workflow_id, st.tag, st.status) == ("bg-1", "wf", "completed")
        assert st.current_step is None
        assert st.completed_steps == ["first", "gate"]
        # result() of an ended instance returns at once with the same result
        again = await engine.workflows.result(product=P, env=E, workflow_id="bg-1")
        assert again == final


async def test_status_of_ended_failed_instance_and_unknown_instance(tmp_path):
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            ctx.state["phase"] = "charging"
            await ctx.step("a", lambda: 1)
            await ctx.step("b", raiser("nope"))

        await execute(engine, "wf", {}, workflow_id="f-1")
        st = await engine.workflows.status(product=P, env=E, workflow_id="f-1")
        assert st.status == "failed"
        assert st.completed_steps == ["a"]
        assert st.state == {"phase": "charging"}
        assert st.error is not None and st.error.message == "nope"
        with pytest.raises(sagaloop.WorkflowNotFoundError):
            await engine.workflows.status(product=P, env=E, workflow_id="nope")
        with pytest.raises(sagaloop.WorkflowNotFoundError):
            await engine.workflows.status(product=P, env="other-env", workflow_id="f-1")


async def test_list_newest_first_with_filters_and_limit(tmp_path):
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="orders")
        async def orders(ctx):
            if ctx.input.get("fail"):
                await ctx.step("x", raiser("x"))
            return "ok"

        @engine.workflows.define(product=P, tag="reports")
        async def reports(ctx):
            return "ok"

        plan = [("o1", "orders", {}), ("r1", "reports", {}), ("o2", "orders", {"fail": True}),
                ("o3", "orders", {}), ("r2", "reports", {})]
        for wid, tag, inp in plan:
            await execute(engine, tag, inp, workflow_id=wid)
            await asyncio.sleep(0.003)  # distinct millisecond creation times

        async def ids(**kw):
            return [s.workflow_id for s in await engine.workflows.list(product=P, env=E, **kw)]

        assert await ids() == ["r2", "o3", "o2", "r1", "o1"]
        assert await ids(tag="orders") == ["o3", "o2", "o1"]
        assert await ids(status="failed") == ["o2"]
        assert await ids(tag="orders", status="completed") == ["o3", "o1"]
        assert await ids(limit=2) == ["r2", "o3"]
        assert await ids(tag="orders", limit=1) == ["o3"]
        assert await ids(tag="no-such-tag") == []
        assert [s.workflow_id for s in await engine.workflows.list(product=P, env="stg")] == []

        summaries = await engine.workflows.list(product=P, env=E, tag="orders")
        assert [(s.tag, s.status) for s in summaries] == [("orders", "completed"), ("orders", "failed"),
                                                          ("orders", "completed")]


async def test_results_to_dict_is_plain_json(tmp_path):
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("a", lambda: {"id": "A"}, lambda out: None)

            def bad_undo(out):
                raise Boom("undo broke")

            await ctx.step("b", lambda: {"id": "B"}, bad_undo)
            await ctx.step("c", raiser("c failed"))

        result = await execute(engine, "wf", {"amount": 1.5}, workflow_id="j-1", context={"k": "v"})
        status = await engine.workflows.status(product=P, env=E, workflow_id="j-1")
        history = await engine.workflows.history(product=P, env=E, workflow_id="j-1")
        detail = await engine.workflows.step_detail(product=P, env=E, workflow_id="j-1", step_tag="b")
        listed = await engine.workflows.list(product=P, env=E)

    d = result.to_dict()
    for obj in (d, status.to_dict(), history.to_dict(), detail.to_dict(), *[s.to_dict() for s in listed]):
        assert orjson.loads(orjson.dumps(obj)) == obj
        assert json.loads(json.dumps(obj)) == obj
    assert d["workflow_id"] == "j-1"
    assert d["status"] == "failed"
    assert d["error"]["message"] == "c failed" and d["error"]["step"] == "c"
    assert d["completed_steps"] == ["a", "b"]
    assert d["rollback_result"]["success"] is False
    assert d["rollback_result"]["rolled_back_steps"] == ["a"]
    assert len(d["rollback_result"]["failed_steps"]) == 1
    assert d["rollback_result"]["failed_steps"][0]["tag"] == "b"
    assert "undo broke" in d["rollback_result"]["failed_steps"][0]["error"]
    assert [e["type"] for e in history.to_dict()["events"]][0] == "workflow_started"


# -- Durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, ms",
    [
        (500, 500.0),
        (2.5, 2.5),
        ("500ms", 500.0),
        ("30s", 30_000.0),
        ("5m", 300_000.0),
        ("24h", 86_400_000.0),
        ("7d", 604_800_000.0),
        (timedelta(seconds=30), 30_000.0),
        (timedelta(milliseconds=250), 250.0),
    ],
)
def test_duration_forms(value, ms):
    assert sagaloop.parse_duration(value) == ms


@pytest.mark.parametrize("bad", ["abc", "10 parsecs", "-5s", [1], True])
def test_bad_duration_is_a_value_error_naming_the_value(bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        sagaloop.parse_duration(bad)


async def test_bad_execute_timeout_raises_value_error_and_runs_nothing(tmp_path):
    calls = []
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            calls.append(1)

        with pytest.raises(ValueError, match="soon"):
            await execute(engine, "wf", {}, timeout="soon")
        assert await engine.workflows.list(product=P, env=E) == []
    assert calls == []


async def test_ctx_steps_is_a_live_view_and_completed_steps_follow_completion_order(tmp_path):
    """Steps run side by side complete in their own order; ctx.steps shows only completed ones."""
    seen = {}
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="fan-out")
        async def fan_out(ctx):
            async def slow():
                await asyncio.sleep(0.02)
                return "slow"

            async def fast():
                return "fast"

            view = ctx.steps
            seen["before"] = (dict(view), list(ctx.completed_steps))
            await asyncio.gather(ctx.step("slow", slow), ctx.step("fast", fast))
            seen["after"] = (dict(view), "slow" in view, len(view), list(ctx.completed_steps))
            with pytest.raises(KeyError):
                view["never"]
            return view["slow"] + view["fast"]

        result = await execute(engine, "fan-out")
    assert result.status == "completed" and result.output == "slowfast"
    assert seen["before"] == ({}, [])
    assert seen["after"] == ({"slow": "slow", "fast": "fast"}, True, 2, ["fast", "slow"])
    assert result.completed_steps == ["fast", "slow"]  # the order they completed in, not the call order
