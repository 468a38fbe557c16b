"""The scheduler's cost: ``python -m bench.scheduler [--jobs 100000] [--burst 1000]``.

1. ``--jobs`` one-off and cron jobs scheduled (none due during the measure): the RSS delta of the
   process and its asyncio task count before and after, and the clock timers the scheduler holds.
2. ``--burst`` jobs due in the same second (real clock, ``fast`` durability): the firing lag from each
   job's due time to its run's handler starting, p50 / p99 / max.

Each part runs on a fresh temporary directory, removed after.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import tempfile
import time

import sagaloop

from .rss import MIB, current_rss

P, E = "bench", "sched"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def many_jobs(n: int) -> dict:
    path = tempfile.mkdtemp(prefix="sagaloop-bench-sched-")
    try:
        async with sagaloop.Engine(path, durability="fast") as engine:
            @engine.workflows.define(product=P, tag="noop")
            async def noop(ctx: sagaloop.WorkflowContext) -> None:
                return None

            gc.collect()
            await asyncio.sleep(0)
            tasks_before = len(asyncio.all_tasks())
            rss_before = current_rss() or 0
            now = int(time.time() * 1000)
            started = time.perf_counter()
            batch = 1000
            for first in range(0, n, batch):
                calls = []
                for i in range(first, min(n, first + batch)):
                    if i % 2:
                        schedule = {"cron": f"{i % 60} {i % 24} * * *", "timezone": "Europe/London"}
                    else:
                        schedule = {"start_at": now + 86_400_000 + i}
                    calls.append(engine.workflows.dispatch(product=P, env=E, workflow="noop", input={"i": i},
                                                           schedule=schedule))
                await asyncio.gather(*calls)
            elapsed = time.perf_counter() - started
            gc.collect()
            await asyncio.sleep(0)
            rss_after = current_rss() or 0
            tasks_after = len(asyncio.all_tasks())
            listed = len((await engine.workflows.list_jobs(product=P, env=E)).jobs)
            actor = engine._runtime.scheduler.actor
            timers = 1 if actor is not None and actor._timer is not None else 0
        return {"jobs": n, "listed": listed, "dispatch_s": elapsed, "rss_delta_mib": (rss_after - rss_before) / MIB,
                "tasks_before": tasks_before, "tasks_after": tasks_after, "timers": timers}
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def burst(n: int) -> dict:
    path = tempfile.mkdtemp(prefix="sagaloop-bench-sched-")
    lags: list[float] = []
    done = asyncio.Event()
    try:
        async with sagaloop.Engine(path, durability="fast") as engine:
            @engine.workflows.define(product=P, tag="mark")
            async def mark(ctx: sagaloop.WorkflowContext) -> None:
                lags.append(time.time() * 1000 - ctx.context["scheduled_for"])
                if len(lags) == n:
                    done.set()

            due = (int(time.time()) + 3) * 1000  # a whole second, 2-3 s from now
            await asyncio.gather(*(engine.workflows.dispatch(product=P, env=E, workflow="mark", input=None,
                                                             schedule={"start_at": due}) for _ in range(n)))
            await asyncio.wait_for(done.wait(), timeout=60)
        return {"jobs": n, "p50_ms": percentile(lags, 0.50), "p99_ms": percentile(lags, 0.99), "max_ms": max(lags)}
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def main(jobs: int, burst_n: int) -> None:
    m = await many_jobs(jobs)
    print(f"{m['jobs']:,} jobs scheduled (half start_at in a day, half daily cron) in {m['dispatch_s']:.1f} s "
          f"(list_jobs shows {m['listed']:,}): RSS +{m['rss_delta_mib']:.1f} MiB "
          f"({m['rss_delta_mib'] * MIB / max(1, jobs):.0f} B/job), asyncio tasks {m['tasks_before']} -> "
          f"{m['tasks_after']}, clock timers held by the scheduler: {m['timers']}")
    b = await burst(burst_n)
    print(f"{b['jobs']:,} jobs due in the same second: firing lag (due -> handler start) "
          f"p50 {b['p50_ms']:.1f} ms, p99 {b['p99_ms']:.1f} ms, max {b['max_ms']:.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--burst", type=int, default=1_000)
    args = parser.parse_args()
    sagaloop.run(main(args.jobs, args.burst))
