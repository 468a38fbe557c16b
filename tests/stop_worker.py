"""A child program for the stop tests: a step asks the process to stop (KeyboardInterrupt / SystemExit).

    python tests/stop_worker.py <mode> <datadir> <sidefile> --exc keyboard|sysexit --where step|workflow

Mode ``start`` starts workflow ``stop-1`` (steps ``before`` then ``explode``);
the first time ``explode`` (or the handler itself, ``--where workflow``) runs,
it raises the exception, which must stop the process cleanly with the run
left in flight. Mode ``resume`` opens the directory again, defines the
workflow (which resumes the run) and prints ``RESULT <status> <output>``.
Every handler appends to ``sidefile`` first (``worker_common.side_effect``).
"""

from __future__ import annotations

import argparse
import asyncio

from worker_common import marker, side_effect, side_names  # puts the checkout on sys.path

import sagaloop

PRODUCT, ENV, TAG, WORKFLOW_ID = "stopper", "test", "stopper", "stop-1"


def define(engine: sagaloop.Engine, sidefile: str, exc: str, where: str) -> None:
    def stop() -> BaseException:
        return KeyboardInterrupt() if exc == "keyboard" else SystemExit(3)

    @engine.workflows.define(product=PRODUCT, tag=TAG)
    async def stopper(ctx: sagaloop.WorkflowContext) -> str:
        async def before() -> str:
            side_effect(sidefile, "before")
            return "kept"

        async def explode() -> str:
            side_effect(sidefile, "explode")
            if where == "step" and side_names(sidefile).count("explode") == 1:
                raise stop()
            return "ok"

        await ctx.step("before", before)
        if where == "workflow":
            side_effect(sidefile, "handler")
            if side_names(sidefile).count("handler") == 1:
                raise stop()
        return await ctx.step("explode", explode)


async def start(args: argparse.Namespace) -> None:
    async with sagaloop.Engine(args.datadir) as engine:
        define(engine, args.sidefile, args.exc, args.where)
        await engine.workflows.execute(product=PRODUCT, env=ENV, tag=TAG, workflow_id=WORKFLOW_ID, wait=False)
        marker("STARTED")
        await asyncio.sleep(30)  # the step stops the process long before
        marker("STILL-RUNNING")


async def resume(args: argparse.Namespace) -> None:
    async with sagaloop.Engine(args.datadir) as engine:
        define(engine, args.sidefile, args.exc, args.where)
        result = await engine.workflows.result(product=PRODUCT, env=ENV, workflow_id=WORKFLOW_ID, timeout="20s")
        marker(f"RESULT {result.status} {result.output}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["start", "resume"])
    parser.add_argument("datadir")
    parser.add_argument("sidefile")
    parser.add_argument("--exc", choices=["keyboard", "sysexit"], required=True)
    parser.add_argument("--where", choices=["step", "workflow"], required=True)
    args = parser.parse_args()
    asyncio.run(start(args) if args.mode == "start" else resume(args))


if __name__ == "__main__":
    main()
