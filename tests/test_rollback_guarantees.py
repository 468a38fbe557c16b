"""Compensations always finish (API.md, "Beyond the product document").

* Rollback progress is journaled per compensation: a real child process is
  SIGKILLed before, during and after each compensation of a three-step saga
  (``tests/rollback_worker.py``); reopening the directory resumes *the
  rollback*: a compensation recorded done never runs again, the one in flight
  runs again, the forward steps do not run again, and the run ends
  ``rolled_back`` (or ``cancelled`` for a cancel-triggered rollback).
* A rollback, once started, is shielded from ``cancel``, the workflow
  ``timeout`` and a parent closing.
* ``rollback_options``: retries, retry delay and a timeout per attempt of a
  compensation; one that still fails is listed in ``failed_steps``, the
  others still run, and the run ends ``failed``.
* Each compensation's end is journaled before the next one starts.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers import open_engine, run_interrupted, until
from processes import TESTS_DIR, WAIT_S, Child, Spawner, load_module
from worker_common import read_side_effects

import sagaloop

WORKER_PATH = TESTS_DIR / "rollback_worker.py"

P, E = "guarantees", "test"

worker = load_module(WORKER_PATH, "sagaloop_tests_rollback_worker")
needs_sigkill = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")


# -- the child process ---------------------------------------------------------------------------


@pytest.fixture
def child(tmp_path):
    """``child(*args)`` starts the worker on this test's data dir and side file; killed at the end."""
    with Spawner(tmp_path, WORKER_PATH) as spawner:
        def start(*args: str) -> Child:
            return spawner.start(spawner.datadir, spawner.sidefile, *args)

        start.datadir, start.sidefile = spawner.datadir, spawner.sidefile
        yield start


async def resume_here(datadir: Path, sidefile: Path, workflow_id: str) -> dict:
    """Reopen the directory in this process, define the saga again (that resumes it), wait for its end."""
    async with sagaloop.Engine(datadir, durability="durable") as engine:
        before = await engine.workflows.status(product=worker.PRODUCT, env=worker.ENV, workflow_id=workflow_id)
        worker.define_workflow(engine, sidefile, kill_point=None)
        result = await worker.wait_until_ended(engine, workflow_id, timeout=WAIT_S)
        history = await engine.workflows.history(product=worker.PRODUCT, env=worker.ENV, workflow_id=workflow_id)
        details = {}
        for tag in ("s1", "s2", "s3", "s4"):
            try:
                details[tag] = await engine.workflows.step_detail(product=worker.PRODUCT, env=worker.ENV,
                                                                  workflow_id=workflow_id, step_tag=tag)
            except sagaloop.StepNotFoundError:
                details[tag] = None
    return {"result": result, "events": history.events, "details": details, "status_at_reopen": before.status}


def expected_runs(kill_point: str) -> dict[str, str]:
    """Per compensation, what the kill left it as: ``done`` (recorded done before the kill),
    ``in_flight`` (side effect written, end not recorded), ``entered`` (entered, no side effect
    yet) or ``pending`` (not started)."""
    if kill_point == "ended":
        return dict.fromkeys(worker.COMPENSATIONS, "done")
    when, name = kill_point.split(":")
    index = worker.COMPENSATIONS.index(name)
    state = {"before": "entered", "during": "in_flight", "after": "done"}[when]
    return {c: ("done" if i < index else state if i == index else "pending")
            for i, c in enumerate(worker.COMPENSATIONS)}


def check_side_effects(sidefile: Path, kill_point: str, killed_pid: int, *, forward: tuple[str, ...]) -> None:
    effects = read_side_effects(sidefile)
    here = os.getpid()
    count = Counter(name for name, _, _ in effects)
    pids = {name: [pid for n, pid, _ in effects if n == name] for name in count}

    # The forward steps ran once, in the killed process, and never again after the restart.
    for name in forward:
        assert pids.get(name) == [killed_pid], (name, effects)

    # Compensations, by what the kill left them as.
    for comp, state in expected_runs(kill_point).items():
        runs = pids.get(comp, [])
        assert 1 <= len(runs) <= 2, (comp, effects)  # never zero times, at most twice
        if state == "done":
            assert runs == [killed_pid], f"{comp} was recorded done before the kill but ran again: {effects}"
        elif state == "in_flight":
            assert runs == [killed_pid, here], f"{comp} was in flight: it must run once more, once: {effects}"
        else:  # entered or pending: its side effect happens only after the restart, exactly once
            assert runs == [here], (comp, effects)
        if state == "entered":
            assert pids[f"enter-{comp}"] == [killed_pid, here], effects

    # Compensation side effects happen in rollback order (s3, s2, s1), nothing out of order.
    order = [name for name, _, _ in effects if name in worker.COMPENSATIONS]
    assert order == sorted(order, key=worker.COMPENSATIONS.index), effects
    # Each got its step's output, and the same idempotency key on every run.
    for name, _, data in effects:
        if name in worker.COMPENSATIONS:
            n = name[-1]
            payload = json.loads(data)
            assert payload["result"] == {"id": f"r{n}"}, effects
            assert payload["key"].endswith(f":s{n}"), effects
    for comp in worker.COMPENSATIONS:
        keys = {json.loads(d)["key"] for n, _, d in effects if n == comp}
        assert len(keys) == 1, (comp, effects)


def check_rolled_back_journal(out: dict) -> None:
    """Every compensated step is journaled as such, and each step_rolled_back appears once, in order."""
    for tag in ("s1", "s2", "s3"):
        assert out["details"][tag].rollback_status == "completed", out["details"][tag]
        assert out["details"][tag].status == "rolled_back", out["details"][tag]
    types = [e.type for e in out["events"]]
    rolled = [e.data["step"] for e in out["events"] if e.type == "step_rolled_back"]
    assert rolled == ["s3", "s2", "s1"], types
    assert "rollback_started" in types
    assert types.index("rollback_started") < types.index("step_rolled_back"), types


# -- 1. SIGKILL at every point of a step failure's rollback ------------------------------------


@pytest.mark.slow  # real processes, SIGKILLed
@needs_sigkill
@pytest.mark.parametrize("kill_point", [*worker.KILL_POINTS, "ended"])
async def test_sigkill_anywhere_in_the_rollback_resumes_it_to_rolled_back(child, kill_point):
    workflow_id = "saga-" + kill_point.replace(":", "-")
    proc = child("--workflow-id", workflow_id, "--kill-point", kill_point, "--trigger", "failure")
    assert proc.wait_for("STARTED ") == f"STARTED {workflow_id}"
    if kill_point == "after:undo-s1":
        proc.wait_for("KILL-POINT after:undo-s1")
        proc.wait_killed()  # it killed itself as the run's end record was handed to the store
    elif kill_point == "ended":
        assert proc.wait_for("ENDED ") == "ENDED rolled_back"
        proc.sigkill()
    else:
        proc.wait_for(f"KILL-POINT {kill_point}")
        proc.sigkill()

    out = await resume_here(child.datadir, child.sidefile, workflow_id)
    # Killed mid-rollback, the run is still in flight on disk; killed after its end, it has ended.
    assert out["status_at_reopen"] == ("rolled_back" if kill_point == "ended" else "running")
    result = out["result"]
    assert result.status == "rolled_back", result
    assert result.failed_step == "s4"
    assert result.completed_steps == ["s1", "s2", "s3"]
    assert result.error is not None and result.error.step == "s4" and result.error.code != "workflow_timeout"
    rb = result.rollback_result
    assert rb is not None
    assert rb.rolled_back_steps == ["s3", "s2", "s1"]
    assert rb.success is True and rb.failed_steps == []
    assert rb.trigger == "step_failed"
    assert out["details"]["s4"].status == "failed"
    check_rolled_back_journal(out)
    assert [e.type for e in out["events"]][-1] == "workflow_rolled_back"
    check_side_effects(child.sidefile, kill_point, proc.pid, forward=("do-s1", "do-s2", "do-s3", "do-s4"))


# -- 2. a cancel-triggered rollback, killed, resumes the rollback (not the handler) ------------


@pytest.mark.slow  # real processes, SIGKILLed
@needs_sigkill
@pytest.mark.parametrize("kill_point", ["before:undo-s3", "during:undo-s2", "after:undo-s1"])
async def test_sigkill_in_a_cancel_triggered_rollback_resumes_it_to_cancelled(child, kill_point):
    workflow_id = "cancelled-" + kill_point.replace(":", "-")
    proc = child("--workflow-id", workflow_id, "--kill-point", kill_point, "--trigger", "cancel")
    assert proc.wait_for("STARTED ") == f"STARTED {workflow_id}"
    proc.wait_for("CANCEL-SENT")
    proc.wait_for(f"KILL-POINT {kill_point}")
    if kill_point == "after:undo-s1":
        proc.wait_killed()
    else:
        proc.sigkill()

    # No signal is ever sent: a handler that went on as if never cancelled would wait for "go"
    # (and resume_here would time out), or, given the signal, run s4.
    out = await resume_here(child.datadir, child.sidefile, workflow_id)
    assert out["status_at_reopen"] == "running"
    result = out["result"]
    assert result.status == "cancelled", result
    rb = result.rollback_result
    assert rb is not None
    assert rb.trigger == "cancel"
    assert rb.rolled_back_steps == ["s3", "s2", "s1"]
    assert rb.success is True and rb.failed_steps == []
    assert result.completed_steps == ["s1", "s2", "s3"]
    check_rolled_back_journal(out)
    types = [e.type for e in out["events"]]
    assert types[-1] == "workflow_cancelled"
    assert not [e for e in out["events"] if (e.data or {}).get("step") == "s4"], types  # s4 never started
    assert out["details"]["s4"] is None  # never journaled
    assert Counter(n for n, _, _ in read_side_effects(child.sidefile))["do-s4"] == 0
    check_side_effects(child.sidefile, kill_point, proc.pid, forward=("do-s1", "do-s2", "do-s3"))


# -- in-process helpers --------------------------------------------------------------------------


class Gate:
    """A compensation that blocks until the test opens the gate; records each call."""

    def __init__(self, name: str, log: list) -> None:
        self.name, self.log = name, log
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()

    async def __call__(self, result) -> None:
        self.log.append((self.name, "enter", result))
        self.entered.set()
        await self.opened.wait()
        self.log.append((self.name, "done", result))


def recorder(name: str, log: list):
    async def compensation(result) -> None:
        log.append((name, "done", result))
    return compensation


def fail(message: str):
    def handler():
        raise RuntimeError(message)
    return handler


async def entered(gate: Gate) -> None:
    await asyncio.wait_for(gate.entered.wait(), timeout=5)


async def result_of(engine, workflow_id: str) -> sagaloop.WorkflowResult:
    res = await engine.workflows.result(product=P, env=E, workflow_id=workflow_id, timeout="10s")
    assert res.status != "running", res
    return res


# -- 3. a started rollback is shielded -----------------------------------------------------------


async def test_cancel_during_a_rollback_does_not_cut_it_short_nor_change_the_end(tmp_path):
    log: list = []
    gate = Gate("undo-b", log)
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("a", lambda: {"a": 1}, recorder("undo-a", log))
            await ctx.step("b", lambda: {"b": 2}, gate)
            await ctx.step("c", fail("c broke"))

        await engine.workflows.execute(product=P, env=E, tag="wf", input={}, workflow_id="w", wait=False)
        await entered(gate)
        answer = await asyncio.wait_for(
            engine.workflows.cancel(product=P, env=E, workflow_id="w", reason="too late"), timeout=5)
        assert answer.cancelled is False
        assert log == [("undo-b", "enter", {"b": 2})]  # the compensation is still running, not cut short
        gate.opened.set()
        res = await result_of(engine, "w")

    assert log == [("undo-b", "enter", {"b": 2}), ("undo-b", "done", {"b": 2}), ("undo-a", "done", {"a": 1})]
    assert res.status == "rolled_back"
    assert res.failed_step == "c" and res.error.step == "c"
    assert res.rollback_result.trigger == "step_failed"
    assert res.rollback_result.rolled_back_steps == ["b", "a"]
    assert res.rollback_result.success is True


async def test_workflow_timeout_passing_during_a_rollback_does_not_change_the_end(tmp_path):
    log: list = []
    gate = Gate("undo-b", log)
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("a", lambda: {"a": 1}, recorder("undo-a", log))
            await ctx.step("b", lambda: {"b": 2}, gate)
            await ctx.step("c", fail("c broke"))

        started = time.monotonic()
        await engine.workflows.execute(product=P, env=E, tag="wf", input={}, workflow_id="w", timeout=150,
                                       wait=False)
        await entered(gate)
        await asyncio.sleep(max(0.0, 0.4 - (time.monotonic() - started)))  # well past the 150 ms timeout
        status = await engine.workflows.status(product=P, env=E, workflow_id="w")
        assert status.status == "running"  # still rolling back, not ended by the timeout
        assert log == [("undo-b", "enter", {"b": 2})]
        gate.opened.set()
        res = await result_of(engine, "w")

    assert log[-2:] == [("undo-b", "done", {"b": 2}), ("undo-a", "done", {"a": 1})]
    assert res.status == "rolled_back"
    assert res.error is not None and res.error.code != "workflow_timeout" and res.error.step == "c"
    assert res.rollback_result.trigger == "step_failed"
    assert res.rollback_result.rolled_back_steps == ["b", "a"]


async def test_parent_closing_while_the_child_rolls_back_does_not_change_the_childs_end(tmp_path):
    log: list = []
    gate = Gate("kid-undo-b", log)
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="kid")
        async def kid(ctx):
            await ctx.step("a", lambda: {"a": 1}, recorder("kid-undo-a", log))
            await ctx.step("b", lambda: {"b": 2}, gate)
            await ctx.step("c", fail("kid c broke"))

        @engine.workflows.define(product=P, tag="parent")
        async def parent(ctx):
            await ctx.step("p", lambda: {"p": 1}, recorder("parent-undo-p", log))
            return await ctx.workflow("the-kid", "kid", {}, parent_close_policy="terminate")

        await engine.workflows.execute(product=P, env=E, tag="parent", input={}, workflow_id="mom", wait=False)
        await entered(gate)
        cancelling = asyncio.ensure_future(engine.workflows.cancel(product=P, env=E, workflow_id="mom",
                                                                   reason="closing the parent"))
        await until(lambda: run_interrupted(engine, "mom"), "the cancel reaches the parent")
        await asyncio.sleep(0.2)  # time for a wrong cut-short of the child's compensation to show
        assert [entry for entry in log if entry[0].startswith("kid")] == [("kid-undo-b", "enter", {"b": 2})]
        gate.opened.set()
        answer = await asyncio.wait_for(cancelling, timeout=5)
        mom = await result_of(engine, "mom")
        kid_res = await result_of(engine, "the-kid")

    assert answer.cancelled is True
    assert mom.status == "cancelled" and mom.rollback_result.trigger == "cancel"
    assert kid_res.status == "rolled_back"  # not "cancelled": the parent's close came too late
    assert kid_res.rollback_result.trigger == "step_failed"
    assert kid_res.rollback_result.rolled_back_steps == ["b", "a"]
    assert kid_res.failed_step == "c"
    kid_log = [entry for entry in log if entry[0].startswith("kid")]
    assert kid_log == [("kid-undo-b", "enter", {"b": 2}), ("kid-undo-b", "done", {"b": 2}),
                       ("kid-undo-a", "done", {"a": 1})]
    assert ("parent-undo-p", "done", {"p": 1}) in log


# -- 4. rollback_options ---------------------------------------------------------------------------


@pytest.mark.parametrize("as_dict", [False, True], ids=["keyword", "options-dict"])
async def test_a_compensation_failing_twice_is_retried_and_succeeds(tmp_path, as_dict):
    calls: list = []
    log: list = []
    rollback_options = {"retries": 3, "retry_delay": 10, "timeout": "1s"}

    async def flaky_undo(result):
        calls.append(result)
        if len(calls) <= 2:
            raise RuntimeError(f"refund service down (call {len(calls)})")

    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("a", lambda: {"a": 1}, recorder("undo-a", log))
            if as_dict:
                await ctx.step("b", lambda: {"b": 2}, flaky_undo, {"rollback_options": rollback_options})
            else:
                await ctx.step("b", lambda: {"b": 2}, flaky_undo, rollback_options=rollback_options)
            await ctx.step("c", fail("c broke"))

        res = await engine.workflows.execute(product=P, env=E, tag="wf", input={}, workflow_id="w")
        detail = await engine.workflows.step_detail(product=P, env=E, workflow_id="w", step_tag="b")

    assert calls == [{"b": 2}] * 3
    assert log == [("undo-a", "done", {"a": 1})]
    assert res.status == "rolled_back"
    assert res.rollback_result.success is True
    assert res.rollback_result.failed_steps == []
    assert res.rollback_result.rolled_back_steps == ["b", "a"]
    assert detail.rollback_status == "completed"


async def test_a_compensation_failing_past_its_retries_is_listed_and_the_others_still_run(tmp_path):
    calls: list = []
    log: list = []

    async def broken_undo(result):
        calls.append(result)
        raise RuntimeError("refund service gone")

    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("a", lambda: {"a": 1}, recorder("undo-a", log))
            await ctx.step("b", lambda: {"b": 2}, broken_undo,
                           rollback_options={"retries": 1, "retry_delay": 10})
            await ctx.step("c", fail("c broke"))

        res = await engine.workflows.execute(product=P, env=E, tag="wf", input={}, workflow_id="w")

    assert len(calls) == 2  # one attempt + one retry
    assert log == [("undo-a", "done", {"a": 1})]
    assert res.status == "failed"
    rb = res.rollback_result
    assert rb.success is False
    assert [(f.tag, f.error) for f in rb.failed_steps] == [("b", "refund service gone")]
    assert rb.rolled_back_steps == ["a"]


async def test_a_compensation_timing_out_on_every_attempt_fails_and_the_rest_still_run(tmp_path):
    attempts: list = []
    log: list = []

    async def hanging_undo(result):
        attempts.append(time.monotonic())
        await asyncio.sleep(30)

    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("a", lambda: {"a": 1}, recorder("undo-a", log))
            await ctx.step("b", lambda: {"b": 2}, hanging_undo,
                           rollback_options={"retries": 2, "retry_delay": 10, "timeout": "100ms"})
            await ctx.step("c", lambda: {"c": 3}, recorder("undo-c", log))
            await ctx.step("d", fail("d broke"))

        started = time.monotonic()
        res = await engine.workflows.execute(product=P, env=E, tag="wf", input={}, workflow_id="w")
        elapsed = time.monotonic() - started
        history = await engine.workflows.history(product=P, env=E, workflow_id="w")
        detail_b = await engine.workflows.step_detail(product=P, env=E, workflow_id="w", step_tag="b")
        detail_c = await engine.workflows.step_detail(product=P, env=E, workflow_id="w", step_tag="c")

    assert len(attempts) == 3  # each attempt was cut at its timeout, then retried
    assert all(later - earlier >= 0.09 for earlier, later in zip(attempts, attempts[1:])), attempts
    assert elapsed < 5.0
    assert log == [("undo-c", "done", {"c": 3}), ("undo-a", "done", {"a": 1})]  # the rest still ran, in order
    assert res.status == "failed"
    rb = res.rollback_result
    assert rb.success is False
    assert [f.tag for f in rb.failed_steps] == ["b"]
    assert rb.failed_steps[0].error and "time" in rb.failed_steps[0].error.lower()
    assert rb.rolled_back_steps == ["c", "a"]
    failed_events = [e for e in history.events if e.type == "step_rollback_failed"]
    assert [e.data["step"] for e in failed_events] == ["b"]
    assert detail_b.rollback_status == "failed"
    assert detail_c.rollback_status == "completed"


# -- 5. compensation journaling ----------------------------------------------------------------------


async def test_each_compensations_end_is_journaled_before_the_next_starts(tmp_path):
    seen: dict[str, dict] = {}
    engine_box: list = []

    def undo(name: str):
        async def compensation(result):
            engine = engine_box[0]
            # A fresh read of the journal, from inside the compensation.
            seen[name] = {tag: (await engine.workflows.step_detail(product=P, env=E, workflow_id="w",
                                                                   step_tag=tag)).rollback_status
                          for tag in ("s1", "s2", "s3")}
        return compensation

    async with open_engine(tmp_path) as engine:
        engine_box.append(engine)

        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            for n in (1, 2, 3):
                await ctx.step(f"s{n}", lambda n=n: {"n": n}, undo(f"undo-s{n}"))
            await ctx.step("s4", fail("s4 broke"))

        res = await engine.workflows.execute(product=P, env=E, tag="wf", input={}, workflow_id="w")
        history = await engine.workflows.history(product=P, env=E, workflow_id="w")
        details = {tag: await engine.workflows.step_detail(product=P, env=E, workflow_id="w", step_tag=tag)
                   for tag in ("s1", "s2", "s3")}

    assert res.status == "rolled_back"
    assert res.rollback_result.rolled_back_steps == ["s3", "s2", "s1"]
    assert seen == {
        "undo-s3": {"s1": None, "s2": None, "s3": None},
        "undo-s2": {"s1": None, "s2": None, "s3": "completed"},
        "undo-s1": {"s1": None, "s2": "completed", "s3": "completed"},
    }
    for tag, detail in details.items():
        assert detail.rollback_status == "completed", tag
        assert detail.status == "rolled_back", tag
    types = [e.type for e in history.events]
    rolled = [e.data["step"] for e in history.events if e.type == "step_rolled_back"]
    assert rolled == ["s3", "s2", "s1"]
    first_rolled = types.index("step_rolled_back")
    assert types.index("rollback_started") < first_rolled
    assert types.index("step_failed") < types.index("rollback_started")
    assert types[-1] == "workflow_rolled_back"
