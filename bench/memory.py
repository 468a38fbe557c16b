"""The memory check: ended workflows leave nothing behind.

W1 (10 trivial steps) on a ``fast`` engine, in rounds of ``workflows``
workflows, executed in batches of ``batch`` (``asyncio.gather``). Before the
first round (after a warm-up batch) and after each round: ``gc.collect()``,
then the process RSS (and its anonymous part: the heap, without the pages of
LMDB's memory map), the number of asyncio tasks, the engine's live workflow
actors (``engine._runtime._live``) and the actors its actor system still
holds (``len(engine._runtime._system)``).

PASS when, after every round, no workflow actor and no actor is left, the
task count is back to what it was before the first round, and the RSS after
the last round is within ``tolerance`` (10 %) of the RSS after the first.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import tempfile
from typing import Any, Callable

import sagaloop
from bench.rss import current_rss, current_rss_anon, mib
from bench.throughput import ENV, PRODUCT, TAG, WorkflowFailed, check_sagaloop, define_w1, perf_counter


def snapshot(engine: sagaloop.Engine, label: str) -> dict:
    gc.collect()
    runtime = engine._runtime
    return {
        "after": label,
        "rss_mib": mib(current_rss()),
        "rss_anon_mib": mib(current_rss_anon()),
        "tasks": len(asyncio.all_tasks()),
        "live_workflows": len(runtime._live),
        "actors": len(runtime._system) if runtime._system is not None else 0,
        # Not judged; printed to help find what grows if the check fails.
        "other": {name: len(getattr(runtime, name)) for name in
                  ("_reserved", "_idempotency", "_resuming", "_inbox_locks", "_background")
                  if hasattr(runtime, name)},
    }


async def memory_check(workflows: int = 100_000, rounds: int = 2, batch: int = 1000, steps: int = 10,
                       tolerance: float = 0.10, progress: Callable[[str], None] = lambda _: None) -> dict:
    directory = tempfile.mkdtemp(prefix="sagaloop-bench-mem-")
    check = check_sagaloop(steps)
    snapshots: list[dict] = []
    started = perf_counter()
    try:
        engine = sagaloop.Engine(os.path.join(directory, "data"), durability="fast")
        await engine.open()
        try:
            define_w1(engine, steps)
            execute = engine.workflows.execute

            async def run(n: int) -> None:
                done = 0
                while done < n:
                    k = min(batch, n - done)
                    results = await asyncio.gather(*[execute(product=PRODUCT, env=ENV, tag=TAG, input={"n": 1})
                                                     for _ in range(k)])
                    for result in results:
                        problem = check(result)
                        if problem is not None:
                            raise WorkflowFailed(f"memory check: a workflow did not complete: {problem}")
                    done += k

            await run(batch)  # warm-up
            snapshots.append(snapshot(engine, "warm-up"))
            for r in range(rounds):
                await run(workflows)
                snapshots.append(snapshot(engine, f"round {r + 1}"))
                progress(f"memory round {r + 1}/{rounds}: {snapshots[-1]['rss_mib']:.1f} MiB")
        finally:
            await engine.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return verdict({"workflows_per_round": workflows, "rounds": rounds, "batch": batch, "steps": steps,
                    "tolerance": tolerance, "snapshots": snapshots, "elapsed_s": perf_counter() - started})


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    base, first, last = report["snapshots"][0], report["snapshots"][1], report["snapshots"][-1]
    reasons = []
    for s in report["snapshots"][1:]:
        if s["live_workflows"] or s["actors"]:
            reasons.append(f"after {s['after']}: {s['live_workflows']} live workflow actors, {s['actors']} actors")
        if s["tasks"] != base["tasks"]:
            reasons.append(f"after {s['after']}: {s['tasks']} asyncio tasks (before: {base['tasks']})")
    growth = (last["rss_mib"] - first["rss_mib"]) / first["rss_mib"] if first["rss_mib"] else 0.0
    if growth > report["tolerance"]:
        reasons.append(f"RSS grew {growth:.1%} from {first['after']} to {last['after']} "
                       f"(limit {report['tolerance']:.0%})")
    anon_growth = None
    if first["rss_anon_mib"] and last["rss_anon_mib"] is not None:
        anon_growth = (last["rss_anon_mib"] - first["rss_anon_mib"]) / first["rss_anon_mib"]
    report.update(rss_growth=growth, rss_anon_growth=anon_growth, reasons=reasons, passed=not reasons)
    return report
