"""The workloads W1..W5 on sagaloop, and the W1/W2 ceilings without an engine.

* **W1** 10 trivial steps (``bench.throughput``).
* **W2** 10 steps, the 10th raises: the 9 completed steps are compensated in
  reverse (``reverse_all``; steps 1-9 each have a trivial rollback, step 10
  has none), so the run ends ``rolled_back``. A workflow counts 19 step
  operations: 10 step attempts and 9 compensations.
* **W3** signal round trip: ``execute`` (returns once the handler waits for
  ``go``), ``signal``, then ``result``; one round trip is one workflow. No steps.
* **W4** a parent that runs 3 children one after another with
  ``ctx.workflow(child_id, tag, input)``; child *i* runs *i* trivial steps
  (1, 2, 3): 6 steps per parent. workflows/s counts parents.
* **W5** resume: instances that completed N steps (default 100) and were left
  running a pending step by an engine close; a new engine opens the
  directory, the definition is registered again, and the time from the open
  until each instance has completed is its resume latency. steps/s counts the
  N replayed steps (the pending step runs for real after them).

``measure(spec)`` runs one run of one configuration on a fresh temporary
directory and returns its raw figures; ``bench.worker`` calls it in a fresh
process. Everything here runs on uvloop (``sagaloop.run``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack

import sagaloop
from bench.throughput import (
    ENV,
    PRODUCT,
    MiniGroupCommit,
    WorkflowFailed,
    bare_workflow,
    check_plain,
    check_sagaloop,
    define_w1,
    drive,
    lmdb_gc_workflow,
    percentile,
    perf_counter,
    step_fn,
)
from bench.throughput import TAG as W1_TAG

W2_TAG, W3_TAG, W4_TAG, W4_CHILD_TAG, W5_TAG = "w2", "w3", "w4", "w4-child", "w5"
W4_CHILD_STEPS = (1, 2, 3)
SIGNAL = "go"

def steps_per_workflow(workload: str, steps: int = 10, resume_steps: int = 100) -> int:
    """Work units per workflow, for steps/s (W3 has none)."""
    return {"W1": steps, "W2": 2 * steps - 1, "W3": 0, "W4": sum(W4_CHILD_STEPS),
            "W5": resume_steps}[workload]


# -- W2: compensations ---------------------------------------------------------------------

class StepBoom(RuntimeError):
    """What the last step of W2 raises."""


async def rollback_fn(output: Any) -> None:
    """A trivial compensation."""
    return


async def failing_step() -> dict:
    raise StepBoom("the last step fails")


def define_w2(engine: sagaloop.Engine, steps: int) -> None:
    tags = [f"s{i}" for i in range(steps - 1)]
    last = f"s{steps - 1}"

    @engine.workflows.define(product=PRODUCT, tag=W2_TAG, options={"rollback_strategy": "reverse_all"})
    async def w2(ctx: sagaloop.WorkflowContext) -> int:
        for tag in tags:
            await ctx.step(tag, step_fn, rollback_fn)
        await ctx.step(last, failing_step)
        return steps


def check_w2(steps: int) -> Callable[[Any], str | None]:
    def check(result: Any) -> str | None:
        rb = result.rollback_result
        if result.status == "rolled_back" and rb is not None and len(rb.rolled_back_steps) == steps - 1:
            return None
        return f"status={result.status} rollback={rb} error={result.error}"
    return check


def bare_w2(steps: int) -> Callable[[], Awaitable[Any]]:
    """W2 as plain calls: steps, the failure, compensations in reverse in an except block."""
    async def run_one() -> int:
        done = []
        try:
            for _ in range(steps - 1):
                done.append(await step_fn())
            await failing_step()
        except StepBoom:
            for output in reversed(done):
                await rollback_fn(output)
            return len(done)
        return -1
    return run_one


def lmdb_gc_w2(store: MiniGroupCommit, steps: int) -> Callable[[], Awaitable[Any]]:
    """W2 as plain calls, each step end, the failure and each compensation end put and committed."""
    pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack
    seq_key = struct.Struct(">xI").pack
    counter = iter(range(1 << 62))

    async def run_one() -> int:
        wid = f"wf-{next(counter)}".encode()
        position = 0

        async def record(entry: dict) -> None:
            nonlocal position
            store.put(wid + seq_key(position), pack(entry))
            position += 1
            await store.commit()

        done = []
        try:
            for i in range(steps - 1):
                output = await step_fn()
                await record({"tag": f"s{i}", "status": "completed", "output": output})
                done.append((i, output))
            await failing_step()
        except StepBoom as exc:
            await record({"tag": f"s{steps - 1}", "status": "failed", "error": str(exc)})
            for i, output in reversed(done):
                await rollback_fn(output)
                await record({"tag": f"s{i}", "status": "rolled_back"})
            return len(done)
        return -1
    return run_one


# -- W3: signal round trip -------------------------------------------------------------------

def define_w3(engine: sagaloop.Engine) -> None:
    @engine.workflows.define(product=PRODUCT, tag=W3_TAG)
    async def w3(ctx: sagaloop.WorkflowContext) -> Any:
        payload = await ctx.wait_for_signal(SIGNAL)
        return payload["v"]


def w3_round_trip(engine: sagaloop.Engine) -> Callable[[], Awaitable[Any]]:
    workflows = engine.workflows

    async def run_one() -> Any:
        started = await workflows.execute(product=PRODUCT, env=ENV, tag=W3_TAG, input=None)
        if started.status != "running":
            return started
        await workflows.signal(product=PRODUCT, env=ENV, workflow_id=started.workflow_id, signal=SIGNAL,
                               payload={"v": 1})
        return await workflows.result(product=PRODUCT, env=ENV, workflow_id=started.workflow_id)
    return run_one


def check_w3(result: Any) -> str | None:
    if result.status == "completed" and result.output == 1:
        return None
    return f"status={result.status} output={result.output!r} error={result.error}"


# -- W4: parent and 3 children -------------------------------------------------------------

def define_w4(engine: sagaloop.Engine) -> None:
    @engine.workflows.define(product=PRODUCT, tag=W4_CHILD_TAG)
    async def child(ctx: sagaloop.WorkflowContext) -> int:
        n = ctx.input["n"]
        for i in range(n):
            await ctx.step(f"c{i}", step_fn)
        return n

    @engine.workflows.define(product=PRODUCT, tag=W4_TAG)
    async def parent(ctx: sagaloop.WorkflowContext) -> int:
        total = 0
        for i, n in enumerate(W4_CHILD_STEPS):
            total += await ctx.workflow(f"{ctx.workflow_id}-c{i}", W4_CHILD_TAG, {"n": n})
        return total


def check_w4(result: Any) -> str | None:
    if result.status == "completed" and result.output == sum(W4_CHILD_STEPS):
        return None
    return f"status={result.status} output={result.output!r} error={result.error}"


# -- W5: resume ------------------------------------------------------------------------------

def define_w5(engine: sagaloop.Engine, steps: int, last: Callable[[], Awaitable[Any]]) -> None:
    tags = [f"s{i}" for i in range(steps)]

    @engine.workflows.define(product=PRODUCT, tag=W5_TAG)
    async def w5(ctx: sagaloop.WorkflowContext) -> int:
        for tag in tags:
            await ctx.step(tag, step_fn)
        await ctx.step("pending", last)
        return steps


async def w5_prepare(path: str, durability: str, instances: int, steps: int) -> list[str]:
    """Leave ``instances`` instances with ``steps`` completed steps and one pending step; close."""
    reached = 0
    all_reached = asyncio.get_running_loop().create_future()

    async def blocked() -> None:  # the pending step: never returns in this engine
        nonlocal reached
        reached += 1
        if reached == instances and not all_reached.done():
            all_reached.set_result(None)
        await asyncio.Event().wait()

    engine = sagaloop.Engine(path, durability=durability)
    await engine.open()
    try:
        define_w5(engine, steps, blocked)
        started = await asyncio.gather(*[
            engine.workflows.execute(product=PRODUCT, env=ENV, tag=W5_TAG, input=None, wait=False)
            for _ in range(instances)])
        await asyncio.wait_for(all_reached, timeout=120)
    finally:
        await engine.close()
    return [r.workflow_id for r in started]


async def w5_resume(path: str, durability: str, ids: list[str], steps: int) -> tuple[float, list[float]]:
    """Open, define, wait for every instance: (elapsed, latencies), both from before the open."""
    latencies: list[float] = []
    failures: list[str] = []

    async def finished() -> dict:
        return {"ok": 1}

    t0 = perf_counter()
    engine = sagaloop.Engine(path, durability=durability)
    await engine.open()
    try:
        define_w5(engine, steps, finished)

        async def wait_one(workflow_id: str) -> None:
            result = await engine.workflows.result(product=PRODUCT, env=ENV, workflow_id=workflow_id)
            latencies.append(perf_counter() - t0)
            if result.status != "completed" or result.output != steps:
                failures.append(f"status={result.status} output={result.output!r} error={result.error}")

        await asyncio.gather(*[wait_one(w) for w in ids])
        elapsed = perf_counter() - t0
    finally:
        await engine.close()
    if failures:
        raise WorkflowFailed(f"{len(failures)} of {len(ids)} resumed workflows did not complete; "
                             f"first: {failures[0]}")
    return elapsed, latencies


async def measure_w5(directory: str, spec: dict) -> tuple[float, list[float], int]:
    """x1: ``spec['workflows']`` rounds of one instance each; else one round of that many instances."""
    path = os.path.join(directory, "data")
    steps, durability = spec["resume_steps"], spec["durability"]
    if spec["in_flight"] <= 1:
        elapsed, latencies = 0.0, []
        for _ in range(spec["workflows"]):
            ids = await w5_prepare(path, durability, 1, steps)
            e, lat = await w5_resume(path, durability, ids, steps)
            elapsed += e
            latencies += lat
        return elapsed, latencies, spec["workflows"]
    ids = await w5_prepare(path, durability, spec["in_flight"], steps)
    elapsed, latencies = await w5_resume(path, durability, ids, steps)
    return elapsed, latencies, len(ids)


# -- one run of one configuration -------------------------------------------------------------

def sagaloop_runner(engine: sagaloop.Engine, workload: str, steps: int
                    ) -> tuple[Callable[[], Awaitable[Any]], Callable[[Any], str | None]]:
    """Define ``workload`` on ``engine``; return (run one workflow, check its result)."""
    execute = engine.workflows.execute
    if workload == "W1":
        define_w1(engine, steps)
        return (lambda: execute(product=PRODUCT, env=ENV, tag=W1_TAG, input={"n": 1})), check_sagaloop(steps)
    if workload == "W2":
        define_w2(engine, steps)
        return (lambda: execute(product=PRODUCT, env=ENV, tag=W2_TAG, input={"n": 1})), check_w2(steps)
    if workload == "W3":
        define_w3(engine)
        return w3_round_trip(engine), check_w3
    if workload == "W4":
        define_w4(engine)
        return (lambda: execute(product=PRODUCT, env=ENV, tag=W4_TAG, input=None)), check_w4
    raise ValueError(f"no sagaloop runner for {workload}")


async def measure(spec: dict) -> dict:
    """One run of one configuration; ``spec`` keys: workload, system, durability, in_flight,
    workflows, warmup, steps, resume_steps. Returns elapsed, workflows, latencies (p50/p99)."""
    workload, system, steps = spec["workload"], spec["system"], spec["steps"]
    in_flight = spec["in_flight"]
    warmup = min(spec["warmup"], spec["workflows"])
    directory = tempfile.mkdtemp(prefix="sagaloop-bench-")
    workflows = spec["workflows"]
    try:
        if workload == "W5":
            elapsed, latencies, workflows = await measure_w5(directory, spec)
        elif system == "sagaloop":
            engine = sagaloop.Engine(os.path.join(directory, "data"), durability=spec["durability"])
            await engine.open()
            try:
                run_one, check = sagaloop_runner(engine, workload, steps)
                await drive(run_one, warmup, in_flight, check)
                elapsed, latencies = await drive(run_one, workflows, in_flight, check)
            finally:
                await engine.close()
        elif system == "lmdb-gc":
            store = MiniGroupCommit(os.path.join(directory, "data"), durable=spec["durability"] == "durable")
            try:
                if workload == "W1":
                    run_one, check = lmdb_gc_workflow(store, steps), check_plain(steps)
                else:
                    run_one, check = lmdb_gc_w2(store, steps), check_plain(steps - 1)
                await drive(run_one, warmup, in_flight, check)
                elapsed, latencies = await drive(run_one, workflows, in_flight, check)
            finally:
                await store.close()
        elif system == "bare":
            if workload == "W1":
                run_one, check = bare_workflow(steps), check_plain(steps)
            else:
                run_one, check = bare_w2(steps), check_plain(steps - 1)
            await drive(run_one, warmup, in_flight, check)
            elapsed, latencies = await drive(run_one, workflows, in_flight, check)
        else:
            raise ValueError(f"unknown system {system!r}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    latencies.sort()
    return {"elapsed": elapsed, "workflows": workflows,
            "p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000}
