"""A child program for the resume crash test: a resumed run is SIGKILLed in the middle.

    python tests/resume_worker.py resume <datadir> <sidefile>

Opens the engine (durable) and runs workflow ``order`` as ``wf-origin``: ``charge`` and ``reserve``
complete, ``ship`` fails (the strategy is ``none``: nothing is compensated). Then it resumes it:
the resumed run keeps ``charge`` and ``reserve`` and runs ``ship``, whose handler appends its line
and SIGKILLs the process once everything queued is committed. Every step handler appends
``<tag> <pid>`` to ``sidefile`` before it returns; the test counts them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from worker_common import FOREVER, marker, side_effect  # tests/, the script's directory; puts the root on sys.path

import sagaloop  # after worker_common
from sagaloop.testing import wait_committed

PRODUCT, ENV, TAG = "repairs", "test", "order"


def define(engine: sagaloop.Engine, sidefile: str, *, kill_in_ship: bool = False, ship_failures: int = 0) -> None:
    state = {"ship_failures": ship_failures}

    def step(tag: str):
        async def run() -> str:
            side_effect(sidefile, tag)
            if tag == "ship":
                if state["ship_failures"]:
                    state["ship_failures"] -= 1
                    raise RuntimeError("the carrier is down")
                if kill_in_ship:
                    await wait_committed(engine)
                    os.kill(os.getpid(), signal.SIGKILL)
            return f"{tag}-done"
        return run

    @engine.workflows.define(product=PRODUCT, tag=TAG, options={"rollback_strategy": "none"})
    async def order(ctx: sagaloop.WorkflowContext) -> dict:
        out = {}
        for tag in ("charge", "reserve", "ship", "notify"):
            out[tag] = await ctx.step(tag, step(tag))
        return out


async def main(datadir: str, sidefile: str) -> None:
    async with sagaloop.Engine(datadir, durability="durable") as engine:
        define(engine, sidefile, kill_in_ship=True, ship_failures=1)
        origin = await engine.workflows.execute(product=PRODUCT, env=ENV, tag=TAG, workflow_id="wf-origin")
        marker(f"ORIGIN {origin.status}")
        await engine.workflows.resume(product=PRODUCT, env=ENV, workflow_id="wf-origin")
        await asyncio.sleep(FOREVER)  # not reached: the resumed run's ship kills the process


if __name__ == "__main__":
    asyncio.run(main(sys.argv[2], sys.argv[3]))
