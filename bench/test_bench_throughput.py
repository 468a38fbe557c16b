"""W1 under pytest-benchmark: 10 trivial steps per workflow, 1 and 1,000 in flight, fast and durable.

Run: ``python -m pytest bench -p no:cacheprovider --benchmark-only``.
(The default ``pytest`` run collects ``tests/`` only, so this never runs there.)

One round is one workflow (x1) or one ``asyncio.gather`` of 1,000 workflows
(x1000), each driven by ``loop.run_until_complete`` on a uvloop loop that lives
for the whole test (its ~10 us per call is included in the x1 figures).
``extra_info`` carries steps/s from the median round and the floor verdict;
floors are reported, not asserted (the machine may be noisy): ``python -m
bench`` is the reference measurement.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile

import pytest

pytest.importorskip("pytest_benchmark")

import sagaloop  # noqa: E402
from bench.throughput import ENV, FLOOR_IN_FLIGHT, FLOORS, PRODUCT, TAG, define_w1  # noqa: E402

STEPS = 10
SHAPES = {1: dict(rounds=200, warmup_rounds=20), FLOOR_IN_FLIGHT: dict(rounds=5, warmup_rounds=1)}


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


@pytest.fixture(params=["fast", "durable"])
def engine_on_loop(request):
    loop = new_loop()
    directory = tempfile.mkdtemp(prefix="sagaloop-bench-")
    engine = sagaloop.Engine(directory, durability=request.param)
    loop.run_until_complete(engine.open())
    define_w1(engine, STEPS)
    try:
        yield engine, loop
    finally:
        loop.run_until_complete(engine.close())
        loop.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("in_flight", sorted(SHAPES), ids=lambda n: f"x{n}")
def test_w1(benchmark, engine_on_loop, in_flight):
    engine, loop = engine_on_loop
    execute = engine.workflows.execute

    async def one() -> None:
        result = await execute(product=PRODUCT, env=ENV, tag=TAG, input={"n": 1})
        assert result.status == "completed" and result.output == STEPS, result

    async def batch() -> None:
        await asyncio.gather(*[one() for _ in range(in_flight)])

    round_ = (lambda: loop.run_until_complete(one())) if in_flight == 1 else \
        (lambda: loop.run_until_complete(batch()))
    benchmark.group = f"W1 x{in_flight}"
    benchmark.extra_info.update(durability=engine.durability, in_flight=in_flight, steps=STEPS)
    benchmark.pedantic(round_, iterations=1, **SHAPES[in_flight])

    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None with --benchmark-disable
        steps_per_s = in_flight * STEPS / stats.stats.median
        benchmark.extra_info["steps_per_s"] = round(steps_per_s)
        if in_flight == FLOOR_IN_FLIGHT:
            floor = FLOORS[engine.durability]
            benchmark.extra_info["floor_steps_per_s"] = floor
            benchmark.extra_info["floor"] = "PASS" if steps_per_s >= floor else "FAIL"
