"""Step options: allow_fail, retries + retry_delay, timeout, critical; how they are passed.

Product document sections: Step Options for Failure Handling, Step States (skipped).
"""

from __future__ import annotations

import asyncio
import functools
import time
from datetime import timedelta

import helpers
import pytest
from helpers import Boom, E, P, detail, open_engine

import sagaloop
from sagaloop.testing import VirtualClock

# execute answers "running" while a retry waits (a durable timer); these tests want the end.
execute = functools.partial(helpers.execute, input={}, until_end=True)


def flaky(failures: int, calls: list, value="ok", now=time.monotonic):
    """A step handler that fails its first ``failures`` calls, then returns ``value``; ``calls`` gets ``now()``."""
    async def handler():
        calls.append(now())
        if len(calls) <= failures:
            raise Boom(f"attempt {len(calls)} failed")
        return value
    return handler


def step_call(ctx, tag, handler, rollback, form: str, **options):
    """ctx.step with the options as the seed's 4th-argument dict, or as keywords."""
    if form == "dict":
        return ctx.step(tag, handler, rollback, options)
    return ctx.step(tag, handler, rollback, **options)


FORMS = ["dict", "keywords"]


# -- allow_fail ---------------------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
async def test_allow_fail_skips_the_step_and_the_workflow_completes(tmp_path, form):
    returned = []
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("create-order", lambda: {"id": "o1"})

            async def notify():
                raise Boom("smtp down")

            returned.append(await step_call(ctx, "send-notification", notify, None, form, allow_fail=True))
            await ctx.step("fulfill", lambda: "shipped")
            return "done"

        result = await execute(engine, workflow_id="af-1")
        d = await detail(engine, "af-1", "send-notification")

    assert returned == [None]
    assert result.status == "completed"
    assert result.output == "done"
    assert result.completed_steps == ["create-order", "fulfill"]
    assert result.error is None
    assert d.status == "skipped"
    assert d.output is None
    assert d.error is not None and d.error.message == "smtp down"


async def test_skipped_step_is_not_compensated_on_a_later_failure(tmp_path):
    undone = []
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("a", lambda: "A", lambda out: undone.append(("a", out)))

            def fails():
                raise Boom("optional failed")

            await ctx.step("optional", fails, lambda out: undone.append(("optional", out)), allow_fail=True)
            await ctx.step("c", flaky(99, []))

        result = await execute(engine)
    assert undone == [("a", "A")]
    assert result.rollback_result.rolled_back_steps == ["a"]
    assert result.status == "rolled_back"


async def test_allow_fail_with_retries_retries_first(tmp_path):
    calls: list = []
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            return await ctx.step("s", flaky(99, calls), None, {"allow_fail": True, "retries": 2, "retry_delay": 1})

        result = await execute(engine, workflow_id="afr")
        d = await detail(engine, "afr", "s")
    assert len(calls) == 3
    assert (result.status, result.output) == ("completed", None)
    assert (d.status, d.attempts) == ("skipped", 3)


# -- retries and retry_delay ----------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
async def test_retries_then_success_counts_attempts(tmp_path, form):
    calls: list = []
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            return await step_call(ctx, "external-api-call", flaky(2, calls, {"data": 7}), None, form,
                                   retries=2, retry_delay=5)

        result = await execute(engine, workflow_id="r-1")
        d = await detail(engine, "r-1", "external-api-call")
    assert len(calls) == 3
    assert result.status == "completed"
    assert result.output == {"data": 7}
    assert d.status == "completed"
    assert d.attempts == 3
    assert d.output == {"data": 7}


@pytest.mark.parametrize("retries", [0, 1, 3])
async def test_exhausted_retries_fail_with_retries_plus_one_attempts(tmp_path, retries):
    calls: list = []
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("s", flaky(99, calls), None, {"retries": retries, "retry_delay": 1})
            return "unreachable"

        result = await execute(engine, workflow_id="x")
        d = await detail(engine, "x", "s")
    assert len(calls) == retries + 1
    assert d.attempts == retries + 1
    assert d.status == "failed"
    assert result.status == "failed"
    assert result.failed_step == "s"
    assert result.error.message == f"attempt {retries + 1} failed"  # the last attempt's error
    assert d.error.message == f"attempt {retries + 1} failed"


@pytest.mark.parametrize("delay", [25, 25.0, "25ms", timedelta(milliseconds=25)],
                         ids=["int", "float", "str", "timedelta"])
async def test_retry_delay_is_honoured(tmp_path, delay):
    # The retry wait is a durable timer: on a virtual clock each wait is exactly 25 ms.
    calls: list = []
    clock = VirtualClock(start_ms=1_700_000_000_000)
    async with sagaloop.Engine(tmp_path / "db", durability="fast", clock=clock) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            return await ctx.step("s", flaky(2, calls, now=clock.now_ms), None, {"retries": 3, "retry_delay": delay})

        started = await execute(engine, workflow_id="rd", wait=False)
        await clock.settle()
        assert len(calls) == 1
        for attempt in (1, 2):
            await clock.advance(24)
            assert len(calls) == attempt, f"retried less than 25 ms after attempt {attempt}"
            await clock.advance(1)
            assert len(calls) == attempt + 1, f"no retry 25 ms after attempt {attempt}"
        result = await engine.workflows.result(product=P, env=E, workflow_id=started.workflow_id, timeout="5s")
    assert result.status == "completed"
    assert len(calls) == 3
    assert [b - a for a, b in zip(calls, calls[1:])] == [25, 25]


async def test_retry_delay_zero_retries_immediately(tmp_path):
    calls: list = []
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            return await ctx.step("s", flaky(3, calls), retries=3, retry_delay=0)

        result = await execute(engine)
    assert result.status == "completed"
    assert len(calls) == 4


# -- timeout --------------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [40, "40ms", timedelta(milliseconds=40)], ids=["int", "str", "timedelta"])
async def test_step_timeout_fails_with_step_timeout_code(tmp_path, timeout):
    undone = []
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("before", lambda: "B", lambda out: undone.append(out))

            async def slow():
                await asyncio.sleep(5)

            await ctx.step("slow-operation", slow, None, {"timeout": timeout})
            return "unreachable"

        started = time.monotonic()
        result = await execute(engine, workflow_id="t-1")
        elapsed = time.monotonic() - started
        d = await detail(engine, "t-1", "slow-operation")
    assert elapsed < 2.0
    assert result.failed_step == "slow-operation"
    assert result.error.code == "step_timeout"
    assert result.error.step == "slow-operation"
    assert result.status == "rolled_back"
    assert undone == ["B"]
    assert d.status == "failed"
    assert d.error.code == "step_timeout"


async def test_step_within_timeout_completes(tmp_path):
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            async def quick():
                await asyncio.sleep(0.005)
                return "fast"

            return await ctx.step("quick", quick, timeout="2s")

        result = await execute(engine)
    assert (result.status, result.output) == ("completed", "fast")


async def test_timeout_applies_per_attempt_with_retries(tmp_path):
    calls: list = []
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            async def slow_then_fast():
                calls.append(1)
                if len(calls) == 1:
                    await asyncio.sleep(5)
                return "second try"

            return await ctx.step("s", slow_then_fast, None, {"timeout": 30, "retries": 1, "retry_delay": 1})

        result = await execute(engine, workflow_id="tr")
        d = await detail(engine, "tr", "s")
    assert (result.status, result.output) == ("completed", "second try")
    assert d.attempts == 2


# -- critical ------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
async def test_critical_option_forms(tmp_path, form):
    undone = []
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf", options={"rollback_strategy": "critical_only"})
        async def wf(ctx):
            await step_call(ctx, "payment", lambda: {"id": "ch"}, lambda out: undone.append(("payment", out)),
                            form, critical=True)
            await step_call(ctx, "analytics", lambda: 1, lambda out: undone.append(("analytics", out)),
                            form, critical=False)
            await ctx.step("inventory", flaky(99, []))

        result = await execute(engine)
    assert undone == [("payment", {"id": "ch"})]
    assert result.rollback_result.rolled_back_steps == ["payment"]


# -- how options are passed -----------------------------------------------------------------------


async def test_dict_and_keyword_options_merge(tmp_path):
    calls: list = []
    clock = VirtualClock(start_ms=1_700_000_000_000)
    async with sagaloop.Engine(tmp_path / "db", durability="fast", clock=clock) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            return await ctx.step("s", flaky(2, calls, now=clock.now_ms), None, {"retries": 2}, retry_delay=1)

        await execute(engine, workflow_id="m", wait=False)
        await clock.advance(2)  # two waits of the keyword retry_delay (1 ms), not of the 1000 ms default
        result = await engine.workflows.result(product=P, env=E, workflow_id="m", timeout="5s")
        d = await detail(engine, "m", "s")
    assert (result.status, d.attempts) == ("completed", 3)
    assert [b - a for a, b in zip(calls, calls[1:])] == [1, 1]


@pytest.mark.parametrize("form", FORMS)
async def test_unknown_option_fails_the_workflow_naming_it(tmp_path, form):
    calls = []
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await step_call(ctx, "s", lambda: calls.append(1), None, form, retires=2)
            return "unreachable"

        result = await execute(engine)
    assert calls == []
    assert result.status == "failed"
    assert result.error.code == "invalid_argument"
    assert "retires" in result.error.message


@pytest.mark.parametrize("options", [{"retries": -1}, {"retries": "3"}, {"timeout": "soon"},
                                     {"retry_delay": "fast"}])
async def test_bad_option_value_fails_the_workflow(tmp_path, options):
    calls = []
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            await ctx.step("s", lambda: calls.append(1), None, options)

        result = await execute(engine)
    assert calls == []
    assert result.status == "failed"
    assert result.error.code in ("invalid_argument", "invalid_duration")


# -- sync handlers ------------------------------------------------------------------------------


async def test_sync_step_handlers_and_rollbacks(tmp_path):
    undone = []
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="ok")
        async def ok(ctx):
            def add():
                return ctx.input.get("x", 1) + 1

            a = await ctx.step("add", add)
            b = await ctx.step("double", lambda: a * 2)
            return [a, b]

        @engine.workflows.define(product=P, tag="bad")
        async def bad(ctx):
            def reserve():
                return {"r": 5}

            def release(out):
                undone.append(out)

            def explode():
                raise Boom("sync failure")

            await ctx.step("reserve", reserve, release)
            await ctx.step("explode", explode)

        good = await execute(engine, "ok")
        failed = await execute(engine, "bad")
    assert (good.status, good.output, good.completed_steps) == ("completed", [2, 4], ["add", "double"])
    assert failed.status == "rolled_back"
    assert failed.error.message == "sync failure"
    assert undone == [{"r": 5}]
