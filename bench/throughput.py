"""W1 throughput benchmark: a workflow of N trivial async steps, run through
``engine.workflows.execute`` one at a time and many in flight, for both
durabilities, side by side with two ceilings measured in the same process:

* ``bare``     the same steps as plain ``await step_fn()`` calls, no journal;
* ``lmdb-gc``  the same steps, each followed by one msgpack pack and one LMDB
               put with group commit (a minimal one, in this file), no engine.

Every figure is the median over ``--runs`` runs; runs interleave the
configurations so machine noise spreads over all of them. Each sagaloop
engine and each ``lmdb-gc`` store runs on a fresh temporary directory that
is removed afterwards. Everything runs on uvloop (``sagaloop.run``).

``python -m bench`` runs this W1 and the other workloads (``bench.harness``);
this module alone: ``python -m bench.throughput [--runs N] [--workflows N] [--quick] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import shutil
import statistics
import struct
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import lmdb
import msgpack

import sagaloop

PRODUCT, ENV, TAG = "bench", "bench", "w1"
DURABILITIES = ("fast", "durable")
# Floors (steps/s) that sagaloop must reach with ``FLOOR_IN_FLIGHT`` workflows in flight.
FLOOR_IN_FLIGHT = 1000
FLOORS = {"fast": 100_000, "durable": 60_000}

perf_counter = time.perf_counter


# -- the workload ------------------------------------------------------------------------

async def step_fn() -> dict:
    """A trivial step: returns a small dict."""
    return {"ok": 1}


def define_w1(engine: sagaloop.Engine, steps: int) -> None:
    tags = [f"s{i}" for i in range(steps)]

    @engine.workflows.define(product=PRODUCT, tag=TAG)
    async def w1(ctx: sagaloop.WorkflowContext) -> int:
        for tag in tags:
            await ctx.step(tag, step_fn)
        return steps


def bare_workflow(steps: int) -> Callable[[], Awaitable[Any]]:
    async def run_one() -> int:
        for _ in range(steps):
            await step_fn()
        return steps
    return run_one


# -- ceiling 2: msgpack + LMDB put per step with group commit, no engine ----------------

class MiniGroupCommit:
    """The smallest group commit: puts of one loop turn share one write transaction.

    durable: sync on commit, transactions on one writer thread, at most one in flight
    (the next group collects meanwhile). fast: no sync, writemap, inline on the loop.
    """

    def __init__(self, path: str, durable: bool) -> None:
        self.env = lmdb.open(path, map_size=1 << 30, max_dbs=2, sync=durable, metasync=durable,
                             writemap=not durable)
        self.db = self.env.open_db(b"journal")
        self.loop = asyncio.get_running_loop()
        self.executor = ThreadPoolExecutor(max_workers=1) if durable else None
        self.pending: dict[bytes, bytes] = {}
        self.pending_future: asyncio.Future | None = None
        self.inflight_future: asyncio.Future | None = None
        self.resolved = self.loop.create_future()
        self.resolved.set_result(None)

    def put(self, key: bytes, value: bytes) -> None:
        self.pending[key] = value
        if self.pending_future is None:
            self.pending_future = self.loop.create_future()
            if self.inflight_future is None:
                self.loop.call_soon(self._flush)

    def commit(self) -> asyncio.Future:
        return self.pending_future or self.inflight_future or self.resolved

    def _flush(self) -> None:
        if self.pending_future is not None and self.inflight_future is None:
            self._start()

    def _start(self) -> None:
        items, future = self.pending, self.pending_future
        self.pending, self.pending_future = {}, None
        self.inflight_future = future
        if self.executor is None:
            self._write(items)
            self._done(future)
        else:
            self.executor.submit(self._write_in_thread, items, future)

    def _write(self, items: dict) -> None:
        with self.env.begin(write=True) as txn:
            txn.cursor(self.db).putmulti(items.items())

    def _write_in_thread(self, items: dict, future: asyncio.Future) -> None:
        self._write(items)
        self.loop.call_soon_threadsafe(self._done, future)

    def _done(self, future: asyncio.Future) -> None:
        self.inflight_future = None
        future.set_result(None)
        if self.pending_future is not None:
            self._start()

    async def close(self) -> None:
        while self.pending_future is not None or self.inflight_future is not None:
            await self.commit()
        if self.executor is not None:
            self.executor.shutdown(wait=True)
        self.env.close()


def lmdb_gc_workflow(store: MiniGroupCommit, steps: int) -> Callable[[], Awaitable[Any]]:
    pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack
    seq_key = struct.Struct(">xI").pack
    tags = [f"s{i}" for i in range(steps)]
    counter = iter(range(1 << 62))

    async def run_one() -> int:
        wid = f"wf-{next(counter)}".encode()
        for position, tag in enumerate(tags):
            output = await step_fn()
            store.put(wid + seq_key(position), pack({"tag": tag, "status": "completed", "output": output}))
            await store.commit()
        return steps
    return run_one


# -- measuring ---------------------------------------------------------------------------

class WorkflowFailed(RuntimeError):
    pass


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * p // 100))
    return sorted_values[int(rank) - 1]


async def drive(run_one: Callable[[], Awaitable[Any]], total: int, in_flight: int,
                check: Callable[[Any], str | None]) -> tuple[float, list[float]]:
    """Run ``total`` workflows, ``in_flight`` at a time (batches of ``asyncio.gather``).

    Returns (elapsed seconds, latencies in seconds). Latency: the call's start
    (when its task first runs) to its result.
    """
    latencies: list[float] = []
    failures: list[str] = []
    append = latencies.append

    async def one() -> None:
        t0 = perf_counter()
        result = await run_one()
        append(perf_counter() - t0)
        problem = check(result)
        if problem is not None:
            failures.append(problem)

    gc.collect()
    start = perf_counter()
    done = 0
    if in_flight <= 1:
        while done < total:
            await one()
            done += 1
    else:
        while done < total:
            n = min(in_flight, total - done)
            await asyncio.gather(*[one() for _ in range(n)])
            done += n
    elapsed = perf_counter() - start
    if failures:
        raise WorkflowFailed(f"{len(failures)} of {total} workflows did not complete; first: {failures[0]}")
    return elapsed, latencies


def check_sagaloop(steps: int) -> Callable[[Any], str | None]:
    def check(result: Any) -> str | None:
        if result.status == "completed" and result.output == steps:
            return None
        return f"status={result.status} output={result.output!r} error={result.error}"
    return check


def check_plain(steps: int) -> Callable[[Any], str | None]:
    def check(result: Any) -> str | None:
        return None if result == steps else f"returned {result!r}"
    return check


@dataclass
class Config:
    system: str        # sagaloop | bare | lmdb-gc
    durability: str    # fast | durable | "-" (bare)
    in_flight: int
    workflows: int

    @property
    def name(self) -> str:
        if self.durability == "-":
            return f"{self.system} x{self.in_flight}"
        return f"{self.system} {self.durability} x{self.in_flight}"


@dataclass
class Params:
    runs: int = 5
    steps: int = 10
    workflows: int = 5000          # total, for the many-in-flight shape
    sequential_workflows: int = 300
    in_flight: int = 1000
    warmup: int = 100              # workflows run (same shape) before measuring, per engine
    durabilities: tuple[str, ...] = DURABILITIES
    store_ceiling: bool = True


@dataclass
class Sample:
    elapsed: float
    workflows: int
    steps: int
    p50_ms: float
    p99_ms: float

    @property
    def workflows_per_s(self) -> float:
        return self.workflows / self.elapsed

    @property
    def steps_per_s(self) -> float:
        return self.workflows * self.steps / self.elapsed


@dataclass
class Result:
    config: Config
    samples: list[Sample] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(s, attr) for s in self.samples)

    def summary(self) -> dict:
        return {
            "name": self.config.name, "system": self.config.system, "durability": self.config.durability,
            "in_flight": self.config.in_flight, "workflows": self.config.workflows,
            "median": {k: self.median(k) for k in ("workflows_per_s", "steps_per_s", "p50_ms", "p99_ms")},
            "steps_per_s_min": min(s.steps_per_s for s in self.samples),
            "steps_per_s_max": max(s.steps_per_s for s in self.samples),
            "runs": [{"elapsed_s": s.elapsed, "workflows_per_s": s.workflows_per_s,
                      "steps_per_s": s.steps_per_s, "p50_ms": s.p50_ms, "p99_ms": s.p99_ms}
                     for s in self.samples],
        }


def configs(params: Params) -> list[Config]:
    shapes = [(1, params.sequential_workflows), (params.in_flight, params.workflows)]
    out = []
    for in_flight, total in shapes:
        for durability in params.durabilities:
            out.append(Config("sagaloop", durability, in_flight, total))
        out.append(Config("bare", "-", in_flight, total))
        if params.store_ceiling:
            for durability in params.durabilities:
                out.append(Config("lmdb-gc", durability, in_flight, total))
    return out


async def measure(config: Config, params: Params) -> Sample:
    """One run of one configuration, on a fresh temporary directory."""
    steps = params.steps
    warmup = min(params.warmup, config.workflows)
    directory = tempfile.mkdtemp(prefix="sagaloop-bench-")
    try:
        if config.system == "sagaloop":
            engine = sagaloop.Engine(os.path.join(directory, "data"), durability=config.durability)
            await engine.open()
            try:
                define_w1(engine, steps)
                execute = engine.workflows.execute

                def run_one() -> Awaitable[Any]:
                    return execute(product=PRODUCT, env=ENV, tag=TAG, input={"n": 1})

                check = check_sagaloop(steps)
                await drive(run_one, warmup, config.in_flight, check)
                elapsed, latencies = await drive(run_one, config.workflows, config.in_flight, check)
            finally:
                await engine.close()
        elif config.system == "lmdb-gc":
            store = MiniGroupCommit(os.path.join(directory, "data"), durable=config.durability == "durable")
            try:
                run_one = lmdb_gc_workflow(store, steps)
                await drive(run_one, warmup, config.in_flight, check_plain(steps))
                elapsed, latencies = await drive(run_one, config.workflows, config.in_flight, check_plain(steps))
            finally:
                await store.close()
        else:
            run_one = bare_workflow(steps)
            await drive(run_one, warmup, config.in_flight, check_plain(steps))
            elapsed, latencies = await drive(run_one, config.workflows, config.in_flight, check_plain(steps))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    latencies.sort()
    return Sample(elapsed=elapsed, workflows=config.workflows, steps=steps,
                  p50_ms=percentile(latencies, 50) * 1000, p99_ms=percentile(latencies, 99) * 1000)


async def run_all(params: Params, progress: Callable[[str], None] = lambda _: None) -> list[Result]:
    results = [Result(c) for c in configs(params)]
    for run in range(params.runs):
        for result in results:
            sample = await measure(result.config, params)
            result.samples.append(sample)
            progress(f"run {run + 1}/{params.runs}  {result.config.name:<24} "
                     f"{sample.steps_per_s:>12,.0f} steps/s  p99 {sample.p99_ms:8.2f} ms")
    return results


# -- reporting ---------------------------------------------------------------------------

def _find(results: list[Result], system: str, durability: str, in_flight: int) -> Result | None:
    for r in results:
        c = r.config
        if c.system == system and c.durability == durability and c.in_flight == in_flight:
            return r
    return None


def floor_checks(results: list[Result], params: Params) -> list[dict]:
    checks = []
    for durability, floor in FLOORS.items():
        r = _find(results, "sagaloop", durability, params.in_flight)
        if r is None:
            continue
        value = r.median("steps_per_s")
        checks.append({"config": r.config.name, "floor_steps_per_s": floor, "steps_per_s": value,
                       "pass": value >= floor, "applies": params.in_flight == FLOOR_IN_FLIGHT})
    return checks


def format_table(results: list[Result], params: Params) -> str:
    floors = {c["config"]: c for c in floor_checks(results, params)}
    header = (f"{'configuration':<24} {'workflows/s':>12} {'steps/s':>12} {'(min..max)':>21} "
              f"{'p50 ms':>9} {'p99 ms':>9} {'/bare':>7} {'/lmdb-gc':>9}  floor")
    lines = [header, "-" * len(header)]
    for r in results:
        c = r.config
        steps_s = r.median("steps_per_s")
        bare = _find(results, "bare", "-", c.in_flight)
        gc_ceiling = _find(results, "lmdb-gc", c.durability, c.in_flight)
        vs_bare = f"{steps_s / bare.median('steps_per_s'):.3g}" if bare and c.system != "bare" else ""
        vs_gc = (f"{steps_s / gc_ceiling.median('steps_per_s'):.3g}"
                 if gc_ceiling and c.system == "sagaloop" else "")
        spread = f"{min(s.steps_per_s for s in r.samples):,.0f}..{max(s.steps_per_s for s in r.samples):,.0f}"
        floor = ""
        if c.name in floors:
            f = floors[c.name]
            floor = f"{'PASS' if f['pass'] else 'FAIL'} (>= {f['floor_steps_per_s']:,})"
            if not f["applies"]:
                floor += f" [floor is for x{FLOOR_IN_FLIGHT}]"
        lines.append(f"{c.name:<24} {r.median('workflows_per_s'):>12,.0f} {steps_s:>12,.0f} {spread:>21} "
                     f"{r.median('p50_ms'):>9.3f} {r.median('p99_ms'):>9.3f} {vs_bare:>7} {vs_gc:>9}  {floor}")
    return "\n".join(lines)


def environment() -> dict:
    import uvloop
    return {"python": platform.python_version(), "implementation": platform.python_implementation(),
            "platform": platform.platform(), "cpus": os.cpu_count(), "uvloop": uvloop.__version__,
            "lmdb": lmdb.__version__, "msgpack": ".".join(map(str, msgpack.version)),
            "sagaloop": getattr(sagaloop, "__version__", "?")}


# -- profiling -----------------------------------------------------------------------------

def profile(params: Params, durability: str = "fast", top: int = 25) -> str:
    """cProfile one sagaloop run at ``params.in_flight`` in flight; the top lines by tottime."""
    import cProfile
    import io
    import pstats

    config = Config("sagaloop", durability, params.in_flight, params.workflows)
    profiler = cProfile.Profile()

    async def go() -> Sample:
        profiler.enable()
        try:
            return await measure(config, params)
        finally:
            profiler.disable()

    sample = sagaloop.run(go())
    out = io.StringIO()
    out.write(f"profile of {config.name}, {config.workflows} workflows (+warmup), under cProfile: "
              f"{sample.steps_per_s:,.0f} steps/s\n")
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


# -- CLI -----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, help="runs per configuration; figures are medians (default 5)")
    p.add_argument("--workflows", type=int,
                   help="workflows per run in the many-in-flight shape (default 5000)")
    p.add_argument("--sequential-workflows", type=int,
                   help="workflows per run at 1 in flight (default 300)")
    p.add_argument("--in-flight", type=int, help="workflows in flight per batch (default 1000)")
    p.add_argument("--steps", type=int, help="steps per workflow (default 10)")
    p.add_argument("--warmup", type=int, help="warm-up workflows per engine, not measured (default 100)")
    p.add_argument("--durability", choices=("both",) + DURABILITIES, default="both")
    p.add_argument("--no-store-ceiling", action="store_true", help="skip the lmdb-gc ceiling")
    p.add_argument("--quick", action="store_true", help="small counts for a smoke run (< 20 s)")
    p.add_argument("--json", metavar="PATH", help="write all results (every run) as JSON")
    p.add_argument("--profile", action="store_true",
                   help="instead: cProfile sagaloop at --in-flight in flight (fast), top 25 by tottime")
    p.add_argument("--strict", action="store_true", help="exit 1 when a floor fails")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-run progress lines")
    return p.parse_args(argv)


def params_from(args: argparse.Namespace) -> Params:
    params = Params()
    if args.quick:
        params = Params(runs=3, workflows=2000, sequential_workflows=50, warmup=50)
    for name in ("runs", "workflows", "sequential_workflows", "in_flight", "steps", "warmup"):
        value = getattr(args, name)
        if value is not None:
            if value < (0 if name == "warmup" else 1):
                raise SystemExit(f"--{name.replace('_', '-')} must be positive, not {value}")
            setattr(params, name, value)
    if args.durability != "both":
        params.durabilities = (args.durability,)
    params.store_ceiling = not args.no_store_ceiling
    return params


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = params_from(args)
    if args.profile:
        durability = args.durability if args.durability != "both" else "fast"
        print(profile(params, durability))
        return 0

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    env = environment()
    started = perf_counter()
    try:
        results = sagaloop.run(run_all(params, progress))
    except WorkflowFailed as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    wall = perf_counter() - started
    print(f"\nW1: {params.steps} trivial async steps per workflow; x1 = {params.sequential_workflows} "
          f"workflows one at a time, x{params.in_flight} = {params.workflows} workflows in batches of "
          f"{params.in_flight} (asyncio.gather).")
    print(f"Median of {params.runs} run(s); uvloop {env['uvloop']}, Python {env['python']}, "
          f"{env['cpus']} CPUs; wall {wall:.1f} s.")
    print("/bare, /lmdb-gc: sagaloop steps/s as a fraction of the ceiling (same shape; same durability).\n")
    print(format_table(results, params))
    checks = floor_checks(results, params)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"benchmark": "W1", "params": params.__dict__ | {"durabilities": list(params.durabilities)},
                       "environment": env, "wall_s": wall,
                       "results": [r.summary() for r in results], "floors": checks}, fh, indent=2)
        print(f"\nresults written to {args.json}")
    if args.strict and not all(c["pass"] for c in checks):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
