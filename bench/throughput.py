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

This module holds W1's pieces (the workload, the ceilings, the driver, one
measured sample, the profile); ``python -m bench`` (``bench.harness``) runs
and reports them beside the other workloads.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import struct
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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


# -- reporting ---------------------------------------------------------------------------


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


