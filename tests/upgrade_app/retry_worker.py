"""A child program for the durable-retry test: fail twice, get killed in the second retry wait.

    python tests/upgrade_app/retry_worker.py start <datadir> <sidefile> <workflow_id>

Step ``flaky`` has ``retry={"max_attempts": 3, "initial_delay": 200, "backoff": 15,
"max_delay": "3s", "jitter": False}``: waits of 200 ms, then 3 s. Attempts 1 and
2 fail (the handler prints ``FAILED <n>`` right before raising); the third
succeeds. The attempt number comes from the side-effect file, so it counts
attempts across processes. The test imports this module to resume the run.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parent.parent
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from upgrade_app.common import ENV, FOREVER, PRODUCT, ensure_paths, marker, read_side_effects, side_effect  # noqa: E402

ensure_paths()

import sagaloop  # noqa: E402

TAG = "retry-durable"
POLICY = {"max_attempts": 3, "initial_delay": 200, "backoff": 15, "max_delay": "3s", "jitter": False}

__all__ = ["PRODUCT", "ENV", "TAG", "define", "read_attempts"]


def read_attempts(sidefile) -> list[dict]:
    return [r for r in read_side_effects(sidefile) if r["name"] == "attempt"]


def define(engine: sagaloop.Engine, sidefile) -> None:
    @engine.workflows.define(product=PRODUCT, tag=TAG)
    async def retry_durable(ctx):
        def flaky():
            n = len(read_attempts(sidefile)) + 1
            side_effect(sidefile, "attempt", n=n)
            if n <= 2:
                marker(f"FAILED {n}")
                raise RuntimeError(f"attempt {n} failed")
            return {"attempt": n}

        return await ctx.step("flaky", flaky, retry=POLICY)


async def start(datadir: str, sidefile: str, workflow_id: str) -> None:
    async with sagaloop.Engine(datadir, durability="durable") as engine:
        define(engine, sidefile)
        await engine.workflows.execute(product=PRODUCT, env=ENV, tag=TAG, input={}, workflow_id=workflow_id,
                                       wait=False)
        marker(f"STARTED {workflow_id}")
        await asyncio.sleep(FOREVER)  # killed by the test long before


if __name__ == "__main__":
    mode, datadir, sidefile, workflow_id = sys.argv[1:5]
    assert mode == "start", mode
    asyncio.run(start(datadir, sidefile, workflow_id))
