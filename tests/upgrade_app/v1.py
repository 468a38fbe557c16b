"""Version 1 of the application: both workflows run steps a, b, c in that order."""

from __future__ import annotations

from .common import PRODUCT, make_step, make_undo

VERSION = "v1"
REORDER_TAG = "reorder-flow"
PATCH_TAG = "patch-flow"


def define(engine, sidefile, blocks: dict | None = None) -> None:
    blocks = blocks or {}

    @engine.workflows.define(product=PRODUCT, tag=REORDER_TAG)
    async def reorder_flow(ctx):
        await ctx.step("a", make_step(ctx, sidefile, "a", blocks), make_undo(ctx, sidefile, "a"))
        await ctx.step("b", make_step(ctx, sidefile, "b", blocks), make_undo(ctx, sidefile, "b"))
        await ctx.step("c", make_step(ctx, sidefile, "c", blocks), make_undo(ctx, sidefile, "c"))
        return {"code": VERSION, "steps": list(ctx.completed_steps)}

    @engine.workflows.define(product=PRODUCT, tag=PATCH_TAG)
    async def patch_flow(ctx):
        await ctx.step("a", make_step(ctx, sidefile, "a", blocks), make_undo(ctx, sidefile, "a"))
        await ctx.step("b", make_step(ctx, sidefile, "b", blocks), make_undo(ctx, sidefile, "b"))
        await ctx.step("c", make_step(ctx, sidefile, "c", blocks), make_undo(ctx, sidefile, "c"))
        return {"code": VERSION, "patched": None, "steps": list(ctx.completed_steps)}
