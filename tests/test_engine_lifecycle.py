"""Opening, closing and reopening an engine while calls are under way."""

import asyncio

import pytest

import sagaloop

P, E = "shop", "prd"


async def test_close_during_concurrent_reads_never_pulls_the_store_from_under_them(tmp_path):
    engine = sagaloop.Engine(tmp_path, durability="fast")
    await engine.open()

    @engine.workflows.define(product=P, tag="t")
    async def t(ctx):
        await ctx.step("a", lambda: 1)
        return 1

    done = await engine.workflows.execute(product=P, env=E, tag="t", workflow_id="w")

    async def read():
        try:
            h = await engine.workflows.history(product=P, env=E, workflow_id="w")
            return len(h.events)
        except sagaloop.EngineClosedError:
            return "closed"

    reads = [asyncio.ensure_future(read()) for _ in range(200)]
    await asyncio.sleep(0)
    await engine.close()
    outcomes = await asyncio.gather(*reads)
    # Every read either finished against the open store or was told, clearly, that the engine closed.
    assert set(outcomes) <= {4, "closed"} and 4 in outcomes
    assert done.status == "completed"
    with pytest.raises(sagaloop.EngineClosedError):
        await engine.workflows.status(product=P, env=E, workflow_id="w")


async def test_reopen_keeps_everything_committed(tmp_path):
    async with sagaloop.Engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="t")
        async def t(ctx):
            return await ctx.step("a", lambda: {"v": ctx.input})

        first = await engine.workflows.execute(product=P, env=E, tag="t", input=7, workflow_id="w1")
    async with sagaloop.Engine(tmp_path) as engine:
        again = await engine.workflows.status(product=P, env=E, workflow_id="w1")
        listed = await engine.workflows.list(product=P, env=E)
    assert first.output == {"v": 7}
    assert again.status == "completed" and again.completed_steps == ["a"]
    assert [x.workflow_id for x in listed] == ["w1"]


async def test_one_engine_object_closed_and_reopened_resumes_each_run_once(tmp_path):
    runs = []

    async def wf(ctx):
        await ctx.step("a", lambda: runs.append("a"))
        await ctx.wait_for_signal("go")
        return "done"

    async with sagaloop.Engine(tmp_path) as engine:
        engine.workflows.define(product=P, tag="t", handler=wf)
        await engine.workflows.execute(product=P, env=E, tag="t", workflow_id="w")
    engine = sagaloop.Engine(tmp_path)
    for _ in range(2):  # open and close without defining: the run stays in flight
        await engine.open()
        await engine.close()
    await engine.open()
    try:
        engine.workflows.define(product=P, tag="t", handler=wf)
        await engine.workflows.signal(product=P, env=E, workflow_id="w", signal="go")
        result = await engine.workflows.result(product=P, env=E, workflow_id="w")
        history = await engine.workflows.history(product=P, env=E, workflow_id="w")
    finally:
        await engine.close()
    assert result.status == "completed" and runs == ["a"]
    assert [e.type for e in history.events].count("workflow_resumed") == 1


def test_run_tunes_the_gc_only_while_it_runs():
    import gc

    saved = gc.get_threshold()
    seen = []

    async def main():
        seen.append(gc.get_threshold()[0])
        return 42

    assert sagaloop.run(main()) == 42
    assert seen == [max(saved[0], 200_000)]
    assert gc.get_threshold() == saved
    assert sagaloop.run(main(), tune_gc=False) == 42 and seen[-1] == saved[0]


async def test_ended_runs_are_freed_at_once_not_left_to_the_cyclic_gc(tmp_path):
    """A run that ends leaves no reference cycle behind (run, actor, context, tasks): its memory
    is reused at once, which is what keeps 1,000 workflows in flight inside the CPU caches."""
    import gc

    from sagaloop.runtime.run import Run

    async with sagaloop.Engine(tmp_path, durability="fast") as engine:
        @engine.workflows.define(product=P, tag="t")
        async def t(ctx):
            for i in range(5):
                await ctx.step(f"s{i}", lambda: {"ok": 1})
            return 5

        async def one() -> str:
            return (await engine.workflows.execute(product=P, env=E, tag="t")).status

        await one()  # warm up: imports and first-use caches are not per-run garbage
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            statuses = await asyncio.gather(*[one() for _ in range(50)])
            gc.collect()
            leaked = [o for o in gc.garbage if isinstance(o, (Run, sagaloop.WorkflowContext))]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
        assert statuses == ["completed"] * 50
        assert leaked == []
