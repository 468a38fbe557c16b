"""Workflow history and step details.

Product document sections: Get Execution History, Get Step Details, Step States.
"""

from __future__ import annotations

import asyncio
import functools

import helpers
import pytest
from helpers import Boom, CardDeclined, E, P, detail, open_engine

import sagaloop

# execute answers "running" while a retry waits (a durable timer); these tests want the end.
execute = functools.partial(helpers.execute, until_end=True)


async def history(engine, workflow_id: str) -> list[sagaloop.HistoryEvent]:
    h = await engine.workflows.history(product=P, env=E, workflow_id=workflow_id)
    assert isinstance(h, sagaloop.History)
    return h.events


def summary(events) -> list[tuple[str, str | None]]:
    """(type, step-or-checkpoint name) for each event."""
    return [(e.type, e.data.get("step", e.data.get("name"))) for e in events]


def assert_timestamps(events) -> None:
    stamps = [e.timestamp for e in events]
    assert all(type(t) is int for t in stamps), stamps
    assert stamps == sorted(stamps), stamps
    assert stamps[0] > 1_600_000_000_000  # epoch milliseconds, not seconds


# -- history --------------------------------------------------------------------------------------


async def test_history_of_a_completed_run(tmp_path):
    attempts: list[int] = []
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("validate-order", lambda: {"valid": True, "total": 150.0})
            await ctx.checkpoint("validation-complete", {"total": 150.0})

            def email():
                raise Boom("smtp down")

            await ctx.step("send-email", email, None, {"allow_fail": True})

            def charge():
                attempts.append(1)
                if len(attempts) == 1:
                    raise Boom("gateway busy")
                return {"charge_id": "ch_1"}

            await ctx.step("process-payment", charge, None, {"retries": 1, "retry_delay": 1})
            return "ok"

        await execute(engine, input={"orderId": "ORD-1"}, workflow_id="h-ok")
        events = await history(engine, "h-ok")

    assert summary(events) == [
        ("workflow_started", None),
        ("step_started", "validate-order"),
        ("step_completed", "validate-order"),
        ("checkpoint_created", "validation-complete"),
        ("step_started", "send-email"),
        ("step_skipped", "send-email"),
        ("step_started", "process-payment"),
        ("step_retrying", "process-payment"),
        ("step_completed", "process-payment"),
        ("workflow_completed", None),
    ]
    assert_timestamps(events)
    by_type = {}
    for e in events:
        by_type.setdefault(e.type, []).append(e.data)
    assert by_type["workflow_started"][0]["input"] == {"orderId": "ORD-1"}
    assert [d["output"] for d in by_type["step_completed"]] == [{"valid": True, "total": 150.0},
                                                                {"charge_id": "ch_1"}]
    assert by_type["checkpoint_created"][0]["name"] == "validation-complete"
    assert by_type["step_skipped"][0]["error"]["message"] == "smtp down"
    assert by_type["step_retrying"][0]["error"]["message"] == "gateway busy"


async def test_history_of_a_rolled_back_run(tmp_path):
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("validate-order", lambda: {"valid": True}, lambda out: None)
            await ctx.checkpoint("validation-complete")
            await ctx.step("reserve", lambda: {"r": 1}, lambda out: None)

            def pay():
                raise CardDeclined("Card declined")

            await ctx.step("process-payment", pay)

        result = await execute(engine, input={"orderId": "ORD-2"}, workflow_id="h-rb")
        events = await history(engine, "h-rb")

    assert result.status == "rolled_back"
    assert summary(events) == [
        ("workflow_started", None),
        ("step_started", "validate-order"),
        ("step_completed", "validate-order"),
        ("checkpoint_created", "validation-complete"),
        ("step_started", "reserve"),
        ("step_completed", "reserve"),
        ("step_started", "process-payment"),
        ("step_failed", "process-payment"),
        ("rollback_started", None),
        ("step_rolled_back", "reserve"),
        ("step_rolled_back", "validate-order"),
        ("workflow_rolled_back", None),
    ]
    assert_timestamps(events)
    failed = next(e for e in events if e.type == "step_failed")
    assert failed.data["error"]["message"] == "Card declined"
    assert failed.data["error"]["code"] == "card_declined"


async def test_history_of_a_failed_run(tmp_path):
    undone = []
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf", options={"rollback_strategy": "none"})
        async def wf(ctx):
            await ctx.step("a", lambda: 1, lambda out: undone.append(out))

            def boom():
                raise Boom("broken")

            await ctx.step("b", boom)

        await execute(engine, input={}, workflow_id="h-f")
        events = await history(engine, "h-f")

    types = [e.type for e in events]
    assert types[:5] == ["workflow_started", "step_started", "step_completed", "step_started", "step_failed"]
    assert types[-1] == "workflow_failed"
    assert "step_rolled_back" not in types
    assert "workflow_rolled_back" not in types and "workflow_completed" not in types
    assert undone == []
    assert_timestamps(events)


async def test_history_of_a_manual_rollback(tmp_path):
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("payment", lambda: {"id": "ch"}, lambda out: None)
            await ctx.trigger_rollback("High fraud risk detected")
            return "stopped"

        await execute(engine, workflow_id="h-m")
        events = await history(engine, "h-m")
    assert summary(events) == [
        ("workflow_started", None),
        ("step_started", "payment"),
        ("step_completed", "payment"),
        ("rollback_started", None),
        ("step_rolled_back", "payment"),
        ("workflow_rolled_back", None),
    ]


# -- step details ---------------------------------------------------------------------------------


async def test_step_detail_fields(tmp_path):
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            async def validate():
                await asyncio.sleep(0.03)
                return {"valid": True}

            await ctx.step("validate-order", validate)

            def optional():
                raise Boom("optional broke")

            await ctx.step("optional", optional, allow_fail=True)
            return "ok"

        await execute(engine, workflow_id="d-ok")
        ok = await detail(engine, "d-ok", "validate-order")
        skipped = await detail(engine, "d-ok", "optional")

    assert isinstance(ok, sagaloop.StepDetail)
    assert ok.tag == "validate-order"
    assert ok.status == "completed"
    assert ok.output == {"valid": True}
    assert ok.error is None
    assert ok.attempts == 1
    assert type(ok.duration) is int and 25 <= ok.duration < 2000
    assert ok.rollback_status is None

    assert (skipped.tag, skipped.status, skipped.output, skipped.attempts) == ("optional", "skipped", None, 1)
    assert skipped.error.message == "optional broke"


async def test_step_detail_of_a_compensated_step(tmp_path):
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("reserve", lambda: {"reservation": "rs_1"}, lambda out: None)

            def ship():
                raise Boom("no address")

            await ctx.step("ship", ship)

        await execute(engine, workflow_id="d-rb")
        reserve = await detail(engine, "d-rb", "reserve")
        ship = await detail(engine, "d-rb", "ship")

    assert reserve.status == "rolled_back"
    assert reserve.rollback_status == "completed"
    assert reserve.output == {"reservation": "rs_1"}
    assert reserve.attempts == 1
    assert (ship.status, ship.rollback_status, ship.output) == ("failed", None, None)
    assert (ship.error.message, ship.error.code) == ("no address", "step_failed")


async def test_step_detail_seed_example_failed_step_with_retries_and_compensation(tmp_path):
    """The product document's example: a failed step, 3 attempts, whose compensation completed."""
    undone = []
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            def charge():
                raise CardDeclined("Card declined")

            await ctx.step("process-payment", charge, lambda out: undone.append(out),
                           {"retries": 2, "retry_delay": 1})

        await execute(engine, workflow_id="wf-abc123")
        d = await detail(engine, "wf-abc123", "process-payment")

    assert undone == [None]
    assert d.tag == "process-payment"
    assert d.status == "failed"
    assert d.output is None
    assert (d.error.message, d.error.code) == ("Card declined", "card_declined")
    assert d.attempts == 3
    assert type(d.duration) is int and d.duration >= 0
    assert d.rollback_status == "completed"


async def test_step_detail_of_a_failed_compensation(tmp_path):
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            def undo(out):
                raise Boom("undo broke")

            await ctx.step("a", lambda: "A", undo)

            def fail():
                raise Boom("b broke")

            await ctx.step("b", fail)

        result = await execute(engine, workflow_id="d-cf")
        a = await detail(engine, "d-cf", "a")
        events = await history(engine, "d-cf")
    assert result.status == "failed"
    assert a.rollback_status == "failed"
    assert a.status != "rolled_back"
    assert "step_rolled_back" not in [e.type for e in events]
    assert [e.type for e in events][-1] == "workflow_failed"


# -- not found ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, kwargs, error",
    [
        ("step_detail", {"workflow_id": "nf", "step_tag": "no-such-step"}, sagaloop.StepNotFoundError),
        ("step_detail", {"workflow_id": "missing", "step_tag": "a"}, sagaloop.WorkflowNotFoundError),
        ("history", {"workflow_id": "missing"}, sagaloop.WorkflowNotFoundError),
        ("history", {"workflow_id": "nf", "env": "stg"}, sagaloop.WorkflowNotFoundError),
        ("step_detail", {"workflow_id": "nf", "step_tag": "a", "product": "other"}, sagaloop.WorkflowNotFoundError),
    ],
)
async def test_not_found_errors(tmp_path, call, kwargs, error):
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("a", lambda: 1)

        await execute(engine, workflow_id="nf")
        args = {"product": P, "env": E, **kwargs}
        with pytest.raises(error) as info:
            await getattr(engine.workflows, call)(**args)
    assert isinstance(info.value, sagaloop.SagaloopError)
    assert info.value.code == {sagaloop.StepNotFoundError: "step_not_found",
                               sagaloop.WorkflowNotFoundError: "workflow_not_found"}[error]


# -- durability -----------------------------------------------------------------------------------


@pytest.mark.parametrize("durability", ["fast", "durable"])
async def test_history_and_step_detail_survive_reopening(tmp_path, durability):
    async with open_engine(tmp_path, durability) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("a", lambda: {"id": "A"}, lambda out: None)
            await ctx.checkpoint("cp", {"k": 1})

            def fail():
                raise Boom("b broke")

            await ctx.step("b", fail, None, {"retries": 1, "retry_delay": 1})

        result = await execute(engine, input={"x": 1}, workflow_id="persist")
        before_history = (await engine.workflows.history(product=P, env=E, workflow_id="persist")).to_dict()
        before_a = (await detail(engine, "persist", "a")).to_dict()
        before_b = (await detail(engine, "persist", "b")).to_dict()

    assert result.status == "rolled_back"
    # no definition is registered on the reopened engine: reads come from the store alone
    async with open_engine(tmp_path, durability) as engine:
        after_history = (await engine.workflows.history(product=P, env=E, workflow_id="persist")).to_dict()
        after_a = (await detail(engine, "persist", "a")).to_dict()
        after_b = (await detail(engine, "persist", "b")).to_dict()
        with pytest.raises(sagaloop.StepNotFoundError):
            await detail(engine, "persist", "c")

    assert after_history == before_history
    assert [e["type"] for e in after_history["events"]] == [
        "workflow_started", "step_started", "step_completed", "checkpoint_created", "step_started",
        "step_retrying", "step_failed", "rollback_started", "step_rolled_back", "workflow_rolled_back"]
    assert after_a == before_a
    assert (after_a["status"], after_a["rollback_status"], after_a["output"]) == ("rolled_back", "completed",
                                                                                   {"id": "A"})
    assert after_b == before_b
    assert (after_b["status"], after_b["attempts"], after_b["error"]["message"]) == ("failed", 2, "b broke")
