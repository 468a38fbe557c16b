"""Durable timers: ``ctx.sleep``, signal timeouts and step retry delays.

In-process tests run on a ``sagaloop.testing.VirtualClock``: a sleep is
still running 1 ms before its deadline and ends on it, ``execute``
returns ``running`` while the instance sleeps, and a clean close and
reopen keeps the original deadline. The crash tests run the
workflow in a real child process (``tests/timer_worker.py``), SIGKILL it
in the middle of a 3 s durable wait, resume the run and check, from wall
times recorded by the handlers themselves, that the wait ended at its
*original* deadline: not earlier (the time was not skipped), not one full
wait after the restart (it was not started again from zero), and that it
ended at all (it was not lost).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from pathlib import Path

import pytest
from processes import TESTS_DIR, WAIT_S, Spawner, load_module

import sagaloop
from sagaloop.testing import VirtualClock

WORKER_PATH = TESTS_DIR / "timer_worker.py"
KILL_AT = 1.5   # seconds into the 3 s wait at which the child is killed
EARLY = 0.05    # tolerance for ms truncation and loop-timer resolution


worker = load_module(WORKER_PATH, "sagaloop_tests_timer_worker")
PRODUCT, ENV = worker.PRODUCT, worker.ENV
WAIT = worker.WAIT_MS / 1000.0


# -- in-process, on a virtual clock -------------------------------------------------------------------
#
# ctx.sleep is a durable timer, so it follows the engine's clock: these tests move a VirtualClock and
# check the exact deadline (still asleep 1 ms before it, awake on it) instead of waiting in real time.

HOUR = 3_600_000
START = 1_700_000_000_000


async def test_sleep_lasts_exactly_its_duration(tmp_path):
    clock = VirtualClock(start_ms=START)
    async with sagaloop.Engine(tmp_path / "data", durability="fast", clock=clock) as engine:
        @engine.workflows.define(product="p", tag="nap")
        async def nap(ctx):
            t0 = clock.now_ms()
            await ctx.sleep(ctx.input["ms"])
            return clock.now_ms() - t0

        for duration_ms in (0, 50, 200, 36 * HOUR):
            first = await engine.workflows.execute(product="p", env="t", tag="nap", input={"ms": duration_ms})
            if duration_ms == 0:  # nothing to wait for: it ends without the clock moving
                await clock.settle()
                result = await engine.workflows.result(product="p", env="t", workflow_id=first.workflow_id,
                                                       timeout=0)
                assert (result.status, result.output) == ("completed", 0), result
                continue
            assert first.status == "running", first
            await clock.advance(duration_ms - 1)
            still = await engine.workflows.status(product="p", env="t", workflow_id=first.workflow_id)
            assert still.status == "running", f"a sleep of {duration_ms} ms ended after {duration_ms - 1} ms"
            await clock.advance(1)
            result = await engine.workflows.result(product="p", env="t", workflow_id=first.workflow_id,
                                                   timeout="5s")
            assert result.status == "completed", result
            assert result.output == duration_ms


async def test_sleep_accepts_the_duration_forms(tmp_path):
    clock = VirtualClock(start_ms=START)
    async with sagaloop.Engine(tmp_path / "data", durability="fast", clock=clock) as engine:
        from datetime import timedelta

        woke = []

        @engine.workflows.define(product="p", tag="forms")
        async def forms(ctx):
            t0 = clock.now_ms()
            await ctx.sleep("120ms")
            woke.append(clock.now_ms() - t0)
            await ctx.sleep(timedelta(milliseconds=80))
            woke.append(clock.now_ms() - t0)
            await ctx.sleep("2d")
            return clock.now_ms() - t0

        first = await engine.workflows.execute(product="p", env="t", tag="forms", workflow_id="wf-forms")
        assert first.status == "running"
        await clock.advance(119)
        assert woke == []
        await clock.advance(1)
        assert woke == [120]
        await clock.advance(79)
        assert woke == [120]
        await clock.advance(1)
        assert woke == [120, 200]
        await clock.advance(48 * HOUR - 1)
        assert (await engine.workflows.status(product="p", env="t", workflow_id="wf-forms")).status == "running"
        await clock.advance(1)
        result = await engine.workflows.result(product="p", env="t", workflow_id="wf-forms", timeout="5s")
        assert result.status == "completed"
        assert result.output == 200 + 48 * HOUR


async def test_execute_returns_running_while_sleeping_and_result_waits(tmp_path):
    clock = VirtualClock(start_ms=START)
    async with sagaloop.Engine(tmp_path / "data", durability="fast", clock=clock) as engine:
        ran = Counter()

        async def before():
            ran["before"] += 1
            return 1

        async def after():
            ran["after"] += 1
            return 2

        @engine.workflows.define(product="p", tag="sleepy")
        async def sleepy(ctx):
            await ctx.step("before", before)
            await ctx.sleep(600)
            await ctx.step("after", after)
            return "woke"

        first = await engine.workflows.execute(product="p", env="t", tag="sleepy", workflow_id="wf-sleepy")
        # execute returned at the sleep: the clock has not moved at all.
        assert clock.now_ms() == START
        assert first.status == "running", first
        assert first.workflow_id == "wf-sleepy"
        assert first.completed_steps == ["before"]
        assert ran == Counter(before=1)

        status = await engine.workflows.status(product="p", env="t", workflow_id="wf-sleepy")
        assert status.status == "running"
        assert status.completed_steps == ["before"]

        waiter = asyncio.ensure_future(engine.workflows.result(product="p", env="t", workflow_id="wf-sleepy"))
        await clock.advance(599)
        assert not waiter.done(), "result() returned before the sleep ended"
        assert ran == Counter(before=1)
        await clock.advance(1)
        final = await asyncio.wait_for(waiter, 5)
        assert final.status == "completed"
        assert final.output == "woke"
        assert final.completed_steps == ["before", "after"]
        assert final.execution_time == 600
        assert ran == Counter(before=1, after=1)


async def test_sleep_survives_a_clean_close_and_reopen(tmp_path):
    """Closed mid-sleep, reopened: the sleep ends at its original deadline, and nothing runs twice."""
    data = tmp_path / "data"
    ran = Counter()

    def define(engine, clock):
        async def before():
            ran["before"] += 1
            return clock.now_ms()

        async def after():
            ran["after"] += 1
            return clock.now_ms()

        @engine.workflows.define(product="p", tag="nap")
        async def nap(ctx):
            started = await ctx.step("before", before)
            await ctx.sleep(1500)
            return {"started": started, "after": await ctx.step("after", after)}

    clock = VirtualClock(start_ms=START)
    async with sagaloop.Engine(data, durability="fast", clock=clock) as engine:
        define(engine, clock)
        first = await engine.workflows.execute(product="p", env="t", tag="nap", workflow_id="wf-nap")
        assert first.status == "running"
        await clock.advance(500)
    assert ran == Counter(before=1)
    # Down for 300 ms; a clock drives one engine, so the reopened one gets its own, 800 ms on.
    clock = VirtualClock(start_ms=START + 800)
    async with sagaloop.Engine(data, durability="fast", clock=clock) as engine:
        define(engine, clock)
        await clock.advance(699)  # restarted from zero it would need 1500 ms; it has 700 left
        status = await engine.workflows.status(product="p", env="t", workflow_id="wf-nap")
        assert status.status == "running", "the sleep ended before its deadline"
        await clock.advance(1)
        result = await engine.workflows.result(product="p", env="t", workflow_id="wf-nap", timeout="5s")
    assert result.status == "completed", f"the sleep was restarted from zero: {result}"
    assert ran == Counter(before=1, after=1)
    assert result.output == {"started": START, "after": START + 1500}


async def test_sleep_whose_deadline_passed_while_closed_ends_at_once_on_reopen(tmp_path):
    data = tmp_path / "data"
    clock = VirtualClock(start_ms=START)
    async with sagaloop.Engine(data, durability="fast", clock=clock) as engine:
        @engine.workflows.define(product="p", tag="nap")
        async def nap(ctx):
            await ctx.sleep("1d")
            return "woke"

        await engine.workflows.execute(product="p", env="t", tag="nap", workflow_id="wf-late")
    clock = VirtualClock(start_ms=START + 3 * 24 * HOUR)
    async with sagaloop.Engine(data, durability="fast", clock=clock) as engine:
        @engine.workflows.define(product="p", tag="nap")
        async def nap_again(ctx):
            await ctx.sleep("1d")
            return "woke"

        result = await engine.workflows.result(product="p", env="t", workflow_id="wf-late", timeout="5s")
        assert clock.now_ms() == START + 3 * 24 * HOUR  # nobody moved the clock: the deadline had passed
    assert (result.status, result.output) == ("completed", "woke")


# -- a real process killed in the middle of a durable wait ---------------------------------------------


@pytest.fixture
def spawn(tmp_path):
    """``spawn(mode, *extra)`` starts a child on this test's data dir and side file; all are killed at the end."""
    with Spawner(tmp_path, WORKER_PATH) as spawner:
        yield spawner


def start_and_kill_mid_wait(spawn, mode: str, workflow_id: str, marker: str) -> tuple[float, int]:
    """Start ``mode`` in a child, SIGKILL it ``KILL_AT`` s into its wait; return (wait start, dead pid)."""
    child = spawn(mode, "--workflow-id", workflow_id)
    line = child.wait_for(marker + " ")
    wait_started = float(line.split(" ", 1)[1])
    # execute returned "running" as soon as the instance blocked in its durable wait.
    assert child.wait_for("STARTED ") == f"STARTED {workflow_id} running"
    pause = wait_started + KILL_AT - time.time()
    if pause > 0:
        time.sleep(pause)
    assert time.time() < wait_started + WAIT - 0.5, "the machine is too slow to kill the child mid-wait"
    child.sigkill()
    return wait_started, child.pid


async def resume_here(datadir: Path, sidefile: Path, workflow_id: str) -> dict:
    """Reopen in this process; ``opened`` is the wall time recovery began (the definitions were registered)."""
    async with sagaloop.Engine(datadir) as engine:
        opened = time.time()
        worker.define_workflows(engine, sidefile)
        result = await worker.wait_until_ended(engine, workflow_id, timeout=WAIT_S)
        history = await engine.workflows.history(product=PRODUCT, env=ENV, workflow_id=workflow_id)
        details = {}
        for tag in result.completed_steps:
            details[tag] = (await engine.workflows.step_detail(product=PRODUCT, env=ENV, workflow_id=workflow_id,
                                                               step_tag=tag)).to_dict()
        return {"result": result.to_dict(), "events": [e.type for e in history.events], "details": details,
                "opened": opened, "pid": os.getpid()}


def assert_ended_at_the_original_deadline(ended: float, wait_started: float, opened: float) -> None:
    assert ended >= wait_started + WAIT - EARLY, (
        f"the wait ended {ended - wait_started:.3f} s after it began, before its {WAIT} s")
    # Started again from zero, it would end no earlier than opened + WAIT (about wait_started + 4.5 s).
    assert ended - opened < WAIT - 0.6, (
        f"the wait ended {ended - opened:.2f} s after the restart: the remaining time was "
        f"~{wait_started + WAIT - opened:.2f} s, so the timer was restarted from zero")
    assert ended < wait_started + WAIT + 1.5, f"the wait ended {ended - wait_started:.2f} s after it began"


@pytest.mark.slow  # real processes, SIGKILLed
def test_sleep_killed_midway_resumes_with_the_remaining_time(spawn):
    wf = "wf-sleep-kill"
    wait_started, dead_pid = start_and_kill_mid_wait(spawn, "sleep", wf, "SLEEPING")
    assert worker.read_side_effects(spawn.sidefile) == [("before", dead_pid)]

    # Resumed by a second, fresh process.
    child = spawn("resume", "--workflow-id", wf)
    seen = child.report()
    assert child.wait_exit() == 0, child.stderr()
    result, new_pid = seen["result"], seen["pid"]

    assert result["status"] == "completed", result
    assert result["workflow_id"] == wf
    assert result["completed_steps"] == ["before", "after"]
    assert worker.read_side_effects(spawn.sidefile) == [("before", dead_pid), ("after", new_pid)]
    assert result["output"]["after"]["pid"] == new_pid
    assert_ended_at_the_original_deadline(result["output"]["after"]["at"], wait_started, seen["opened"])
    assert "workflow_resumed" in seen["events"]
    assert seen["events"][-1] == "workflow_completed"


@pytest.mark.slow  # real processes, SIGKILLed
def test_signal_timeout_killed_midway_fires_at_the_original_deadline(spawn):
    wf = "wf-signal-timeout-kill"
    wait_started, dead_pid = start_and_kill_mid_wait(spawn, "signal-timeout", wf, "WAITING")
    assert worker.read_side_effects(spawn.sidefile) == [("before", dead_pid)]

    seen = asyncio.run(resume_here(spawn.datadir, spawn.sidefile, wf))
    result = seen["result"]
    assert result["status"] == "completed", result
    assert result["output"]["timed_out"] is True
    assert result["output"]["code"] == "signal_timeout"
    assert result["completed_steps"] == ["before", "after"]
    assert worker.read_side_effects(spawn.sidefile) == [("before", dead_pid), ("after", seen["pid"])]
    assert_ended_at_the_original_deadline(result["output"]["after"]["at"], wait_started, seen["opened"])


@pytest.mark.slow  # real processes, SIGKILLed
def test_retry_delay_killed_midway_continues_attempts_and_remaining_wait(spawn):
    wf = "wf-retry-kill"
    failed_at, dead_pid = start_and_kill_mid_wait(spawn, "retry", wf, "RETRY-WAIT")
    assert worker.read_side_effects(spawn.sidefile) == [("flaky", dead_pid)]

    seen = asyncio.run(resume_here(spawn.datadir, spawn.sidefile, wf))
    result = seen["result"]
    assert result["status"] == "completed", result
    assert result["completed_steps"] == ["flaky"]
    # One failed attempt in the dead process, one successful attempt here: no attempt lost or added.
    assert worker.read_side_effects(spawn.sidefile) == [("flaky", dead_pid), ("flaky", seen["pid"])]
    assert seen["details"]["flaky"]["attempts"] == 2, seen["details"]["flaky"]
    assert seen["details"]["flaky"]["status"] == "completed"
    assert result["output"]["flaky"]["pid"] == seen["pid"]
    assert_ended_at_the_original_deadline(result["output"]["flaky"]["at"], failed_at, seen["opened"])
    assert seen["events"].count("step_retrying") == 1, seen["events"]

