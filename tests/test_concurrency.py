"""10,000 workflows in flight, talked to by many tasks at once: no deadlock, no lost message,
and the memory they took is given back when they end."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

import sagaloop

P, E = "busy", "test"
N = 10_000
SIGNALS = 3


def held() -> int:
    """Bytes traced now, less asyncio's registry of tasks (a WeakSet whose table keeps the size
    of the most tasks ever alive at once: not memory that a run holds)."""
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, "*/_weakrefset.py")])
    return sum(stat.size for stat in snapshot.statistics("filename"))


async def settle() -> None:
    """Let the loop run the callbacks still queued (they hold finished tasks), then collect."""
    for _ in range(5):
        await asyncio.sleep(0)
    gc.collect()


async def test_ten_thousand_workflows_with_concurrent_signals_queries_updates_and_cancels(tmp_path):
    async with sagaloop.Engine(tmp_path, durability="fast") as engine:
        def bump(ctx, args):
            ctx.state["bumps"] = ctx.state.get("bumps", 0) + args["by"]
            return ctx.state["bumps"]

        @engine.workflows.define(product=P, tag="chat", queries={"got": {"handler": lambda ctx: ctx.state.get("got", [])}},
                                 updates={"bump": {"handler": bump}})
        async def chat(ctx):
            ctx.state["got"] = []
            for _ in range(SIGNALS):
                ctx.state["got"].append((await ctx.wait_for_signal("m"))["i"])
            return {"got": ctx.state["got"], "bumps": ctx.state.get("bumps", 0)}

        @engine.workflows.define(product=P, tag="hold")
        async def hold(ctx):
            return (await ctx.wait_for_signal("go"))["_signal"]

        async def warm_up(wf: str) -> None:
            await engine.workflows.signal(product=P, env=E, workflow_id=wf, signal="go")
            await engine.workflows.result(product=P, env=E, workflow_id=wf)

        # Warm-up: N runs in flight at once grow the engine's tables (and asyncio's) to the size the
        # measured batch needs; tables keep their capacity, which is not memory held by a run.
        ids = [f"c-{n}" for n in range(N)]
        warm = [f"warm-{n}" for n in range(N)]
        await asyncio.gather(*(engine.workflows.execute(product=P, env=E, tag="hold", workflow_id=wf, wait=False)
                               for wf in warm))
        await asyncio.gather(*(warm_up(wf) for wf in warm))
        del warm
        await settle()
        tracemalloc.start()
        baseline = held()

        started = await asyncio.gather(*(engine.workflows.execute(product=P, env=E, tag="chat", workflow_id=wf,
                                                                  wait=False) for wf in ids))
        assert all(s.status == "running" for s in started)
        cancelled = set(ids[::10])

        async def talk(wf: str) -> None:
            if wf in cancelled:
                result = await engine.workflows.cancel(product=P, env=E, workflow_id=wf, reason="load test")
                assert result.cancelled, wf
                return
            # Signals in order, with a query and an update racing them from their own tasks.
            racing = asyncio.gather(
                engine.workflows.query(product=P, env=E, workflow_id=wf, query="got"),
                engine.workflows.update(product=P, env=E, workflow_id=wf, update="bump", args={"by": 1}))
            for i in range(SIGNALS):
                await engine.workflows.signal(product=P, env=E, workflow_id=wf, signal="m", payload={"i": i})
            got, bumps = await racing
            assert got == list(range(len(got))) and bumps == 1

        async with asyncio.timeout(120):  # a deadlock fails here instead of hanging the run
            await asyncio.gather(*(talk(wf) for wf in ids))
            ends = await asyncio.gather(*(engine.workflows.result(product=P, env=E, workflow_id=wf) for wf in ids))
        for wf, end in zip(ids, ends):
            if wf in cancelled:
                assert end.status == "cancelled", wf
            else:
                assert (end.status, end.output) == ("completed", {"got": [0, 1, 2], "bumps": 1}), wf
        del started, ends
        assert engine._runtime.registry.live == {}  # every actor let go of its run
        await settle()
        left = held() - baseline
        tracemalloc.stop()
        assert left < 2_000_000, f"{left} bytes still held after 10,000 runs ended"
