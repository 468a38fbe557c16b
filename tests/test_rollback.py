"""Rollbacks: the four strategies, compensations, checkpoints, manual rollback, the rollback result.

Product document sections: Rollback Strategies, Step States (rolled_back), Manual
Rollback, Rollback Result, Checkpoints (incl. ctx.checkpoint_name / checkpoint_data).
"""

from __future__ import annotations

import asyncio

import pytest
from helpers import Boom, E, P, execute, open_engine, raiser

import sagaloop


class Ledger:
    """Records every compensation call with the value it received."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def undo(self, name: str):
        async def compensation(result):
            self.calls.append((name, result))
        return compensation

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def strategy(name: str | None) -> dict | None:
    return None if name is None else {"rollback_strategy": name}


# -- reverse_all --------------------------------------------------------------------------------


@pytest.mark.parametrize("strat", [None, "reverse_all"], ids=["default", "explicit"])
async def test_reverse_all_seed_example(tmp_path, strat):
    ledger = Ledger()
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="my-workflow", options=strategy(strat))
        async def wf(ctx):
            await ctx.step("step-a", lambda: {"id": "A"}, ledger.undo("rollbackA"))  # will roll back
            await ctx.step("step-b", lambda: {"id": "B"}, ledger.undo("rollbackB"))  # will roll back
            await ctx.step("step-c", raiser("step-c broke"))  # fails - no rollback
            return "unreachable"

        result = await execute(engine, "my-workflow")

    assert ledger.names == ["rollbackB", "rollbackA"]
    assert result.status == "rolled_back"
    assert result.failed_step == "step-c"
    assert result.completed_steps == ["step-a", "step-b"]
    assert result.error.step == "step-c" and result.error.message == "step-c broke"
    rb = result.rollback_result
    assert rb is not None
    assert rb.success is True
    assert rb.rolled_back_steps == ["step-b", "step-a"]
    assert rb.failed_steps == []


async def test_reverse_all_skips_steps_without_rollback_and_passes_outputs(tmp_path):
    ledger = Ledger()
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("a", lambda: {"id": "A-1", "n": 1}, ledger.undo("a"))
            await ctx.step("no-undo", lambda: "plain")
            await ctx.step("b", lambda: ["B", 2], ledger.undo("b"))
            await ctx.step("c", lambda: None, ledger.undo("c"))
            await ctx.step("d", raiser("d broke"))

        result = await execute(engine)

    assert ledger.calls == [("c", None), ("b", ["B", 2]), ("a", {"id": "A-1", "n": 1})]
    assert result.rollback_result.rolled_back_steps == ["c", "b", "a"]
    assert result.completed_steps == ["a", "no-undo", "b", "c"]
    assert result.status == "rolled_back"


async def test_failing_steps_own_rollback_runs_first_and_gets_none(tmp_path):
    ledger = Ledger()
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("a", lambda: {"id": "A"}, ledger.undo("a"))
            await ctx.step("b", lambda: {"id": "B"}, ledger.undo("b"))

            async def partial():
                raise Boom("half done")

            await ctx.step("c", partial, ledger.undo("c"))

        result = await execute(engine)

    assert ledger.calls == [("c", None), ("b", {"id": "B"}), ("a", {"id": "A"})]
    assert result.rollback_result.rolled_back_steps == ["c", "b", "a"]
    assert result.status == "rolled_back"
    assert result.failed_step == "c"


async def test_sync_compensations_work(tmp_path):
    seen = []
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("a", lambda: 41, lambda out: seen.append(("a", out)))
            await ctx.step("b", raiser("x"))

        result = await execute(engine)
    assert seen == [("a", 41)]
    assert result.rollback_result.rolled_back_steps == ["a"]


# -- critical_only ------------------------------------------------------------------------------


async def test_critical_only_seed_example(tmp_path):
    ledger = Ledger()
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="my-workflow", options={"rollback_strategy": "critical_only"})
        async def wf(ctx):
            await ctx.step("payment", lambda: {"id": "ch_1"}, ledger.undo("refundHandler"), {"critical": True})
            await ctx.step("analytics", lambda: {"ev": 1}, ledger.undo("rollbackAnalytics"), {"critical": False})
            await ctx.step("inventory", raiser("out of stock"))

        result = await execute(engine, "my-workflow")

    assert ledger.calls == [("refundHandler", {"id": "ch_1"})]  # only payment rolls back
    assert result.rollback_result.rolled_back_steps == ["payment"]
    assert result.status == "rolled_back"
    assert result.failed_step == "inventory"


async def test_critical_only_reverse_order_and_keyword_option(tmp_path):
    ledger = Ledger()
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf", options={"rollback_strategy": "critical_only"})
        async def wf(ctx):
            await ctx.step("c1", lambda: 1, ledger.undo("c1"), critical=True)
            await ctx.step("n1", lambda: 2, ledger.undo("n1"))
            await ctx.step("c2", lambda: 3, ledger.undo("c2"), critical=True)
            await ctx.step("n2", lambda: 4, ledger.undo("n2"))
            await ctx.step("boom", raiser("x"))

        result = await execute(engine)
    assert ledger.calls == [("c2", 3), ("c1", 1)]
    assert result.rollback_result.rolled_back_steps == ["c2", "c1"]


async def test_critical_only_with_no_critical_step_ends_failed(tmp_path):
    ledger = Ledger()
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf", options={"rollback_strategy": "critical_only"})
        async def wf(ctx):
            await ctx.step("a", lambda: 1, ledger.undo("a"))
            await ctx.step("boom", raiser("x"))

        result = await execute(engine)
    assert ledger.calls == []
    assert result.status == "failed"


# -- to_checkpoint and checkpoints ------------------------------------------------------------


async def test_to_checkpoint_seed_example(tmp_path):
    ledger = Ledger()
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="my-workflow", options={"rollback_strategy": "to_checkpoint"})
        async def wf(ctx):
            await ctx.step("create-user", lambda: {"id": "u1"}, ledger.undo("deleteUser"))
            await ctx.checkpoint("user-created")
            await ctx.step("payment", lambda: {"id": "ch_1"}, ledger.undo("refundHandler"))

            def reserve():
                raise Boom("no stock")

            await ctx.step("inventory", reserve, ledger.undo("releaseHandler"))

        result = await execute(engine, "my-workflow")

    # create-user is NOT rolled back (before the checkpoint); payment is. The failing step's own
    # compensation runs first with None (API contract: it may have left partial effects).
    assert ledger.calls == [("releaseHandler", None), ("refundHandler", {"id": "ch_1"})]
    assert "deleteUser" not in ledger.names
    assert result.rollback_result.rolled_back_steps == ["inventory", "payment"]
    assert result.status == "rolled_back"


async def test_checkpoints_seed_example_and_checkpoint_accessors(tmp_path):
    ledger = Ledger()
    seen: list[tuple] = []
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="signup", options={"rollback_strategy": "to_checkpoint"})
        async def wf(ctx):
            seen.append((ctx.checkpoint_name, ctx.checkpoint_data))
            await ctx.step("create-user", lambda: {"id": "user-7"}, ledger.undo("deleteUser"))
            await ctx.step("verify-email", lambda: {"sent": True})
            await ctx.checkpoint("user-setup-complete", {"userId": ctx.steps["create-user"]["id"]})
            seen.append((ctx.checkpoint_name, ctx.checkpoint_data))
            await ctx.step("payment", lambda: {"id": "ch_9"}, ledger.undo("refundCard"))
            await ctx.checkpoint("payment-complete", {"chargeId": ctx.steps["payment"]["id"]})
            seen.append((ctx.checkpoint_name, ctx.checkpoint_data))

            def ship():
                raise Boom("carrier down")

            await ctx.step("ship-order", ship, ledger.undo("cancelShipment"))

        result = await execute(engine, "signup", workflow_id="cp-1")
        status = await engine.workflows.status(product=P, env=E, workflow_id="cp-1")

    assert seen == [(None, None),
                    ("user-setup-complete", {"userId": "user-7"}),
                    ("payment-complete", {"chargeId": "ch_9"})]
    # Only ship-order is rolled back; user and payment remain intact.
    assert ledger.calls == [("cancelShipment", None)]
    assert result.rollback_result.rolled_back_steps == ["ship-order"]
    assert result.status == "rolled_back"
    assert result.completed_steps == ["create-user", "verify-email", "payment"]
    assert (status.checkpoint_name, status.checkpoint_data) == ("payment-complete", {"chargeId": "ch_9"})


async def test_checkpoint_without_data(tmp_path):
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.checkpoint("validation-complete")
            return [ctx.checkpoint_name, ctx.checkpoint_data]

        result = await execute(engine)
    assert result.output == ["validation-complete", None]


@pytest.mark.parametrize("strat", ["to_checkpoint", "reverse_all"])
async def test_to_checkpoint_without_checkpoint_behaves_as_reverse_all(tmp_path, strat):
    ledger = Ledger()
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf", options={"rollback_strategy": strat})
        async def wf(ctx):
            await ctx.step("a", lambda: "A", ledger.undo("a"))
            await ctx.step("b", lambda: "B", ledger.undo("b"))
            await ctx.step("c", raiser("x"))

        result = await execute(engine)
    assert ledger.calls == [("b", "B"), ("a", "A")]
    assert result.rollback_result.rolled_back_steps == ["b", "a"]
    assert result.status == "rolled_back"


# -- none -------------------------------------------------------------------------------------


async def test_none_rolls_back_nothing_and_fails(tmp_path):
    ledger = Ledger()
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf", options={"rollback_strategy": "none"})
        async def wf(ctx):
            await ctx.step("a", lambda: "A", ledger.undo("a"))
            await ctx.step("b", lambda: "B", ledger.undo("b"))
            await ctx.step("c", raiser("x"), ledger.undo("c"))

        result = await execute(engine)
    assert ledger.calls == []
    assert result.status == "failed"
    assert result.failed_step == "c"
    assert result.error.message == "x"
    assert result.rollback_result is None or result.rollback_result.rolled_back_steps == []


async def test_none_seed_example_manual_cleanup(tmp_path):
    ledger = Ledger()
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="my-workflow", options={"rollback_strategy": "none"})
        async def wf(ctx):
            await ctx.step("setup", lambda: {"id": "s"}, ledger.undo("undoSetup"))
            try:
                await ctx.step("risky-operation", raiser("risky failed"))
            except sagaloop.StepFailedError:
                rb = await ctx.trigger_rollback("Manual rollback triggered")
                return {"rolled": rb.rolled_back_steps, "reason": rb.reason}
            return "unreachable"

        result = await execute(engine, "my-workflow")
    assert ledger.calls == [("undoSetup", {"id": "s"})]
    assert result.status == "rolled_back"
    assert result.output == {"rolled": ["setup"], "reason": "Manual rollback triggered"}


# -- a compensation that fails ----------------------------------------------------------------


async def test_failing_compensation_is_reported_and_others_still_run(tmp_path):
    ledger = Ledger()
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("a", lambda: "A", ledger.undo("a"))

            async def broken_refund(out):
                ledger.calls.append(("b", out))
                raise Boom("refund service down")

            await ctx.step("b", lambda: "B", broken_refund)
            await ctx.step("c", lambda: "C", ledger.undo("c"))
            await ctx.step("d", raiser("d failed"))

        result = await execute(engine)

    assert ledger.calls == [("c", "C"), ("b", "B"), ("a", "A")]
    rb = result.rollback_result
    assert rb.success is False
    assert rb.rolled_back_steps == ["c", "a"]
    assert [f.tag for f in rb.failed_steps] == ["b"]
    assert "refund service down" in rb.failed_steps[0].error
    assert result.status == "failed"
    assert result.failed_step == "d"


# -- how a failure ends ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "strat, undo_a, undo_failing, expected_status, expected_rolled",
    [
        ("reverse_all", True, False, "rolled_back", ["a"]),
        ("reverse_all", False, False, "failed", []),        # nothing to roll back
        ("reverse_all", False, True, "rolled_back", ["b"]),  # only the failing step's own rollback
        ("critical_only", True, False, "failed", []),       # a is not critical
        ("to_checkpoint", True, False, "rolled_back", ["a"]),
        ("none", True, True, "failed", []),
    ],
)
async def test_ending_status_rules(tmp_path, strat, undo_a, undo_failing, expected_status, expected_rolled):
    ledger = Ledger()
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf", options={"rollback_strategy": strat})
        async def wf(ctx):
            await ctx.step("a", lambda: "A", ledger.undo("a") if undo_a else None)
            await ctx.step("b", raiser("b failed"), ledger.undo("b") if undo_failing else None)

        result = await execute(engine)
    assert result.status == expected_status
    rolled = result.rollback_result.rolled_back_steps if result.rollback_result else []
    assert rolled == expected_rolled
    assert ledger.names == expected_rolled


async def test_failure_at_first_step_without_rollback_fails(tmp_path):
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("first", raiser("nope"))

        result = await execute(engine)
    assert result.status == "failed"
    assert result.completed_steps == []
    assert result.failed_step == "first"


# -- manual rollback ---------------------------------------------------------------------------


async def test_manual_rollback_seed_example(tmp_path):
    ledger = Ledger()
    ran_after: list[str] = []
    returned: list = []
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            payment = await ctx.step("payment", lambda: {"id": "ch_42"}, ledger.undo("refundHandler"))
            fraud = await ctx.step("fraud-check", lambda: {"riskScore": 0.93, "tx": payment["id"]})
            if fraud["riskScore"] > 0.8:
                rb = await ctx.trigger_rollback("High fraud risk detected")
                returned.append(rb)
                await ctx.step("notify", lambda: ran_after.append("notify") or "sent")  # the handler goes on
                return {"success": False, "reason": "fraud_detected", "rolledBackSteps": rb.rolled_back_steps}
            return {"success": True}

        result = await execute(engine)

    [rb] = returned
    assert isinstance(rb, sagaloop.RollbackResult)
    assert rb.success is True
    assert rb.rolled_back_steps == ["payment"]
    assert rb.reason == "High fraud risk detected"
    assert rb.failed_steps == []
    assert ledger.calls == [("refundHandler", {"id": "ch_42"})]
    assert ran_after == ["notify"]
    assert result.status == "rolled_back"
    assert result.output == {"success": False, "reason": "fraud_detected", "rolledBackSteps": ["payment"]}
    assert result.error is None
    assert result.rollback_result.rolled_back_steps == ["payment"]
    assert result.rollback_result.reason == "High fraud risk detected"
    assert "notify" in result.completed_steps


@pytest.mark.parametrize(
    "strat, expected",
    [
        ("reverse_all", ["c", "b", "a"]),
        ("none", ["c", "b", "a"]),           # none behaves as reverse_all for a manual rollback
        ("critical_only", ["c", "a"]),
        ("to_checkpoint", ["c"]),
    ],
)
async def test_manual_rollback_follows_strategy(tmp_path, strat, expected):
    ledger = Ledger()
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf", options={"rollback_strategy": strat})
        async def wf(ctx):
            await ctx.step("a", lambda: "A", ledger.undo("a"), critical=True)
            await ctx.step("b", lambda: "B", ledger.undo("b"))
            await ctx.checkpoint("mid")
            await ctx.step("c", lambda: "C", ledger.undo("c"), critical=True)
            rb = await ctx.trigger_rollback("rejected")
            return rb.rolled_back_steps

        result = await execute(engine)
    assert result.output == expected
    assert ledger.names == expected
    assert result.status == "rolled_back"
    assert result.rollback_result.reason == "rejected"


async def test_manual_rollback_with_nothing_to_roll_back(tmp_path):
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("a", lambda: "A")
            rb = await ctx.trigger_rollback("nothing to undo")
            return {"rolled": rb.rolled_back_steps, "success": rb.success}

        result = await execute(engine)
    assert result.output == {"rolled": [], "success": True}


async def test_manual_rollback_with_failing_compensation(tmp_path):
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("a", lambda: "A", lambda out: None)

            def undo_b(out):
                raise Boom("cannot undo b")

            await ctx.step("b", lambda: "B", undo_b)
            rb = await ctx.trigger_rollback("stop")
            return {"success": rb.success, "rolled": rb.rolled_back_steps,
                    "failed": [[f.tag, f.error] for f in rb.failed_steps]}

        result = await execute(engine)
    assert result.output == {"success": False, "rolled": ["a"], "failed": [["b", "cannot undo b"]]}
    assert result.status == "failed"
    assert result.rollback_result.success is False
    assert [f.tag for f in result.rollback_result.failed_steps] == ["b"]


async def test_steps_rolled_back_manually_are_not_rolled_back_twice(tmp_path):
    ledger = Ledger()
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("a", lambda: "A", ledger.undo("a"))
            await ctx.trigger_rollback("first thoughts")
            await ctx.step("b", lambda: "B", ledger.undo("b"))
            await ctx.step("c", raiser("c failed"))

        result = await execute(engine)
    assert ledger.calls == [("a", "A"), ("b", "B")]  # each compensation exactly once
    assert result.status == "rolled_back"
    assert result.failed_step == "c"
    assert sorted(result.rollback_result.rolled_back_steps) == ["a", "b"]


async def test_second_manual_rollback_only_undoes_newer_steps(tmp_path):
    ledger = Ledger()
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("a", lambda: "A", ledger.undo("a"))
            first = await ctx.trigger_rollback("one")
            await ctx.step("b", lambda: "B", ledger.undo("b"))
            second = await ctx.trigger_rollback("two")
            return [first.rolled_back_steps, second.rolled_back_steps]

        result = await execute(engine)
    assert result.output == [["a"], ["b"]]
    assert ledger.names == ["a", "b"]
    assert result.status == "rolled_back"


# -- concurrent steps --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "delays, expected",
    [
        ({"left": 0.04, "right": 0.0}, ["left", "right"]),   # right completes first -> left undone first
        ({"left": 0.0, "right": 0.04}, ["right", "left"]),
    ],
)
async def test_concurrent_steps_roll_back_in_reverse_completion_order(tmp_path, delays, expected):
    ledger = Ledger()
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            def work(name):
                async def handler():
                    await asyncio.sleep(delays[name])
                    return {"name": name}
                return handler

            await ctx.step("before", lambda: "B0", ledger.undo("before"))
            await asyncio.gather(ctx.step("left", work("left"), ledger.undo("left")),
                                 ctx.step("right", work("right"), ledger.undo("right")))
            await ctx.step("after", raiser("after failed"))

        result = await execute(engine)
    assert result.rollback_result.rolled_back_steps == [*expected, "before"]
    assert ledger.calls == [(expected[0], {"name": expected[0]}), (expected[1], {"name": expected[1]}),
                            ("before", "B0")]
    assert result.status == "rolled_back"
