"""Version 2 of the application, deployed while v1 instances are in flight.

* ``reorder-flow`` swaps steps a and b *without* ``ctx.patched``: an unsafe change.
* ``patch-flow`` adds step x before b behind ``ctx.patched("add-x")``: the safe way.
"""

from __future__ import annotations

from .common import PATCH_TAG, PRODUCT, REORDER_TAG, stepper

VERSION = "v2"


def define(engine, sidefile, blocks: dict | None = None) -> None:
    step = stepper(engine, sidefile, blocks)

    @engine.workflows.define(product=PRODUCT, tag=REORDER_TAG)
    async def reorder_flow(ctx):
        await step(ctx, "b")
        await step(ctx, "a")
        await step(ctx, "c")
        return {"code": VERSION, "steps": list(ctx.completed_steps)}

    @engine.workflows.define(product=PRODUCT, tag=PATCH_TAG)
    async def patch_flow(ctx):
        await step(ctx, "a")
        patched = ctx.patched("add-x")
        if patched:
            await step(ctx, "x")
        await step(ctx, "b")
        await step(ctx, "c")
        return {"code": VERSION, "patched": patched, "steps": list(ctx.completed_steps)}
