"""Which compensations run, and in what order: hypothesis against the contract's rule.

API.md, "Execution and results" and "The context ctx", and the product document's
"Rollback Strategies" / "Step Options for Failure Handling" / "Manual Rollback":

* on a failure the failing step's own compensation runs first (it gets ``None``), then
  the selected completed steps' compensations, newest completion first; all of them
  appear in ``rollback_result.rolled_back_steps``;
* ``reverse_all`` selects every completed step with a compensation, ``critical_only``
  the critical ones, ``to_checkpoint`` the ones after the most recent checkpoint (all
  of them when there is none yet), ``none`` nothing;
* ``ctx.trigger_rollback`` rolls back by the strategy (``none`` acts as ``reverse_all``),
  the handler goes on and the run ends ``rolled_back`` with the handler's return;
* a failure that rolls back at least one step ends ``rolled_back``, otherwise ``failed``;
* a step that fails with ``allow_fail`` is ``skipped``: never compensated;
* ``rollback_result.trigger`` is ``step_failed`` or ``manual``.

``expected_plan`` below is that rule, written from the text; the engine's planner is
never used as the oracle. Random workflows run on a real engine and their
compensations record what actually ran. A second property checks the pure planner
(``sagaloop.runtime.decisions.rollback``) against the same rule.

Examples: a bounded number by default; ``SAGALOOP_LONG_TESTS=1`` runs at least 1,000
of each.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import EngineOnALoop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sagaloop
from sagaloop.runtime.decisions.rollback import (
    STRATEGIES,
    StepFacts,
    ending_status,
    plan_rollback,
)

P, E = "props", "test"
REASON = "manual rollback from the handler"
LONG = os.environ.get("SAGALOOP_LONG_TESTS") == "1"
ENGINE_EXAMPLES = 1000 if LONG else 50  # per strategy x ending, 12 of them: 12,000 or 600 workflows
PLANNER_EXAMPLES = 3000 if LONG else 400


# -- the oracle: the contract's rule, from the text ------------------------------------------------


@dataclass(frozen=True)
class Done:
    """A step as the rule sees it."""

    tag: str
    has_compensation: bool
    critical: bool
    after_last_checkpoint: bool  # no checkpoint between it and the rollback (or none at all)


def expected_plan(strategy: str, completed: list[Done], failing: Done | None, *, manual: bool) -> list[str]:
    """The compensations that run, in order. ``completed`` is in completion order."""
    if strategy == "none":
        if not manual:
            return []
        strategy = "reverse_all"  # trigger_rollback under "none" acts as reverse_all

    def selected(step: Done) -> bool:
        if not step.has_compensation:
            return False
        if strategy == "critical_only":
            return step.critical
        if strategy == "to_checkpoint":
            return step.after_last_checkpoint
        return True  # reverse_all

    own = [failing.tag] if failing is not None and selected(failing) else []
    return own + [s.tag for s in reversed(completed) if selected(s)]


def expected_ending(*, rolled_back: int, failed_compensations: int) -> str:
    """How a failure ends: ``failed`` when a compensation failed or nothing was rolled back."""
    if failed_compensations:
        return "failed"
    return "rolled_back" if rolled_back else "failed"


# -- random workflows ------------------------------------------------------------------------------
#
# A workflow is a list of items, given to the handler as its input:
#   {"kind": "step", tag, comp, critical, mode}   mode: ok | flaky (fails once, retried) | skipped (allow_fail)
#   {"kind": "group", steps: [...], finish: [i, ...]}   concurrent ok steps completing in ``finish`` order
#   {"kind": "checkpoint", name}
#   {"kind": "rollback"}                          ctx.trigger_rollback
#   {"kind": "fail", tag, comp, critical}         a step that raises; the run fails there

step_fields = st.fixed_dictionaries({
    "comp": st.booleans(), "critical": st.booleans(), "sync_comp": st.booleans(),
    "mode": st.sampled_from(["ok", "ok", "ok", "flaky", "skipped"]),
})
plain_step = step_fields.map(lambda f: {"kind": "step", **f})
group = st.lists(step_fields.map(lambda f: {**f, "mode": "ok"}), min_size=2, max_size=3).flatmap(
    lambda steps: st.permutations(range(len(steps))).map(
        lambda finish: {"kind": "group", "steps": steps, "finish": list(finish)}))
checkpoint = st.builds(dict, kind=st.just("checkpoint"))  # a new dict per draw: sagas() names it


@st.composite
def sagas(draw, strategy: str, ending: str) -> dict:
    items = draw(st.lists(st.one_of(plain_step, plain_step, checkpoint, group), max_size=8))
    if ending == "manual":
        items.insert(draw(st.integers(0, len(items))), {"kind": "rollback"})
    elif ending == "step_fails":
        items.append({"kind": "fail", **draw(step_fields), "mode": "fail"})
    names = (f"s{i}" for i in itertools.count())
    for n, item in enumerate(items):  # unique tags and checkpoint names, in call order
        if item["kind"] == "checkpoint":
            item["name"] = f"cp{n}"
        for step in item["steps"] if item["kind"] == "group" else [item]:
            if "mode" in step:
                step["tag"] = next(names)
    return {"strategy": strategy, "items": items, "ending": ending}


def output_of(tag: str) -> dict:
    return {"out": tag}


def model(spec: dict) -> dict:
    """What the contract says this workflow does: compensations, ending, completed steps."""
    completed: list[Done] = []
    checkpoints = 0
    facts: dict[str, int] = {}  # tag -> checkpoints seen before it
    skipped: list[str] = []
    plan: list[str] = []
    failing = None
    status = "completed"

    def done(step: dict) -> Done:
        return Done(step["tag"], step["comp"], step["critical"], facts[step["tag"]] == checkpoints)

    for item in spec["items"]:
        kind = item["kind"]
        if kind == "checkpoint":
            checkpoints += 1
        elif kind == "group":
            for i in item["finish"]:
                facts[item["steps"][i]["tag"]] = checkpoints
                completed.append(item["steps"][i])
        elif kind == "step":
            facts[item["tag"]] = checkpoints
            if item["mode"] == "skipped":
                skipped.append(item["tag"])
            else:
                completed.append(item)
        elif kind == "rollback":
            plan = expected_plan(spec["strategy"], [done(s) for s in completed], None, manual=True)
            status = "rolled_back"  # the handler goes on; the run then ends rolled_back
        else:  # "fail": the last item
            facts[item["tag"]] = checkpoints
            failing = item
            plan = expected_plan(spec["strategy"], [done(s) for s in completed], done(item), manual=False)
            status = expected_ending(rolled_back=len(plan), failed_compensations=0)
    return {"plan": plan, "status": status, "failing": failing, "skipped": skipped,
            "completed_steps": [s["tag"] for s in completed]}


# -- the workflow under test -------------------------------------------------------------------------

LEDGERS: dict[str, list[tuple[str, object]]] = {}  # workflow id -> compensations that ran, with their argument
ATTEMPTS: Counter = Counter()


def compensation(ledger: list, tag: str, sync: bool):
    if sync:
        return lambda result: ledger.append((tag, result))

    async def undo(result):
        ledger.append((tag, result))
    return undo


def step_call(ctx, ledger: list, step: dict, handler=None):
    tag = step["tag"]
    options = {"critical": step["critical"]}
    if step["mode"] == "flaky":
        options.update(retries=1, retry_delay=0)
    elif step["mode"] == "skipped":
        options["allow_fail"] = True

    def work():
        ATTEMPTS[ctx.workflow_id, tag] += 1
        if step["mode"] in ("skipped", "fail") or (step["mode"] == "flaky" and ATTEMPTS[ctx.workflow_id, tag] == 1):
            raise RuntimeError(f"{tag} broke")
        return output_of(tag)

    comp = compensation(ledger, tag, step["sync_comp"]) if step["comp"] else None
    return ctx.step(tag, handler or work, comp, options)


async def saga(ctx):
    ledger = LEDGERS[ctx.workflow_id]
    manual = None
    for item in ctx.input["items"]:
        kind = item["kind"]
        if kind == "checkpoint":
            await ctx.checkpoint(item["name"], {"at": item["name"]})
        elif kind == "rollback":
            manual = (await ctx.trigger_rollback(REASON)).rolled_back_steps
        elif kind == "group":
            turns = [asyncio.Event() for _ in item["steps"]]
            turns[0].set()

            def finishing(step_index: int):
                rank = item["finish"].index(step_index)

                async def work():  # completes only after the one before it in ``finish``
                    await turns[rank].wait()
                    if rank + 1 < len(turns):
                        turns[rank + 1].set()
                    return output_of(item["steps"][step_index]["tag"])
                return work

            await asyncio.gather(*(step_call(ctx, ledger, step, finishing(i)) for i, step in enumerate(item["steps"])))
        else:  # step, or the failing step
            await step_call(ctx, ledger, item)
    return {"manual": manual}


def engine_with_sagas(path: Path) -> EngineOnALoop:
    """An engine on its own loop with one saga workflow per rollback strategy."""
    h = EngineOnALoop(path)
    for strategy in STRATEGIES:
        h.engine.workflows.define(product=P, tag=f"saga-{strategy}", handler=saga,
                                  options={"rollback_strategy": strategy})
    return h


async def run_and_check(engine: sagaloop.Engine, workflow_id: str, spec: dict) -> None:
    ledger = LEDGERS[workflow_id] = []
    want = model(spec)
    wf = engine.workflows
    started = await wf.execute(product=P, env=E, tag=f"saga-{spec['strategy']}", input=spec, workflow_id=workflow_id)
    # execute waits through a flaky step's retry wait: it returns the end.
    res = await wf.result(product=P, env=E, workflow_id=workflow_id, timeout="20s")
    assert started.status == res.status
    failing = want["failing"]

    # The compensations that ran, in order, each with its argument (the failing step's gets None).
    own = failing["tag"] if failing is not None else None
    assert ledger == [(tag, None if tag == own else output_of(tag)) for tag in want["plan"]], (ledger, want)
    assert res.status == want["status"], res
    assert res.completed_steps == want["completed_steps"]
    rb = res.rollback_result
    if spec["ending"] == "completes":
        assert rb is None and res.error is None and res.output == {"manual": None}
    else:
        assert rb is not None, res
        assert rb.rolled_back_steps == want["plan"]
        assert rb.success is True and rb.failed_steps == []
    if spec["ending"] == "manual":
        assert rb.trigger == "manual" and rb.reason == REASON
        assert res.output == {"manual": want["plan"]}  # what trigger_rollback returned to the handler
        assert res.error is None
    elif spec["ending"] == "step_fails":
        assert rb.trigger == "step_failed"
        assert res.failed_step == own and res.error.step == own
        assert res.error.message == f"{own} broke"

    history = await wf.history(product=P, env=E, workflow_id=workflow_id)
    assert [e.data["step"] for e in history.events if e.type == "step_rolled_back"] == want["plan"]
    assert history.events[-1].type == f"workflow_{want['status']}"
    for tag in want["skipped"]:
        detail = await wf.step_detail(product=P, env=E, workflow_id=workflow_id, step_tag=tag)
        assert detail.status == "skipped" and detail.output is None, detail
    for tag in want["plan"]:
        detail = await wf.step_detail(product=P, env=E, workflow_id=workflow_id, step_tag=tag)
        assert detail.rollback_status == "completed", detail
        assert detail.status == ("failed" if tag == own else "rolled_back"), detail
    LEDGERS.pop(workflow_id)


@pytest.mark.parametrize("ending", ["completes", "step_fails", "manual"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_compensations_run_by_the_contracts_rule(tmp_path, strategy, ending):
    """Random workflows on a real engine: compensations, their order and the ending match the rule."""
    ran = []
    ids = EngineOnALoop.names("saga")
    with engine_with_sagas(tmp_path / "db") as h:
        @settings(max_examples=ENGINE_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(spec=sagas(strategy, ending))
        def check(spec):
            ran.append(spec)
            h.run(run_and_check(h.engine, next(ids), spec))

        check()
    assert len(ran) >= ENGINE_EXAMPLES // 2  # hypothesis did run the examples (not a vacuous pass)


# -- the pure planner against the same rule -------------------------------------------------------


@st.composite
def planner_cases(draw) -> dict:
    n = draw(st.integers(0, 10))
    # Positions in call order with gaps, where checkpoints (and other journaled calls) sit.
    positions = sorted(draw(st.sets(st.integers(0, 60), min_size=n + 1, max_size=n + 1)))
    flags = draw(st.lists(st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()),
                          min_size=n, max_size=n))
    completed_idx = [i for i in range(n) if flags[i][2]]
    finish = draw(st.permutations(completed_idx))  # completion order may differ from call order
    steps = [StepFacts(tag=f"t{i}", position=positions[i],
                       order=finish.index(i) if i in finish else -1,
                       critical=critical, has_rollback=has_rollback, completed=completed,
                       rolled_back=completed and rolled_back)
             for i, (critical, has_rollback, completed, rolled_back) in enumerate(flags)]
    free = sorted(set(range(positions[-1])) - set(positions))
    checkpoint = draw(st.none() | st.sampled_from(free)) if free else None
    trigger = draw(st.sampled_from(["step_failed", "manual"]))
    failed = None
    if trigger == "step_failed" and draw(st.booleans()):  # a step failed (else: a timeout, a cancel)
        critical, has_rollback = draw(st.booleans()), draw(st.booleans())
        failed = StepFacts(tag="failed", position=positions[-1], order=-1, critical=critical,
                           has_rollback=has_rollback, completed=False, rolled_back=False)
    return {"strategy": draw(st.sampled_from(STRATEGIES)), "steps": draw(st.permutations(steps)),
            "checkpoint": checkpoint, "failed": failed, "manual": trigger == "manual"}


def as_done(step: StepFacts, checkpoint: int | None) -> Done:
    return Done(step.tag, step.has_rollback, step.critical, checkpoint is None or step.position > checkpoint)


@settings(max_examples=PLANNER_EXAMPLES, deadline=None, database=None)
@given(case=planner_cases())
def test_planner_follows_the_contracts_rule(case):
    """``plan_rollback`` selects and orders as the contract says, whatever order the facts come in.

    Steps whose compensation already ran (a rollback resumed after a crash) stay in the
    plan: the resumed rollback must report the same list it would have uninterrupted.
    """
    cp = case["checkpoint"]
    completed = sorted((s for s in case["steps"] if s.completed), key=lambda s: s.order)
    failed = case["failed"]
    want = expected_plan(case["strategy"], [as_done(s, cp) for s in completed],
                         as_done(failed, cp) if failed is not None else None, manual=case["manual"])
    got = plan_rollback(case["strategy"], list(case["steps"]), checkpoint_position=cp,
                        failed_step=failed, manual=case["manual"])
    assert got == want


@settings(max_examples=PLANNER_EXAMPLES, deadline=None, database=None)
@given(rolled_back=st.integers(0, 50), failed_compensations=st.integers(0, 50))
def test_ending_status_follows_the_contracts_rule(rolled_back, failed_compensations):
    """A failure ends rolled_back only when something was rolled back and no compensation failed."""
    assert ending_status(rolled_back=rolled_back, failed_compensations=failed_compensations) == \
        expected_ending(rolled_back=rolled_back, failed_compensations=failed_compensations)


@settings(max_examples=PLANNER_EXAMPLES, deadline=None, database=None)
@given(strategy=st.text(max_size=20).filter(lambda s: s not in STRATEGIES))
def test_planner_refuses_an_unknown_strategy(strategy):
    """An unknown strategy is a ValueError naming it, never an empty plan."""
    with pytest.raises(ValueError) as info:
        plan_rollback(strategy, [], checkpoint_position=None)
    assert repr(strategy) in str(info.value)


def test_the_oracle_agrees_with_the_product_documents_examples():
    """The rule above, on the product document's own examples (a check of the oracle itself)."""
    def d(tag, comp=True, critical=False, after=True) -> Done:
        return Done(tag, comp, critical, after)

    # reverse_all: step-c fails without a rollback -> rollbackB, rollbackA.
    assert expected_plan("reverse_all", [d("step-a"), d("step-b")], d("step-c", comp=False), manual=False) == \
        ["step-b", "step-a"]
    # critical_only: only payment.
    assert expected_plan("critical_only", [d("payment", critical=True), d("analytics")], d("inventory", comp=False),
                         manual=False) == ["payment"]
    # to_checkpoint: inventory (own, first) and payment; create-user is before the checkpoint.
    assert expected_plan("to_checkpoint", [d("create-user", after=False), d("payment")], d("inventory"),
                         manual=False) == ["inventory", "payment"]
    # none: nothing on failure; a manual rollback acts as reverse_all.
    assert expected_plan("none", [d("setup")], d("risky", comp=False), manual=False) == []
    assert expected_plan("none", [d("setup"), d("b")], None, manual=True) == ["b", "setup"]
    assert expected_ending(rolled_back=0, failed_compensations=0) == "failed"
    assert expected_ending(rolled_back=2, failed_compensations=1) == "failed"


# -- found while writing the properties ------------------------------------------------------------


async def test_execute_waits_through_a_steps_retry_wait(tmp_path):
    """A flaky step retried after 0 ms: execute returns the end, not 'running'."""
    attempts: list[int] = []

    def flaky():
        attempts.append(len(attempts) + 1)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    async with sagaloop.Engine(tmp_path / "db", durability="fast") as engine:
        @engine.workflows.define(product=P, tag="flaky")
        async def flaky_workflow(ctx):
            return await ctx.step("flaky", flaky, None, {"retries": 1, "retry_delay": 0})

        started = await engine.workflows.execute(product=P, env=E, tag="flaky", input={}, workflow_id="f1")
        ended = await engine.workflows.result(product=P, env=E, workflow_id="f1", timeout="10s")
    assert ended.status == "completed" and ended.output == "ok" and attempts == [1, 2]
    assert started == ended
