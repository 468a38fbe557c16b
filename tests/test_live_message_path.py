"""The live message path is exact while the process stays up.

Each test here pins one promise of the actor boundary that broke while the
process stayed up (issue: "the live message path must be exact"): signals
sent back to back, values shared between callers and the instance, an
update during a step, a cancel during ``trigger_rollback``, queries during
a replay, a ``ctx`` kept past its run. Step and compensation handlers
record what really ran, so the checks do not lean on the engine's records.
"""

from __future__ import annotations

import asyncio

import pytest

import sagaloop

P, E = "shop", "test"


def engine_at(path, **kw):
    return sagaloop.Engine(path, durability="fast", **kw)


async def send(engine, wf, name, payload=None):
    await engine.workflows.signal(product=P, env=E, workflow_id=wf, signal=name, payload=payload)


async def result(engine, wf, timeout="5s"):
    return await engine.workflows.result(product=P, env=E, workflow_id=wf, timeout=timeout)


class Gate:
    """A step body that blocks until the test opens it."""

    def __init__(self, value=None) -> None:
        self.entered = asyncio.Event()
        self.open = asyncio.Event()
        self.value = value

    async def __call__(self):
        self.entered.set()
        await self.open.wait()
        return self.value


# -- signals: exactly once, in the order signal() returned ------------------------------------------------

@pytest.mark.parametrize("count", [2, 3, 5])
async def test_signals_sent_back_to_back_wake_every_wait_in_send_order(tmp_path, count):
    async with engine_at(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="waits")
        async def waits(ctx):
            return [(await ctx.wait_for_signal("go"))["n"] for _ in range(count)]

        first = await engine.workflows.execute(product=P, env=E, tag="waits")
        assert first.status == "running"
        for n in range(count):
            await send(engine, first.workflow_id, "go", {"n": n})
        end = await result(engine, first.workflow_id)
        assert (end.status, end.output) == ("completed", list(range(count)))


async def test_signals_sent_back_to_back_beat_a_wait_timeout(tmp_path):
    async with engine_at(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="timed")
        async def timed(ctx):
            a = await ctx.wait_for_signal("go", timeout="2s")
            b = await ctx.wait_for_signal("go", timeout="2s")
            return [a["n"], b["n"]]

        first = await engine.workflows.execute(product=P, env=E, tag="timed")
        await send(engine, first.workflow_id, "go", {"n": 0})
        await send(engine, first.workflow_id, "go", {"n": 1})
        end = await result(engine, first.workflow_id)
        assert (end.status, end.output) == ("completed", [0, 1])


async def test_signals_sent_concurrently_are_consumed_in_the_order_signal_returned(tmp_path):
    returned: list[int] = []
    async with engine_at(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="many")
        async def many(ctx):
            return [(await ctx.wait_for_signal("go"))["n"] for _ in range(8)]

        first = await engine.workflows.execute(product=P, env=E, tag="many")

        async def one(n):
            await send(engine, first.workflow_id, "go", {"n": n})
            returned.append(n)

        await asyncio.gather(*(one(n) for n in range(8)))
        end = await result(engine, first.workflow_id)
        assert end.status == "completed"
        assert end.output == returned


async def test_signals_sent_during_a_step_are_kept_for_the_waits_after_it(tmp_path):
    gate = Gate("done")
    async with engine_at(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="busy")
        async def busy(ctx):
            await ctx.step("work", gate)
            return [(await ctx.wait_for_signal(["a", "b"]))["_signal"] for _ in range(3)]

        first = await engine.workflows.execute(product=P, env=E, tag="busy", wait=False)
        await gate.entered.wait()
        for name in ("b", "a", "b"):
            await send(engine, first.workflow_id, name)
        gate.open.set()
        end = await result(engine, first.workflow_id)
        assert (end.status, end.output) == ("completed", ["b", "a", "b"])
