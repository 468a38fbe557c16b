"""Version 1 of the application: both workflows run steps a, b, c in that order."""

from __future__ import annotations

from .common import PATCH_TAG, PRODUCT, REORDER_TAG, stepper

VERSION = "v1"


def define(engine, sidefile, blocks: dict | None = None) -> None:
    step = stepper(engine, sidefile, blocks)

    @engine.workflows.define(product=PRODUCT, tag=REORDER_TAG)
    async def reorder_flow(ctx):
        await step(ctx, "a")
        await step(ctx, "b")
        await step(ctx, "c")
        return {"code": VERSION, "steps": list(ctx.completed_steps)}

    @engine.workflows.define(product=PRODUCT, tag=PATCH_TAG)
    async def patch_flow(ctx):
        await step(ctx, "a")
        await step(ctx, "b")
        await step(ctx, "c")
        return {"code": VERSION, "patched": None, "steps": list(ctx.completed_steps)}
