"""W1 and W2 written as a DBOS Transact user would, on a SQLite system database.

Steps are ``@DBOS.step()`` async functions, workflows ``@DBOS.workflow()``
async functions; W2 compensates by hand, in an ``except`` block, calling a
rollback step for each completed step in reverse. Workflows are called
directly (``await dbos_w1(10)``) on the event loop, many at once with
``asyncio.gather``: that is DBOS's async API (DBOS moves its database work
to its own thread pool meanwhile).

Each run gets a fresh DBOS instance on a fresh SQLite file in a temporary
directory (``system_database_url="sqlite:///..."``); SQLite runs with its
defaults (rollback journal, ``synchronous=FULL``), so each commit is synced.
``dbos`` is a benchmark-only dependency (the ``bench`` extra); this module is
only imported when it is installed, in a process of its own (``bench.worker``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from dbos import DBOS

from bench.throughput import drive, percentile


class DbosStepBoom(RuntimeError):
    """What the last step of W2 raises."""


@DBOS.step()
async def dbos_step() -> dict:
    return {"ok": 1}


@DBOS.step()
async def dbos_failing_step() -> dict:
    raise DbosStepBoom("the last step fails")


@DBOS.step()
async def dbos_rollback(output: Any) -> None:
    return None


@DBOS.workflow()
async def dbos_w1(steps: int) -> int:
    for _ in range(steps):
        await dbos_step()
    return steps


@DBOS.workflow()
async def dbos_w2(steps: int) -> int:
    done = []
    try:
        for _ in range(steps - 1):
            done.append(await dbos_step())
        await dbos_failing_step()
    except DbosStepBoom:
        for output in reversed(done):
            await dbos_rollback(output)
        return len(done)
    return -1


def version() -> str:
    from importlib.metadata import version as dist_version
    return dist_version("dbos")


async def measure_dbos(spec: dict) -> dict:
    """One run of W1 or W2 on DBOS (must run on the event loop that will drive it)."""
    workload, steps, in_flight = spec["workload"], spec["steps"], spec["in_flight"]
    workflow, expected = (dbos_w1, steps) if workload == "W1" else (dbos_w2, steps - 1)
    directory = tempfile.mkdtemp(prefix="sagaloop-bench-dbos-")
    try:
        DBOS(config={"name": "sagaloop-bench", "log_level": "WARNING",
                     "system_database_url": "sqlite:///" + os.path.join(directory, "dbos.sqlite")})
        DBOS.launch()

        def run_one() -> Any:
            return workflow(steps)

        def check(result: Any) -> str | None:
            return None if result == expected else f"returned {result!r}"

        warmup = min(spec["warmup"], spec["workflows"])
        await drive(run_one, warmup, min(in_flight, warmup), check)
        elapsed, latencies = await drive(run_one, spec["workflows"], in_flight, check)
        # No DBOS.destroy(): it waits for DBOS's threads (~0.6 s); bench.worker exits the process instead.
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    latencies.sort()
    return {"elapsed": elapsed, "workflows": spec["workflows"],
            "p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000}
