"""Version 2 of the application, deployed while v1 instances are in flight.

* ``reorder-flow`` swaps steps a and b *without* ``ctx.patched``: an unsafe change.
* ``patch-flow`` adds step x before b behind ``ctx.patched("add-x")``: the safe way.
"""

from __future__ import annotations

from .common import PRODUCT, make_step, make_undo

VERSION = "v2"
REORDER_TAG = "reorder-flow"
PATCH_TAG = "patch-flow"


def define(engine, sidefile, blocks: dict | None = None) -> None:
    blocks = blocks or {}

    @engine.workflows.define(product=PRODUCT, tag=REORDER_TAG)
    async def reorder_flow(ctx):
        await ctx.step("b", make_step(ctx, sidefile, "b", blocks), make_undo(ctx, sidefile, "b"))
        await ctx.step("a", make_step(ctx, sidefile, "a", blocks), make_undo(ctx, sidefile, "a"))
        await ctx.step("c", make_step(ctx, sidefile, "c", blocks), make_undo(ctx, sidefile, "c"))
        return {"code": VERSION, "steps": list(ctx.completed_steps)}

    @engine.workflows.define(product=PRODUCT, tag=PATCH_TAG)
    async def patch_flow(ctx):
        await ctx.step("a", make_step(ctx, sidefile, "a", blocks), make_undo(ctx, sidefile, "a"))
        patched = ctx.patched("add-x")
        if patched:
            await ctx.step("x", make_step(ctx, sidefile, "x", blocks), make_undo(ctx, sidefile, "x"))
        await ctx.step("b", make_step(ctx, sidefile, "b", blocks), make_undo(ctx, sidefile, "b"))
        await ctx.step("c", make_step(ctx, sidefile, "c", blocks), make_undo(ctx, sidefile, "c"))
        return {"code": VERSION, "patched": patched, "steps": list(ctx.completed_steps)}
