"""A child program for the message property test: workflows driven by commands on stdin.

    python tests/message_worker.py <datadir>

Opens the engine on ``datadir`` (in-flight runs resume), then reads one command
per line and answers ``OK <json>`` once the engine has acknowledged it (or
``ERR <text>``):

* ``start <workflow_id> <tag> <signals>`` — ``solo`` consumes ``signals`` signals;
  ``parent`` runs a child ``<workflow_id>-kid`` that consumes them, then ends.
* ``signal <workflow_id> <i>`` — ``signal(..., "m", {"i": i})``.
* ``update <workflow_id> <k>`` — update ``add`` appending ``k`` to ``ctx.state["updates"]``.
* ``query <workflow_id>`` — the ``seen`` query: ``{"signals": [...], "updates": [...]}``.
* ``result <workflow_id>`` — waits (bounded) for the end: ``{"status", "output"}``.
"""

from __future__ import annotations

import asyncio
import json
import sys

from worker_common import marker  # puts the checkout on sys.path

import sagaloop

P, E = "messages", "test"


def define(engine: sagaloop.Engine) -> None:
    def add(ctx: sagaloop.WorkflowContext, args: dict) -> list:
        ctx.state.setdefault("updates", []).append(args["k"])
        return list(ctx.state["updates"])

    def seen(ctx: sagaloop.WorkflowContext) -> dict:
        return {"signals": ctx.state.get("signals", []), "updates": ctx.state.get("updates", [])}

    async def consume(ctx: sagaloop.WorkflowContext) -> dict:
        ctx.state["signals"] = []
        for n in range(ctx.input["signals"]):
            got = await ctx.wait_for_signal("m")
            ctx.state["signals"].append(got["i"])
            await ctx.step(f"after-{n}", lambda: None)  # busy between two waits
        return {"signals": ctx.state["signals"], "updates": ctx.state.get("updates", [])}

    async def parent(ctx: sagaloop.WorkflowContext) -> dict:
        return await ctx.workflow(f"{ctx.workflow_id}-kid", "solo", {"signals": ctx.input["signals"]})

    engine.workflows.define(product=P, tag="solo", handler=consume, queries={"seen": {"handler": seen}},
                            updates={"add": {"handler": add}})
    engine.workflows.define(product=P, tag="parent", handler=parent)


async def until_found(wf: sagaloop.Workflows, workflow_id: str) -> None:
    async with asyncio.timeout(10):
        while True:
            try:
                await wf.status(product=P, env=E, workflow_id=workflow_id)
                return
            except sagaloop.WorkflowNotFoundError:
                await asyncio.sleep(0.005)


async def serve(datadir: str) -> None:
    async with sagaloop.Engine(datadir, durability="fast") as engine:
        define(engine)
        wf = engine.workflows
        marker("READY")
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            cmd, *args = line.split()
            try:
                if cmd == "start":
                    await wf.execute(product=P, env=E, tag=args[1], workflow_id=args[0],
                                     input={"signals": int(args[2])}, wait=False)
                    if args[1] == "parent":  # acknowledged once its child exists, to take messages
                        await until_found(wf, f"{args[0]}-kid")
                    answer: object = None
                elif cmd == "signal":
                    await wf.signal(product=P, env=E, workflow_id=args[0], signal="m", payload={"i": int(args[1])})
                    answer = None
                elif cmd == "update":
                    answer = await wf.update(product=P, env=E, workflow_id=args[0], update="add",
                                             args={"k": int(args[1])}, update_id=f"{args[0]}:{args[1]}")
                elif cmd == "query":
                    answer = await wf.query(product=P, env=E, workflow_id=args[0], query="seen")
                elif cmd == "result":
                    end = await wf.result(product=P, env=E, workflow_id=args[0], timeout="15s")
                    answer = {"status": end.status, "output": end.output}
                else:
                    raise ValueError(f"unknown command {cmd!r}")
            except Exception as exc:  # noqa: BLE001 - reported to the driver
                print(f"ERR {type(exc).__name__}: {exc}", flush=True)
            else:
                print(f"OK {json.dumps(answer)}", flush=True)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
