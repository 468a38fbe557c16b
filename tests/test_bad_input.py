"""Bad input gets a clear ``SagaloopError`` subclass, and loses nothing.

Every test runs a healthy *bystander* workflow on the same engine: one
instance completed before the bad call and one blocked in the middle of a
step while it happens. After the bad call the blocked one is released and
must complete, and the completed one's result, history and step outputs
must be exactly what they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

import sagaloop

P, E = "shop", "prd"
BYSTANDER_TAG = "bystander"
DONE_ID, LIVE_ID = "bystander-done", "bystander-live"


async def eventually(predicate, what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


class Bystander:
    """A healthy workflow with one completed and one blocked instance, checked after the bad call."""

    def __init__(self, engine: sagaloop.Engine) -> None:
        self.engine = engine
        self.gate = asyncio.Event()
        self.ran: Counter = Counter()  # (workflow_id, step) -> handler runs

    def define(self, engine: sagaloop.Engine) -> None:
        ran, gate = self.ran, self.gate

        async def bystander(ctx: sagaloop.WorkflowContext) -> dict:
            async def first() -> dict:
                ran[ctx.workflow_id, "first"] += 1
                return {"n": ctx.input["n"], "when": "first"}

            async def second() -> dict:
                ran[ctx.workflow_id, "second"] += 1
                if ctx.input.get("block"):
                    await gate.wait()
                return {"n": ctx.input["n"] * 2}

            a = await ctx.step("first", first)
            b = await ctx.step("second", second)
            return {"sum": a["n"] + b["n"]}

        engine.workflows.define(product=P, tag=BYSTANDER_TAG, handler=bystander)

    async def start(self) -> None:
        wf = self.engine.workflows
        self.define(self.engine)
        self.done = await wf.execute(product=P, env=E, tag=BYSTANDER_TAG, input={"n": 1}, workflow_id=DONE_ID)
        assert self.done.status == "completed" and self.done.output == {"sum": 3}
        self.done_history = await self._history(DONE_ID)
        self.done_first = await wf.step_detail(product=P, env=E, workflow_id=DONE_ID, step_tag="first")
        started = await wf.execute(product=P, env=E, tag=BYSTANDER_TAG, input={"n": 5, "block": True},
                                   workflow_id=LIVE_ID, wait=False)
        assert started.workflow_id == LIVE_ID and started.status == "running"
        await eventually(lambda: self.ran[LIVE_ID, "second"] == 1, "the live bystander to block in 'second'")

    async def _history(self, workflow_id: str) -> list[tuple[str, dict]]:
        h = await self.engine.workflows.history(product=P, env=E, workflow_id=workflow_id)
        return [(e.type, e.data) for e in h.events]

    async def check(self, *, live_reruns: int = 0) -> None:
        """The live one still runs, then completes once released; the completed one is unchanged."""
        wf = self.engine.workflows
        if not self.gate.is_set():
            status = await wf.status(product=P, env=E, workflow_id=LIVE_ID)
            assert status.status == "running", status
            assert status.completed_steps == ["first"]
            self.gate.set()
        live = await wf.result(product=P, env=E, workflow_id=LIVE_ID, timeout="10s")
        assert live.workflow_id == LIVE_ID
        assert live.status == "completed", live
        assert live.output == {"sum": 15}
        assert live.completed_steps == ["first", "second"]
        live_history = [t for t, _ in await self._history(LIVE_ID)]
        assert live_history.count("workflow_started") == 1 and live_history[-1] == "workflow_completed"

        done = await wf.result(product=P, env=E, workflow_id=DONE_ID)
        assert done == self.done
        assert await self._history(DONE_ID) == self.done_history
        assert await wf.step_detail(product=P, env=E, workflow_id=DONE_ID, step_tag="first") == self.done_first

        assert self.ran[DONE_ID, "first"] == 1 and self.ran[DONE_ID, "second"] == 1
        assert self.ran[LIVE_ID, "first"] == 1  # recorded before; never re-run
        assert self.ran[LIVE_ID, "second"] == 1 + live_reruns
        listed = {s.workflow_id: s.status for s in await wf.list(product=P, env=E, tag=BYSTANDER_TAG)}
        assert listed == {DONE_ID: "completed", LIVE_ID: "completed"}


@contextlib.asynccontextmanager
async def engine_with_bystander(tmp_path: Path):
    async with sagaloop.Engine(tmp_path / "data") as engine:
        bystander = Bystander(engine)
        await bystander.start()
        yield engine, bystander
        await bystander.check()


async def ids(engine: sagaloop.Engine) -> set[str]:
    return {s.workflow_id for s in await engine.workflows.list(product=P, env=E)}


def define_simple(engine: sagaloop.Engine, tag: str, counter: Counter, **kw) -> None:
    async def simple(ctx: sagaloop.WorkflowContext) -> dict:
        async def only() -> dict:
            counter[ctx.workflow_id] += 1
            return {"input": ctx.input}

        return await ctx.step("only", only)

    engine.workflows.define(product=P, tag=tag, handler=simple, **kw)


# -- unknown definitions ----------------------------------------------------------------------------


@pytest.mark.parametrize("product, tag, named", [
    (P, "no-such-tag", "no-such-tag"),
    ("no-such-product", BYSTANDER_TAG, "no-such-product"),
])
async def test_unknown_product_or_tag(tmp_path, product, tag, named):
    async with engine_with_bystander(tmp_path) as (engine, _):
        before = await ids(engine)
        with pytest.raises(sagaloop.DefinitionNotFoundError) as info:
            await engine.workflows.execute(product=product, env=E, tag=tag, input={}, workflow_id="ghost")
        err = info.value
        assert isinstance(err, sagaloop.UsageError) and isinstance(err, sagaloop.SagaloopError)
        assert err.code == "definition_not_found"
        assert named in str(err)
        assert await ids(engine) == before
        with pytest.raises(sagaloop.WorkflowNotFoundError):
            await engine.workflows.status(product=P, env=E, workflow_id="ghost")


# -- durations ----------------------------------------------------------------------------------------

BAD_DURATIONS = ["soon", "5 minutes", "-5s", "1w", "", -1, True, [1], math.nan, math.inf, object()]


def assert_names_duration(err: BaseException, value) -> None:
    assert isinstance(err, sagaloop.InvalidDurationError), repr(err)
    assert isinstance(err, ValueError) and isinstance(err, sagaloop.InvalidArgumentError)
    assert err.code == "invalid_duration"
    assert repr(value) in str(err), f"{str(err)!r} does not name {value!r}"


def duration_id(value) -> str:
    return repr(value) if type(value) is not object else "object()"


@pytest.mark.parametrize("value", BAD_DURATIONS, ids=duration_id)
async def test_bad_execute_timeout(tmp_path, value):
    ran: Counter = Counter()
    async with engine_with_bystander(tmp_path) as (engine, _):
        define_simple(engine, "simple", ran)
        before = await ids(engine)
        with pytest.raises(sagaloop.InvalidDurationError) as info:
            await engine.workflows.execute(product=P, env=E, tag="simple", input={}, workflow_id="timed",
                                           idempotency_key="k-timed", timeout=value)
        assert_names_duration(info.value, value)
        assert await ids(engine) == before
        assert not ran
        with pytest.raises(ValueError) as info:
            sagaloop.parse_duration(value)
        assert_names_duration(info.value, value)
        # The id and the idempotency key were not taken by the refused call.
        ok = await engine.workflows.execute(product=P, env=E, tag="simple", input={"x": 1}, workflow_id="timed",
                                            idempotency_key="k-timed", timeout="30s")
        assert ok.status == "completed" and ok.output == {"input": {"x": 1}}
        assert ran == Counter({"timed": 1})


@pytest.mark.parametrize("target", [LIVE_ID, DONE_ID])
@pytest.mark.parametrize("value", ["soon", -1, [1]], ids=repr)
async def test_bad_result_timeout(tmp_path, value, target):
    """Refused whether the run is still live or has already ended."""
    async with engine_with_bystander(tmp_path) as (engine, _):
        with pytest.raises(sagaloop.InvalidDurationError) as info:
            await engine.workflows.result(product=P, env=E, workflow_id=target, timeout=value)
        assert_names_duration(info.value, value)


@pytest.mark.parametrize("value", ["forever", -10, "10 fortnights"], ids=repr)
async def test_bad_definition_timeout(tmp_path, value):
    ran: Counter = Counter()
    async with engine_with_bystander(tmp_path) as (engine, _):
        with pytest.raises(sagaloop.InvalidDurationError) as info:
            define_simple(engine, "simple", ran, options={"timeout": value})
        assert_names_duration(info.value, value)
        # Nothing half-registered: the tag is unknown, and can be defined properly afterwards.
        with pytest.raises(sagaloop.DefinitionNotFoundError):
            await engine.workflows.execute(product=P, env=E, tag="simple", input={})
        define_simple(engine, "simple", ran, options={"timeout": "1m"})
        ok = await engine.workflows.execute(product=P, env=E, tag="simple", input={}, workflow_id="s1")
        assert ok.status == "completed"


@pytest.mark.parametrize("style", ["dict", "keyword"])
@pytest.mark.parametrize("option, value", [
    ("timeout", "ten seconds"), ("timeout", -1), ("retry_delay", "1y"), ("retry_delay", "-5ms"),
    ("retry_delay", [100]),
], ids=repr)
async def test_bad_step_option_duration(tmp_path, option, value, style):
    ran: Counter = Counter()
    caught: list[BaseException] = []
    async with engine_with_bystander(tmp_path) as (engine, _):
        @engine.workflows.define(product=P, tag="bad-step")
        async def bad_step(ctx):
            async def before():
                ran["before"] += 1
                return {"kept": True}

            async def never():
                ran["never"] += 1
                return 1

            await ctx.step("before", before)
            try:
                if style == "dict":
                    await ctx.step("bad", never, None, {option: value})
                else:
                    await ctx.step("bad", never, **{option: value})
            except sagaloop.SagaloopError as exc:
                caught.append(exc)
                raise

        result = await engine.workflows.execute(product=P, env=E, tag="bad-step", input={}, workflow_id="bs")
        [err] = caught
        assert_names_duration(err, value)
        assert option in str(err) and "'bad'" in str(err)  # names the option and the step too
        assert result.workflow_id == "bs"
        assert result.status == "failed", result  # nothing to roll back
        assert result.error.code == "invalid_duration"
        assert repr(value) in result.error.message
        assert result.completed_steps == ["before"]
        assert ran == Counter({"before": 1})  # the step with bad options never ran
        detail = await engine.workflows.step_detail(product=P, env=E, workflow_id="bs", step_tag="before")
        assert detail.status == "completed" and detail.output == {"kept": True}


# -- values that cannot be journaled -------------------------------------------------------------------


class Widget:
    pass


@pytest.mark.parametrize("bad, type_name", [
    ({1, 2}, "set"),
    (Widget(), "Widget"),
    ({"nested": [datetime(2024, 1, 1, tzinfo=timezone.utc)]}, "datetime"),
    (2 ** 70, "int"),
], ids=["set", "object", "nested-datetime", "huge-int"])
async def test_non_serialisable_step_output(tmp_path, bad, type_name):
    ran: Counter = Counter()
    refunds: list = []
    async with engine_with_bystander(tmp_path) as (engine, _):
        @engine.workflows.define(product=P, tag="unstorable")
        async def unstorable(ctx):
            async def charge():
                ran["charge"] += 1
                return {"charge_id": "ch-9", "amount": 12}

            async def refund(result):
                refunds.append(result)

            async def label():
                ran["label"] += 1
                return bad

            async def after():
                ran["after"] += 1

            await ctx.step("charge", charge, refund)
            await ctx.step("label", label)
            await ctx.step("after", after)
            return "unreachable"

        result = await engine.workflows.execute(product=P, env=E, tag="unstorable", input={}, workflow_id="u1")
        assert result.workflow_id == "u1"
        assert result.status == "rolled_back", result
        assert result.error.code == "not_serializable"
        assert result.error.step == "label"
        assert result.failed_step == "label"
        assert type_name in result.error.message, result.error.message
        assert result.completed_steps == ["charge"]
        assert result.rollback_result.rolled_back_steps == ["charge"]
        assert refunds == [{"charge_id": "ch-9", "amount": 12}]  # the compensation got the recorded output
        assert ran == Counter({"charge": 1, "label": 1})
        wf = engine.workflows
        charge = await wf.step_detail(product=P, env=E, workflow_id="u1", step_tag="charge")
        assert charge.output == {"charge_id": "ch-9", "amount": 12}
        assert charge.status == "rolled_back"
        label = await wf.step_detail(product=P, env=E, workflow_id="u1", step_tag="label")
        assert label.status == "failed"
        assert label.error.code == "not_serializable"
        events = [e.type for e in (await wf.history(product=P, env=E, workflow_id="u1")).events]
        assert "step_failed" in events and events[-1] == "workflow_rolled_back"


async def test_non_serialisable_workflow_output(tmp_path):
    async with engine_with_bystander(tmp_path) as (engine, _):
        @engine.workflows.define(product=P, tag="bad-output")
        async def bad_output(ctx):
            await ctx.step("ok", lambda: {"fine": 1})
            return {"when": {1, 2}}

        result = await engine.workflows.execute(product=P, env=E, tag="bad-output", input={}, workflow_id="bo")
        assert result.status in ("failed", "rolled_back"), result
        assert result.error.code == "not_serializable"
        assert "set" in result.error.message
        detail = await engine.workflows.step_detail(product=P, env=E, workflow_id="bo", step_tag="ok")
        assert detail.output == {"fine": 1}
        listed = {s.workflow_id: s.status for s in await engine.workflows.list(product=P, env=E)}
        assert listed["bo"] == result.status  # not left "running"


@pytest.mark.parametrize("field", ["input", "context"])
async def test_non_serialisable_execute_input_stores_nothing(tmp_path, field):
    ran: Counter = Counter()
    async with engine_with_bystander(tmp_path) as (engine, _):
        define_simple(engine, "simple", ran)
        before = await ids(engine)
        bad = {"input": {}, "context": None, field: {"tags": {"a", "b"}}}
        with pytest.raises(sagaloop.NotSerializableError) as info:
            await engine.workflows.execute(product=P, env=E, tag="simple", workflow_id="w-bad",
                                           idempotency_key="k-bad", **bad)
        err = info.value
        assert isinstance(err, TypeError) and isinstance(err, sagaloop.SagaloopError)
        assert err.code == "not_serializable"
        assert "set" in str(err)
        assert not ran
        assert await ids(engine) == before
        with pytest.raises(sagaloop.WorkflowNotFoundError):
            await engine.workflows.status(product=P, env=E, workflow_id="w-bad")
        with pytest.raises(sagaloop.WorkflowNotFoundError):
            await engine.workflows.history(product=P, env=E, workflow_id="w-bad")
        # Neither the id nor the idempotency key was taken.
        ok = await engine.workflows.execute(product=P, env=E, tag="simple", input={"fine": True},
                                            context={"user": "u1"}, workflow_id="w-bad", idempotency_key="k-bad")
        assert ok.workflow_id == "w-bad" and ok.status == "completed"
        assert ok.output == {"input": {"fine": True}}
        again = await engine.workflows.execute(product=P, env=E, tag="simple", input={"other": 1},
                                               idempotency_key="k-bad")
        assert again.workflow_id == "w-bad" and again.output == ok.output
        assert ran == Counter({"w-bad": 1})


# -- ids and step tags ----------------------------------------------------------------------------------


async def test_duplicate_workflow_id_leaves_the_first_untouched(tmp_path):
    ran: Counter = Counter()
    gate = asyncio.Event()
    async with engine_with_bystander(tmp_path) as (engine, _):
        @engine.workflows.define(product=P, tag="gated")
        async def gated(ctx):
            async def work():
                ran[ctx.input["who"]] += 1
                await gate.wait()
                return {"who": ctx.input["who"]}

            return await ctx.step("work", work)

        define_simple(engine, "simple", ran)
        wf = engine.workflows
        await wf.execute(product=P, env=E, tag="gated", input={"who": "first"}, workflow_id="dup", wait=False)
        await eventually(lambda: ran["first"] == 1, "the first instance to start")

        for tag in ("gated", "simple", BYSTANDER_TAG):  # while the first is running
            with pytest.raises(sagaloop.WorkflowExistsError) as info:
                await wf.execute(product=P, env=E, tag=tag, input={"who": "second"}, workflow_id="dup")
            assert info.value.code == "workflow_exists" and "dup" in str(info.value)
            assert isinstance(info.value, sagaloop.UsageError)

        gate.set()
        first = await wf.result(product=P, env=E, workflow_id="dup", timeout="10s")
        assert first.status == "completed" and first.output == {"who": "first"}
        history = await wf.history(product=P, env=E, workflow_id="dup")

        with pytest.raises(sagaloop.WorkflowExistsError):  # and once it has ended
            await wf.execute(product=P, env=E, tag="gated", input={"who": "third"}, workflow_id="dup")

        assert await wf.result(product=P, env=E, workflow_id="dup") == first
        assert await wf.history(product=P, env=E, workflow_id="dup") == history
        assert [e.type for e in history.events].count("workflow_started") == 1
        assert ran == Counter({"first": 1})
        assert [s.workflow_id for s in await wf.list(product=P, env=E)].count("dup") == 1
        status = await wf.status(product=P, env=E, workflow_id="dup")
        assert status.tag == "gated" and status.status == "completed"


async def test_duplicate_step_tag_fails_the_run(tmp_path):
    ran: Counter = Counter()
    async with engine_with_bystander(tmp_path) as (engine, _):
        @engine.workflows.define(product=P, tag="twice")
        async def twice(ctx):
            async def a1():
                ran["a1"] += 1
                return {"first": True}

            async def a2():
                ran["a2"] += 1
                return {"second": True}

            await ctx.step("a", a1)
            await ctx.step("a", a2)
            return "unreachable"

        result = await engine.workflows.execute(product=P, env=E, tag="twice", input={}, workflow_id="tw")
        assert result.status == "failed", result
        assert result.error.code == "duplicate_step"
        assert "'a'" in result.error.message
        assert result.completed_steps == ["a"]
        assert ran == Counter({"a1": 1})
        detail = await engine.workflows.step_detail(product=P, env=E, workflow_id="tw", step_tag="a")
        assert detail.status == "completed" and detail.output == {"first": True}


async def test_duplicate_step_tag_raises_a_usage_error_the_handler_can_see(tmp_path):
    caught: list[BaseException] = []
    async with engine_with_bystander(tmp_path) as (engine, _):
        @engine.workflows.define(product=P, tag="twice-caught")
        async def twice_caught(ctx):
            await ctx.step("a", lambda: 1)
            try:
                await ctx.step("a", lambda: 2)
            except sagaloop.DuplicateStepError as exc:
                caught.append(exc)
            return await ctx.step("b", lambda: 3)

        result = await engine.workflows.execute(product=P, env=E, tag="twice-caught", input={})
        [err] = caught
        assert isinstance(err, sagaloop.UsageError) and err.code == "duplicate_step"
        assert result.status == "completed" and result.output == 3
        assert result.completed_steps == ["a", "b"]


# -- define ----------------------------------------------------------------------------------------------


def assert_invalid_argument(err: BaseException, *names: str) -> None:
    assert isinstance(err, sagaloop.InvalidArgumentError) and isinstance(err, ValueError), repr(err)
    assert isinstance(err, sagaloop.UsageError)
    for name in names:
        assert name in str(err), f"{str(err)!r} does not name {name!r}"


async def test_define_rejects_bad_definitions(tmp_path):
    ran: Counter = Counter()
    async with engine_with_bystander(tmp_path) as (engine, _):
        wf = engine.workflows

        async def ok(ctx):
            return 1

        with pytest.raises(sagaloop.InvalidArgumentError) as info:
            wf.define(product=P, tag="strat", handler=ok, options={"rollback_strategy": "reverse_some"})
        assert_invalid_argument(info.value, "reverse_some")
        assert info.value.code == "invalid_argument"

        def plain(ctx):
            return 1

        for handler in (plain, lambda ctx: 1, "not a function", None.__class__):
            with pytest.raises(sagaloop.InvalidArgumentError) as info:
                wf.define(product=P, tag="sync", handler=handler)
            assert_invalid_argument(info.value, "async")

        with pytest.raises(sagaloop.InvalidArgumentError) as info:
            @wf.define(product=P, tag="sync-decorated")
            def sync_decorated(ctx):
                return 1
        assert_invalid_argument(info.value, "sync-decorated")

        with pytest.raises(sagaloop.InvalidArgumentError) as info:
            wf.define(product=P, tag="opts", handler=ok, options={"rollback_stratgy": "none"})
        assert_invalid_argument(info.value, "rollback_stratgy")

        for bad_product, bad_tag in (("", "t"), (P, ""), (P, None), (P, "nul\x00tag")):
            with pytest.raises(sagaloop.InvalidArgumentError):
                wf.define(product=bad_product, tag=bad_tag, handler=ok)

        # None of the refused definitions was registered.
        for tag in ("strat", "sync", "sync-decorated", "opts"):
            with pytest.raises(sagaloop.DefinitionNotFoundError):
                await wf.execute(product=P, env=E, tag=tag, input={})

        # A duplicate tag is refused, the first definition stays in force (decorator and plain form).
        define_simple(engine, "simple", ran)

        async def impostor(ctx):
            ran["impostor"] += 1
            return "impostor"

        with pytest.raises(sagaloop.InvalidArgumentError) as info:
            wf.define(product=P, tag="simple", handler=impostor)
        assert_invalid_argument(info.value, "simple")
        with pytest.raises(sagaloop.InvalidArgumentError):
            wf.define(product=P, tag=BYSTANDER_TAG)(impostor)
        result = await wf.execute(product=P, env=E, tag="simple", input={"v": 1}, workflow_id="s")
        assert result.status == "completed" and result.output == {"input": {"v": 1}}
        assert ran == Counter({"s": 1})
        # The same tag under another product is a different workflow.
        wf.define(product="other-shop", tag="simple", handler=impostor)


# -- handlers that raise what is not an Exception ------------------------------------------------------


class Boom(BaseException):
    pass


@pytest.mark.parametrize("where", ["workflow", "step", "step-with-timeout"])
@pytest.mark.parametrize("make_exc, type_name", [
    (lambda: Boom("kaboom"), "Boom"),
], ids=["Boom"])  # KeyboardInterrupt / SystemExit stop the process instead: test_faults.py
async def test_handler_raising_a_base_exception_fails_only_its_run(tmp_path, make_exc, type_name, where):
    ran: Counter = Counter()
    async with engine_with_bystander(tmp_path) as (engine, bystander):
        @engine.workflows.define(product=P, tag="crashy")
        async def crashy(ctx):
            async def before():
                ran["before"] += 1
                return {"kept": 1}

            async def explode():
                ran["explode"] += 1
                raise make_exc()

            await ctx.step("before", before)
            if where == "workflow":
                raise make_exc()
            opts = {"timeout": "5s"} if where == "step-with-timeout" else None
            await ctx.step("explode", explode, None, opts)
            ran["after"] += 1
            return "unreachable"

        wf = engine.workflows
        result = await wf.execute(product=P, env=E, tag="crashy", input={}, workflow_id="crash-1")
        assert result.workflow_id == "crash-1"
        assert result.status == "failed", result
        assert result.error.code == "handler_crashed"
        assert type_name in result.error.message
        assert result.completed_steps == ["before"]
        assert "after" not in ran
        before = await wf.step_detail(product=P, env=E, workflow_id="crash-1", step_tag="before")
        assert before.status == "completed" and before.output == {"kept": 1}
        explode = None
        if where != "workflow":
            assert ran["explode"] == 1
            explode = await wf.step_detail(product=P, env=E, workflow_id="crash-1", step_tag="explode")
        listed = {s.workflow_id: s.status for s in await wf.list(product=P, env=E, tag="crashy")}
        assert listed == {"crash-1": "failed"}

        # The engine goes on: the crashing workflow and others run again.
        again = await wf.execute(product=P, env=E, tag="crashy", input={}, workflow_id="crash-2")
        assert again.status == "failed" and again.error.code == "handler_crashed"
        define_simple(engine, "simple", ran)
        fresh = await wf.execute(product=P, env=E, tag="simple", input={"n": 2}, workflow_id="fresh")
        assert fresh.status == "completed" and fresh.output == {"input": {"n": 2}}
    # Checked last, so the run's end and the engine's health above are reported either way:
    # the run has ended, so none of its steps may still show "running".
    if explode is not None:
        assert explode.status == "failed", f"the crashed step is left {explode.status!r} in an ended run"


# -- engine settings and lifecycle ---------------------------------------------------------------------


async def test_unknown_engine_setting(tmp_path):
    fresh = tmp_path / "never-created"
    with pytest.raises(sagaloop.InvalidArgumentError) as info:
        sagaloop.Engine(fresh, colour="blue")
    assert_invalid_argument(info.value, "colour")
    with pytest.raises(sagaloop.InvalidArgumentError) as info:
        sagaloop.Engine(fresh, durability="sometimes")
    assert_invalid_argument(info.value, "sometimes")
    assert not fresh.exists()  # a refused engine touches no disk

    async with engine_with_bystander(tmp_path) as (engine, _):
        # Refused while another engine holds the directory: the settings are checked first,
        # and the open engine is not disturbed.
        with pytest.raises(sagaloop.InvalidArgumentError) as info:
            sagaloop.Engine(engine.path, map_size=1 << 30, durability="durable")
        assert_invalid_argument(info.value, "map_size")
        with pytest.raises(sagaloop.InvalidArgumentError):
            sagaloop.Engine(engine.path, durability="DURABLE")


async def test_closed_engine_refuses_calls_and_loses_nothing(tmp_path):
    data = tmp_path / "data"
    unopened = sagaloop.Engine(tmp_path / "unopened")
    with pytest.raises(sagaloop.EngineClosedError) as info:
        await unopened.workflows.execute(product=P, env=E, tag=BYSTANDER_TAG, input={"n": 1})
    assert info.value.code == "engine_closed" and isinstance(info.value, sagaloop.SagaloopError)
    assert not (tmp_path / "unopened").exists()

    engine = sagaloop.Engine(data)
    await engine.open()
    bystander = Bystander(engine)
    await bystander.start()
    await engine.close()  # the live bystander is still blocked in "second": it stays in flight
    await engine.close()  # closing twice is harmless

    wf = engine.workflows
    calls = {
        "execute": lambda: wf.execute(product=P, env=E, tag=BYSTANDER_TAG, input={"n": 1}, workflow_id="late"),
        "result": lambda: wf.result(product=P, env=E, workflow_id=DONE_ID),
        "status": lambda: wf.status(product=P, env=E, workflow_id=LIVE_ID),
        "history": lambda: wf.history(product=P, env=E, workflow_id=DONE_ID),
        "list": lambda: wf.list(product=P, env=E),
    }
    for name, call in calls.items():
        with pytest.raises(sagaloop.EngineClosedError):
            await call()

    # A new engine on the same directory has everything: the completed run as it was, the
    # in-flight one resumed under its own id (its interrupted step runs again), no "late".
    async with sagaloop.Engine(data) as reopened:
        bystander.engine = reopened
        bystander.gate.set()
        bystander.define(reopened)
        rw = reopened.workflows
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while (await rw.result(product=P, env=E, workflow_id=LIVE_ID, timeout="1s")).status == "running":
            assert loop.time() < deadline, "the in-flight bystander did not resume"
            await asyncio.sleep(0.02)
        await bystander.check(live_reruns=1)
        events = [e.type for e in (await rw.history(product=P, env=E, workflow_id=LIVE_ID)).events]
        assert "workflow_resumed" in events
        with pytest.raises(sagaloop.WorkflowNotFoundError):
            await rw.status(product=P, env=E, workflow_id="late")
