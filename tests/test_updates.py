"""Updates: a request and its response into a running workflow.

API.md, "Beyond the product document" / "Updates":

* ``define(..., updates={"add_item": {"handler": fn, "validator": vfn}})`` (or ``{"name": fn}``);
  ``engine.workflows.update(product=, env=, workflow_id=, update=, args=, update_id=)``
  returns the handler's value; handler and validator may be plain or async;
* the update runs inside the instance's actor, between steps;
* a validator that raises rejects it with nothing journaled (``UpdateRejectedError``,
  code ``update_rejected``, carrying the validator's message);
* its change to ``ctx.state`` is journaled before the reply (checked by SIGKILLing a
  real process the moment the reply arrives: ``tests/upgrade_app/update_worker.py``);
* the same ``update_id`` again returns the recorded reply without running it again;
* updates, signals and queries to one instance apply in the order they arrived.
"""

from __future__ import annotations

import asyncio
import functools
import json
import signal

import helpers
import pytest
from helpers import messages_queued, until
from processes import TESTS_DIR, Child
from upgrade_app import update_worker

import sagaloop
from sagaloop.testing import wait_idle

UPDATE_WORKER = TESTS_DIR / "upgrade_app" / "update_worker.py"

P, E = "shop", "test"
history_types = functools.partial(helpers.history_types, product=P, env=E)


def define_cart(engine, calls: list, *, async_handler=False, async_validator=False, tag="cart") -> None:
    """A cart that blocks for signal ``checkout``; update ``add_item`` appends to ``ctx.state["items"]``."""
    def apply(ctx, args):
        calls.append(args)
        ctx.state["items"].append(args["sku"])
        return {"count": len(ctx.state["items"]), "items": list(ctx.state["items"])}

    def check(ctx, args):
        if args.get("qty", 1) <= 0:
            raise ValueError(f"quantity must be positive, got {args.get('qty')}")

    async def apply_async(ctx, args):
        await asyncio.sleep(0)
        return apply(ctx, args)

    async def check_async(ctx, args):
        await asyncio.sleep(0)
        check(ctx, args)

    @engine.workflows.define(product=P, tag=tag, queries={"items": lambda ctx: list(ctx.state["items"])},
                             updates={"add_item": {"handler": apply_async if async_handler else apply,
                                                   "validator": check_async if async_validator else check}})
    async def cart(ctx):
        ctx.state.setdefault("items", [])
        await ctx.step("open", lambda: {"opened": True})
        await ctx.wait_for_signal("checkout")
        return await ctx.step("total", lambda: {"items": list(ctx.state["items"])})


async def start_cart(engine, workflow_id: str, tag: str = "cart") -> None:
    started = await engine.workflows.execute(product=P, env=E, tag=tag, input={}, workflow_id=workflow_id)
    assert started.status == "running"  # blocked on the signal


async def update(engine, workflow_id: str, name="add_item", args=None, update_id=None):
    return await engine.workflows.update(product=P, env=E, workflow_id=workflow_id, update=name, args=args,
                                         update_id=update_id)


async def settle_blocked(engine, workflow_id: str, p=P, e=E) -> None:
    """Wait until a resumed run has replayed up to its signal wait again."""
    await wait_idle(engine)
    status = await engine.workflows.status(product=p, env=e, workflow_id=workflow_id)
    assert "open" in status.completed_steps and status.waiting_for == "signal checkout", status


async def checkout(engine, workflow_id: str, p=P, e=E) -> sagaloop.WorkflowResult:
    await engine.workflows.signal(product=p, env=e, workflow_id=workflow_id, signal="checkout")
    return await engine.workflows.result(product=p, env=e, workflow_id=workflow_id, timeout=10_000)


# -- the call and its value ------------------------------------------------------------------------


@pytest.mark.parametrize("async_handler", [False, True], ids=["plain-handler", "async-handler"])
@pytest.mark.parametrize("async_validator", [False, True], ids=["plain-validator", "async-validator"])
async def test_update_returns_the_handler_value_and_changes_the_state(tmp_path, async_handler, async_validator):
    calls: list = []
    async with sagaloop.Engine(tmp_path / "db", durability="fast") as engine:
        define_cart(engine, calls, async_handler=async_handler, async_validator=async_validator)
        await start_cart(engine, "c1")
        assert await update(engine, "c1", args={"sku": "apple"}) == {"count": 1, "items": ["apple"]}
        assert await update(engine, "c1", args={"sku": "pear", "qty": 2}) == {"count": 2, "items": ["apple", "pear"]}
        assert calls == [{"sku": "apple"}, {"sku": "pear", "qty": 2}]
        status = await engine.workflows.status(product=P, env=E, workflow_id="c1")
        assert status.state == {"items": ["apple", "pear"]}
        assert status.status == "running"
        assert await engine.workflows.query(product=P, env=E, workflow_id="c1", query="items") == ["apple", "pear"]
        assert (await history_types(engine, "c1")).count("update_applied") == 2
        result = await checkout(engine, "c1")
        assert result.status == "completed"
        assert result.output == {"items": ["apple", "pear"]}  # the workflow's own later use of ctx.state


async def test_plain_name_to_function_form(tmp_path):
    async with sagaloop.Engine(tmp_path / "db", durability="fast") as engine:
        @engine.workflows.define(product=P, tag="counter", updates={"bump": lambda ctx, n: ctx.state.update(
            n=ctx.state.get("n", 0) + n) or ctx.state["n"]})
        async def counter(ctx):
            await ctx.wait_for_signal("stop")
            return ctx.state.get("n", 0)

        await engine.workflows.execute(product=P, env=E, tag="counter", input={}, workflow_id="n1")
        assert await update(engine, "n1", "bump", 5) == 5
        assert await update(engine, "n1", "bump", 2) == 7
        await engine.workflows.signal(product=P, env=E, workflow_id="n1", signal="stop")
        result = await engine.workflows.result(product=P, env=E, workflow_id="n1", timeout=10_000)
        assert result.output == 7


# -- between steps -----------------------------------------------------------------------------------


async def test_an_update_waits_for_the_running_step_to_end(tmp_path):
    gate = asyncio.Event()
    log: list = []

    async def slow():
        log.append("step-start")
        await gate.wait()
        log.append("step-end")
        return "slow-done"

    def bump(ctx, args):
        log.append(("update", ctx.current_step, list(ctx.completed_steps)))
        ctx.state["bumped"] = args
        return "bumped"

    async with sagaloop.Engine(tmp_path / "db", durability="fast") as engine:
        @engine.workflows.define(product=P, tag="slow", updates={"bump": bump})
        async def slow_flow(ctx):
            await ctx.step("slow", slow)
            await ctx.wait_for_signal("finish")
            return ctx.state

        await engine.workflows.execute(product=P, env=E, tag="slow", input={}, workflow_id="s1", wait=False)
        for _ in range(200):
            if log:
                break
            await asyncio.sleep(0.005)
        assert log == ["step-start"]
        pending = asyncio.create_task(update(engine, "s1", "bump", 42))
        await until(lambda: messages_queued(engine, "s1") == 1, "the update waits for the step")
        assert not pending.done(), "the update ran while a step handler was running"
        assert log == ["step-start"]
        gate.set()
        assert await asyncio.wait_for(pending, 5) == "bumped"
        assert log == ["step-start", "step-end", ("update", None, ["slow"])]
        await engine.workflows.signal(product=P, env=E, workflow_id="s1", signal="finish")
        result = await engine.workflows.result(product=P, env=E, workflow_id="s1", timeout=10_000)
        assert result.output == {"bumped": 42}


# -- validators ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("async_validator", [False, True], ids=["plain", "async"])
async def test_a_rejected_update_journals_nothing(tmp_path, async_validator):
    calls: list = []
    async with sagaloop.Engine(tmp_path / "db", durability="fast") as engine:
        define_cart(engine, calls, async_validator=async_validator)
        await start_cart(engine, "r1")
        await update(engine, "r1", args={"sku": "apple"})
        before = await history_types(engine, "r1")
        with pytest.raises(sagaloop.UpdateRejectedError) as info:
            await update(engine, "r1", args={"sku": "plum", "qty": 0}, update_id="rej-1")
        assert info.value.code == "update_rejected"
        assert "quantity must be positive, got 0" in str(info.value)
        assert calls == [{"sku": "apple"}]  # the handler never ran
        status = await engine.workflows.status(product=P, env=E, workflow_id="r1")
        assert status.state == {"items": ["apple"]}
        assert await history_types(engine, "r1") == before
        assert before.count("update_applied") == 1
        # Nothing was recorded under its update_id either: a valid retry with that id runs.
        assert await update(engine, "r1", args={"sku": "plum", "qty": 1}, update_id="rej-1") == {
            "count": 2, "items": ["apple", "plum"]}
        result = await checkout(engine, "r1")
        assert result.output == {"items": ["apple", "plum"]}


# -- journaled before the reply -----------------------------------------------------------------------


@pytest.mark.slow  # real processes, SIGKILLed
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
async def test_the_update_survives_sigkill_right_after_its_reply(tmp_path):
    datadir, callsfile, wf = tmp_path / "data", tmp_path / "calls.jsonl", "cart-kill-1"
    child = Child(tmp_path, UPDATE_WORKER, datadir, callsfile, wf)
    try:
        line = await asyncio.to_thread(child.wait_for, "UPDATED ")
        child.sigkill()  # the moment the reply is in: nothing more may be flushed
    finally:
        child.cleanup()
    assert json.loads(line[len("UPDATED "):]) == {"count": 1, "sku": "apple"}
    first_calls = update_worker.handler_calls(callsfile)
    assert [(c["sku"], c["pid"]) for c in first_calls] == [("apple", child.pid)]

    PW, EW = update_worker.PRODUCT, update_worker.ENV
    async with sagaloop.Engine(datadir) as engine:
        update_worker.define(engine, callsfile)
        status = await engine.workflows.status(product=PW, env=EW, workflow_id=wf)
        assert status.status == "running"
        assert status.state == {"items": ["apple"]}, status.state
        await settle_blocked(engine, wf, PW, EW)  # the resumed run is back in its signal wait
        status = await engine.workflows.status(product=PW, env=EW, workflow_id=wf)
        assert status.state == {"items": ["apple"]}, status.state
        assert await engine.workflows.query(product=PW, env=EW, workflow_id=wf, query="items") == ["apple"]
        types = await history_types(engine, wf, product=PW, env=EW)
        assert types.count("update_applied") == 1

        # The same update_id again: the recorded reply, the handler not run for it.
        calls_before = len(update_worker.handler_calls(callsfile))
        again = await engine.workflows.update(product=PW, env=EW, workflow_id=wf, update="add_item",
                                              args={"sku": "apple"}, update_id="u-apple")
        assert again == {"count": 1, "sku": "apple"}
        assert len(update_worker.handler_calls(callsfile)) == calls_before

        result = await checkout(engine, wf, PW, EW)
        assert result.status == "completed", result
        assert result.output == {"items": ["apple"]}  # the workflow's own later use of ctx.state
        assert (await history_types(engine, wf, product=PW, env=EW)).count("update_applied") == 1


async def test_the_update_survives_a_clean_close_and_is_deduplicated_after_it(tmp_path):
    data = tmp_path / "db"
    calls: list = []
    async with sagaloop.Engine(data) as engine:
        define_cart(engine, calls)
        await start_cart(engine, "d1")
        first = await update(engine, "d1", args={"sku": "apple"}, update_id="add-apple")
        assert first == {"count": 1, "items": ["apple"]}
        # Sent again while live: the recorded reply, not run again.
        assert await update(engine, "d1", args={"sku": "apple"}, update_id="add-apple") == first
        assert len(calls) == 1
    # Closed right after the reply: reopen with the same code.
    calls2: list = []
    async with sagaloop.Engine(data) as engine:
        define_cart(engine, calls2)
        status = await engine.workflows.status(product=P, env=E, workflow_id="d1")
        assert status.status == "running"
        assert status.state == {"items": ["apple"]}, status.state
        await settle_blocked(engine, "d1")
        status = await engine.workflows.status(product=P, env=E, workflow_id="d1")
        assert status.state == {"items": ["apple"]}, status.state
        assert await engine.workflows.query(product=P, env=E, workflow_id="d1", query="items") == ["apple"]
        before = len(calls2)
        assert await update(engine, "d1", args={"sku": "apple"}, update_id="add-apple") == first
        assert len(calls2) == before  # the resend ran nothing
        # A new update goes after the recorded one.
        assert await update(engine, "d1", args={"sku": "fig"}, update_id="add-fig") == {
            "count": 2, "items": ["apple", "fig"]}
        result = await checkout(engine, "d1")
        assert result.status == "completed"
        assert result.output == {"items": ["apple", "fig"]}  # applied once each, in order
        types = await history_types(engine, "d1")
        assert types.count("update_applied") == 2
        # Ended: the recorded reply for a known update_id, WorkflowEndedError for a new one.
        assert await update(engine, "d1", args={"sku": "apple"}, update_id="add-apple") == first
        with pytest.raises(sagaloop.WorkflowEndedError):
            await update(engine, "d1", args={"sku": "kiwi"})
        with pytest.raises(sagaloop.WorkflowEndedError):
            await update(engine, "d1", args={"sku": "kiwi"}, update_id="never-sent")


# -- mailbox order --------------------------------------------------------------------------------------


async def test_updates_signals_and_queries_apply_in_arrival_order(tmp_path):
    calls: list = []
    async with sagaloop.Engine(tmp_path / "db", durability="fast") as engine:
        define_cart(engine, calls)
        await start_cart(engine, "o1")
        # Fired without awaiting in between: u1, s1, q1, u2 reach the instance in this order.
        t_u1 = asyncio.create_task(update(engine, "o1", args={"sku": "u1"}, update_id="u1"))
        t_s1 = asyncio.create_task(engine.workflows.signal(product=P, env=E, workflow_id="o1", signal="checkout"))
        t_q1 = asyncio.create_task(engine.workflows.query(product=P, env=E, workflow_id="o1", query="items"))
        t_u2 = asyncio.create_task(update(engine, "o1", args={"sku": "u2"}, update_id="u2"))
        u1, _, q1, u2 = await asyncio.gather(t_u1, t_s1, t_q1, t_u2)
        assert u1 == {"count": 1, "items": ["u1"]}
        assert u2 == {"count": 2, "items": ["u1", "u2"]}
        result = await engine.workflows.result(product=P, env=E, workflow_id="o1", timeout=10_000)
        assert result.status == "completed"
        assert result.output["items"][:1] == ["u1"]
        events = (await engine.workflows.history(product=P, env=E, workflow_id="o1")).events
        order = [("update", ev.data["update_id"]) if ev.type == "update_applied" else ("signal", ev.data["signal"])
                 for ev in events if ev.type in ("update_applied", "signal_received")]
        assert order == [("update", "u1"), ("signal", "checkout"), ("update", "u2")]
        assert q1 == ["u1"], f"the query saw {q1!r}: it must see u1's change but not u2's"


# -- errors ---------------------------------------------------------------------------------------------


async def test_unknown_update_unknown_instance_and_ended_instance(tmp_path):
    calls: list = []
    async with sagaloop.Engine(tmp_path / "db", durability="fast") as engine:
        define_cart(engine, calls)
        await start_cart(engine, "e1")
        with pytest.raises(sagaloop.UpdateNotFoundError) as info:
            await update(engine, "e1", "remove_item", {"sku": "x"})
        assert info.value.code == "update_not_found"
        assert "remove_item" in str(info.value)
        with pytest.raises(sagaloop.WorkflowNotFoundError):
            await update(engine, "no-such-instance", args={"sku": "x"})
        with pytest.raises(sagaloop.WorkflowNotFoundError):
            await engine.workflows.update(product=P, env="other-env", workflow_id="e1", update="add_item",
                                          args={"sku": "x"})
        reply = await update(engine, "e1", args={"sku": "apple"}, update_id="once")
        result = await checkout(engine, "e1")
        assert result.status == "completed"
        with pytest.raises(sagaloop.WorkflowEndedError) as ended:
            await update(engine, "e1", args={"sku": "late"})
        assert ended.value.code == "workflow_ended"
        assert await update(engine, "e1", args={"sku": "apple"}, update_id="once") == reply
        assert calls == [{"sku": "apple"}]
        status = await engine.workflows.status(product=P, env=E, workflow_id="e1")
        assert status.state == {"items": ["apple"]}
