"""W1..W5 under pytest-benchmark, on sagaloop, for ``fast`` and ``durable``.

Run: ``python -m pytest bench -p no:cacheprovider --benchmark-only``.
(The default ``pytest`` run collects ``tests/`` only, so this never runs there.)

* W1 (10 trivial steps) and W2 (10 steps, the last fails, 9 compensations):
  x1, where a round is one workflow, and x1000, where a round is one
  ``asyncio.gather`` of 1,000 workflows.
* W3 (signal round trip), W4 (a parent with 3 children), W5 (resume of an
  instance with 100 completed steps after an engine restart): x1.

Each round goes through ``loop.run_until_complete`` on a uvloop loop that
lives for the whole test (its ~10-30 us per call is in the x1 figures).
``extra_info`` carries steps/s from the median round and, for W1 x1000, the
floor verdict; floors are reported, not asserted (the machine may be noisy):
``python -m bench`` is the reference measurement.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile

import pytest

pytest.importorskip("pytest_benchmark")

import sagaloop  # noqa: E402
from bench.throughput import FLOOR_IN_FLIGHT, FLOORS  # noqa: E402
from bench.workloads import (  # noqa: E402
    sagaloop_runner,
    steps_per_workflow,
    w5_prepare,
    w5_resume,
)

STEPS = 10
RESUME_STEPS = 100
SHAPES = {1: {"rounds": 100, "warmup_rounds": 10}, FLOOR_IN_FLIGHT: {"rounds": 5, "warmup_rounds": 1}}


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


@pytest.fixture(params=["fast", "durable"])
def durability(request) -> str:
    return request.param


@pytest.fixture
def loop():
    loop = new_loop()
    yield loop
    loop.close()


@pytest.fixture
def directory():
    path = tempfile.mkdtemp(prefix="sagaloop-bench-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def engine(loop, directory, durability):
    engine = sagaloop.Engine(os.path.join(directory, "data"), durability=durability)
    loop.run_until_complete(engine.open())
    yield engine
    loop.run_until_complete(engine.close())


def record(benchmark, workload: str, in_flight: int, durability: str) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable
        return
    units = steps_per_workflow(workload, STEPS, RESUME_STEPS)
    benchmark.extra_info["workflows_per_s"] = round(in_flight / stats.stats.median, 1)
    if units:
        steps_per_s = in_flight * units / stats.stats.median
        benchmark.extra_info["steps_per_s"] = round(steps_per_s)
        if workload == "W1" and in_flight == FLOOR_IN_FLIGHT:
            floor = FLOORS[durability]
            benchmark.extra_info["floor_steps_per_s"] = floor
            benchmark.extra_info["floor"] = "PASS" if steps_per_s >= floor else "FAIL"


def bench_workload(benchmark, engine, loop, workload: str, in_flight: int, shape: dict) -> None:
    run_one, check = sagaloop_runner(engine, workload, STEPS)

    async def one() -> None:
        problem = check(await run_one())
        assert problem is None, problem

    async def batch() -> None:
        await asyncio.gather(*[one() for _ in range(in_flight)])

    target = one if in_flight == 1 else batch
    benchmark.group = f"{workload} x{in_flight}"
    benchmark.extra_info.update(workload=workload, durability=engine.durability, in_flight=in_flight,
                                steps=steps_per_workflow(workload, STEPS, RESUME_STEPS))
    benchmark.pedantic(lambda: loop.run_until_complete(target()), iterations=1, **shape)
    record(benchmark, workload, in_flight, engine.durability)


@pytest.mark.parametrize("in_flight", sorted(SHAPES), ids=lambda n: f"x{n}")
@pytest.mark.parametrize("workload", ["W1", "W2"])
def test_w1_w2(benchmark, engine, loop, workload, in_flight):
    bench_workload(benchmark, engine, loop, workload, in_flight, SHAPES[in_flight])


@pytest.mark.parametrize("workload", ["W3", "W4"])
def test_w3_w4_x1(benchmark, engine, loop, workload):
    bench_workload(benchmark, engine, loop, workload, 1, SHAPES[1] if workload == "W3" else
                   {"rounds": 50, "warmup_rounds": 5})


def test_w5_x1(benchmark, loop, directory, durability):
    """A round: open the directory, define, until the instance with 100 completed steps has completed.
    Its setup (not timed) leaves a new such instance behind a closed engine."""
    path = os.path.join(directory, "data")

    def setup():
        ids = loop.run_until_complete(w5_prepare(path, durability, 1, RESUME_STEPS))
        return (ids,), {}

    def resume(ids):
        loop.run_until_complete(w5_resume(path, durability, ids, RESUME_STEPS))

    benchmark.group = "W5 x1"
    benchmark.extra_info.update(workload="W5", durability=durability, in_flight=1, steps=RESUME_STEPS)
    benchmark.pedantic(resume, setup=setup, rounds=20, warmup_rounds=2)
    record(benchmark, "W5", 1, durability)
