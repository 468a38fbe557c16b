"""A child program for the child-workflow crash tests: run a parent saga with a child, get killed.

    python tests/children_worker.py <mode> <datadir> <sidefile> [--durability D] --workflow-id ID

The parent workflow (``parent-saga``) runs step ``p1``, then the child
workflow ``<ID>-kid`` (tag ``child-saga``: steps ``c1`` and ``c2``), then
step ``p2``. Modes:

* ``child-done``    — block inside the parent's ``p2``, after the child has
  completed (prints ``IN-P2`` once the step is running, then sleeps an hour).
* ``child-running`` — block inside the child's ``c2``, while the parent waits
  for the child (prints ``IN-C2``, then sleeps an hour).
* ``cancel-in-child-rollback`` — the parent ``closing-parent`` waits for its
  child ``<ID>-kid`` (``closing-child``, policy ``terminate``), which waits for a
  signal after its step ``k1``; the worker cancels the parent, and the child's
  compensation of ``k1`` blocks (prints ``IN-UNDO-K1``, then sleeps an hour).
* ``request-cancel`` — the same parent with policy ``request_cancel`` and a
  child (``polite-child``) that sleeps in short turns until
  ``ctx.cancel_requested``; the worker cancels the parent and prints
  ``PARENT-ENDED`` once the parent's end is durable.

Every step handler appends one line ``<name> <pid> [<data>]`` to ``sidefile``
and fsyncs it before doing anything else: that file is the ground truth of
which handlers actually ran, whatever the engine recorded.

The module is also imported by the tests, which resume in their own process
with ``define_workflows(engine, sidefile, block=None)``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import uuid

from worker_common import FOREVER, block_here, marker, side_effect  # tests/, the script's directory; puts the root on sys.path
from worker_common import wait_until_ended as _wait_until_ended

import sagaloop  # after worker_common, which makes it importable from a fresh checkout

PRODUCT = "kids-crash"
ENV = "test"
PARENT_TAG = "parent-saga"
CHILD_TAG = "child-saga"

wait_until_ended = functools.partial(_wait_until_ended, product=PRODUCT, env=ENV)  # (engine, workflow_id)


def kid_id(parent_id: str) -> str:
    return f"{parent_id}-kid"


def define_workflows(engine: sagaloop.Engine, sidefile: str | os.PathLike[str], *, block: str | None = None,
                     order: str = "parent-first") -> None:
    """Define both workflows; ``block`` names the step that hangs ("p2" or "c2").

    ``order`` is the order of the definitions ("parent-first" or "child-first"):
    each definition starts the recovery of its in-flight instances.
    """

    async def parent_saga(ctx: sagaloop.WorkflowContext) -> dict:
        async def p1() -> dict:
            side_effect(sidefile, "p1")
            return {"pid": os.getpid()}

        async def p2() -> dict:
            side_effect(sidefile, "p2")
            if block == "p2":
                await block_here(engine, "IN-P2")  # once "p2 is running" is committed
            return {"pid": os.getpid()}

        first = await ctx.step("p1", p1)
        kid = await ctx.workflow(kid_id(ctx.workflow_id), CHILD_TAG, {"n": ctx.input["n"]})
        second = await ctx.step("p2", p2)
        return {"p1": first, "kid": kid, "p2": second}

    async def child_saga(ctx: sagaloop.WorkflowContext) -> dict:
        async def c1() -> dict:
            token = uuid.uuid4().hex
            side_effect(sidefile, "c1", token)
            return {"token": token, "pid": os.getpid()}

        async def c2() -> dict:
            side_effect(sidefile, "c2", ctx.steps["c1"]["token"])
            if block == "c2":
                await block_here(engine, "IN-C2")
            return {"pid": os.getpid()}

        one = await ctx.step("c1", c1)
        two = await ctx.step("c2", c2)
        return {"token": one["token"], "c1_pid": one["pid"], "c2_pid": two["pid"], "n": ctx.input["n"]}

    async def closing_parent(ctx: sagaloop.WorkflowContext) -> dict:
        policy = ctx.input["policy"]
        tag = "closing-child" if policy == "terminate" else "polite-child"
        await ctx.step("p1", lambda: side_effect(sidefile, "p1"), lambda _: side_effect(sidefile, "undo-p1"))
        return await ctx.workflow(kid_id(ctx.workflow_id), tag, {}, parent_close_policy=policy)

    async def closing_child(ctx: sagaloop.WorkflowContext) -> str:
        async def undo_k1(_output: object) -> None:
            side_effect(sidefile, "undo-k1")
            if block == "undo-k1":
                await block_here(engine, "IN-UNDO-K1")
            await asyncio.sleep(0.2)  # takes a while: a parent that does not wait for it is seen
            side_effect(sidefile, "undo-k1-done")

        await ctx.step("k1", lambda: side_effect(sidefile, "k1"), undo_k1)
        await ctx.wait_for_signal("never")
        return "done"

    async def polite_child(ctx: sagaloop.WorkflowContext) -> str:
        for _ in range(100_000):
            if ctx.cancel_requested:
                return "stopped on request"
            await ctx.sleep(20)
        return "ran out"

    defs = [(PARENT_TAG, parent_saga), (CHILD_TAG, child_saga), ("closing-parent", closing_parent),
            ("closing-child", closing_child), ("polite-child", polite_child)]
    if order == "child-first":
        defs.reverse()
    for tag, handler in defs:
        engine.workflows.define(product=PRODUCT, tag=tag, handler=handler)


async def start(args: argparse.Namespace, block: str) -> None:
    async with sagaloop.Engine(args.datadir, durability=args.durability) as engine:
        define_workflows(engine, args.sidefile, block=block)
        result = await engine.workflows.execute(product=PRODUCT, env=ENV, tag=PARENT_TAG, input={"n": 7},
                                                workflow_id=args.workflow_id, wait=False)
        marker(f"STARTED {result.workflow_id}")
        await asyncio.sleep(FOREVER)  # the test kills us long before


async def close_parent(args: argparse.Namespace, policy: str) -> None:
    async with sagaloop.Engine(args.datadir, durability=args.durability) as engine:
        define_workflows(engine, args.sidefile, block="undo-k1")
        wf, kid = args.workflow_id, kid_id(args.workflow_id)
        await engine.workflows.execute(product=PRODUCT, env=ENV, tag="closing-parent", workflow_id=wf,
                                       input={"policy": policy}, wait=False)
        marker(f"STARTED {wf}")
        while True:  # until the child runs
            try:
                status = await engine.workflows.status(product=PRODUCT, env=ENV, workflow_id=kid)
                if status.completed_steps or status.waiting_for:
                    break
            except sagaloop.WorkflowNotFoundError:
                pass
            await asyncio.sleep(0.01)
        await engine.workflows.cancel(product=PRODUCT, env=ENV, workflow_id=wf, reason="operator")
        marker("PARENT-ENDED")
        await asyncio.sleep(FOREVER)  # the test kills us long before


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["child-done", "child-running", "cancel-in-child-rollback", "request-cancel"])
    parser.add_argument("datadir")
    parser.add_argument("sidefile")
    parser.add_argument("--durability", default="durable", choices=["durable", "fast"])
    parser.add_argument("--workflow-id", required=True)
    args = parser.parse_args(argv)
    if args.mode == "cancel-in-child-rollback":
        asyncio.run(close_parent(args, "terminate"))
    elif args.mode == "request-cancel":
        asyncio.run(close_parent(args, "request_cancel"))
    else:
        asyncio.run(start(args, "p2" if args.mode == "child-done" else "c2"))


if __name__ == "__main__":
    main()
