"""One rollback semantics, whatever ended the run (API.md, "Beyond the product document").

A step failure, ``ctx.trigger_rollback``, ``cancel``, the workflow ``timeout``
and a parent closing with policy ``terminate`` all roll back by the
definition's strategy, and ``rollback_result.trigger`` tells which ended the
run. One workflow shape for every case:

    a  (critical, with rollback)
    checkpoint "cp"
    b  (with rollback)
    c  (critical, with rollback)
    <the trigger point>

Strategy → steps rolled back (reverse order of completion):
``reverse_all`` c, b, a · ``critical_only`` c, a · ``to_checkpoint`` c, b
(the steps after the checkpoint) · ``none`` nothing — except for the manual
trigger, where ``none`` acts as ``reverse_all``.

The whole expectation is the table ``CASES`` below, one row per trigger and
strategy.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import pytest

import sagaloop

P, E = "semantics", "test"
OUTPUTS = {"a": {"a": 1}, "b": {"b": 2}, "c": {"c": 3}}
MANUAL_REASON = "manual cleanup"


class Case(NamedTuple):
    trigger: str                  # what ends (or, for manual, rolls back) the run: rollback_result.trigger
    strategy: str                 # the definition's rollback_strategy
    rolled_back_steps: list[str]  # rollback_result.rolled_back_steps, in the order the compensations ran
    status: str                   # the subject's final status


CASES = [
    # trigger          strategy          rolled back         final status
    Case("step_failed",   "reverse_all",   ["c", "b", "a"], "rolled_back"),
    Case("step_failed",   "critical_only", ["c", "a"],      "rolled_back"),
    Case("step_failed",   "to_checkpoint", ["c", "b"],      "rolled_back"),
    Case("step_failed",   "none",          [],              "failed"),
    Case("manual",        "reverse_all",   ["c", "b", "a"], "rolled_back"),
    Case("manual",        "critical_only", ["c", "a"],      "rolled_back"),
    Case("manual",        "to_checkpoint", ["c", "b"],      "rolled_back"),
    Case("manual",        "none",          ["c", "b", "a"], "rolled_back"),  # none acts as reverse_all here
    Case("cancel",        "reverse_all",   ["c", "b", "a"], "cancelled"),
    Case("cancel",        "critical_only", ["c", "a"],      "cancelled"),
    Case("cancel",        "to_checkpoint", ["c", "b"],      "cancelled"),
    Case("cancel",        "none",          [],              "cancelled"),
    Case("timeout",       "reverse_all",   ["c", "b", "a"], "rolled_back"),
    Case("timeout",       "critical_only", ["c", "a"],      "rolled_back"),
    Case("timeout",       "to_checkpoint", ["c", "b"],      "rolled_back"),
    Case("timeout",       "none",          [],              "failed"),
    Case("parent_closed", "reverse_all",   ["c", "b", "a"], "cancelled"),
    Case("parent_closed", "critical_only", ["c", "a"],      "cancelled"),
    Case("parent_closed", "to_checkpoint", ["c", "b"],      "cancelled"),
    Case("parent_closed", "none",          [],              "cancelled"),
]


def test_the_table_covers_every_trigger_and_strategy_once():
    pairs = [(c.trigger, c.strategy) for c in CASES]
    assert len(pairs) == len(set(pairs)) == 20
    assert {c.trigger for c in CASES} == {"step_failed", "manual", "cancel", "timeout", "parent_closed"}
    assert {c.strategy for c in CASES} == {"reverse_all", "critical_only", "to_checkpoint", "none"}


def define_subject(engine: sagaloop.Engine, case: Case, ledger: list) -> None:
    def undo(tag: str):
        async def compensation(result) -> None:
            ledger.append((tag, result))
        return compensation

    def broken():
        raise RuntimeError("d broke")

    @engine.workflows.define(product=P, tag="subject", options={"rollback_strategy": case.strategy})
    async def subject(ctx):
        await ctx.step("a", lambda: OUTPUTS["a"], undo("a"), critical=True)
        await ctx.checkpoint("cp", {"at": "cp"})
        await ctx.step("b", lambda: OUTPUTS["b"], undo("b"))
        await ctx.step("c", lambda: OUTPUTS["c"], undo("c"), critical=True)
        if case.trigger == "step_failed":
            await ctx.step("d", broken)
            return "unreachable"
        if case.trigger == "manual":
            manual = await ctx.trigger_rollback(MANUAL_REASON)
            return {"went_on": True, "manual_rolled_back": manual.rolled_back_steps}
        await ctx.wait_for_signal("never")  # cancel, timeout, parent_closed end the run here
        return "unreachable"


async def run_case(engine: sagaloop.Engine, case: Case) -> tuple[sagaloop.WorkflowResult, dict]:
    """Drive the subject to its end by the case's trigger; return its result and facts seen on the way."""
    wf = engine.workflows
    seen: dict = {}
    if case.trigger in ("step_failed", "manual"):
        res = await wf.execute(product=P, env=E, tag="subject", input={}, workflow_id="subject-1")
        return res, seen
    if case.trigger == "cancel":
        blocked = await wf.execute(product=P, env=E, tag="subject", input={}, workflow_id="subject-1")
        assert blocked.status == "running"  # waiting for its signal
        seen["cancel"] = await asyncio.wait_for(
            wf.cancel(product=P, env=E, workflow_id="subject-1", reason="user gave up"), timeout=5)
    elif case.trigger == "timeout":
        await wf.execute(product=P, env=E, tag="subject", input={}, workflow_id="subject-1", timeout=100)
    else:  # parent_closed: the subject is the child of a parent that is cancelled while it waits
        @engine.workflows.define(product=P, tag="parent")
        async def parent(ctx):
            return await ctx.workflow("subject-1", "subject", {}, parent_close_policy="terminate")

        blocked = await wf.execute(product=P, env=E, tag="parent", input={}, workflow_id="parent-1")
        assert blocked.status == "running"  # its child waits for a signal
        seen["parent_cancel"] = await asyncio.wait_for(
            wf.cancel(product=P, env=E, workflow_id="parent-1", reason="closing the parent"), timeout=5)
        seen["parent"] = await wf.result(product=P, env=E, workflow_id="parent-1", timeout="10s")
    res = await wf.result(product=P, env=E, workflow_id="subject-1", timeout="10s")
    return res, seen


@pytest.mark.parametrize("case", CASES, ids=[f"{c.trigger}-{c.strategy}" for c in CASES])
async def test_one_rollback_semantics(tmp_path, case: Case):
    ledger: list = []
    async with sagaloop.Engine(tmp_path / "db", durability="fast") as engine:
        define_subject(engine, case, ledger)
        res, seen = await run_case(engine, case)
        history = await engine.workflows.history(product=P, env=E, workflow_id="subject-1")

    # By the strategy: which compensations ran, in which order, with which value — each exactly once.
    assert ledger == [(tag, OUTPUTS[tag]) for tag in case.rolled_back_steps]
    assert res.status == case.status, res
    assert res.completed_steps == ["a", "b", "c"]
    rb = res.rollback_result
    assert rb is not None, res
    assert rb.trigger == case.trigger
    assert rb.rolled_back_steps == case.rolled_back_steps
    assert rb.success is True and rb.failed_steps == []
    rolled_events = [e.data["step"] for e in history.events if e.type == "step_rolled_back"]
    assert rolled_events == case.rolled_back_steps
    assert history.events[-1].type == f"workflow_{case.status}"

    # By the trigger: how the run ends.
    if case.trigger == "step_failed":
        assert res.failed_step == "d"
        assert res.error is not None and res.error.step == "d" and res.error.message == "d broke"
    elif case.trigger == "manual":
        assert res.output == {"went_on": True, "manual_rolled_back": case.rolled_back_steps}
        assert rb.reason == MANUAL_REASON
        assert res.error is None
    elif case.trigger == "cancel":
        assert seen["cancel"].cancelled is True
        assert seen["cancel"].rolled_back_steps == case.rolled_back_steps
        assert res.error is None or res.error.code != "workflow_timeout"
    elif case.trigger == "timeout":
        assert res.error is not None and res.error.code == "workflow_timeout"
    else:
        assert seen["parent_cancel"].cancelled is True
        assert seen["parent"].status == "cancelled"
        assert seen["parent"].rollback_result.trigger == "cancel"
        assert res.error is None or res.error.code != "workflow_timeout"
