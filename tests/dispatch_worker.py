"""A child program for the dispatch crash test: a tick fires, the process dies before the job moves on.

    python tests/dispatch_worker.py fire <datadir> <sidefile> <kill_at>

Opens the engine (durable), defines workflow ``tick`` (one step that appends ``tick-step <scheduled_for>``
to ``sidefile``) and dispatches it ``start_at`` 300 ms from now, printing ``DISPATCHED <job_id> <ms>``.
``kill_at``: ``after-start`` SIGKILLs the process right after the tick's run start is committed and
before the scheduler actor handles the news (its ``_started``); ``in-step`` SIGKILLs it
inside the run's step, once everything queued so far is committed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from worker_common import FOREVER, marker, side_effect  # tests/, the script's directory; puts the root on sys.path

import sagaloop  # after worker_common
from sagaloop.runtime.front import scheduler as _scheduler
from sagaloop.testing import wait_committed

PRODUCT, ENV, TAG = "dispatch", "test", "tick"


def define(engine: sagaloop.Engine, sidefile: str, *, kill_in_step: bool = False) -> None:
    @engine.workflows.define(product=PRODUCT, tag=TAG)
    async def tick(ctx: sagaloop.WorkflowContext) -> dict:
        async def step() -> int:
            side_effect(sidefile, "tick-step", str(ctx.context["scheduled_for"]))
            if kill_in_step:
                await asyncio.sleep(0)
                await wait_committed(engine)
                os.kill(os.getpid(), signal.SIGKILL)
            return int(ctx.context["scheduled_for"])

        return {"ran_for": await ctx.step("run", step)}


async def fire(datadir: str, sidefile: str, kill_at: str) -> None:
    if kill_at == "after-start":
        original = _scheduler.SchedulerActor._started

        def die_after_start(self, message):  # type: ignore[no-untyped-def]
            if message.ok:
                os.kill(os.getpid(), signal.SIGKILL)  # the run's start is committed; its end not seen
            original(self, message)

        _scheduler.SchedulerActor._started = die_after_start  # type: ignore[method-assign]
    async with sagaloop.Engine(datadir, durability="durable") as engine:
        define(engine, sidefile, kill_in_step=kill_at == "in-step")
        at = engine._runtime.clock.now_ms() + 300
        job = await engine.workflows.dispatch(product=PRODUCT, env=ENV, workflow=TAG, schedule={"start_at": at})
        marker(f"DISPATCHED {job.job_id} {job.scheduled_at}")
        await asyncio.sleep(FOREVER)


if __name__ == "__main__":
    mode, datadir, sidefile, kill_at = sys.argv[1:5]
    assert mode == "fire", mode
    asyncio.run(fire(datadir, sidefile, kill_at))
