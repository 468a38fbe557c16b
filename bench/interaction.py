"""Talking to running workflows: signal round trip and query latency under load.

* ``signal``: one workflow waits for ``ping`` in a loop; the driver sends a
  signal and times until the handler has resumed past its wait (the signal
  is durable in the inbox and its consumption journaled on the way).
* ``query``: while ``--in-flight`` workflows keep running steps, query and
  status calls go to them one after another; their latency is timed, and the
  steps/s the workflows keep up meanwhile is reported beside it.

Figures are medians over ``--runs`` runs of each run's p50/p99. Usage:
``python -m bench.interaction [--runs N] [--signals N] [--queries N] [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time

import sagaloop

P, E = "bench", "bench"
perf = time.perf_counter


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


async def signal_round_trip(durability: str, signals: int) -> list[float]:
    path = tempfile.mkdtemp(prefix="sagaloop-bench-")
    resumed = asyncio.Event()
    try:
        async with sagaloop.Engine(path, durability=durability) as engine:
            @engine.workflows.define(product=P, tag="pinger")
            async def pinger(ctx):
                for _ in range(signals):
                    await ctx.wait_for_signal("ping")
                    resumed.set()
                return signals

            await engine.workflows.execute(product=P, env=E, tag="pinger", workflow_id="p")
            times = []
            for i in range(signals):
                resumed.clear()
                t0 = perf()
                await engine.workflows.signal(product=P, env=E, workflow_id="p", signal="ping", payload={"i": i})
                await resumed.wait()
                times.append(perf() - t0)
            result = await engine.workflows.result(product=P, env=E, workflow_id="p")
            assert result.status == "completed", result
            return times
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def query_under_load(durability: str, queries: int, in_flight: int) -> tuple[list[float], float]:
    """Query/status latencies while ``in_flight`` workflows run steps; also their steps/s meanwhile."""
    path = tempfile.mkdtemp(prefix="sagaloop-bench-")
    steps_done = 0
    try:
        async with sagaloop.Engine(path, durability=durability) as engine:
            async def step():
                nonlocal steps_done
                steps_done += 1
                return 1

            @engine.workflows.define(product=P, tag="busy",
                                     queries={"progress": lambda ctx: len(ctx.completed_steps)})
            async def busy(ctx):
                i = 0
                while not ctx.cancel_requested and i < 100_000:
                    await ctx.step(f"s{i}", step)
                    i += 1
                return i

            ids = [f"busy-{i}" for i in range(in_flight)]
            await asyncio.gather(*[engine.workflows.execute(product=P, env=E, tag="busy", workflow_id=wf, wait=False)
                                   for wf in ids])
            await asyncio.sleep(0.2)  # let the load settle
            times = []
            first_steps, t_start = steps_done, perf()
            i = 0
            while i < queries or perf() - t_start < 1.0:  # at least a second, for a steady steps/s
                target = ids[i % len(ids)]
                i += 1
                t0 = perf()
                if i % 2:
                    await engine.workflows.query(product=P, env=E, workflow_id=target, query="progress")
                else:
                    await engine.workflows.status(product=P, env=E, workflow_id=target)
                times.append(perf() - t0)
            rate = (steps_done - first_steps) / (perf() - t_start)
            await asyncio.gather(*[engine.workflows.cancel(product=P, env=E, workflow_id=w) for w in ids])
            return times, rate
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def main_async(args: argparse.Namespace) -> None:
    rows = []
    for durability in ("fast", "durable"):
        sig = [await signal_round_trip(durability, args.signals) for _ in range(args.runs)]
        rows.append((f"signal round trip, {durability}", statistics.median(pct(r, 50) for r in sig),
                     statistics.median(pct(r, 99) for r in sig), ""))
        qs = [await query_under_load(durability, args.queries, args.in_flight) for _ in range(args.runs)]
        rows.append((f"query/status, {args.in_flight} running, {durability}",
                     statistics.median(pct(t, 50) for t, _ in qs), statistics.median(pct(t, 99) for t, _ in qs),
                     f"{statistics.median(s for _, s in qs):,.0f} steps/s meanwhile"))
    print(f"\nmedians of {args.runs} runs")
    print(f"{'measure':<40} {'p50 ms':>9} {'p99 ms':>9}  note")
    for name, p50, p99, note in rows:
        print(f"{name:<40} {p50 * 1000:>9.3f} {p99 * 1000:>9.3f}  {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.interaction", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--signals", type=int, default=500)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=1000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.signals, args.queries = 3, 100, 200
    sagaloop.run(main_async(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
