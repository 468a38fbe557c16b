"""The memory check: ended workflows leave nothing behind.

W1 (10 trivial steps) on a ``fast`` engine, in rounds of ``workflows``
workflows, executed in batches of ``batch`` (``asyncio.gather``). Before the
first round (after a warm-up batch) and after each round: ``gc.collect()``,
then the number of asyncio tasks, the engine's live workflow actors
(``engine._runtime.registry.live``), the actors its actor system still holds
(``len(engine._runtime._system)``), and the process RSS split in two: the
anonymous part (the Python heap and everything allocated) and the file-backed
part (mostly the pages of LMDB's memory map, which grows with the journal:
every ended workflow stays in the store, by design), next to the store's size
on disk.

PASS when, after every round, no workflow actor and no actor is left, the
task count is what it was before the first round, and the anonymous RSS
after the last round is within ``tolerance`` (10 %) of the anonymous RSS
after the first. The anonymous part is judged because the file-backed part
tracks the data kept in the store, not objects kept in memory (and the
kernel reclaims it under pressure); the total RSS is reported beside it.
Where the split cannot be read (not Linux), the total RSS is judged.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import sagaloop
from bench.rss import current_rss, current_rss_anon, current_rss_file, disk_usage, mib
from bench.throughput import (
    ENV,
    PRODUCT,
    TAG,
    WorkflowFailed,
    check_sagaloop,
    define_w1,
    perf_counter,
)


def snapshot(engine: sagaloop.Engine, label: str) -> dict:
    gc.collect()
    runtime = engine._runtime
    return {
        "after": label,
        "rss_mib": mib(current_rss()),
        "rss_anon_mib": mib(current_rss_anon()),
        "rss_file_mib": mib(current_rss_file()),
        "store_mib": mib(disk_usage(engine.path)),
        "tasks": len(asyncio.all_tasks()),
        "live_workflows": len(runtime.registry.live),
        "actors": len(runtime._system) if runtime._system is not None else 0,
        # Not judged; printed to help find what grows if the check fails.
        "other": {**{name: len(getattr(runtime.registry, name)) for name in
                     ("reserved", "idempotency", "resuming", "suspended", "inbox_locks", "orphans")},
                  "background": len(runtime._background)},
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


def growth(first: float | None, last: float | None) -> float | None:
    return None if not first or last is None else (last - first) / first


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    base, first, last = report["snapshots"][0], report["snapshots"][1], report["snapshots"][-1]
    reasons = []
    for s in report["snapshots"][1:]:
        if s["live_workflows"] or s["actors"]:
            reasons.append(f"after {s['after']}: {s['live_workflows']} live workflow actors, {s['actors']} actors")
        if s["tasks"] != base["tasks"]:
            reasons.append(f"after {s['after']}: {s['tasks']} asyncio tasks (before: {base['tasks']})")
    rss_growth = growth(first["rss_mib"], last["rss_mib"])
    anon_growth = growth(first["rss_anon_mib"], last["rss_anon_mib"])
    judged, value = ("anonymous RSS", anon_growth) if anon_growth is not None else ("RSS", rss_growth)
    if value is not None and value > report["tolerance"]:
        reasons.append(f"{judged} grew {value:.1%} from {first['after']} to {last['after']} "
                       f"(limit {report['tolerance']:.0%})")
    report.update(judged=judged, growth=value, rss_growth=rss_growth, rss_anon_growth=anon_growth,
                  rss_file_growth=growth(first["rss_file_mib"], last["rss_file_mib"]),
                  store_growth=growth(first["store_mib"], last["store_mib"]), reasons=reasons, passed=not reasons)
    return report
