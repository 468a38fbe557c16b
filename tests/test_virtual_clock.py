"""``sagaloop.testing``: a clock the test moves, and injected step failures.

Under a ``VirtualClock`` the durable timers (``ctx.sleep``, signal timeouts,
retry waits, the workflow timeout) follow the clock, and ``advance`` fires
what falls due in order, letting the workflows run between timers. Every
time below is read from the clock itself, so the tests check exact virtual
times, not wall-clock tolerances.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import timedelta

import pytest

import sagaloop
from sagaloop.testing import VirtualClock, fail_step, wait_idle

P, E = "shop", "test"
START = 1_700_000_000_000  # a whole millisecond, so deadlines have no fraction
MS = 1
SECOND = 1000
HOUR = 3_600_000
DAY = 24 * HOUR


async def status_of(engine, wf):
    return await engine.workflows.status(product=P, env=E, workflow_id=wf)


async def history_of(engine, wf):
    return (await engine.workflows.history(product=P, env=E, workflow_id=wf)).events


async def error_types(engine, wf):
    """The exception type of each failed attempt, from the history."""
    return [e.data["error"]["type"] for e in await history_of(engine, wf)
            if e.type in ("step_failed", "step_retrying")]


# -- a month of workflow in well under a second ------------------------------------------------------


async def test_thirty_day_workflow_runs_in_virtual_time(tmp_path):
    clock = VirtualClock(start_ms=START)
    calls = Counter()
    seen: dict = {"days": []}

    async with sagaloop.Engine(tmp_path / "data", durability="fast", clock=clock) as engine:
        def daily(day):
            def handler():
                calls[f"day-{day}"] += 1
                return clock.now_ms()
            return handler

        def charge():
            calls["charge"] += 1
            return clock.now_ms()

        @engine.workflows.define(product=P, tag="month")
        async def month(ctx):
            for day in range(30):
                seen["days"].append(await ctx.step(f"day-{day}", daily(day)))
                if day < 29:
                    await ctx.sleep("1d")
            seen["wait_began"] = clock.now_ms()
            try:
                await ctx.wait_for_signal("approval", timeout="2d")
            except sagaloop.SignalTimeoutError as exc:
                seen["timed_out"] = (exc.code, clock.now_ms())
            seen["charge_began"] = clock.now_ms()
            seen["charged"] = await ctx.step(
                "charge", charge,
                retry={"max_attempts": 4, "initial_delay": "1h", "backoff": 2, "jitter": False,
                       "max_delay": "1d"})  # the default max_delay (60 s) would cap the 1 h waits
            return "done"

        wall = time.perf_counter()
        with fail_step(engine, "charge", times=2):
            first = await engine.workflows.execute(product=P, env=E, tag="month", workflow_id="wf-month")
            assert first.status == "running", first
            await clock.advance("32d")
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-month", timeout="5s")
        wall = time.perf_counter() - wall
        detail = await engine.workflows.step_detail(product=P, env=E, workflow_id="wf-month", step_tag="charge")
        events = await history_of(engine, "wf-month")

    assert result.status == "completed", result
    assert result.output == "done"
    assert wall < 1.0, f"a month of virtual time took {wall:.2f} s of wall time"

    # Each day's step ran exactly one (virtual) day after the previous one, each once.
    days = seen["days"]
    assert len(days) == 30
    assert days[0] == START
    assert [b - a for a, b in zip(days, days[1:])] == [DAY] * 29
    assert all(calls[f"day-{d}"] == 1 for d in range(30))

    # The signal timeout fired exactly 2 days after the wait began.
    assert seen["wait_began"] == days[-1]
    assert seen["timed_out"] == ("signal_timeout", seen["wait_began"] + 2 * DAY)
    timed_out = [e for e in events if e.type == "signal_timed_out"]
    assert [e.timestamp for e in timed_out] == [seen["wait_began"] + 2 * DAY]

    # Two injected failures, then the handler ran once: the waits were 1 h, then 2 h.
    began = seen["charge_began"]
    assert calls["charge"] == 1
    assert detail.attempts == 3
    retrying = [e for e in events if e.type == "step_retrying"]
    assert [e.data["attempt"] for e in retrying] == [1, 2]
    assert [e.timestamp for e in retrying] == [began, began + HOUR]
    assert seen["charged"] == began + HOUR + 2 * HOUR
    assert "fail_step" in retrying[0].data["error"]["message"] and "charge" in retrying[0].data["error"]["message"]

    assert clock.now_ms() == START + 32 * DAY
    assert clock.pending_timers == 0


# -- advance -------------------------------------------------------------------------------------------


def define_three_naps(engine, clock, woke):
    @engine.workflows.define(product=P, tag="naps")
    async def naps(ctx):
        for _ in range(3):
            await ctx.sleep("1h")
            woke.append(clock.now_ms())
        return len(woke)


async def test_advance_fires_timers_set_while_it_runs(tmp_path):
    clock = VirtualClock(start_ms=START)
    woke: list[int] = []
    async with sagaloop.Engine(tmp_path / "data", durability="fast", clock=clock) as engine:
        define_three_naps(engine, clock, woke)
        first = await engine.workflows.execute(product=P, env=E, tag="naps", workflow_id="wf-naps")
        assert first.status == "running"
        assert clock.pending_timers == 1  # only the first sleep exists yet
        await clock.advance("3h")
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-naps", timeout="1s")
    assert result.status == "completed", result
    assert woke == [START + HOUR, START + 2 * HOUR, START + 3 * HOUR]


async def test_advance_stops_at_its_target(tmp_path):
    clock = VirtualClock(start_ms=START)
    woke: list[int] = []
    async with sagaloop.Engine(tmp_path / "data", durability="fast", clock=clock) as engine:
        define_three_naps(engine, clock, woke)
        await engine.workflows.execute(product=P, env=E, tag="naps", workflow_id="wf-naps")
        await clock.advance("2h")
        assert woke == [START + HOUR, START + 2 * HOUR]
        assert clock.now_ms() == START + 2 * HOUR
        assert (await status_of(engine, "wf-naps")).status == "running"
        assert clock.pending_timers == 1  # the third sleep, set at 2 h, due at 3 h

        await clock.advance(HOUR - MS)
        assert len(woke) == 2
        assert (await status_of(engine, "wf-naps")).status == "running"
        await clock.advance(MS)
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-naps", timeout="1s")
    assert result.status == "completed", result
    assert woke == [START + HOUR, START + 2 * HOUR, START + 3 * HOUR]


async def test_timers_of_several_workflows_fire_in_deadline_order(tmp_path):
    clock = VirtualClock(start_ms=START)
    order: list[tuple[str, int]] = []
    async with sagaloop.Engine(tmp_path / "data", durability="fast", clock=clock) as engine:
        @engine.workflows.define(product=P, tag="nap")
        async def nap(ctx):
            await ctx.sleep(ctx.input["ms"])
            order.append((ctx.workflow_id, clock.now_ms()))

        for wf, ms in (("c", 3 * HOUR), ("a", HOUR), ("b", 2 * HOUR)):
            await engine.workflows.execute(product=P, env=E, tag="nap",
                                           workflow_id=wf, input={"ms": ms})
        await clock.advance("5h")
    assert order == [("a", START + HOUR), ("b", START + 2 * HOUR), ("c", START + 3 * HOUR)]


# -- one clock per engine ------------------------------------------------------------------------------


async def test_two_engines_cannot_share_one_clock(tmp_path):
    clock = VirtualClock(start_ms=START)
    async with sagaloop.Engine(tmp_path / "one", durability="fast", clock=clock):
        with pytest.raises(sagaloop.InvalidArgumentError) as info:
            sagaloop.Engine(tmp_path / "two", durability="fast", clock=clock)
        assert "clock" in str(info.value)


async def test_each_engine_has_its_own_clock(tmp_path):
    clock_a, clock_b = VirtualClock(start_ms=START), VirtualClock(start_ms=START)
    woke: dict[str, int] = {}

    def define(engine, name, clock):
        @engine.workflows.define(product=P, tag="nap")
        async def nap(ctx):
            await ctx.sleep("1h")
            woke[name] = clock.now_ms()

    async with sagaloop.Engine(tmp_path / "a", durability="fast", clock=clock_a) as a, \
            sagaloop.Engine(tmp_path / "b", durability="fast", clock=clock_b) as b:
        define(a, "a", clock_a)
        define(b, "b", clock_b)
        await a.workflows.execute(product=P, env=E, tag="nap", workflow_id="wf")
        await b.workflows.execute(product=P, env=E, tag="nap", workflow_id="wf")
        await clock_a.advance("1h")
        assert woke == {"a": START + HOUR}
        assert (await status_of(b, "wf")).status == "running"
        assert clock_b.now_ms() == START
        await clock_b.advance("1h")
        assert woke == {"a": START + HOUR, "b": START + HOUR}


# -- the workflow timeout --------------------------------------------------------------------------------


async def test_workflow_timeout_follows_the_clock(tmp_path):
    clock = VirtualClock(start_ms=START)
    undone = []
    async with sagaloop.Engine(tmp_path / "data", durability="fast", clock=clock) as engine:
        @engine.workflows.define(product=P, tag="stuck")
        async def stuck(ctx):
            await ctx.step("reserve", lambda: 1, lambda out: undone.append(out))
            await ctx.wait_for_signal("never")

        first = await engine.workflows.execute(product=P, env=E, tag="stuck", workflow_id="wf-t", timeout="1h")
        assert first.status == "running"
        await clock.advance("59m")
        assert (await status_of(engine, "wf-t")).status == "running"
        await clock.advance(59 * SECOND + 999 * MS)
        assert (await status_of(engine, "wf-t")).status == "running", "the timeout fired before its hour"
        assert undone == []
        await clock.advance(MS)
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-t", timeout="1s")
    assert result.status == "rolled_back", result
    assert result.error is not None and result.error.code == "workflow_timeout", result.error
    assert result.rollback_result.trigger == "timeout"
    assert undone == [1]
    assert result.execution_time == HOUR


# -- fail_step -----------------------------------------------------------------------------------------


async def test_fail_step_fails_the_next_attempts_without_calling_the_handler(tmp_path):
    clock = VirtualClock(start_ms=START)
    calls = Counter()
    async with sagaloop.Engine(tmp_path / "data", durability="fast", clock=clock) as engine:
        def pay():
            calls["pay"] += 1
            return "paid"

        @engine.workflows.define(product=P, tag="pay")
        async def pay_wf(ctx):
            return await ctx.step("pay", pay, retries=2, retry_delay="1m")

        with fail_step(engine, "pay", times=2):
            # wait=False: execute returns "running" at a sleep or a signal wait, not in a retry wait.
            await engine.workflows.execute(product=P, env=E, tag="pay", workflow_id="wf-1", wait=False)
            await clock.settle()
            assert (await status_of(engine, "wf-1")).current_step == "pay"  # in its first retry wait
            assert calls["pay"] == 0
            await clock.advance("1m")
            assert calls["pay"] == 0  # the second attempt failed by injection too
            await clock.advance("1m")
            ok = await engine.workflows.result(product=P, env=E, workflow_id="wf-1", timeout="1s")
        assert ok.status == "completed", ok
        assert ok.output == "paid"
        assert calls["pay"] == 1
        events = await history_of(engine, "wf-1")
        messages = [e.data["error"]["message"] for e in events if e.type == "step_retrying"]
        assert len(messages) == 2
        assert all("pay" in m for m in messages), messages
        assert await error_types(engine, "wf-1") == ["RuntimeError"] * 2

        # Outside the block nothing is injected any more.
        again = await engine.workflows.execute(product=P, env=E, tag="pay", workflow_id="wf-2")
        assert again.status == "completed", again
        assert calls["pay"] == 2


async def test_fail_step_default_error_names_the_step_and_a_custom_error_is_raised(tmp_path):
    clock = VirtualClock(start_ms=START)
    calls = Counter()

    class Declined(Exception):
        code = "card_declined"

    async with sagaloop.Engine(tmp_path / "data", durability="fast", clock=clock) as engine:
        def charge():
            calls["charge"] += 1
            return 1

        @engine.workflows.define(product=P, tag="charge")
        async def charge_wf(ctx):
            return await ctx.step("charge-card", charge)

        with fail_step(engine, "charge-card"):
            failed = await engine.workflows.execute(product=P, env=E, tag="charge", workflow_id="wf-d")
        assert failed.status == "failed", failed
        assert failed.error.step == "charge-card"
        assert "charge-card" in failed.error.message
        assert await error_types(engine, "wf-d") == ["RuntimeError"]

        with fail_step(engine, "charge-card", error=Declined("card declined")):
            custom = await engine.workflows.execute(product=P, env=E, tag="charge", workflow_id="wf-c")
        assert custom.status == "failed", custom
        assert custom.error.message == "card declined"
        assert custom.error.code == "card_declined"  # the very error given, not a wrapper
        assert await error_types(engine, "wf-c") == ["Declined"]
        assert calls["charge"] == 0

        # times=1 fails only the next attempt: a retry then calls the handler.
        @engine.workflows.define(product=P, tag="charge-retry")
        async def charge_retry(ctx):
            return await ctx.step("charge-card", charge, retries=1, retry_delay="1s")

        with fail_step(engine, "charge-card", times=1):
            await engine.workflows.execute(product=P, env=E, tag="charge-retry", workflow_id="wf-r", wait=False)
            await clock.advance("1s")
            retried = await engine.workflows.result(product=P, env=E, workflow_id="wf-r", timeout="1s")
        assert retried.status == "completed", retried
        assert calls["charge"] == 1


async def test_leaving_fail_step_removes_what_is_left_of_the_injection(tmp_path):
    calls = Counter()
    async with sagaloop.Engine(tmp_path / "data", durability="fast", clock=VirtualClock()) as engine:
        @engine.workflows.define(product=P, tag="once")
        async def once(ctx):
            return await ctx.step("s", lambda: calls.update(["s"]) or "ran")

        with fail_step(engine, "s", times=5):
            failed = await engine.workflows.execute(product=P, env=E, tag="once")  # uses 1 of 5
        assert failed.status == "failed"
        ok = await engine.workflows.execute(product=P, env=E, tag="once")
        assert ok.status == "completed", ok
        assert ok.output == "ran"
        assert calls["s"] == 1

        with pytest.raises(KeyError):
            with fail_step(engine, "s", times=3):
                raise KeyError("the block ends by an exception")
        ok = await engine.workflows.execute(product=P, env=E, tag="once")
        assert ok.status == "completed", ok


@pytest.mark.parametrize("times", [0, -1, True, 1.5, "2", None])
async def test_fail_step_needs_a_positive_int(tmp_path, times):
    async with sagaloop.Engine(tmp_path / "data", durability="fast") as engine:
        with pytest.raises(sagaloop.InvalidArgumentError):
            with fail_step(engine, "s", times=times):
                pass


# -- ctx.sleep under the clock --------------------------------------------------------------------------


@pytest.mark.parametrize("duration, ms", [
    (90, 90), (2.5, 2.5), ("250ms", 250), ("45s", 45 * SECOND), ("5m", 5 * 60 * SECOND), ("12h", 12 * HOUR),
    ("7d", 7 * DAY), (timedelta(hours=1, minutes=30), 90 * 60 * SECOND),
], ids=["int", "float", "ms", "s", "m", "h", "d", "timedelta"])
async def test_sleep_lasts_exactly_its_duration(tmp_path, duration, ms):
    clock = VirtualClock(start_ms=START)
    woke = []
    async with sagaloop.Engine(tmp_path / "data", durability="fast", clock=clock) as engine:
        @engine.workflows.define(product=P, tag="nap")
        async def nap(ctx):
            await ctx.sleep(duration)
            woke.append(clock.now_ms())
            return "woke"

        first = await engine.workflows.execute(product=P, env=E, tag="nap", workflow_id="wf-nap")
        assert first.status == "running"
        # Fractions of a millisecond stay in the deadline: step just short of it, then onto it.
        short = ms - 1 if ms >= 1 else 0
        await clock.advance(short)
        assert woke == [], f"the sleep of {duration!r} ended after {short} ms"
        assert (await status_of(engine, "wf-nap")).status == "running"
        await clock.advance(ms - short)
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-nap", timeout="1s")
    assert result.status == "completed", result
    assert woke == [int(START + ms)]


async def test_status_while_sleeping(tmp_path):
    clock = VirtualClock(start_ms=START)
    async with sagaloop.Engine(tmp_path / "data", durability="fast", clock=clock) as engine:
        @engine.workflows.define(product=P, tag="nap")
        async def nap(ctx):
            await ctx.step("before", lambda: 1)
            await ctx.sleep("1d")
            await ctx.step("after", lambda: 2)

        await engine.workflows.execute(product=P, env=E, tag="nap", workflow_id="wf-nap")
        await clock.advance("6h")
        status = await status_of(engine, "wf-nap")
        assert status.status == "running"
        assert status.completed_steps == ["before"]
        assert status.current_step is None  # a sleep is not a step
        assert status.created_at == START
        assert status.updated_at == START + 6 * HOUR  # status reads the engine's clock
        # What the instance waits for is in the runtime's snapshot (not a public status field).
        raw = await engine._runtime.executions.status(product=P, env=E, workflow_id="wf-nap")
        assert raw["waiting_for"].startswith("timer ")

        await clock.advance("18h")
        status = await status_of(engine, "wf-nap")
        assert status.status == "completed"
        assert status.completed_steps == ["before", "after"]
        assert status.ended_at == START + DAY
        raw = await engine._runtime.executions.status(product=P, env=E, workflow_id="wf-nap")
        assert raw.get("waiting_for") is None


async def test_signal_wait_status_and_signal_before_the_timeout(tmp_path):
    clock = VirtualClock(start_ms=START)
    async with sagaloop.Engine(tmp_path / "data", durability="fast", clock=clock) as engine:
        @engine.workflows.define(product=P, tag="approve")
        async def approve(ctx):
            return await ctx.wait_for_signal(["yes", "no"], timeout="2d")

        await engine.workflows.execute(product=P, env=E, tag="approve", workflow_id="wf-a")
        raw = await engine._runtime.executions.status(product=P, env=E, workflow_id="wf-a")
        assert raw["waiting_for"] == "signal yes | no"
        await clock.advance(2 * DAY - MS)
        await engine.workflows.signal(product=P, env=E, workflow_id="wf-a", signal="no", payload={"n": 1})
        result = await engine.workflows.result(product=P, env=E, workflow_id="wf-a", timeout="1s")
        assert result.status == "completed", result
        assert result.output == {"n": 1, "_signal": "no"}
        assert clock.pending_timers == 0  # the timeout's timer was cancelled
        received = [e for e in await history_of(engine, "wf-a") if e.type == "signal_received"]
        assert [e.timestamp for e in received] == [START + 2 * DAY - MS]


async def test_a_clock_serves_a_reopened_engine_and_execute_waits_through_a_retry_wait(tmp_path):
    """A retry wait is a durable timer and part of its step: execute waits through it (it does not
    answer "running"); the clock can drive the engine that reopens the same directory after the
    first one closed in the middle of the wait."""
    clock = VirtualClock(start_ms=1_700_000_000_000)
    calls = []

    def define(engine):
        @engine.workflows.define(product="shop", tag="wf")
        async def wf(ctx):
            async def flaky():
                calls.append(clock.now_ms())
                if len(calls) == 1:
                    raise RuntimeError("first attempt fails")
                return "ok"
            return await ctx.step("s", flaky, None, {"retries": 1, "retry_delay": "1h"})

    async with sagaloop.Engine(tmp_path / "db", durability="fast", clock=clock) as engine:
        define(engine)
        execute = asyncio.ensure_future(engine.workflows.execute(product="shop", env="prd", tag="wf",
                                                                 workflow_id="r"))
        await wait_idle(engine)  # the run waits to retry
        status = await engine.workflows.status(product="shop", env="prd", workflow_id="r")
        assert status.waiting_for is not None and status.waiting_for.startswith("retry"), status
        assert len(calls) == 1 and not execute.done()
    with pytest.raises(sagaloop.EngineClosedError):
        await execute  # the engine closed under it: the run resumes in the next one
    async with sagaloop.Engine(tmp_path / "db", durability="fast", clock=clock) as engine:
        define(engine)
        await clock.advance("59m")
        assert len(calls) == 1
        await clock.advance("1m")
        result = await engine.workflows.result(product="shop", env="prd", workflow_id="r", timeout=0)
    assert (result.status, result.output) == ("completed", "ok")
    assert calls[1] - calls[0] == 3_600_000
