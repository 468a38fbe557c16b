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
import functools

import helpers
import pytest
from helpers import Gate, messages_queued, overwrite_record, run_interrupted, until

import sagaloop

P, E = "shop", "test"
send = functools.partial(helpers.send, product=P, env=E)


def engine_at(path, **kw):
    return sagaloop.Engine(path, durability="fast", **kw)


async def result(engine, wf, timeout="5s"):
    return await engine.workflows.result(product=P, env=E, workflow_id=wf, timeout=timeout)


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


# -- values handed out are snapshots ------------------------------------------------------------------------

async def test_status_state_and_checkpoint_data_are_snapshots(tmp_path):
    gate = Gate(None)
    async with engine_at(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="stateful")
        async def stateful(ctx):
            ctx.state["items"] = ["a"]
            await ctx.checkpoint("cp", {"n": 1})
            await ctx.step("work", gate)
            return {"items": ctx.state["items"], "cp": ctx.checkpoint_data}

        first = await engine.workflows.execute(product=P, env=E, tag="stateful", wait=False)
        await gate.entered.wait()
        status = await engine.workflows.status(product=P, env=E, workflow_id=first.workflow_id)
        status.state["items"].append("from-the-caller")
        status.state["new"] = True
        status.checkpoint_data["n"] = 99
        gate.open.set()
        end = await result(engine, first.workflow_id)
        assert end.output == {"items": ["a"], "cp": {"n": 1}}
        again = await engine.workflows.status(product=P, env=E, workflow_id=first.workflow_id)
        assert again.state == {"items": ["a"]} and again.checkpoint_data == {"n": 1}
        history = await engine.workflows.history(product=P, env=E, workflow_id=first.workflow_id)
        assert "from-the-caller" not in repr(history)


async def test_step_output_changed_by_the_handler_reaches_neither_compensation_nor_journal(tmp_path):
    refunds: list = []
    async with engine_at(tmp_path) as engine:
        async def charge():
            return {"charge_id": "ch_1", "tags": []}

        async def refund(output):
            refunds.append(output)

        @engine.workflows.define(product=P, tag="order")
        async def order(ctx):
            charged = await ctx.step("charge", charge, refund)
            charged["charge_id"] = None        # the handler changes its copy
            charged["tags"].append("changed")
            assert ctx.steps["charge"] == {"charge_id": "ch_1", "tags": []}
            await ctx.step("ship", lambda: (_ for _ in ()).throw(RuntimeError("no stock")))

        end = await engine.workflows.execute(product=P, env=E, tag="order")
        assert end.status == "rolled_back", end.error
        assert refunds == [{"charge_id": "ch_1", "tags": []}]
        detail = await engine.workflows.step_detail(product=P, env=E, workflow_id=end.workflow_id,
                                                     step_tag="charge")
        assert detail.output == {"charge_id": "ch_1", "tags": []}


async def test_a_step_output_is_the_recorded_value_live_and_after_recovery(tmp_path):
    seen: list = []
    gate = Gate(None)

    def define(engine):
        @engine.workflows.define(product=P, tag="tuple")
        async def tuple_wf(ctx):
            pair = await ctx.step("pair", lambda: (1, [2]))
            seen.append(pair)
            await ctx.step("hold", gate)
            return pair

    async with engine_at(tmp_path) as engine:
        define(engine)
        first = await engine.workflows.execute(product=P, env=E, tag="tuple", wait=False)
        await gate.entered.wait()
    gate.entered.clear()
    gate.open.set()
    async with engine_at(tmp_path) as engine:
        define(engine)
        end = await result(engine, first.workflow_id)
    assert seen == [[1, [2]], [1, [2]]]  # the same value live and recovered (msgpack has one array type)
    assert end.output == [1, [2]]


async def test_input_is_the_instances_own_copy(tmp_path):
    order = {"id": "ORD-1", "lines": [{"sku": "a"}]}
    gate = Gate(None)
    async with engine_at(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="input")
        async def input_wf(ctx):
            await ctx.step("hold", gate)
            seen = {"lines": list(ctx.input["lines"])}
            ctx.input["lines"].append({"sku": "added-by-the-handler"})
            return seen

        first = await engine.workflows.execute(product=P, env=E, tag="input", input=order, wait=False)
        await gate.entered.wait()
        order["lines"].append({"sku": "added-by-the-caller"})  # after execute returned
        gate.open.set()
        end = await result(engine, first.workflow_id)
        assert end.output == {"lines": [{"sku": "a"}]}
        recorded = await engine.workflows.list(product=P, env=E, tag="input")
        status = await engine.workflows.status(product=P, env=E, workflow_id=first.workflow_id)
        assert recorded and status.status == "completed"
    async with engine_at(tmp_path) as engine:  # the stored input is the one execute was given
        @engine.workflows.define(product=P, tag="input")
        async def again(ctx):
            return ctx.input

        replayed = await engine.workflows.execute(product=P, env=E, tag="input",
                                                  input={"id": "ORD-1", "lines": [{"sku": "a"}]})
        assert replayed.output == {"id": "ORD-1", "lines": [{"sku": "a"}]}


async def test_a_signal_payload_changed_after_signal_returned_does_not_reach_the_workflow(tmp_path):
    async with engine_at(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="payload")
        async def payload_wf(ctx):
            await ctx.step("first", lambda: 1)
            return await ctx.wait_for_signal("go")

        payload = {"items": ["a"]}
        first = await engine.workflows.execute(product=P, env=E, tag="payload", wait=False)
        await send(engine, first.workflow_id, "go", payload)
        payload["items"].append("late")
        end = await result(engine, first.workflow_id)
        assert end.output == {"items": ["a"], "_signal": "go"}


async def test_callers_of_one_run_each_get_their_own_result(tmp_path):
    gate = Gate({"lines": ["a"]})
    async with engine_at(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="shared")
        async def shared(ctx):
            return await ctx.step("work", gate)

        first = await engine.workflows.execute(product=P, env=E, tag="shared", wait=False)
        waiters = [asyncio.ensure_future(result(engine, first.workflow_id)) for _ in range(3)]
        await gate.entered.wait()
        gate.open.set()
        ends = await asyncio.gather(*waiters)
        ends[0].output["lines"].append("changed")
        assert [e.output for e in ends[1:]] == [{"lines": ["a"]}, {"lines": ["a"]}]
        assert (await result(engine, first.workflow_id)).output == {"lines": ["a"]}


async def test_query_values_and_update_replies_are_snapshots_and_a_repeated_update_gets_the_recorded_reply(tmp_path):
    async with engine_at(tmp_path) as engine:
        def add(ctx, args):
            ctx.state.setdefault("items", []).append(args["sku"])
            return ctx.state  # the live state, handed back

        @engine.workflows.define(product=P, tag="cart", queries={"items": {"handler": lambda ctx: ctx.state}},
                                 updates={"add": {"handler": add}})
        async def cart(ctx):
            ctx.state["items"] = []
            return await ctx.wait_for_signal("checkout")

        first = await engine.workflows.execute(product=P, env=E, tag="cart")
        wf = first.workflow_id
        reply = await engine.workflows.update(product=P, env=E, workflow_id=wf, update="add",
                                              args={"sku": "a"}, update_id="u1")
        assert reply == {"items": ["a"]}
        reply["items"].append("caller")
        value = await engine.workflows.query(product=P, env=E, workflow_id=wf, query="items")
        assert value == {"items": ["a"]}
        value["items"].append("caller")
        await engine.workflows.update(product=P, env=E, workflow_id=wf, update="add", args={"sku": "b"})
        repeated = await engine.workflows.update(product=P, env=E, workflow_id=wf, update="add",
                                                 args={"sku": "a"}, update_id="u1")
        assert repeated == {"items": ["a"]}  # the reply as recorded, not the state as it is now
        assert await engine.workflows.query(product=P, env=E, workflow_id=wf, query="items") == {"items": ["a", "b"]}
    async with engine_at(tmp_path) as engine:  # and the same after a restart
        @engine.workflows.define(product=P, tag="cart", queries={"items": {"handler": lambda ctx: ctx.state}},
                                 updates={"add": {"handler": add}})
        async def cart_again(ctx):
            ctx.state["items"] = []
            return await ctx.wait_for_signal("checkout")

        repeated = await engine.workflows.update(product=P, env=E, workflow_id=wf, update="add",
                                                 args={"sku": "a"}, update_id="u1")
        assert repeated == {"items": ["a"]}


# -- an update does not block the mailbox ----------------------------------------------------------------------

async def test_an_update_during_a_step_leaves_the_mailbox_to_status_query_signal_and_cancel(tmp_path):
    gate = Gate(None)
    released: list = []

    async def release(_output):
        released.append("hold")

    async with engine_at(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="busy", queries={"n": {"handler": lambda ctx: ctx.state.get("n", 0)}},
                                 updates={"bump": {"handler": lambda ctx, args: ctx.state.update(n=1) or "bumped"}})
        async def busy(ctx):
            await ctx.step("hold", gate, release)
            await ctx.wait_for_signal("go")

        first = await engine.workflows.execute(product=P, env=E, tag="busy", wait=False)
        wf = first.workflow_id
        await gate.entered.wait()
        update = asyncio.ensure_future(engine.workflows.update(product=P, env=E, workflow_id=wf, update="bump"))
        await until(lambda: messages_queued(engine, wf) == 1, "the update waits for the step")
        assert not update.done()  # it waits for the step to end ...
        async with asyncio.timeout(2):  # ... but not in the mailbox
            status = await engine.workflows.status(product=P, env=E, workflow_id=wf)
            assert status.current_step == "hold"
            await send(engine, wf, "go")
        gate.open.set()
        assert await update == "bumped"
        assert await engine.workflows.query(product=P, env=E, workflow_id=wf, query="n") == 1


async def test_a_hanging_step_can_be_cancelled_while_an_update_waits_for_it(tmp_path):
    gate = Gate(None)  # never opened
    async with engine_at(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="hang", updates={"bump": {"handler": lambda ctx, args: 1}})
        async def hang(ctx):
            await ctx.step("hang", gate)

        first = await engine.workflows.execute(product=P, env=E, tag="hang", wait=False)
        await gate.entered.wait()
        update = asyncio.ensure_future(engine.workflows.update(product=P, env=E, workflow_id=first.workflow_id,
                                                               update="bump"))
        await until(lambda: messages_queued(engine, first.workflow_id) == 1, "the update waits for the step")
        async with asyncio.timeout(2):
            cancelled = await engine.workflows.cancel(product=P, env=E, workflow_id=first.workflow_id)
        assert cancelled.status == "cancelled"
        with pytest.raises(sagaloop.WorkflowEndedError):
            await update


# -- the rollback shield --------------------------------------------------------------------------------------

@pytest.mark.parametrize("interrupt", ["cancel", "timeout"])
async def test_a_cancel_or_timeout_during_trigger_rollback_lets_each_compensation_finish_once(tmp_path, interrupt):
    ran: list = []
    slow = Gate(None)

    async def undo_a(_output):
        ran.append("a")
        await slow()

    async def undo_b(_output):
        ran.append("b")

    async with engine_at(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="manual", options={"timeout": "60s"})
        async def manual(ctx):
            await ctx.step("b", lambda: "b", undo_b)
            await ctx.step("a", lambda: "a", undo_a)
            await ctx.trigger_rollback("fraud")
            await ctx.wait_for_signal("never")

        kw = {"timeout": "300ms"} if interrupt == "timeout" else {}
        first = await engine.workflows.execute(product=P, env=E, tag="manual", wait=False, **kw)
        await slow.entered.wait()
        if interrupt == "cancel":
            cancel = asyncio.ensure_future(engine.workflows.cancel(product=P, env=E, workflow_id=first.workflow_id))
        # The cancel, or the 300 ms workflow timeout in real time, reaches the run inside undo_a.
        await until(lambda: run_interrupted(engine, first.workflow_id), f"the {interrupt} reaches the run")
        slow.open.set()
        end = await result(engine, first.workflow_id)
        if interrupt == "cancel":
            await cancel
        assert ran == ["a", "b"]  # each once, in reverse; none cut short and run again
        assert end.rollback_result.rolled_back_steps == ["a", "b"]
        assert end.status == ("cancelled" if interrupt == "cancel" else "rolled_back")


# -- queries and ctx: no writes from where none belongs -------------------------------------------------------

async def test_a_query_is_read_only_and_journals_nothing(tmp_path):
    async def sneaky_step(ctx):
        await ctx.step("from-a-query", lambda: 1)

    def sneaky_state(ctx):
        ctx.state["x"] = 1

    async with engine_at(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="q", queries={"step": {"handler": sneaky_step},
                                                              "state": {"handler": sneaky_state},
                                                              "read": {"handler": lambda ctx: ctx.state}})
        async def q(ctx):
            ctx.state["x"] = 0
            return await ctx.wait_for_signal("go")

        first = await engine.workflows.execute(product=P, env=E, tag="q")
        wf = first.workflow_id
        with pytest.raises(sagaloop.ReadOnlyError, match="step"):
            await engine.workflows.query(product=P, env=E, workflow_id=wf, query="step")
        with pytest.raises(sagaloop.ReadOnlyError, match="state"):
            await engine.workflows.query(product=P, env=E, workflow_id=wf, query="state")
        assert await engine.workflows.query(product=P, env=E, workflow_id=wf, query="read") == {"x": 0}
        await send(engine, wf, "go")
        end = await result(engine, wf)
        assert end.status == "completed"
        assert end.completed_steps == []
        types = [e.type for e in (await engine.workflows.history(product=P, env=E, workflow_id=wf)).events]
        assert "step_started" not in types


async def test_a_ctx_kept_after_its_run_ended_raises(tmp_path):
    kept: list = []
    async with engine_at(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="keep")
        async def keep(ctx):
            kept.append(ctx)
            await ctx.step("one", lambda: 1)
            return "done"

        end = await engine.workflows.execute(product=P, env=E, tag="keep")
        assert end.status == "completed"
        with pytest.raises(sagaloop.WorkflowEndedError):
            await kept[0].step("late", lambda: 2)
        with pytest.raises(sagaloop.WorkflowEndedError):
            await kept[0].checkpoint("late")
        types = [e.type for e in (await engine.workflows.history(product=P, env=E, workflow_id=end.workflow_id)).events]
        assert types[-1] == "workflow_completed" and types.count("step_started") == 1


# -- waits and execute --------------------------------------------------------------------------------------

async def test_waiting_for_forgets_a_child_once_it_ended(tmp_path):
    gate = Gate("next")
    async with engine_at(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="child")
        async def child(ctx):
            return (await ctx.wait_for_signal("go"))["n"]

        @engine.workflows.define(product=P, tag="parent")
        async def parent(ctx):
            n = await ctx.workflow("kid-1", "child")
            await ctx.step("next", gate)
            return n

        first = await engine.workflows.execute(product=P, env=E, tag="parent", workflow_id="p-1")
        status = await engine.workflows.status(product=P, env=E, workflow_id="p-1")
        assert (first.status, status.waiting_for) == ("running", "child kid-1")
        await send(engine, "kid-1", "go", {"n": 7})
        await gate.entered.wait()
        status = await engine.workflows.status(product=P, env=E, workflow_id="p-1")
        assert (status.current_step, status.waiting_for) == ("next", None)
        gate.open.set()
        assert (await result(engine, first.workflow_id)).output == 7


async def test_execute_waits_through_a_steps_retry_waits(tmp_path):
    attempts: list = []

    async def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("not yet")
        return "ok"

    async with engine_at(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="retry")
        async def retry(ctx):
            return await ctx.step("flaky", flaky, None, {"retries": 3, "retry_delay": 20})

        end = await engine.workflows.execute(product=P, env=E, tag="retry")
        assert (end.status, end.output, len(attempts)) == ("completed", "ok", 3)


# -- messages to a resumed run see the state after its replay -------------------------------------------------

async def test_a_query_and_an_update_reaching_a_resumed_run_before_its_replay_see_the_replayed_state(tmp_path):
    def define_counter(engine):
        def bump(ctx, args):
            ctx.state["n"] += args["by"]
            return ctx.state["n"]

        @engine.workflows.define(product=P, tag="counter", queries={"n": {"handler": lambda ctx: ctx.state.get("n")}},
                                 updates={"bump": {"handler": bump}})
        async def counter(ctx):
            ctx.state["n"] = 0
            for i in range(3):
                await ctx.step(f"s{i}", lambda: i)
                ctx.state["n"] += 1
            await ctx.wait_for_signal("go")
            return ctx.state["n"]

    async with engine_at(tmp_path) as engine:
        define_counter(engine)
        first = await engine.workflows.execute(product=P, env=E, tag="counter", workflow_id="c-1")
        assert first.status == "running"

    release = asyncio.Event()
    async with engine_at(tmp_path, max_active_runs=1) as engine:
        @engine.workflows.define(product=P, tag="blocker")
        async def blocker(ctx):
            await release.wait()  # holds the only admission turn: the resumed run queues behind it

        await engine.workflows.execute(product=P, env=E, tag="blocker", wait=False)
        define_counter(engine)  # resumes c-1, which waits for its turn before it replays
        query = asyncio.ensure_future(engine.workflows.query(product=P, env=E, workflow_id="c-1", query="n"))
        update = asyncio.ensure_future(engine.workflows.update(product=P, env=E, workflow_id="c-1",
                                                               update="bump", args={"by": 10}))
        await until(lambda: messages_queued(engine, "c-1") == 2, "the query and the update wait for the replay")
        release.set()
        assert await query == 3
        assert await update == 13
        await send(engine, "c-1", "go")
        assert (await result(engine, "c-1")).output == 13


# -- a corrupt record is loud, and only its instance suffers ------------------------------------------------

def _define_waiter(engine):
    @engine.workflows.define(product=P, tag="waiter")
    async def waiter(ctx):
        await ctx.step("one", lambda: {"x": 1})
        return (await ctx.wait_for_signal("go"))["_signal"]


async def test_a_corrupt_journal_entry_fails_that_instance_loudly_and_the_others_run_on(tmp_path):
    async with engine_at(tmp_path) as engine:
        _define_waiter(engine)
        for wf in ("bad", "good"):
            await engine.workflows.execute(product=P, env=E, tag="waiter", workflow_id=wf)
    overwrite_record(tmp_path, b"journal", b"bad\x00" + (0).to_bytes(4, "big"))

    async with engine_at(tmp_path) as engine:
        # Not defined yet: reads and signals of the in-flight instance name the bad record.
        with pytest.raises(sagaloop.CorruptRecordError, match=r"'bad'.*journal #0") as info:
            await engine.workflows.status(product=P, env=E, workflow_id="bad")
        assert (info.value.code, info.value.workflow_id) == ("corrupt_record", "bad")
        with pytest.raises(sagaloop.CorruptRecordError):
            await send(engine, "bad", "go")
        _define_waiter(engine)
        end = await result(engine, "bad")
        assert (end.status, end.error.code) == ("failed", "corrupt_record")
        assert "journal #0" in end.error.message
        await send(engine, "good", "go")
        assert (await result(engine, "good")).output == "go"
        listed = {s.workflow_id: s.status for s in await engine.workflows.list(product=P, env=E)}
        assert listed == {"bad": "failed", "good": "completed"}
    import lmdb  # the signal refused above left nothing in the inbox
    env = lmdb.open(str(tmp_path), max_dbs=8, subdir=True, readonly=True)
    with env.begin() as txn:
        assert txn.get(b"bad\x00" + (0).to_bytes(4, "big"), db=env.open_db(b"inbox", txn=txn)) is None
    env.close()


async def test_a_corrupt_instance_record_is_named_by_status_and_left_out_of_recovery(tmp_path):
    async with engine_at(tmp_path) as engine:
        _define_waiter(engine)
        for wf in ("bad", "good"):
            await engine.workflows.execute(product=P, env=E, tag="waiter", workflow_id=wf)
    overwrite_record(tmp_path, b"instances", b"bad")

    async with engine_at(tmp_path) as engine:
        _define_waiter(engine)
        with pytest.raises(sagaloop.CorruptRecordError, match=r"'bad'.*instance"):
            await engine.workflows.status(product=P, env=E, workflow_id="bad")
        await send(engine, "good", "go")
        assert (await result(engine, "good")).status == "completed"
        assert [s.workflow_id for s in await engine.workflows.list(product=P, env=E)] == ["good"]


async def test_an_update_waiting_for_a_step_is_applied_before_the_next_step_starts(tmp_path):
    first_gate, second_gate = Gate("a"), Gate("b")
    seen_by_b: list = []

    async def second():
        seen_by_b.append(dict(ctx_state))
        return await second_gate()

    ctx_state: dict = {}
    async with engine_at(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="back-to-back",
                                 updates={"mark": {"handler": lambda ctx, args: ctx.state.update(marked=True) or "ok"}})
        async def back_to_back(ctx):
            nonlocal ctx_state
            ctx_state = ctx.state
            await ctx.step("a", first_gate)
            await ctx.step("b", second)  # starts right after "a": no gap between the steps

        first = await engine.workflows.execute(product=P, env=E, tag="back-to-back", wait=False)
        await first_gate.entered.wait()
        update = asyncio.ensure_future(engine.workflows.update(product=P, env=E, workflow_id=first.workflow_id,
                                                               update="mark"))
        await until(lambda: messages_queued(engine, first.workflow_id) == 1, "the update waits for step a")
        first_gate.open.set()
        async with asyncio.timeout(2):
            assert await update == "ok"  # not starved by step "b", which never ends on its own
        assert seen_by_b == [{"marked": True}]
        second_gate.open.set()
        assert (await result(engine, first.workflow_id)).status == "completed"


async def test_waits_for_signals_side_by_side_in_one_handler_each_get_theirs(tmp_path):
    async with engine_at(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="both")
        async def both(ctx):
            a, b = await asyncio.gather(ctx.wait_for_signal("a"), ctx.wait_for_signal("b"))
            return [a["n"], b["n"]]

        first = await engine.workflows.execute(product=P, env=E, tag="both")
        await send(engine, first.workflow_id, "b", {"n": 2})
        await send(engine, first.workflow_id, "a", {"n": 1})
        end = await result(engine, first.workflow_id)
        assert (end.status, end.output) == ("completed", [1, 2])
