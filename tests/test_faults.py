"""Fault injection: what the engine does when the process is asked to stop, a compensation
misbehaves, the store fails a commit or fills up, or a stored record is corrupt.

The promise each test pins: nothing committed is lost, nothing is left stuck, and the failure
is loud — a clear error to the caller and in the log — and stays with the runs it touched.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from helpers import FailingStore, engine_on_store, overwrite_record
from processes import TESTS_DIR, Spawner
from worker_common import side_names

import sagaloop
from sagaloop.storage.lmdb_store import LmdbStore

P, E = "faults", "test"


# -- the process is asked to stop -----------------------------------------------------------------------

@pytest.mark.slow  # real processes, SIGKILLed
@pytest.mark.parametrize("where", ["step", "workflow"])
@pytest.mark.parametrize("exc", ["keyboard", "sysexit"])
def test_keyboard_interrupt_or_system_exit_stops_the_process_cleanly_and_the_run_resumes(tmp_path, exc, where):
    with Spawner(tmp_path, TESTS_DIR / "stop_worker.py") as spawn:
        first = spawn("start", "--exc", exc, "--where", where)
        code = first.wait_exit()
        assert code != 0, "the exception must stop the process"
        assert "STILL-RUNNING" not in first.seen
        assert "could not finish" not in first.stderr()
        second = spawn("resume", "--exc", exc, "--where", where)
        assert second.wait_for("RESULT ") == "RESULT completed ok"
        assert second.wait_exit() == 0
    names = Counter(side_names(spawn.sidefile))
    assert names["before"] == 1  # recorded before the stop: never run again
    if where == "step":
        assert names["explode"] == 2  # in flight at the stop: run again at the next start
    else:
        assert (names["handler"], names["explode"]) == (2, 1)


async def test_a_cancelled_error_raised_by_user_code_fails_the_run_instead_of_leaving_it_stuck(tmp_path):
    async with engine_on_store(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="in-step")
        async def in_step(ctx):
            async def step():
                raise asyncio.CancelledError()
            await ctx.step("s", step)

        @engine.workflows.define(product=P, tag="in-handler")
        async def in_handler(ctx):
            await ctx.step("s", lambda: 1)
            raise asyncio.CancelledError()

        for tag in ("in-step", "in-handler"):
            async with asyncio.timeout(5):
                end = await engine.workflows.execute(product=P, env=E, tag=tag)
            assert (end.status, end.error.code) == ("failed", "handler_crashed"), tag
            assert "CancelledError" in end.error.message


# -- compensations that misbehave -----------------------------------------------------------------------------

async def test_a_compensation_that_raises_and_one_that_hangs_past_its_timeout_are_listed_and_the_run_fails(tmp_path):
    ran: list = []

    async def raises(_output):
        ran.append("raises")
        raise RuntimeError("refund API down")

    async def hangs(_output):
        ran.append("hangs")
        await asyncio.sleep(60)

    async def fine(_output):
        ran.append("fine")

    async with engine_on_store(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="bad-comps")
        async def bad_comps(ctx):
            await ctx.step("a", lambda: 1, fine)
            await ctx.step("b", lambda: 2, hangs, rollback_options={"timeout": "100ms"})
            await ctx.step("c", lambda: 3, raises)
            raise RuntimeError("the order is void")

        async with asyncio.timeout(10):
            end = await engine.workflows.execute(product=P, env=E, tag="bad-comps")
        assert end.status == "failed"
        assert ran == ["raises", "hangs", "fine"]
        failed = {f.tag: f.error for f in end.rollback_result.failed_steps}
        assert set(failed) == {"b", "c"} and "refund API down" in failed["c"] and "timed out" in failed["b"]
        assert end.rollback_result.rolled_back_steps == ["a"] and end.rollback_result.success is False


# -- the store fails ----------------------------------------------------------------------------------------

async def test_a_failed_group_commit_fails_loudly_and_every_run_in_it_resumes_from_its_last_commit(tmp_path):
    store = FailingStore(tmp_path, durability="fast")
    runs: Counter = Counter()
    trip = asyncio.Event()

    async with engine_on_store(tmp_path, store=store) as engine:
        @engine.workflows.define(product=P, tag="steps")
        async def steps(ctx):
            out = []
            for i in range(5):
                async def step(i=i):
                    runs[(ctx.workflow_id, i)] += 1
                    if i == 2 and ctx.workflow_id == "w-0" and not trip.is_set():
                        trip.set()
                        store.fail_groups = 2  # the groups holding this step's end (and the next) fail
                    await asyncio.sleep(0)
                    return i
                out.append(await ctx.step(f"s{i}", step))
            return out

        done = await engine.workflows.execute(product=P, env=E, tag="steps", workflow_id="before")
        assert done.status == "completed"
        calls = [engine.workflows.execute(product=P, env=E, tag="steps", workflow_id=f"w-{n}") for n in range(20)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        assert store.failed == 2 and errors, "the runs in the failed groups get the error"
        assert all(isinstance(e, sagaloop.StorageError) and "simulated write error" in str(e) for e in errors)
        for n in range(20):  # every run ends: those of the failed groups resumed from their last commit
            end = await engine.workflows.result(product=P, env=E, workflow_id=f"w-{n}", timeout="10s")
            assert (end.status, end.output) == ("completed", [0, 1, 2, 3, 4]), n
            events = (await engine.workflows.history(product=P, env=E, workflow_id=f"w-{n}")).events
            completed = [e.data["step"] for e in events if e.type == "step_completed"]
            assert completed == [f"s{i}" for i in range(5)], (n, completed)  # no gap, no duplicate
        assert max(runs.values()) <= 2  # only a step whose end was lost ran again
        before = await engine.workflows.result(product=P, env=E, workflow_id="before")
        assert before.output == [0, 1, 2, 3, 4]  # committed before the failure: intact


async def test_a_full_map_that_cannot_grow_fails_the_step_loudly_and_keeps_reads_and_committed_data(tmp_path):
    store = LmdbStore(tmp_path, durability="fast", map_size=1 << 20, max_map_size=1 << 20)
    async with engine_on_store(tmp_path, store=store) as engine:
        @engine.workflows.define(product=P, tag="big")
        async def big(ctx):
            for i in range(ctx.input["steps"]):
                await ctx.step(f"s{i}", lambda: "x" * 200_000)
            return "done"

        small = await engine.workflows.execute(product=P, env=E, tag="big", input={"steps": 1}, workflow_id="small")
        assert small.status == "completed"
        with pytest.raises(sagaloop.StorageError, match="full"):
            await engine.workflows.execute(product=P, env=E, tag="big", input={"steps": 20}, workflow_id="huge")
        again = await engine.workflows.result(product=P, env=E, workflow_id="small")  # reads still served
        assert again.output == "done"
        status = await engine.workflows.status(product=P, env=E, workflow_id="huge")
        assert status.status == "running"  # kept at its last commit, retried in the background
        await engine.workflows.cancel(product=P, env=E, workflow_id="huge")
    async with engine_on_store(tmp_path) as engine:  # reopened with room: nothing committed was lost
        assert (await engine.workflows.result(product=P, env=E, workflow_id="small")).output == "done"


# -- corrupt records of each kind ----------------------------------------------------------------------------

@pytest.mark.parametrize("db, kind", [(b"events", "event"), (b"inbox", "inbox")])
async def test_a_corrupt_history_event_or_inbox_item_fails_only_its_instance(tmp_path, db, kind):
    def define(engine):
        @engine.workflows.define(product=P, tag="waiter")
        async def waiter(ctx):
            first = await ctx.wait_for_signal("go")
            await ctx.step("one", lambda: 1)
            return first["_signal"] + (await ctx.wait_for_signal("go"))["_signal"]

    async with engine_on_store(tmp_path) as engine:
        define(engine)
        for wf in ("bad", "good"):
            await engine.workflows.execute(product=P, env=E, tag="waiter", workflow_id=wf)
            await engine.workflows.signal(product=P, env=E, workflow_id=wf, signal="go")
    # seq 0 of the inbox holds the first signal; seq 1 of the history its signal_received event
    overwrite_record(tmp_path, db, b"bad\x00" + (0 if kind == "inbox" else 1).to_bytes(4, "big"))
    async with engine_on_store(tmp_path) as engine:
        define(engine)
        end = await engine.workflows.result(product=P, env=E, workflow_id="bad", timeout="5s")
        assert (end.status, end.error.code) == ("failed", "corrupt_record")
        assert kind in end.error.message and "'bad'" in end.error.message
        await engine.workflows.signal(product=P, env=E, workflow_id="good", signal="go")
        assert (await engine.workflows.result(product=P, env=E, workflow_id="good", timeout="5s")).output == "gogo"
