"""Dispatch: durable one-off and cron jobs, fired by the scheduler on the engine's clock.

Every test runs on a ``VirtualClock``: a simulated week takes milliseconds, and each run's
``scheduled_for`` is checked exactly.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

import sagaloop
from sagaloop.testing import VirtualClock, wait_idle

P, E = "shop", "test"
MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
# Monday 2026-01-05 00:00 UTC
START = int(datetime(2026, 1, 5, tzinfo=timezone.utc).timestamp() * 1000)


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def engine_on(tmp_path, clock):
    return sagaloop.Engine(tmp_path / "db", durability="fast", clock=clock)


def define_recorder(engine, runs: list, tag: str = "job"):
    @engine.workflows.define(product=P, tag=tag)
    async def job(ctx):
        runs.append(ctx.context["scheduled_for"])
        return ctx.context

    return job


def define_blocker(engine, runs: list, tag: str = "blocker"):
    """A run that keeps going until it gets signal "go"."""
    @engine.workflows.define(product=P, tag=tag)
    async def blocker(ctx):
        runs.append(ctx.context["scheduled_for"])
        await ctx.wait_for_signal("go")
        return None

    return blocker


async def dispatch(engine, tag="job", **kw):
    return await engine.workflows.dispatch(product=P, env=E, workflow=tag, input=kw.pop("input", None), **kw)


async def jobs(engine, tag=None):
    return (await engine.workflows.list_jobs(product=P, env=E, tag=tag)).jobs


async def executions(engine):
    return await engine.workflows.list(product=P, env=E, limit=1000)


# -- start_at ------------------------------------------------------------------------------------------


async def test_start_at_runs_once_at_that_time_as_an_ordinary_execution(tmp_path):
    clock = VirtualClock(start_ms=START)
    runs: list = []
    async with engine_on(tmp_path, clock) as engine:
        define_recorder(engine, runs)
        at = START + HOUR
        job = await dispatch(engine, input={"n": 1}, schedule={"start_at": at})
        assert job.scheduled_at == at and job.job_id
        assert [j.next_run_at for j in await jobs(engine)] == [at]
        await clock.advance(HOUR - 1)
        assert runs == []
        await clock.advance(1)
        assert runs == [at]
        await clock.advance("2d")
        assert runs == [at]
        [summary] = await executions(engine)
        result = await engine.workflows.result(product=P, env=E, workflow_id=summary.workflow_id)
        assert result.status == "completed"
        assert result.output == {"job_id": job.job_id, "scheduled_for": at}
        assert await jobs(engine) == []  # a one-off job leaves once its run started


async def test_start_at_takes_an_aware_datetime(tmp_path):
    clock = VirtualClock(start_ms=START)
    runs: list = []
    async with engine_on(tmp_path, clock) as engine:
        define_recorder(engine, runs)
        at = datetime(2026, 1, 5, 3, 0, tzinfo=ZoneInfo("Europe/Paris"))  # 02:00 UTC
        job = await dispatch(engine, schedule={"start_at": at})
        assert job.scheduled_at == START + 2 * HOUR
        await clock.advance("3h")
        assert runs == [START + 2 * HOUR]


# -- cron ------------------------------------------------------------------------------------------------


async def test_a_cron_job_over_a_simulated_week(tmp_path):
    clock = VirtualClock(start_ms=START)
    runs: list = []
    async with engine_on(tmp_path, clock) as engine:
        define_recorder(engine, runs)
        # 09:00 and 17:30 on weekdays, London time (UTC+0 in January)
        job = await dispatch(engine, schedule={"cron": "0,30 9 * * 1-5", "timezone": "Europe/London"})
        assert job.scheduled_at == START + 9 * HOUR
        await clock.advance("7d")
        expected = [START + d * DAY + 9 * HOUR + m * MINUTE for d in range(5) for m in (0, 30)]
        assert runs == expected
        [listed] = await jobs(engine)
        assert listed.last_run_at == expected[-1]
        assert listed.next_run_at == START + 7 * DAY + 9 * HOUR  # the next Monday
        assert listed.paused is False and listed.schedule == {"cron": "0,30 9 * * 1-5", "timezone": "Europe/London"}
        assert len(await executions(engine)) == 10


async def test_cron_default_timezone_is_utc(tmp_path):
    clock = VirtualClock(start_ms=START)
    runs: list = []
    async with engine_on(tmp_path, clock) as engine:
        define_recorder(engine, runs)
        await dispatch(engine, schedule={"cron": "0 */6 * * *"})
        await clock.advance("1d")
        assert runs == [START + h * HOUR for h in (6, 12, 18, 24)]


async def test_daylight_saving_in_new_york_follows_croniter(tmp_path):
    """Pinned: on the spring-forward day (2026-03-08, 02:00 -> 03:00 EDT) a 02:30 job runs at 03:00
    EDT (the first instant after the missing time); on the fall-back day (2026-11-01, 02:00 EDT ->
    01:00 EST) a 01:30 job runs twice, at 01:30 EDT and again at 01:30 EST."""
    ny = ZoneInfo("America/New_York")
    clock = VirtualClock(start_ms=ms(datetime(2026, 3, 7, 12, tzinfo=ny)))
    spring: list = []
    fall: list = []
    async with engine_on(tmp_path, clock) as engine:
        define_recorder(engine, spring, "spring")
        define_recorder(engine, fall, "fall")
        await dispatch(engine, "spring", schedule={"cron": "30 2 * * *", "timezone": "America/New_York"})
        await clock.advance("3d")
        assert [datetime.fromtimestamp(t / 1000, ny).isoformat() for t in spring] == [
            "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00", "2026-03-10T02:30:00-04:00"]
        await engine.workflows.cancel_dispatch(product=P, env=E, job_id=(await jobs(engine, "spring"))[0].job_id)

        await clock.advance(ms(datetime(2026, 10, 31, 12, tzinfo=ny)) - clock.now_ms())  # nothing scheduled
        await dispatch(engine, "fall", schedule={"cron": "30 1 * * *", "timezone": "America/New_York"})
        await clock.advance("3d")
        assert [datetime.fromtimestamp(t / 1000, timezone.utc).isoformat() for t in fall] == [
            "2026-11-01T05:30:00+00:00",  # 01:30 EDT
            "2026-11-01T06:30:00+00:00",  # 01:30 EST, an hour later: the repeated hour runs it again
            "2026-11-02T06:30:00+00:00", "2026-11-03T06:30:00+00:00"]


# -- restarts and catch_up ---------------------------------------------------------------------------------


@pytest.mark.parametrize("catch_up,expected_hours", [
    ("one", [5]),           # the latest missed tick, once
    ("none", []),
    ("all", [1, 2, 3, 4, 5]),
])
async def test_ticks_missed_while_no_engine_ran_follow_catch_up(tmp_path, catch_up, expected_hours):
    clock = VirtualClock(start_ms=START)
    runs: list = []
    engine = engine_on(tmp_path, clock)
    async with engine:
        define_recorder(engine, runs)
        await dispatch(engine, schedule={"cron": "0 * * * *"}, options={"catch_up": catch_up})
    await clock.advance(5 * HOUR + 30 * MINUTE)  # while closed: 5 ticks come due, none fires
    assert runs == []
    runs.clear()
    engine = engine_on(tmp_path, clock)
    async with engine:
        define_recorder(engine, runs)  # defined after open: the due ticks wait for it
        await clock.advance(0)
        assert runs == [START + h * HOUR for h in expected_hours]
        [job] = await jobs(engine)
        assert job.next_run_at == START + 6 * HOUR  # then from now on
        await clock.advance("1h")
        assert runs[-1] == START + 6 * HOUR


async def test_a_job_survives_a_restart_and_a_start_at_missed_while_closed_runs_once(tmp_path):
    clock = VirtualClock(start_ms=START)
    runs: list = []
    async with engine_on(tmp_path, clock) as engine:
        define_recorder(engine, runs)
        one = await dispatch(engine, schedule={"start_at": START + HOUR})
        cron = await dispatch(engine, schedule={"cron": "0 12 * * *"})
    await clock.advance("2h")  # while closed
    async with engine_on(tmp_path, clock) as engine:
        define_recorder(engine, runs)
        await clock.advance(0)
        assert runs == [START + HOUR]
        assert [j.job_id for j in await jobs(engine)] == [cron.job_id]
        assert one.job_id != cron.job_id
        await clock.advance("36h")
        assert runs == [START + HOUR, START + 12 * HOUR, START + 36 * HOUR]


# -- overlap ------------------------------------------------------------------------------------------------


async def signal_all(engine):
    for summary in await executions(engine):
        if summary.status == "running":
            await engine.workflows.signal(product=P, env=E, workflow_id=summary.workflow_id, signal="go",
                                          payload=None)


@pytest.mark.parametrize("overlap,expected", [
    ("skip", [0, 3]),             # ticks 1 and 2 fall while run 0 goes: skipped
    ("buffer_one", [0, 1, 3]),    # tick 1 kept and run when run 0 ends; tick 2 dropped
    ("allow", [0, 1, 2, 3]),
])
async def test_overlap_policies(tmp_path, overlap, expected):
    clock = VirtualClock(start_ms=START)
    runs: list = []
    async with engine_on(tmp_path, clock) as engine:
        define_blocker(engine, runs)
        await dispatch(engine, "blocker", schedule={"cron": "0 * * * *"}, options={"overlap": overlap})
        await clock.advance("1h")       # tick 0 (01:00) starts a run that blocks
        await clock.advance("2h")       # ticks 1, 2 fall while it goes
        await signal_all(engine)        # run 0 ends (and with allow, 1 and 2)
        await wait_idle(engine)
        await signal_all(engine)        # a buffered run ends
        await wait_idle(engine)
        await clock.advance("1h")       # tick 3: nothing running
        hours = [(t - START) // HOUR - 1 for t in runs]
        assert hours == expected


async def test_a_run_recovered_after_a_restart_counts_for_overlap(tmp_path):
    clock = VirtualClock(start_ms=START)
    runs: list = []
    async with engine_on(tmp_path, clock) as engine:
        define_blocker(engine, runs)
        await dispatch(engine, "blocker", schedule={"cron": "0 * * * *"})  # overlap: skip
        await clock.advance("1h")  # the 01:00 run blocks on its signal
    async with engine_on(tmp_path, clock) as engine:
        define_blocker(engine, runs)  # the 01:00 run is recovered and still goes
        await wait_idle(engine)
        await clock.advance("1h")  # 02:00 falls while it goes: skipped
        assert runs == [START + HOUR, START + HOUR]  # (the handler re-ran on recovery; no new run)
        await signal_all(engine)
        await wait_idle(engine)
        await clock.advance("1h")
        assert runs[-1] == START + 3 * HOUR and len(await executions(engine)) == 2


async def test_a_buffered_tick_survives_a_close_and_reopen_and_runs_once_after(tmp_path):
    clock = VirtualClock(start_ms=START)
    runs: list = []
    async with engine_on(tmp_path, clock) as engine:
        define_blocker(engine, runs)
        job = await dispatch(engine, "blocker", schedule={"cron": "0 * * * *"}, options={"overlap": "buffer_one"})
        await clock.advance("1h")  # the 01:00 run blocks on its signal
        await clock.advance("1h")  # 02:00 falls while it goes: kept (buffer_one)
        assert runs == [START + HOUR]
    async with engine_on(tmp_path, clock) as engine:
        [stored] = await engine._runtime.store.load_jobs()
        assert stored["job_id"] == job.job_id and stored["buffered"] == START + 2 * HOUR  # kept in the store
        assert stored["running"] == [[START + HOUR, 0]]
        define_blocker(engine, runs)  # the 01:00 run is recovered (its handler runs again) and still goes
        await wait_idle(engine)
        assert runs == [START + HOUR, START + HOUR]
        await signal_all(engine)  # the 01:00 run ends: the kept 02:00 tick starts
        await wait_idle(engine)
        assert runs == [START + HOUR, START + HOUR, START + 2 * HOUR]
        await signal_all(engine)
        await wait_idle(engine)
    async with engine_on(tmp_path, clock) as engine:  # and it is not kept any more
        define_blocker(engine, runs)
        await wait_idle(engine)
        [stored] = await engine._runtime.store.load_jobs()
        assert stored["buffered"] is None and stored["running"] == []
        assert runs.count(START + 2 * HOUR) == 1
        assert [s.status for s in await executions(engine)] == ["completed", "completed"]  # 01:00 and 02:00


async def test_a_retry_whose_start_was_cut_by_a_close_runs_after_reopening_once(tmp_path):
    clock = VirtualClock(start_ms=START)
    attempts: list = []
    held = asyncio.Event()

    def define_flaky(engine):
        @engine.workflows.define(product=P, tag="flaky")
        async def flaky(ctx):
            attempts.append(ctx.context["scheduled_for"])
            if len(attempts) == 1:
                raise RuntimeError("first attempt fails")
            return "ok"

    async with engine_on(tmp_path, clock) as engine:
        define_flaky(engine)
        runtime = engine._runtime
        launch = runtime.launch

        async def hold_retries(*args, **kw):
            if "#" in args[4]["idempotency_key"]:  # a retry's start never gets through before the close
                held.set()
                await asyncio.Event().wait()
            return await launch(*args, **kw)

        runtime.launch = hold_retries
        job = await dispatch(engine, "flaky", schedule={"start_at": START + HOUR}, options={"retries": 3})
        advancing = asyncio.ensure_future(clock.advance("1h"))  # it would wait for the held start
        await asyncio.wait_for(held.wait(), 5)
        advancing.cancel()
        assert attempts == [START + HOUR]
    async with engine_on(tmp_path, clock) as engine:
        [stored] = await engine._runtime.store.load_jobs()
        assert stored["job_id"] == job.job_id and stored["running"] == [[START + HOUR, 1]]  # the retry is stored
        define_flaky(engine)
        await clock.advance(0)
        assert attempts == [START + HOUR] * 2  # retried once, the failed run not run again
        statuses = sorted(s.status for s in await executions(engine))
        assert statuses == ["completed", "failed"]
        assert await jobs(engine) == [] and await engine._runtime.store.load_jobs() == []


async def test_a_retry_going_at_a_close_keeps_its_attempt_count_after_reopening(tmp_path):
    clock = VirtualClock(start_ms=START)
    attempts: list = []

    def define_flaky(engine):
        @engine.workflows.define(product=P, tag="flaky")
        async def flaky(ctx):
            attempts.append(ctx.context["scheduled_for"])
            if len(attempts) == 1:
                raise RuntimeError("first attempt fails")
            await ctx.wait_for_signal("go")  # the second attempt (replayed after reopening) fails too
            raise RuntimeError("second attempt fails")

    async with engine_on(tmp_path, clock) as engine:
        define_flaky(engine)
        await dispatch(engine, "flaky", schedule={"start_at": START + HOUR}, options={"retries": 2})
        await clock.advance("1h")  # attempt 0 fails, attempt 1 blocks on its signal
        assert attempts == [START + HOUR] * 2
    async with engine_on(tmp_path, clock) as engine:
        define_flaky(engine)  # attempt 1 is recovered
        await wait_idle(engine)
        await signal_all(engine)  # attempt 1 fails: attempt 2 (the last) starts, and blocks
        await wait_idle(engine)
        assert sorted(s.status for s in await executions(engine)) == ["failed", "failed", "running"]
        await signal_all(engine)  # attempt 2 fails: no retry is left
        await wait_idle(engine)
        assert sorted(s.status for s in await executions(engine)) == ["failed", "failed", "failed"]
        assert await jobs(engine) == []


# -- pause, resume, cancel, retries, timeout ------------------------------------------------------------------


async def test_pause_skips_ticks_resume_continues_cancel_stops_for_good(tmp_path):
    clock = VirtualClock(start_ms=START)
    runs: list = []
    async with engine_on(tmp_path, clock) as engine:
        define_recorder(engine, runs)
        job = await dispatch(engine, schedule={"cron": "0 * * * *"})
        await clock.advance("2h")
        await engine.workflows.pause_dispatch(product=P, env=E, job_id=job.job_id)
        assert (await jobs(engine))[0].paused is True
        await clock.advance("2h")
        await engine.workflows.resume_dispatch(product=P, env=E, job_id=job.job_id)
        await clock.advance("1h")
        assert runs == [START + h * HOUR for h in (1, 2, 5)]
        await engine.workflows.cancel_dispatch(product=P, env=E, job_id=job.job_id)
        await clock.advance("1d")
        assert len(runs) == 3 and await jobs(engine) == []
        with pytest.raises(sagaloop.WorkflowNotFoundError, match=job.job_id):
            await engine.workflows.cancel_dispatch(product=P, env=E, job_id=job.job_id)
    async with engine_on(tmp_path, clock) as engine:  # cancelled for good, also after a restart
        define_recorder(engine, runs)
        await clock.advance("1d")
        assert len(runs) == 3 and await jobs(engine) == []


async def test_pause_is_durable(tmp_path):
    clock = VirtualClock(start_ms=START)
    runs: list = []
    async with engine_on(tmp_path, clock) as engine:
        define_recorder(engine, runs)
        job = await dispatch(engine, schedule={"cron": "0 * * * *"})
        await engine.workflows.pause_dispatch(product=P, env=E, job_id=job.job_id)
    async with engine_on(tmp_path, clock) as engine:
        define_recorder(engine, runs)
        await clock.advance("3h")
        assert runs == [] and (await jobs(engine))[0].paused is True


async def test_list_jobs_filters_by_tag(tmp_path):
    clock = VirtualClock(start_ms=START)
    async with engine_on(tmp_path, clock) as engine:
        define_recorder(engine, [], "a")
        define_recorder(engine, [], "b")
        a = await dispatch(engine, "a", schedule={"cron": "0 * * * *"})
        await dispatch(engine, "b", schedule={"start_at": START + DAY})
        assert [j.job_id for j in await jobs(engine, "a")] == [a.job_id]
        assert len(await jobs(engine)) == 2
        assert (await jobs(engine, "a"))[0].to_dict()["workflow"] == "a"


async def test_retries_run_a_failed_tick_again_and_timeout_bounds_each_run(tmp_path):
    clock = VirtualClock(start_ms=START)
    attempts: list = []
    async with engine_on(tmp_path, clock) as engine:
        @engine.workflows.define(product=P, tag="flaky")
        async def flaky(ctx):
            attempts.append(ctx.context["scheduled_for"])
            if len(attempts) < 3:
                raise RuntimeError("not yet")
            return "ok"

        @engine.workflows.define(product=P, tag="slow")
        async def slow(ctx):
            await ctx.sleep("1h")

        await dispatch(engine, "flaky", schedule={"start_at": START + HOUR}, options={"retries": 5})
        await dispatch(engine, "slow", schedule={"start_at": START + HOUR}, options={"timeout": "10m"})
        await clock.advance("2h")
        assert attempts == [START + HOUR] * 3
        by_tag: dict = {}
        for s in await executions(engine):
            by_tag.setdefault(s.tag, []).append(s.status)
        assert sorted(by_tag["flaky"]) == ["completed", "failed", "failed"]
        [slow_run] = [s for s in await executions(engine) if s.tag == "slow"]
        result = await engine.workflows.result(product=P, env=E, workflow_id=slow_run.workflow_id)
        assert (result.status, result.error.code, slow_run.execution_time) == ("failed", "workflow_timeout", 10 * MINUTE)


# -- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule,options,error,named", [
    ({"cron": "61 * * * *"}, None, sagaloop.InvalidArgumentError, "61 * * * *"),
    ({"cron": "0 9 * * * *"}, None, sagaloop.InvalidArgumentError, "0 9 * * * *"),
    ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, None, sagaloop.InvalidArgumentError, "Mars/Olympus"),
    ({"start_at": datetime(2030, 1, 1)}, None, sagaloop.InvalidArgumentError, "naive"),
    ({"start_at": START - 1}, None, sagaloop.InvalidArgumentError, str(START - 1)),
    ({"start_at": "tomorrow"}, None, sagaloop.InvalidArgumentError, "tomorrow"),
    ({}, None, sagaloop.InvalidArgumentError, "start_at"),
    ({"start_at": START + 1, "cron": "* * * * *"}, None, sagaloop.InvalidArgumentError, "exactly one"),
    ({"every": "1h"}, None, sagaloop.InvalidArgumentError, "every"),
    ({"cron": "0 * * * *"}, {"jitter": 1}, sagaloop.InvalidArgumentError, "jitter"),
    ({"cron": "0 * * * *"}, {"overlap": "queue"}, sagaloop.InvalidArgumentError, "queue"),
    ({"cron": "0 * * * *"}, {"catch_up": "some"}, sagaloop.InvalidArgumentError, "some"),
    ({"cron": "0 * * * *"}, {"retries": -1}, sagaloop.InvalidArgumentError, "-1"),
    ({"cron": "0 * * * *"}, {"timeout": "soon"}, sagaloop.InvalidArgumentError, "soon"),
])
async def test_bad_input_is_refused_naming_the_value_and_nothing_is_stored(tmp_path, schedule, options, error, named):
    clock = VirtualClock(start_ms=START)
    async with engine_on(tmp_path, clock) as engine:
        define_recorder(engine, [])
        with pytest.raises(error, match=named.replace("*", r"\*")) as raised:
            await dispatch(engine, schedule=schedule, options=options)
        assert isinstance(raised.value, ValueError)
        assert await jobs(engine) == []
        assert await engine._runtime.store.load_jobs() == []


async def test_an_unknown_workflow_and_an_unserialisable_input_store_nothing(tmp_path):
    clock = VirtualClock(start_ms=START)
    async with engine_on(tmp_path, clock) as engine:
        with pytest.raises(sagaloop.DefinitionNotFoundError, match="nope"):
            await dispatch(engine, "nope", schedule={"cron": "0 * * * *"})
        define_recorder(engine, [])
        with pytest.raises(sagaloop.NotSerializableError):
            await dispatch(engine, input=object(), schedule={"cron": "0 * * * *"})
        assert await engine._runtime.store.load_jobs() == []


# -- cost when there is no job ---------------------------------------------------------------------------------------


async def test_no_job_no_timer_and_many_jobs_one_timer(tmp_path):
    clock = VirtualClock(start_ms=START)
    async with engine_on(tmp_path, clock) as engine:
        define_recorder(engine, [])
        await asyncio.sleep(0)
        assert clock.pending_timers == 0
        tasks = len(asyncio.all_tasks())
        for i in range(200):
            await dispatch(engine, schedule={"start_at": START + DAY + i * MINUTE})
        assert clock.pending_timers == 1
        assert len(asyncio.all_tasks()) == tasks


async def test_the_scheduler_is_one_actor_and_bounds_the_starts_in_flight(tmp_path, monkeypatch):
    from sagaloop.runtime.front import scheduler

    monkeypatch.setattr(scheduler, "MAX_STARTS", 4)
    clock = VirtualClock(start_ms=START)
    runs: list = []
    async with engine_on(tmp_path, clock) as engine:
        define_recorder(engine, runs)
        runtime = engine._runtime
        ref = runtime._system.get(scheduler.SCHEDULER_ID)
        assert ref is not None and ref.is_alive
        launch, going, most = runtime.launch, [0], [0]

        async def counting(*args, **kw):
            going[0] += 1
            most[0] = max(most[0], going[0])
            try:
                await asyncio.sleep(0.001)
                return await launch(*args, **kw)
            finally:
                going[0] -= 1

        runtime.launch = counting
        for _ in range(40):
            await dispatch(engine, schedule={"start_at": START + HOUR})
        await clock.advance("1h")
        assert runs == [START + HOUR] * 40 and most[0] == 4
        assert await jobs(engine) == []
    assert not ref.is_alive  # stopped at close


# -- a real process killed right after a tick fired ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["after-start", "in-step"])
def test_sigkill_right_after_a_tick_fired_runs_the_tick_exactly_once(tmp_path, kill_at):
    import signal as _signal

    from processes import TESTS_DIR, Spawner
    from worker_common import runs_of

    if not hasattr(_signal, "SIGKILL"):
        pytest.skip("needs SIGKILL")
    with Spawner(tmp_path, TESTS_DIR / "dispatch_worker.py") as spawn:
        child = spawn("fire", kill_at)
        _, job_id, at = child.wait_for("DISPATCHED ").split()
        child.wait_killed()
        assert [data for _pid, data in runs_of(spawn.sidefile, "tick-step")] in ([], [at])

        async def reopen():
            async with sagaloop.Engine(spawn.datadir, durability="durable") as engine:
                import dispatch_worker

                dispatch_worker.define(engine, str(spawn.sidefile))
                for _ in range(200):
                    await wait_idle(engine)
                    listed = await engine.workflows.list(product="dispatch", env="test")
                    if listed and all(s.status != "running" for s in listed):
                        break
                    await asyncio.sleep(0.02)
                results = [await engine.workflows.result(product="dispatch", env="test", workflow_id=s.workflow_id)
                           for s in listed]
                return results, (await engine.workflows.list_jobs(product="dispatch", env="test")).jobs

        results, left = asyncio.run(reopen())
        assert [r.status for r in results] == ["completed"], results  # one execution for the tick
        assert results[0].output == {"ran_for": int(at)}
        assert left == []  # the one-off job is done
        # the step itself is at-least-once: it ran once, or again after the kill inside it
        assert {data for _pid, data in runs_of(spawn.sidefile, "tick-step")} == {at}


def test_missed_ticks_one_is_the_latest_all_is_each_in_order_none_is_none():
    from sagaloop.runtime.decisions.schedules import missed_ticks

    minutely = {"cron": "* * * * *", "timezone": "Europe/London"}
    month_later = START + 30 * DAY + 30_000
    assert missed_ticks(minutely, START + MINUTE, month_later, "one") == [START + 30 * DAY]
    assert missed_ticks(minutely, START + MINUTE, START + 3 * MINUTE, "all") == [START + m * MINUTE for m in (1, 2, 3)]
    assert missed_ticks(minutely, START + MINUTE, month_later, "none") == []
    assert missed_ticks({"start_at": START}, START, month_later, "one") == [START]
