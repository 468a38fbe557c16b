"""Safe code upgrades: a workflow's code changes while instances of it are in flight.

API.md, "Beyond the product document" / "Safe code upgrades":

* a re-run handler that asks, at some position, for a step whose tag differs
  from the one recorded there ends the instance ``failed`` with
  ``NonDeterminismError`` (code ``nondeterminism``) naming both tags; no
  compensation runs, ``rollback_result`` is absent, it is never left ``running``;
* ``ctx.patched(name)`` is true for an execution that reaches the point running
  the code that contains it, false for one that had already recorded steps past
  it without it.

The code change is real: ``tests/upgrade_app/v1.py`` and ``v2.py`` define the
same workflow tags with different code, and ``tests/upgrade_app/worker.py``
runs one or the other in a child process, which the test SIGKILLs inside a
blocked step before the next version takes over the same data directory.
Every step and compensation appends a line to a side-effect file first: that
file says what really ran, and in which process.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest
from processes import TESTS_DIR, Child, Spawner
from upgrade_app.common import ENV, PATCH_TAG, PRODUCT, REORDER_TAG, read_side_effects

import sagaloop

WORKER = TESTS_DIR / "upgrade_app" / "worker.py"

needs_sigkill = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")


@pytest.fixture
def worker(tmp_path):
    """``worker(mode, version, *flags)`` runs upgrade_app/worker.py on this test's data dir and side file."""
    with Spawner(tmp_path, WORKER, sidefile_name="side-effects.jsonl") as spawn:
        def start(mode: str, version: str, *flags: str) -> Child:
            return spawn(mode, "--version", version, *flags, name=f"{mode}-{version}-{len(spawn.children) + 1}")

        start.datadir, start.sidefile = spawn.datadir, spawn.sidefile
        yield start


def ran(sidefile: Path, workflow_id: str) -> list[tuple[str, int]]:
    """(handler name, pid) of everything that ran for ``workflow_id``, in order."""
    return [(r["name"], r["pid"]) for r in read_side_effects(sidefile) if r.get("wf") == workflow_id]


# -- an unpatched change: the loud error -------------------------------------------------------------


@pytest.mark.slow  # real processes, SIGKILLed
@needs_sigkill
async def test_unpatched_reorder_fails_loudly_with_nondeterminism(worker):
    wf = "reorder-1"
    v1 = worker("start", "v1", "--start", f"{wf}:{REORDER_TAG}", "--block", f"{wf}:c")
    v1.wait_for(f"BLOCKED {wf} c")
    v1.sigkill()
    assert ran(worker.sidefile, wf) == [("a", v1.pid), ("b", v1.pid), ("c", v1.pid)]

    v2 = worker("resume", "v2", "--wait", wf)
    report = v2.report()
    assert v2.wait_exit() == 0
    run = report["runs"][wf]
    result = run["result"]
    assert result["status"] == "failed", result
    assert result["error"]["code"] == "nondeterminism", result["error"]
    message = result["error"]["message"]
    assert "'a'" in message and "'b'" in message, message  # names the recorded tag and the asked one
    assert result["rollback_result"] is None  # not this code's steps to compensate
    assert run["status"] == "failed"
    assert report["listed"][wf] == "failed"
    assert report["running"] == []
    # The new code never ran on with another step's recorded output: nothing ran in v2 at all,
    # and no compensation ran.
    assert ran(worker.sidefile, wf) == [("a", v1.pid), ("b", v1.pid), ("c", v1.pid)]
    assert not any(name.startswith("undo-") for name, _ in ran(worker.sidefile, wf))

    # Reopened once more, with no code at all: the end is durable, nothing is left in flight.
    async with sagaloop.Engine(worker.datadir) as engine:
        status = await engine.workflows.status(product=PRODUCT, env=ENV, workflow_id=wf)
        assert status.status == "failed"
        assert status.error is not None and status.error.code == "nondeterminism"
        assert await engine.workflows.list(product=PRODUCT, env=ENV, status="running") == []
        history = await engine.workflows.history(product=PRODUCT, env=ENV, workflow_id=wf)
        types = [e.type for e in history.events]
        assert types[-1] == "workflow_failed"
        assert "rollback_started" not in types and "step_rolled_back" not in types


# -- ctx.patched: the safe way -----------------------------------------------------------------------


@pytest.mark.slow  # real processes, SIGKILLed
@needs_sigkill
async def test_patched_keeps_old_runs_on_the_old_path_and_new_ones_on_the_new(worker):
    old, early, new = "patch-old", "patch-early", "patch-new"
    # v1: "old" gets past the patch point (a and b recorded, blocked in c); "early" blocks in a.
    v1 = worker("start", "v1", "--start", f"{old}:{PATCH_TAG}", "--block", f"{old}:c",
                "--start", f"{early}:{PATCH_TAG}", "--block", f"{early}:a")
    v1.wait_for(f"BLOCKED {old} c")
    v1.wait_for(f"BLOCKED {early} a")
    v1.sigkill()

    # v2 resumes both, and starts "new", which it leaves blocked in c (then it is killed too).
    v2 = worker("resume", "v2", "--start", f"{new}:{PATCH_TAG}", "--block", f"{new}:c",
                "--wait", old, "--wait", early, "--hold")
    report = v2.report()
    v2.wait_for(f"BLOCKED {new} c")
    v2.sigkill()

    r_old = report["runs"][old]["result"]
    assert r_old["status"] == "completed", r_old
    assert r_old["output"] == {"code": "v2", "patched": False, "steps": ["a", "b", "c"]}
    assert "x" not in report["runs"][old]["details"]
    assert ran(worker.sidefile, old) == [("a", v1.pid), ("b", v1.pid), ("c", v1.pid), ("c", v2.pid)]

    r_early = report["runs"][early]["result"]
    assert r_early["status"] == "completed", r_early
    assert r_early["output"] == {"code": "v2", "patched": True, "steps": ["a", "x", "b", "c"]}
    assert ran(worker.sidefile, early) == [("a", v1.pid), ("a", v2.pid), ("x", v2.pid), ("b", v2.pid),
                                           ("c", v2.pid)]

    # v2 again on the same directory: "new" (started under v2, past the patch) replays the patch as taken.
    v2b = worker("resume", "v2", "--wait", new)
    report2 = v2b.report()
    assert v2b.wait_exit() == 0
    r_new = report2["runs"][new]["result"]
    assert r_new["status"] == "completed", r_new
    assert r_new["output"] == {"code": "v2", "patched": True, "steps": ["a", "x", "b", "c"]}
    assert report2["runs"][new]["details"]["x"]["status"] == "completed"
    # x ran once, under v2, and was not run again on recovery; c was in flight and ran again.
    assert ran(worker.sidefile, new) == [("a", v2.pid), ("x", v2.pid), ("b", v2.pid), ("c", v2.pid),
                                         ("c", v2b.pid)]
    assert report2["running"] == []
    assert {report2["listed"][w] for w in (old, early, new)} == {"completed"}
    counts = Counter(r["name"] for r in read_side_effects(worker.sidefile))
    assert not any(name.startswith("undo-") for name in counts)


# -- in-process: another kind of entry at a position ----------------------------------------------------


@pytest.mark.parametrize("first, then", [("checkpoint", "step"), ("step", "checkpoint")])
async def test_a_recorded_entry_of_another_kind_is_nondeterminism(tmp_path, first, then):
    ran_steps: list = []
    data = tmp_path / "db"

    async def journaled(ctx, kind: str, name: str) -> None:
        if kind == "checkpoint":
            await ctx.checkpoint(name, {"at": 1})
        else:
            await ctx.step(name, lambda: ran_steps.append(name) or name, lambda _o: ran_steps.append("undo"))

    async with sagaloop.Engine(data) as engine:
        @engine.workflows.define(product="p", tag="kinds")
        async def before(ctx):
            await journaled(ctx, first, "mark")
            await ctx.wait_for_signal("go")
            return "done"

        started = await engine.workflows.execute(product="p", env="e", tag="kinds", input={}, workflow_id="k1")
        assert started.status == "running"
    ran_before = list(ran_steps)

    async with sagaloop.Engine(data) as engine:
        @engine.workflows.define(product="p", tag="kinds")
        async def after(ctx):
            await journaled(ctx, then, "mark")  # same name, other kind
            await ctx.wait_for_signal("go")
            return "done"

        result = await engine.workflows.result(product="p", env="e", workflow_id="k1", timeout=10_000)
        assert result.status == "failed", result
        assert result.error.code == "nondeterminism"
        assert first in result.error.message and then in result.error.message, result.error.message
        assert "'mark'" in result.error.message
        assert result.rollback_result is None
        assert ran_steps == ran_before  # nothing new ran, no compensation either
        assert await engine.workflows.list(product="p", env="e", status="running") == []
        with pytest.raises(sagaloop.WorkflowEndedError):
            await engine.workflows.signal(product="p", env="e", workflow_id="k1", signal="go")


async def test_patched_is_true_for_a_new_run_in_process(tmp_path):
    async with sagaloop.Engine(tmp_path / "db", durability="fast") as engine:
        @engine.workflows.define(product="p", tag="fresh")
        async def fresh(ctx):
            first = ctx.patched("p1")
            await ctx.step("s", lambda: 1)
            return {"p1": first, "p2": ctx.patched("p2")}

        result = await engine.workflows.execute(product="p", env="e", tag="fresh", input={})
        assert result.status == "completed"
        assert result.output == {"p1": True, "p2": True}
        assert result.completed_steps == ["s"]  # a patch marker is not a step
