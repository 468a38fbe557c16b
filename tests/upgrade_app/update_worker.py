"""A child program for the update tests: apply an update, then get SIGKILLed right after its reply.

    python tests/upgrade_app/update_worker.py <datadir> <callsfile> <workflow_id>

Starts the ``cart`` workflow (it blocks waiting for signal ``checkout``), sends
update ``add_item`` with ``update_id="u-apple"``, prints ``UPDATED <json reply>``
the moment the call returns, and sleeps until the test kills it. The update
handler appends a line to ``callsfile`` (fsynced) each time it runs. The test
imports this module to resume the instance in its own process.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parent.parent
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from upgrade_app.common import FOREVER, ensure_paths, marker, read_side_effects, side_effect  # noqa: E402

ensure_paths()

import sagaloop  # noqa: E402

PRODUCT = "updates"
ENV = "test"
TAG = "cart"


def handler_calls(callsfile) -> list[dict]:
    return [r for r in read_side_effects(callsfile) if r["name"] == "add_item"]


def define(engine: sagaloop.Engine, callsfile) -> None:
    def add_item(ctx, args):
        side_effect(callsfile, "add_item", sku=args["sku"])
        ctx.state["items"].append(args["sku"])
        return {"count": len(ctx.state["items"]), "sku": args["sku"]}

    def check(ctx, args):
        if not args.get("sku"):
            raise ValueError("an item needs a sku")

    def items(ctx):
        return list(ctx.state["items"])

    @engine.workflows.define(product=PRODUCT, tag=TAG, queries={"items": items},
                             updates={"add_item": {"handler": add_item, "validator": check}})
    async def cart(ctx):
        ctx.state.setdefault("items", [])
        await ctx.step("open", lambda: {"opened": True})
        await ctx.wait_for_signal("checkout")
        return await ctx.step("total", lambda: {"items": list(ctx.state["items"])})


async def main(datadir: str, callsfile: str, workflow_id: str) -> None:
    async with sagaloop.Engine(datadir, durability="durable") as engine:
        define(engine, callsfile)
        started = await engine.workflows.execute(product=PRODUCT, env=ENV, tag=TAG, input={},
                                                 workflow_id=workflow_id)
        assert started.status == "running", started
        reply = await engine.workflows.update(product=PRODUCT, env=ENV, workflow_id=workflow_id,
                                              update="add_item", args={"sku": "apple"}, update_id="u-apple")
        marker("UPDATED " + json.dumps(reply))
        await asyncio.sleep(FOREVER)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
