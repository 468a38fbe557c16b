"""Operators repair executions: replay, restart, resume, replay from a step; related executions; compare.

Each repair is a new execution linked to its origin, and must be exact about which steps run
again and which keep their results: every test counts the real calls of each step.
"""

from __future__ import annotations

from collections import Counter

import pytest

import sagaloop

P, E = "shop", "prd"


class Shop:
    """An order saga whose steps count their calls; ``fail`` names steps that raise (once each, or always)."""

    def __init__(self, engine: sagaloop.Engine) -> None:
        self.calls: Counter[str] = Counter()
        self.undone: list[str] = []
        self.fail: dict[str, int] = {}
        self.seen: list[dict] = []

        def step(tag: str, value: object):
            def run():
                self.calls[tag] += 1
                if self.fail.get(tag, 0) > 0:
                    self.fail[tag] -= 1
                    raise RuntimeError(f"{tag} is down")
                return value
            return run

        def undo(tag: str):
            def run(_output):
                self.undone.append(tag)
            return run

        @engine.workflows.define(product=P, tag="order")
        async def order(ctx):
            self.seen.append({"is_replay": ctx.is_replay, "replayed_from": ctx.replayed_from,
                              "reason": ctx.replay_reason, "is_restored": ctx.is_restored,
                              "checkpoint": ctx.restored_checkpoint, "completed": list(ctx.completed_steps),
                              "input": ctx.input, "state": dict(ctx.state)})
            charge = await ctx.step("charge", step("charge", {"charge_id": "ch-1", "amount": ctx.input["amount"]}),
                                    undo("charge"))
            ctx.state["charged"] = charge["amount"]
            await ctx.step("reserve", step("reserve", {"sku": ctx.input.get("sku", "A")}), undo("reserve"))
            await ctx.checkpoint("paid", {"charge": charge["charge_id"]})
            ctx.state["paid"] = True
            await ctx.step("ship", step("ship", "TRACK-1"), undo("ship"))
            notified = await ctx.step("notify", step("notify", "sent"))
            return {"charge": charge["charge_id"], "notified": notified, "email": ctx.input.get("email")}


async def open_shop(tmp_path):
    engine = sagaloop.Engine(tmp_path / "db", durability="fast")
    await engine.open()
    return engine, Shop(engine)


async def failed_order(engine, shop, workflow_id="wf-1", failing="ship", times=1):
    shop.fail[failing] = times
    result = await engine.workflows.execute(product=P, env=E, tag="order", workflow_id=workflow_id,
                                            input={"amount": 100, "email": "wrong@example.com",
                                                   "address": {"city": "Oslo", "zip": "0150"}})
    assert result.status == "rolled_back", result
    return result


# -- replay ------------------------------------------------------------------------------------------------


async def test_replay_runs_everything_again_with_the_original_input_and_links_back(tmp_path):
    engine, shop = await open_shop(tmp_path)
    try:
        await failed_order(engine, shop)
        shop.calls.clear()
        replay = await engine.workflows.replay(product=P, env=E, workflow_id="wf-1", reason="ship was down")
        assert replay.status == "completed" and replay.workflow_id != "wf-1"
        assert replay.replayed_from == "wf-1"
        assert shop.calls == Counter(charge=1, reserve=1, ship=1, notify=1)  # fresh: every step runs
        assert shop.seen[-1]["is_replay"] and shop.seen[-1]["replayed_from"] == "wf-1"
        assert shop.seen[-1]["reason"] == "ship was down" and shop.seen[-1]["state"] == {}
        assert shop.seen[-1]["input"]["email"] == "wrong@example.com"
        original = await engine.workflows.status(product=P, env=E, workflow_id="wf-1")
        assert original.status == "rolled_back"  # the origin is never changed
    finally:
        await engine.close()


async def test_a_repeated_replay_idempotency_key_returns_the_first_replay_and_runs_nothing(tmp_path):
    engine, shop = await open_shop(tmp_path)
    try:
        await failed_order(engine, shop)
        first = await engine.workflows.replay(product=P, env=E, workflow_id="wf-1", idempotency_key="attempt-2")
        calls = Counter(shop.calls)
        again = await engine.workflows.replay(product=P, env=E, workflow_id="wf-1", idempotency_key="attempt-2")
        assert again.workflow_id == first.workflow_id and again.status == first.status
        assert shop.calls == calls
    finally:
        await engine.close()


async def test_replay_retries_a_failed_replay_and_debug_shows_each_step_in_full(tmp_path):
    engine, shop = await open_shop(tmp_path)
    try:
        await failed_order(engine, shop)
        shop.fail["ship"] = 2  # the replay and its first retry fail too; the second retry completes
        replay = await engine.workflows.replay(product=P, env=E, workflow_id="wf-1",
                                               options={"retries": 2, "debug": True, "timeout": "1m"})
        assert replay.status == "completed"
        family = await engine.workflows.related_executions(product=P, env=E, workflow_id="wf-1")
        assert [e.type for e in family.executions] == ["original", "replay", "replay", "replay"]
        history = await engine.workflows.history(product=P, env=E, workflow_id=replay.workflow_id)
        done = [e.data for e in history.events if e.type == "step_completed"]
        assert {d["step"] for d in done} == {"charge", "reserve", "ship", "notify"}
        assert all("attempts" in d and "duration" in d for d in done)
        with pytest.raises(sagaloop.InvalidArgumentError, match="unknown replay option"):
            await engine.workflows.replay(product=P, env=E, workflow_id="wf-1", options={"retry": 1})
    finally:
        await engine.close()


# -- restart -------------------------------------------------------------------------------------------------


async def test_restart_with_a_new_input_or_an_override_merged_key_by_key(tmp_path):
    engine, shop = await open_shop(tmp_path)
    try:
        await failed_order(engine, shop)
        new = await engine.workflows.restart(product=P, env=E, workflow_id="wf-1", input={"amount": 5})
        assert new.status == "completed" and new.restarted_from == "wf-1"
        assert shop.seen[-1]["input"] == {"amount": 5}
        merged = await engine.workflows.restart(product=P, env=E, workflow_id="wf-1", merge_input=True,
                                                input_override={"email": "right@example.com",
                                                                "address": {"zip": "0151"}})
        assert merged.output["email"] == "right@example.com"
        assert shop.seen[-1]["input"] == {"amount": 100, "email": "right@example.com",
                                          "address": {"city": "Oslo", "zip": "0151"}}
        assert shop.seen[-1]["state"] == {}  # fresh state
    finally:
        await engine.close()


# -- resume --------------------------------------------------------------------------------------------------


async def test_resuming_a_rolled_back_run_runs_the_rolled_back_steps_again(tmp_path):
    engine, shop = await open_shop(tmp_path)
    try:
        await failed_order(engine, shop)  # ship failed; it, charge and reserve were compensated
        assert sorted(shop.undone) == ["charge", "reserve", "ship"]
        shop.calls.clear()
        result = await engine.workflows.resume(product=P, env=E, workflow_id="wf-1")
        assert result.status == "completed" and result.resumed_from == "wf-1"
        assert shop.calls == Counter(charge=1, reserve=1, ship=1, notify=1)  # nothing of it still stood
    finally:
        await engine.close()


async def test_resume_from_step_and_checkpoint_keep_the_steps_before_and_restore_state(tmp_path):
    engine = sagaloop.Engine(tmp_path / "db", durability="fast")
    calls: Counter[str] = Counter()
    fail = {"ship": 1}
    seen: list[dict] = []
    async with engine:
        @engine.workflows.define(product=P, tag="no-undo", options={"rollback_strategy": "none"})
        async def wf(ctx):
            seen.append({"completed": list(ctx.completed_steps), "state": dict(ctx.state),
                         "restored": ctx.is_restored, "checkpoint": ctx.restored_checkpoint})

            def step(tag, value):
                def run():
                    calls[tag] += 1
                    if fail.get(tag):
                        fail[tag] -= 1
                        raise RuntimeError(f"{tag} is down")
                    return value
                return run

            a = await ctx.step("validate", step("validate", {"ok": True}))
            ctx.state["validated"] = a["ok"]
            b = await ctx.step("charge", step("charge", {"id": "ch"}))
            await ctx.checkpoint("paid", {"charge": b["id"]})
            ctx.state["paid"] = True
            await ctx.step("ship", step("ship", "T1"))
            await ctx.step("notify", step("notify", "sent"))
            return {"a": a, "b": b}

        first = await engine.workflows.execute(product=P, env=E, tag="no-undo", workflow_id="wf-r", input={})
        assert first.status == "failed" and first.failed_step == "ship"

        calls.clear()
        resumed = await engine.workflows.resume(product=P, env=E, workflow_id="wf-r")
        assert resumed.status == "completed" and resumed.output == {"a": {"ok": True}, "b": {"id": "ch"}}
        assert calls == Counter(ship=1, notify=1)  # validate and charge kept, not run
        assert seen[-1]["completed"] == ["validate", "charge"] and seen[-1]["restored"]
        assert seen[-1]["state"] == {"validated": True, "paid": True}  # the last state, preserved

        calls.clear()
        again = await engine.workflows.resume(product=P, env=E, workflow_id="wf-r", from_step="charge")
        assert again.status == "completed" and calls == Counter(charge=1, ship=1, notify=1)
        assert seen[-1]["completed"] == ["validate"] and seen[-1]["state"] == {"validated": True}

        calls.clear()
        from_cp = await engine.workflows.resume(product=P, env=E, workflow_id="wf-r", from_checkpoint="paid")
        assert from_cp.status == "completed" and calls == Counter(ship=1, notify=1)
        assert seen[-1]["checkpoint"] == {"name": "paid", "data": {"charge": "ch"}}
        assert seen[-1]["state"] == {"validated": True}  # as it was at the checkpoint

        calls.clear()
        skipped = await engine.workflows.resume(product=P, env=E, workflow_id="wf-r", skip_steps=["ship"])
        assert skipped.status == "completed" and calls == Counter(notify=1)
        detail = await engine.workflows.step_detail(product=P, env=E, workflow_id=skipped.workflow_id, step_tag="ship")
        assert detail.status == "skipped"

        family = await engine.workflows.related_executions(product=P, env=E, workflow_id=skipped.workflow_id)
        assert [e.workflow_id for e in family.executions][0] == "wf-r"
        assert {e.type for e in family.executions} == {"original", "resume"}
        assert all(e.resumed_from == "wf-r" for e in family.executions[1:])

        with pytest.raises(sagaloop.StepNotFoundError):
            await engine.workflows.resume(product=P, env=E, workflow_id="wf-r", from_step="nope")
        with pytest.raises(sagaloop.InvalidArgumentError, match="no checkpoint 'nope'"):
            await engine.workflows.resume(product=P, env=E, workflow_id="wf-r", from_checkpoint="nope")


async def test_resuming_a_running_execution_is_refused(tmp_path):
    async with sagaloop.Engine(tmp_path / "db", durability="fast") as engine:
        @engine.workflows.define(product=P, tag="waits")
        async def waits(ctx):
            await ctx.wait_for_signal("go")

        await engine.workflows.execute(product=P, env=E, tag="waits", workflow_id="wf-w")
        with pytest.raises(sagaloop.WorkflowStillRunningError) as caught:
            await engine.workflows.resume(product=P, env=E, workflow_id="wf-w")
        assert caught.value.code == "still_running" and caught.value.workflow_id == "wf-w"


async def test_a_resumed_run_takes_again_the_signals_its_origin_had_taken(tmp_path):
    async with sagaloop.Engine(tmp_path / "db", durability="fast") as engine:
        fail = {"ship": 1}

        @engine.workflows.define(product=P, tag="approve", options={"rollback_strategy": "none"})
        async def approve(ctx):
            approval = await ctx.wait_for_signal("approved")

            def ship():
                if fail["ship"]:
                    fail["ship"] -= 1
                    raise RuntimeError("down")
                return "shipped"

            return {"by": approval["by"], "ship": await ctx.step("ship", ship)}

        await engine.workflows.execute(product=P, env=E, tag="approve", workflow_id="wf-s")
        await engine.workflows.signal(product=P, env=E, workflow_id="wf-s", signal="approved", payload={"by": "ann"})
        first = await engine.workflows.result(product=P, env=E, workflow_id="wf-s")
        assert first.status == "failed"
        resumed = await engine.workflows.resume(product=P, env=E, workflow_id="wf-s")
        assert resumed.status == "completed" and resumed.output == {"by": "ann", "ship": "shipped"}


# -- replay from a step ------------------------------------------------------------------------------------


async def test_replay_from_step_takes_the_recorded_outputs_or_the_given_ones(tmp_path):
    engine, shop = await open_shop(tmp_path)
    try:
        await failed_order(engine, shop)
        shop.calls.clear()
        result = await engine.workflows.replay_from_step(product=P, env=E, workflow_id="wf-1", from_step="reserve",
                                                         step_outputs={"charge": {"charge_id": "ch-9", "amount": 7}})
        assert result.status == "completed" and result.replayed_from == "wf-1"
        assert shop.calls == Counter(reserve=1, ship=1, notify=1)  # charge took the given output
        assert result.output["charge"] == "ch-9" and shop.seen[-1]["is_replay"]
        with pytest.raises(sagaloop.InvalidArgumentError, match="not a step before"):
            await engine.workflows.replay_from_step(product=P, env=E, workflow_id="wf-1", from_step="charge",
                                                    step_outputs={"ship": 1})
    finally:
        await engine.close()


# -- compare -------------------------------------------------------------------------------------------------


async def test_compare_shows_input_output_status_and_step_differences(tmp_path):
    engine, shop = await open_shop(tmp_path)
    try:
        await failed_order(engine, shop)
        fixed = await engine.workflows.restart(product=P, env=E, workflow_id="wf-1", merge_input=True,
                                               input_override={"email": "right@example.com",
                                                               "address": {"zip": "0151"}})
        diff = await engine.workflows.compare(product=P, env=E, workflow_ids=["wf-1", fixed.workflow_id])
        assert diff.input_diff == {"email": ["wrong@example.com", "right@example.com"],
                                   "address.zip": ["0150", "0151"]}
        assert diff.status == {"wf-1": "rolled_back", fixed.workflow_id: "completed"}
        by_step = {d["step"]: d for d in diff.step_diffs}
        assert by_step["ship"]["wf-1"]["status"] == "failed" and by_step["ship"][fixed.workflow_id]["status"] == "completed"
        assert by_step["charge"]["wf-1"]["status"] == "rolled_back"
        assert set(by_step) == {"charge", "reserve", "ship", "notify"}
        with pytest.raises(sagaloop.InvalidArgumentError, match="two workflow ids"):
            await engine.workflows.compare(product=P, env=E, workflow_ids=["wf-1"])
    finally:
        await engine.close()


async def test_a_resumed_run_that_stops_midway_recovers_with_its_kept_steps(tmp_path):
    """The kept steps live in the resumed run's own record and journal: a stop and a fresh open
    (a new process would do the same) neither runs them nor loses them."""
    calls: Counter[str] = Counter()
    fail = {"ship": 1}

    def define(engine):
        @engine.workflows.define(product=P, tag="gated", options={"rollback_strategy": "none"})
        async def gated(ctx):
            def step(tag):
                def run():
                    calls[tag] += 1
                    if fail.get(tag):
                        fail[tag] -= 1
                        raise RuntimeError(f"{tag} is down")
                    return f"{tag}-done"
                return run

            charged = await ctx.step("charge", step("charge"))
            await ctx.step("ship", step("ship"))
            await ctx.wait_for_signal("delivered")
            return {"charged": charged, "completed": list(ctx.completed_steps)}

    async with sagaloop.Engine(tmp_path / "db", durability="fast") as engine:
        define(engine)
        first = await engine.workflows.execute(product=P, env=E, tag="gated", workflow_id="wf-g")
        assert first.status == "failed"
        resumed = await engine.workflows.resume(product=P, env=E, workflow_id="wf-g")
        assert resumed.status == "running"  # blocked on the signal, with charge kept and ship run again
        assert calls == Counter(charge=1, ship=2)

    async with sagaloop.Engine(tmp_path / "db", durability="fast") as engine:
        define(engine)
        await engine.workflows.signal(product=P, env=E, workflow_id=resumed.workflow_id, signal="delivered")
        done = await engine.workflows.result(product=P, env=E, workflow_id=resumed.workflow_id)
        assert done.status == "completed", done
        assert done.output == {"charged": "charge-done", "completed": ["charge", "ship"]}
        assert calls == Counter(charge=1, ship=2)  # nothing ran again after the reopen


@pytest.mark.parametrize("call,kwargs,match", [
    ("restart", {"input": {"a": 1}, "input_override": {"b": 2}}, "input or input_override"),
    ("restart", {"merge_input": "yes"}, "merge_input must be True or False"),
    ("restart", {"merge_input": True, "input_override": [1]}, "must be a dict"),
    ("resume", {"skip_steps": "ship"}, "skip_steps must be a list"),
    ("resume", {"skip_steps": ["nope"]}, "no step 'nope'"),
    ("resume", {"from_step": "ship", "from_checkpoint": "paid"}, "not both"),
    ("replay", {"options": ["debug"]}, "replay options must be a dict"),
    ("replay", {"options": {"retries": -1}}, "retries must be a non-negative int"),
    ("replay", {"reason": 7}, "a reason must be a string"),
    ("replay_from_step", {"from_step": ""}, "from_step must be a step tag"),
    ("replay_from_step", {"from_step": "ship", "step_outputs": [1]}, "step_outputs must be a dict"),
])
async def test_a_bad_repair_names_the_bad_value_and_starts_nothing(tmp_path, call, kwargs, match):
    engine, shop = await open_shop(tmp_path)
    try:
        await failed_order(engine, shop)
        before = await engine.workflows.list(product=P, env=E)
        with pytest.raises((sagaloop.InvalidArgumentError, sagaloop.StepNotFoundError), match=match):
            await getattr(engine.workflows, call)(product=P, env=E, workflow_id="wf-1", **kwargs)
        assert [e.workflow_id for e in await engine.workflows.list(product=P, env=E)] == \
            [e.workflow_id for e in before]  # nothing new started
        with pytest.raises(sagaloop.WorkflowNotFoundError):
            await getattr(engine.workflows, call)(product=P, env="dev", workflow_id="wf-1",
                                                  **({"from_step": "ship"} if call == "replay_from_step" else {}))
    finally:
        await engine.close()


async def test_a_family_of_four_is_the_same_from_each_member(tmp_path):
    engine, shop = await open_shop(tmp_path)
    try:
        await failed_order(engine, shop)
        replay = await engine.workflows.replay(product=P, env=E, workflow_id="wf-1")
        restart = await engine.workflows.restart(product=P, env=E, workflow_id=replay.workflow_id,
                                                 input={"amount": 3})
        resume = await engine.workflows.resume(product=P, env=E, workflow_id="wf-1")
        members = ["wf-1", replay.workflow_id, restart.workflow_id, resume.workflow_id]
        seen = set()
        for member in members:
            family = await engine.workflows.related_executions(product=P, env=E, workflow_id=member)
            listed = [(e.workflow_id, e.type, e.replayed_from, e.restarted_from, e.resumed_from)
                      for e in family.executions]
            seen.add(tuple(listed))
            assert [e.workflow_id for e in family.executions] == members  # oldest first
        assert seen == {(("wf-1", "original", None, None, None),
                         (replay.workflow_id, "replay", "wf-1", None, None),
                         (restart.workflow_id, "restart", None, replay.workflow_id, None),
                         (resume.workflow_id, "resume", None, None, "wf-1"))}
    finally:
        await engine.close()


@pytest.mark.slow  # a real process, SIGKILLed
def test_a_resumed_run_sigkilled_midway_finishes_after_reopening_without_running_kept_steps(tmp_path):
    import asyncio

    from processes import TESTS_DIR, Spawner
    from worker_common import side_names

    from sagaloop.testing import wait_idle

    with Spawner(tmp_path, TESTS_DIR / "resume_worker.py") as spawn:
        child = spawn("resume")
        assert child.wait_for("ORIGIN ").split() == ["ORIGIN", "failed"]
        child.wait_killed()
        # origin: charge, reserve, ship (failed); the resumed run: ship, killed inside it
        assert side_names(spawn.sidefile) == ["charge", "reserve", "ship", "ship"]

        async def reopen():
            import resume_worker

            async with sagaloop.Engine(spawn.datadir, durability="durable") as engine:
                resume_worker.define(engine, str(spawn.sidefile))
                await wait_idle(engine)
                family = await engine.workflows.related_executions(product="repairs", env="test",
                                                                   workflow_id="wf-origin")
                resumed = family.executions[-1]
                return resumed, await engine.workflows.result(product="repairs", env="test",
                                                              workflow_id=resumed.workflow_id)

        resumed, result = asyncio.run(reopen())
        assert resumed.type == "resume" and resumed.resumed_from == "wf-origin"
        assert result.status == "completed", result
        assert result.output == {t: f"{t}-done" for t in ("charge", "reserve", "ship", "notify")}
        # kept steps never ran again; ship (in flight at the kill) ran again: at least once; notify once
        assert side_names(spawn.sidefile) == ["charge", "reserve", "ship", "ship", "ship", "notify"]
