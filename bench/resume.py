"""How long ``resume`` takes with many kept steps, beside the replay of a recovered run (W5's shape).

    python -m bench.resume                     # 10, 100, 1,000 and 10,000 completed steps
    python -m bench.resume --steps 10,100 --runs 3

For each N: a workflow of N + 1 steps whose last step fails once (strategy ``none``: nothing is
compensated) is resumed; the resumed run keeps the N completed steps (its handler's call of each
returns the recorded output and is journaled as its own) and runs the last one. Printed: the median
time of the ``resume`` call, its cost per kept step, and kept steps per second; beside it, the
same N steps replayed by a run recovered at open (W5's shape: N completed, the run blocked on a
signal when the engine closed; timed from ``define`` to idle).

Resume starts from the origin's recorded step table (one read of its journal), so its time grows
about linearly with N.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import sagaloop
from sagaloop.testing import wait_idle

P, E = "bench", "resume"


def define(engine: sagaloop.Engine, steps: int, fail_last: list[int], *, block: bool = False) -> None:
    @engine.workflows.define(product=P, tag="long", options={"rollback_strategy": "none"})
    async def long(ctx):
        for i in range(steps):
            await ctx.step(f"s{i}", lambda i=i: i)
        if block:
            await ctx.wait_for_signal("go")

        def last():
            if fail_last[0]:
                fail_last[0] -= 1
                raise RuntimeError("down")
            return "done"

        return await ctx.step("last", last)


async def time_resume(directory: Path, steps: int) -> float:
    async with sagaloop.Engine(directory, durability="fast") as engine:
        define(engine, steps, [1])
        origin = await engine.workflows.execute(product=P, env=E, tag="long", workflow_id="origin")
        assert origin.status == "failed", origin
        started = time.perf_counter()
        resumed = await engine.workflows.resume(product=P, env=E, workflow_id="origin")
        elapsed = time.perf_counter() - started
        assert resumed.status == "completed" and len(resumed.completed_steps) == steps + 1, resumed
        return elapsed


async def time_recovery(directory: Path, steps: int) -> float:
    async with sagaloop.Engine(directory, durability="fast") as engine:
        define(engine, steps, [0], block=True)
        first = await engine.workflows.execute(product=P, env=E, tag="long", workflow_id="inflight")
        assert first.status == "running", first
    async with sagaloop.Engine(directory, durability="fast") as engine:
        started = time.perf_counter()
        define(engine, steps, [0], block=True)  # recovery replays the N steps up to the signal wait
        await wait_idle(engine, timeout=600)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="10,100,1000,10000", help="completed steps to keep, comma-separated")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.steps.split(",")]
    print(f"{'kept steps':>10}  {'resume ms':>10}  {'us/step':>8}  {'steps/s':>10}   "
          f"{'recovery ms':>11}  {'us/step':>8}  {'steps/s':>10}")
    for steps in sizes:
        resumes, recoveries = [], []
        for _ in range(args.runs):
            for timer, out in ((time_resume, resumes), (time_recovery, recoveries)):
                directory = Path(tempfile.mkdtemp(prefix="sagaloop-bench-resume-"))
                try:
                    out.append(sagaloop.run(timer(directory, steps)))
                finally:
                    shutil.rmtree(directory, ignore_errors=True)
        r, w = statistics.median(resumes), statistics.median(recoveries)
        print(f"{steps:>10,}  {r * 1000:>10.1f}  {r / steps * 1e6:>8.1f}  {steps / r:>10,.0f}   "
              f"{w * 1000:>11.1f}  {w / steps * 1e6:>8.1f}  {steps / w:>10,.0f}")


if __name__ == "__main__":
    main()
