"""A child program for the crash tests: run a workflow, get killed, resume it.

    python tests/crash_worker.py <mode> <datadir> <sidefile> [--durability D]
                                 [--workflow-id ID] [--idempotency-key KEY]

Modes:

* ``steps``    — start the four-step saga and block inside ``step-3``
  (prints ``IN-STEP-3`` once the step is running, then sleeps for an hour).
* ``rollback`` — start the compensation saga: ``ship`` fails, the first
  compensation (``undo-charge``) completes, the second (``undo-reserve``)
  prints ``IN-UNDO-RESERVE`` and sleeps for an hour.
* ``resume``   — open the same directory, define the same workflows (which is
  what starts recovery), wait for ``--workflow-id`` to end and print
  ``RESULT <json>`` with the result, the history's event types and step details.

Every step and compensation handler appends one line ``<name> <pid> [<data>]``
to ``sidefile`` and fsyncs it before doing anything else: that file is the
ground truth of which handlers actually ran, whatever the engine recorded.

The module is also imported by the tests, which resume in their own process
with ``define_workflows(engine, block=None)``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import uuid

from worker_common import FOREVER, block_here, marker, side_effect  # tests/, the script's directory; puts the root on sys.path
from worker_common import wait_until_ended as _wait_until_ended

import sagaloop  # after worker_common, which makes it importable from a fresh checkout

PRODUCT = "crash"
ENV = "test"
STEPS_TAG = "four-steps"
ROLLBACK_TAG = "compensate"

wait_until_ended = functools.partial(_wait_until_ended, product=PRODUCT, env=ENV)  # (engine, workflow_id)


def define_workflows(engine: sagaloop.Engine, sidefile: str | os.PathLike[str], *, block: str | None = None) -> None:
    """Define both workflows on ``engine``; ``block`` names the handler that hangs ("step-3" or "undo-reserve")."""

    @engine.workflows.define(product=PRODUCT, tag=STEPS_TAG)
    async def four_steps(ctx: sagaloop.WorkflowContext) -> dict:
        async def step1() -> dict:
            token = uuid.uuid4().hex
            side_effect(sidefile, "step-1", token)
            return {"token": token, "pid": os.getpid()}

        async def step2() -> dict:
            side_effect(sidefile, "step-2")
            return {"pid": os.getpid()}

        async def step3() -> dict:
            side_effect(sidefile, "step-3", ctx.steps["step-1"]["token"])
            if block == "step-3":
                await block_here(engine, "IN-STEP-3")  # once "step-3 is running" is committed
            return {"pid": os.getpid(), "token_seen": ctx.steps["step-1"]["token"]}

        async def step4() -> dict:
            token = ctx.steps["step-1"]["token"]
            side_effect(sidefile, "step-4", token)
            return {"pid": os.getpid(), "token": token}

        s1 = await ctx.step("step-1", step1)
        await ctx.step("step-2", step2)
        s3 = await ctx.step("step-3", step3)
        s4 = await ctx.step("step-4", step4)
        return {"token": s1["token"], "step1_pid": s1["pid"], "step3": s3, "step4": s4}

    @engine.workflows.define(product=PRODUCT, tag=ROLLBACK_TAG)
    async def compensate(ctx: sagaloop.WorkflowContext) -> dict:
        async def reserve() -> dict:
            side_effect(sidefile, "do-reserve")
            return {"reservation": "rs-1"}

        async def release(result: dict) -> None:
            side_effect(sidefile, "undo-reserve", json.dumps(result))
            if block == "undo-reserve":
                await block_here(engine, "IN-UNDO-RESERVE")  # once undo-charge's end is committed

        async def charge() -> dict:
            side_effect(sidefile, "do-charge")
            return {"charge": "ch-1"}

        async def refund(result: dict) -> None:
            side_effect(sidefile, "undo-charge", json.dumps(result))

        async def ship() -> dict:
            side_effect(sidefile, "do-ship")
            raise RuntimeError("the truck broke down")

        await ctx.step("reserve", reserve, release)
        await ctx.step("charge", charge, refund)
        await ctx.step("ship", ship)
        return {"unreachable": True}


async def start(args: argparse.Namespace, tag: str, block: str) -> None:
    async with sagaloop.Engine(args.datadir, durability=args.durability) as engine:
        define_workflows(engine, args.sidefile, block=block)
        result = await engine.workflows.execute(product=PRODUCT, env=ENV, tag=tag, input={"n": 1},
                                                workflow_id=args.workflow_id,
                                                idempotency_key=args.idempotency_key, wait=False)
        marker(f"STARTED {result.workflow_id}")
        await asyncio.sleep(FOREVER)  # the parent kills us long before


async def resume(args: argparse.Namespace) -> None:
    async with sagaloop.Engine(args.datadir, durability=args.durability) as engine:
        marker("OPENED")
        define_workflows(engine, args.sidefile, block=None)
        result = await wait_until_ended(engine, args.workflow_id)
        history = await engine.workflows.history(product=PRODUCT, env=ENV, workflow_id=args.workflow_id)
        details = {}
        for tag in result.completed_steps:
            d = await engine.workflows.step_detail(product=PRODUCT, env=ENV, workflow_id=args.workflow_id,
                                                   step_tag=tag)
            details[tag] = d.to_dict()
        report = {"result": result.to_dict(), "events": [e.type for e in history.events],
                  "details": details, "pid": os.getpid()}
        marker("RESULT " + json.dumps(report))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["steps", "rollback", "resume"])
    parser.add_argument("datadir")
    parser.add_argument("sidefile")
    parser.add_argument("--durability", default="durable", choices=["durable", "fast"])
    parser.add_argument("--workflow-id", default=None)
    parser.add_argument("--idempotency-key", default=None)
    args = parser.parse_args(argv)
    if args.mode == "steps":
        asyncio.run(start(args, STEPS_TAG, "step-3"))
    elif args.mode == "rollback":
        asyncio.run(start(args, ROLLBACK_TAG, "undo-reserve"))
    else:
        if args.workflow_id is None:
            parser.error("resume needs --workflow-id")
        asyncio.run(resume(args))


if __name__ == "__main__":
    main()
