"""Crash recovery with a real process killed by SIGKILL, then the same directory reopened.

The child program is ``tests/crash_worker.py``. Its step and compensation
handlers append a line to a side-effect file (fsynced) before doing anything
else, so that file says which handlers really ran, in which process,
whatever the engine recorded. The parent waits for a marker the child prints
from inside a blocked handler, kills it with SIGKILL, and resumes the run in
a second child or in this process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from processes import TESTS_DIR, WAIT_S, Spawner, child_env, load_module
from worker_common import read_side_effects, runs_of, side_names

import sagaloop

WORKER_PATH = TESTS_DIR / "crash_worker.py"

pytestmark = [pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL"), pytest.mark.slow]  # slow: real processes, SIGKILLed


worker = load_module(WORKER_PATH, "sagaloop_tests_crash_worker")
PRODUCT, ENV = worker.PRODUCT, worker.ENV


@pytest.fixture
def spawn(tmp_path):
    """``spawn(mode, *extra)`` starts a child on this test's data dir and side file; all are killed at the end."""
    with Spawner(tmp_path, WORKER_PATH) as spawner:
        yield spawner


def counts(sidefile: Path) -> Counter:
    return Counter(side_names(sidefile))


async def resume_here(datadir: Path, sidefile: Path, workflow_id: str, durability: str = "durable") -> dict:
    """Open the directory in this process, define the workflows, wait for the run; return what we saw."""
    async with sagaloop.Engine(datadir, durability=durability) as engine:
        worker.define_workflows(engine, sidefile, block=None)  # registering starts the recovery
        result = await worker.wait_until_ended(engine, workflow_id, timeout=WAIT_S)
        history = await engine.workflows.history(product=PRODUCT, env=ENV, workflow_id=workflow_id)
        details = {}
        for tag in ("step-1", "step-2", "step-3", "step-4", "reserve", "charge", "ship"):
            try:
                details[tag] = (await engine.workflows.step_detail(
                    product=PRODUCT, env=ENV, workflow_id=workflow_id, step_tag=tag)).to_dict()
            except sagaloop.StepNotFoundError:
                pass
        listed = await engine.workflows.list(product=PRODUCT, env=ENV)
        return {"result": result.to_dict(), "events": [e.type for e in history.events], "details": details,
                "listed": [(s.workflow_id, s.status) for s in listed], "pid": os.getpid()}


def start_and_kill_in_step_3(spawn, workflow_id: str, *extra: str) -> int:
    """Run the four-step saga in a child, SIGKILL it inside step 3; return the dead child's pid."""
    child = spawn("steps", "--workflow-id", workflow_id, *extra)
    started = child.wait_for("STARTED ")
    assert started == f"STARTED {workflow_id}"
    child.wait_for("IN-STEP-3")
    assert counts(spawn.sidefile) == Counter({"step-1": 1, "step-2": 1, "step-3": 1}), read_side_effects(spawn.sidefile)
    child.sigkill()
    return child.pid


# -- a kill in the middle of a step ---------------------------------------------------------------------


@pytest.mark.parametrize("resumer", ["child", "test-process"])
@pytest.mark.parametrize("durability", ["durable", "fast"])
def test_kill_mid_step_resumes_same_run_without_rerunning_completed_steps(spawn, durability, resumer):
    wf = f"order-{durability}-{resumer}"
    dead_pid = start_and_kill_in_step_3(spawn, wf, "--durability", durability)

    if resumer == "child":
        child = spawn("resume", "--workflow-id", wf, "--durability", durability)
        seen = child.report()
        assert child.wait_exit() == 0, child.stderr()
    else:
        seen = asyncio.run(resume_here(spawn.datadir, spawn.sidefile, wf, durability))
    result, new_pid = seen["result"], seen["pid"]

    # The same instance finished: same id, completed, every step in order.
    assert result["workflow_id"] == wf
    assert result["status"] == "completed", result
    assert result["error"] is None
    assert result["completed_steps"] == ["step-1", "step-2", "step-3", "step-4"]

    # Ground truth: steps 1 and 2 ran once, in the killed process; step 3 ran twice
    # (at-least-once), killed once and again in the new process; step 4 once, in the new one.
    assert counts(spawn.sidefile) == Counter({"step-1": 1, "step-2": 1, "step-3": 2, "step-4": 1}), \
        read_side_effects(spawn.sidefile)
    [(pid1, token)] = runs_of(spawn.sidefile, "step-1")
    [(pid2, _)] = runs_of(spawn.sidefile, "step-2")
    step3_runs = runs_of(spawn.sidefile, "step-3")
    assert (pid1, pid2) == (dead_pid, dead_pid)
    assert [pid for pid, _ in step3_runs] == [dead_pid, new_pid]
    assert runs_of(spawn.sidefile, "step-4") == [(new_pid, token)]

    # The recorded outputs of steps done before the kill are what the re-run handler got back:
    # step 3 and 4 of the new process saw the token step 1 drew in the killed process.
    output = result["output"]
    assert output["token"] == token
    assert output["step1_pid"] == dead_pid
    assert output["step3"] == {"pid": new_pid, "token_seen": token}  # the re-run's output
    assert output["step4"] == {"pid": new_pid, "token": token}
    assert all(data == token for _pid, data in step3_runs)

    # Observability of the recovery.
    events = seen["events"]
    assert "workflow_resumed" in events, events
    assert events.count("workflow_started") == 1, events
    assert events.index("workflow_started") < events.index("workflow_resumed") < events.index("workflow_completed")
    assert events[-1] == "workflow_completed", events
    step3 = seen["details"]["step-3"]
    assert step3["status"] == "completed"
    assert step3["attempts"] >= 2, step3
    assert step3["output"] == {"pid": new_pid, "token_seen": token}
    assert seen["details"]["step-1"]["output"] == {"token": token, "pid": dead_pid}
    assert seen["details"]["step-1"]["attempts"] == 1
    if "listed" in seen:  # recovery made no second instance
        assert seen["listed"] == [(wf, "completed")]


def test_result_right_after_define_waits_for_the_recovered_run(spawn):
    """``result`` waits for the end, even when asked the moment the definition (and recovery) arrives."""
    wf = "order-result-at-once"
    start_and_kill_in_step_3(spawn, wf)

    async def main() -> sagaloop.WorkflowResult:
        async with sagaloop.Engine(spawn.datadir) as engine:
            worker.define_workflows(engine, spawn.sidefile, block=None)
            # Asked in the same task, right away (asyncio.wait_for would start a new task and
            # so give the recovery a head start); a watchdog bounds the wait instead.
            watchdog = asyncio.get_running_loop().call_later(WAIT_S, asyncio.current_task().cancel)
            try:
                return await engine.workflows.result(product=PRODUCT, env=ENV, workflow_id=wf)
            finally:
                watchdog.cancel()

    result = asyncio.run(main())
    assert result.workflow_id == wf
    assert result.status == "completed", (
        f"result() returned while the recovered run was still {result.status!r}")
    assert counts(spawn.sidefile) == Counter({"step-1": 1, "step-2": 1, "step-3": 2, "step-4": 1})


# -- a kill in the middle of a rollback --------------------------------------------------------------


def test_kill_during_rollback_resumes_the_rollback(spawn):
    wf = "order-rollback"
    child = spawn("rollback", "--workflow-id", wf)
    assert child.wait_for("STARTED ") == f"STARTED {wf}"
    child.wait_for("IN-UNDO-RESERVE")
    # ship failed; the compensations run in reverse: undo-charge finished, undo-reserve hangs.
    assert [n for n, _, _ in read_side_effects(spawn.sidefile)] == [
        "do-reserve", "do-charge", "do-ship", "undo-charge", "undo-reserve"]
    child.sigkill()

    seen = asyncio.run(resume_here(spawn.datadir, spawn.sidefile, wf))
    result, new_pid = seen["result"], seen["pid"]

    assert result["workflow_id"] == wf
    assert result["status"] == "rolled_back", result
    assert result["failed_step"] == "ship"
    assert result["error"]["step"] == "ship"
    assert "truck broke down" in result["error"]["message"]
    rollback = result["rollback_result"]
    assert rollback["success"] is True
    assert rollback["failed_steps"] == []
    assert rollback["rolled_back_steps"] == ["charge", "reserve"]

    # Ground truth: no step ran again (ship's failure was recorded), the compensation recorded
    # done before the kill did not run again, the interrupted one ran again in the new process.
    assert counts(spawn.sidefile) == Counter({"do-reserve": 1, "do-charge": 1, "do-ship": 1,
                                              "undo-charge": 1, "undo-reserve": 2}), read_side_effects(spawn.sidefile)
    assert [pid for pid, _ in runs_of(spawn.sidefile, "undo-charge")] == [child.pid]
    assert [pid for pid, _ in runs_of(spawn.sidefile, "undo-reserve")] == [child.pid, new_pid]
    # Each compensation got its step's recorded output, in both processes.
    assert [json.loads(d) for _, d in runs_of(spawn.sidefile, "undo-charge")] == [{"charge": "ch-1"}]
    assert [json.loads(d) for _, d in runs_of(spawn.sidefile, "undo-reserve")] == [{"reservation": "rs-1"}] * 2

    details = seen["details"]
    for tag in ("reserve", "charge"):
        assert details[tag]["status"] == "rolled_back", details[tag]
        assert details[tag]["rollback_status"] == "completed", details[tag]
    assert details["ship"]["status"] == "failed"
    assert details["ship"]["attempts"] == 1
    events = seen["events"]
    assert "workflow_resumed" in events, events
    assert events[-1] == "workflow_rolled_back", events
    assert events.count("step_rolled_back") == 2, events  # one per compensation, none twice
    assert seen["listed"] == [(wf, "rolled_back")]


# -- the writer lock -------------------------------------------------------------------------------------


def test_second_process_gets_store_locked_naming_the_holder(spawn):
    wf = "order-locked"
    child = spawn("steps", "--workflow-id", wf)
    child.wait_for("IN-STEP-3")

    async def try_open() -> sagaloop.Engine:
        engine = sagaloop.Engine(spawn.datadir)
        await engine.open()
        return engine

    with pytest.raises(sagaloop.StoreLockedError) as info:
        asyncio.run(try_open())
    err = info.value
    assert isinstance(err, sagaloop.StorageError) and isinstance(err, sagaloop.SagaloopError)
    assert err.code == "store_locked"
    assert str(child.pid) in str(err), str(err)
    assert err.pid == child.pid
    # A third process is refused the same way (not only this one).
    probe = subprocess.run(
        [sys.executable, "-c",
         "import asyncio, sys, sagaloop\n"
         "async def main():\n"
         "    try:\n"
         "        await sagaloop.Engine(sys.argv[1]).open()\n"
         "    except sagaloop.StoreLockedError as e:\n"
         "        print('LOCKED', e.pid, e)\n"
         "asyncio.run(main())\n",
         str(spawn.datadir)],
        capture_output=True, text=True, timeout=WAIT_S, env=child_env(), cwd=str(spawn.datadir.parent))
    assert probe.stdout.startswith(f"LOCKED {child.pid} "), probe.stdout + probe.stderr
    assert str(child.pid) in probe.stdout.split(" ", 2)[2]

    # The refused opens did not disturb the holder: it is still inside step 3.
    assert child.proc.poll() is None
    assert counts(spawn.sidefile) == Counter({"step-1": 1, "step-2": 1, "step-3": 1})

    # Once the holder is dead the kernel has dropped its lock: the directory opens and the run resumes.
    child.sigkill()
    seen = asyncio.run(resume_here(spawn.datadir, spawn.sidefile, wf))
    assert seen["result"]["status"] == "completed"
    assert seen["result"]["workflow_id"] == wf


# -- idempotency keys across a crash ------------------------------------------------------------------


def test_idempotency_key_survives_a_crash(spawn):
    wf, key = "order-idem", "order-42"
    start_and_kill_in_step_3(spawn, wf, "--idempotency-key", key)

    async def after_recovery() -> tuple[sagaloop.WorkflowResult, sagaloop.WorkflowResult, list]:
        async with sagaloop.Engine(spawn.datadir) as engine:
            worker.define_workflows(engine, spawn.sidefile, block=None)
            first = await worker.wait_until_ended(engine, wf, timeout=WAIT_S)
            again = await engine.workflows.execute(product=PRODUCT, env=ENV, tag=worker.STEPS_TAG,
                                                   input={"n": 2}, idempotency_key=key)
            listed = await engine.workflows.list(product=PRODUCT, env=ENV)
            return first, again, [(s.workflow_id, s.status) for s in listed]

    first, again, listed = asyncio.run(after_recovery())
    assert first.status == "completed"
    assert again.workflow_id == wf
    assert again.status == "completed"
    assert again.output == first.output
    assert listed == [(wf, "completed")]
    ran = counts(spawn.sidefile)
    assert ran == Counter({"step-1": 1, "step-2": 1, "step-3": 2, "step-4": 1}), read_side_effects(spawn.sidefile)

    async def in_a_later_process_life() -> sagaloop.WorkflowResult:
        async with sagaloop.Engine(spawn.datadir) as engine:
            worker.define_workflows(engine, spawn.sidefile, block=None)
            return await engine.workflows.execute(product=PRODUCT, env=ENV, tag=worker.STEPS_TAG,
                                                  input={"n": 3}, idempotency_key=key)

    later = asyncio.run(in_a_later_process_life())
    assert later.workflow_id == wf
    assert later.status == "completed"
    assert later.output == first.output
    assert counts(spawn.sidefile) == ran  # nothing ran again
