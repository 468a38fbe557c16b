"""The soak's plan: which workflows run, with what shape, and what each one must end like.

Shared by the worker (``soak_worker.py``, which runs the specs) and the checks
(``soak_checks.py``, which derives each run's expected end from the same spec).
Pure code: no sagaloop, no I/O.

A *spec* is a plain dict, passed to the workflow as its input, so the handler
is deterministic across replays. ``make_spec(seed, i)`` depends only on
``(seed, i)``, so a run with a bigger quota starts with the same workflows.
Its fields:

* ``ops``: a small program the handler interprets: ``step``, ``retry_step``
  (fails its first ``fails`` runs), ``fail_step`` (always fails),
  ``block_step`` (runs until cancelled), ``checkpoint``, ``sleep``,
  ``signal`` (wait #k), ``rollback`` (``ctx.trigger_rollback``),
  ``block_wait`` (waits for a signal nobody sends), ``child``
  (``ctx.workflow`` with a child spec and a parent-close policy), ``poll``
  (steps until ``ctx.cancel_requested``);
* ``signals``: how the worker's sender spaces each signal (``_signal_gap``);
* ``updates``: the ms the update sender waits before each update;
* ``cancel_when``: side-log events ``[ev, wf, step]``, any of which, seen in
  the current life, lets the canceller cancel the workflow.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

PRODUCT = "soak"
ENV = "test"
STRATEGIES = ("reverse_all", "critical_only", "to_checkpoint", "none")
POLICIES = ("terminate", "abandon", "request_cancel")
SIGNAL = "go"          # the signal the ``signals`` workflows wait for (payload ``{"seq": n}``)
NEVER = "never"        # the signal ``block_wait`` waits for: nobody sends it
UPDATE = "bump"        # appends ``args["id"]`` to ``ctx.state["updates"]``, replies with the new length
QUERY = "progress"     # ``{"updates": [...]}``
BLOCK_STEP_S = 60.0    # a ``block_step`` sleeps this long: only a cancel ends it in time

KIND_WEIGHTS = {"plain": 2, "sleepy": 1, "retry": 2, "fail": 4, "manual": 2, "signals": 8, "cancel": 3, "parent": 4}
END_STATUSES = ("completed", "failed", "rolled_back", "cancelled")


def tag_for(strategy: str) -> str:
    """The definition tag of a strategy: one definition (one interpreter) per strategy."""
    return f"saga-{strategy}"


def workflow_id(i: int) -> str:
    return f"w{i:05d}"


# -- specs --------------------------------------------------------------------------------------------


def _step(rng: random.Random, tag: str, *, comp: float = 0.8) -> dict:
    sync = rng.random() < 0.25
    return {"op": "step", "tag": tag, "comp": rng.random() < comp, "critical": rng.random() < 0.4,
            "sync": sync, "ms": 0 if sync else rng.choice([0, 0, 5, 30, 100, 250]),
            "comp_ms": rng.choice([0, 0, 20, 80, 200]), "comp_sync": rng.random() < 0.25}


def _steps(rng: random.Random, n: int, prefix: str = "s") -> list[dict]:
    return [_step(rng, f"{prefix}{k + 1}") for k in range(n)]


def _maybe_checkpoint(rng: random.Random, ops: list[dict], p: float = 0.6) -> list[dict]:
    """Insert a checkpoint between two ops (never first), with probability ``p``."""
    if len(ops) >= 1 and rng.random() < p:
        at = rng.randint(1, len(ops))
        ops = ops[:at] + [{"op": "checkpoint", "name": "cp"}] + ops[at:]
    return ops


def _signal_gap(rng: random.Random) -> list:
    """How the sender spaces a signal from the one before: ``["turns", n]`` ``n`` event-loop turns after
    ``signal()`` returned (0: back to back), ``["ms", n]`` ``n`` ms after. One or two turns land the signal
    while the instance is between two waits (it takes a few turns from one to the next)."""
    r = rng.random()
    if r < 0.2:
        return ["turns", 0]
    if r < 0.55:
        return ["turns", rng.randint(1, 2)]
    if r < 0.7:
        return ["turns", rng.randint(3, 6)]
    if r < 0.8:
        return ["ms", rng.randint(1, 5)]
    if r < 0.92:
        return ["ms", rng.randint(10, 60)]
    return ["ms", rng.randint(100, 400)]


def make_spec(seed: int, i: int) -> dict:
    """The spec of workflow number ``i`` of the run with ``seed``."""
    rng = random.Random(f"sagaloop-soak/{seed}/{i}")
    wf = workflow_id(i)
    kind = rng.choices(list(KIND_WEIGHTS), weights=list(KIND_WEIGHTS.values()))[0]
    strategy = rng.choice(STRATEGIES)
    spec: dict = {"i": i, "wf": wf, "kind": kind, "strategy": strategy, "ops": [], "signals": [],
                  "updates": [], "cancel_when": None, "idempotent": rng.random() < 0.5}
    if kind == "plain":
        ops = _steps(rng, rng.randint(1, 4))
        if rng.random() < 0.5:
            ops.insert(rng.randint(0, len(ops)), {"op": "sleep", "ms": rng.randint(20, 300)})
        spec["ops"] = _maybe_checkpoint(rng, ops, 0.3)
    elif kind == "sleepy":
        ops = []
        for k in range(rng.randint(2, 3)):
            ops += [_step(rng, f"s{k + 1}"), {"op": "sleep", "ms": rng.randint(50, 400)}]
        spec["ops"] = ops
    elif kind == "retry":
        form = rng.choice(["policy", "shorthand"])
        spec["ops"] = _steps(rng, rng.randint(0, 2)) + [
            {"op": "retry_step", "tag": "flaky", "fails": rng.randint(1, 2), "form": form,
             "delay": rng.randint(20, 80), "comp": True, "critical": False, "sync": False, "ms": rng.choice([0, 20]),
             "comp_ms": 0, "comp_sync": False}] + _steps(rng, rng.randint(0, 1), prefix="t")
    elif kind == "fail":
        ops = _maybe_checkpoint(rng, _steps(rng, rng.randint(1, 4)))
        boom = {"op": "fail_step", "tag": "boom", "comp": rng.random() < 0.6, "critical": rng.random() < 0.5,
                "ms": rng.choice([0, 5, 50]), "comp_ms": rng.choice([0, 5, 50]), "comp_sync": False}
        spec["ops"] = ops + [boom, _step(rng, "never-reached")]
    elif kind == "manual":
        ops = _maybe_checkpoint(rng, _steps(rng, rng.randint(1, 3)))
        spec["ops"] = ops + [{"op": "rollback"}] + _steps(rng, rng.randint(0, 2), prefix="after")
    elif kind == "signals":
        n = rng.randint(2, 8)
        ops: list[dict] = []
        for k in range(n):
            ops.append({"op": "signal", "k": k})
            step = _step(rng, f"after-{k}")
            step["ms"] = 0 if step["sync"] else rng.choice([0, 0, 0, 0, 5, 60])
            ops.append(step)
            if rng.random() < 0.25:
                ops.append({"op": "sleep", "ms": rng.randint(20, 150)})
        spec["ops"] = ops
        spec["signals"] = [["ms", rng.randint(0, 30)]] + [_signal_gap(rng) for _ in range(n - 1)]
        spec["updates"] = [rng.randint(0, 200) for _ in range(rng.choice([0, 1, 2, 3]))]
    elif kind == "cancel":
        ops = _maybe_checkpoint(rng, _steps(rng, rng.randint(1, 3)))
        if rng.random() < 0.5:
            ops.append({"op": "block_wait"})
            spec["cancel_when"] = [["blocking", wf, None]]
        else:
            block = _step(rng, "blocker", comp=0.7)
            block.update(op="block_step", sync=False, ms=0)
            ops.append(block)
            spec["cancel_when"] = [["step_ran", wf, "blocker"]]
        spec["ops"] = ops
    else:  # parent
        _parent(rng, spec)
    if rng.random() < 0.6:  # think time first: more runs are in flight, or asleep, when a kill comes
        spec["ops"].insert(0, {"op": "sleep", "ms": rng.randint(100, 1200)})
    return spec


def _parent(rng: random.Random, spec: dict) -> None:
    """A parent with one child workflow, under a parent-close policy; it completes, fails or is cancelled."""
    wf = spec["wf"]
    mode = rng.choice(["ok", "fail", "cancel"])
    policy = rng.choice(POLICIES)
    kid = f"{wf}-kid"
    child: dict = {"i": spec["i"], "wf": kid, "kind": "kid", "strategy": rng.choice(STRATEGIES), "ops": [],
                   "signals": [], "updates": [], "cancel_when": None, "idempotent": False}
    if mode in ("ok", "fail"):
        child["ops"] = [_step(rng, "c1", comp=0.9), _step(rng, "c2", comp=0.9)]
    elif policy == "terminate":  # blocks until its parent's close cancels it
        child["ops"] = [_step(rng, "c1", comp=1.0), {"op": "block_wait"}]
        spec["cancel_when"] = [["blocking", kid, None]]
    elif policy == "abandon":  # runs on after its parent is gone
        child["ops"] = [_step(rng, "c1", comp=1.0), {"op": "sleep", "ms": rng.randint(100, 400)},
                        _step(rng, "c2", comp=1.0)]
        spec["cancel_when"] = [["step_acked", kid, "c1"], ["blocking", wf, None]]
    else:  # request_cancel: polls ctx.cancel_requested between steps
        child["ops"] = [_step(rng, "c1", comp=1.0), {"op": "poll", "n": 8, "ms": 50}]
        spec["cancel_when"] = [["step_acked", kid, "c1"], ["blocking", wf, None]]
    p1 = _step(rng, "p1", comp=0.9)
    ops = [p1, {"op": "child", "child": child, "policy": policy}]
    if mode == "ok":
        ops.append(_step(rng, "p2"))
    elif mode == "fail":
        ops.append({"op": "fail_step", "tag": "boom", "comp": rng.random() < 0.5, "critical": False, "ms": 0,
                    "comp_ms": 0, "comp_sync": False})
    else:
        ops.append({"op": "block_wait"})
    spec.update(kind=f"parent-{mode}", ops=ops, policy=policy, child=child)


def label(spec: dict) -> str:
    """A short human name of a spec's shape, for violation listings."""
    parts = [spec["kind"], spec["strategy"]]
    if spec.get("policy"):
        parts.append(spec["policy"])
    if spec["kind"] == "cancel":
        parts.append("in-step" if spec["ops"][-1]["op"] == "block_step" else "in-wait")
    return "/".join(parts)


def child_specs(spec: dict) -> list[dict]:
    return [op["child"] for op in spec["ops"] if op["op"] == "child"]


def step_ops(spec: dict) -> list[dict]:
    """The ops of a spec that are ``ctx.step`` calls (not children, not polls)."""
    return [op for op in spec["ops"] if op["op"] in ("step", "retry_step", "fail_step", "block_step")]


# -- what a run must end like ------------------------------------------------------------------------


@dataclass
class Expected:
    """How one workflow must end, and which compensations must have run, in which order.

    ``comps`` is the whole *family's* order (the workflow's and its child's, as
    ``(workflow_id, step)``): a child compensated by its parent's rollback runs
    its compensations in the slot of its step; a child cancelled by its
    parent's close (``terminate``) runs them before the parent's own.
    ``comp_args`` says what each compensation must receive: ``"output"`` (the
    step's recorded output) or ``None`` (a failed or interrupted step).
    """

    status: str
    rolled_back_steps: list[str]
    trigger: str | None
    failed_step: str | None = None
    comps: list[tuple[str, str]] = field(default_factory=list)
    comp_args: dict[tuple[str, str], str | None] = field(default_factory=dict)
    children: dict[str, "Expected"] = field(default_factory=dict)
    error_code: str | None = None


@dataclass
class _Step:
    tag: str
    position: int
    comp: bool
    critical: bool
    child: dict | None = None  # the child spec, for a ctx.workflow step


def _selected(strategy: str, step: _Step, checkpoint: int | None, manual: bool) -> bool:
    """The planner's rule (``sagaloop/runtime/decisions/rollback.py``), restated independently."""
    if strategy == "none":
        if not manual:
            return False
        strategy = "reverse_all"
    if not step.comp:
        return False
    if strategy == "critical_only":
        return step.critical
    if strategy == "to_checkpoint" and checkpoint is not None:
        return step.position > checkpoint
    return True


def _plan(strategy: str, done: list[_Step], checkpoint: int | None, *, manual: bool,
          failed: _Step | None = None) -> list[_Step]:
    plan = [failed] if failed is not None and _selected(strategy, failed, checkpoint, manual) else []
    return plan + [s for s in reversed(done) if _selected(strategy, s, checkpoint, manual)]


def expect(spec: dict, ending: str = "natural", *, child_completed: bool = False) -> Expected:
    """The end of ``spec`` run to its natural end, or cancelled at its blocking point.

    ``ending``: ``natural`` (no cancel), ``cancel`` (the cancel lands where the
    spec blocks: a ``block_wait``, a ``block_step`` or, for a parent, while it
    waits for its child, unless ``child_completed``), or ``child_failed`` (a
    parent that found its child already cancelled by a close it did not
    survive: it fails at the child step; see ``soak_checks``).
    """
    wf, strategy = spec["wf"], spec["strategy"]
    done: list[_Step] = []
    rolled_before: set[str] = set()
    rolled_all: list[str] = []
    comps: list[tuple[str, str]] = []
    args: dict[tuple[str, str], str | None] = {}
    children: dict[str, Expected] = {}
    checkpoint: int | None = None
    manual_done = False

    def run_plan(plan: list[_Step], failed: _Step | None) -> None:
        for st in plan:
            rolled_all.append(st.tag)
            rolled_before.add(st.tag)
            if st.child is not None:
                if st is failed:
                    continue  # the child did not complete: nothing of it to compensate
                kid = _child_compensated(st.child)
                children[st.child["wf"]] = kid
                comps.extend(kid.comps)
                args.update(kid.comp_args)
            else:
                comps.append((wf, st.tag))
                args[(wf, st.tag)] = None if st is failed else "output"

    def end(status: str, trigger: str | None, failed: _Step | None, code: str | None) -> Expected:
        remaining = [s for s in done if s.tag not in rolled_before]
        plan = _plan(strategy, remaining, checkpoint, manual=False, failed=failed)
        run_plan(plan, failed)
        if status != "cancelled":
            status = "rolled_back" if rolled_all else "failed"
        return Expected(status, list(rolled_all), trigger,
                        failed.tag if failed is not None and trigger == "step_failed" and failed.child is None else None,
                        comps, args, children, code)

    for position, op in enumerate(spec["ops"]):
        kind = op["op"]
        if kind in ("step", "retry_step"):
            done.append(_Step(op["tag"], position, op["comp"], op["critical"]))
        elif kind == "checkpoint":
            checkpoint = position
        elif kind == "rollback":
            remaining = [s for s in done if s.tag not in rolled_before]
            run_plan(_plan(strategy, remaining, checkpoint, manual=True), None)
            manual_done = True
        elif kind == "fail_step":
            return end("failed", "step_failed", _Step(op["tag"], position, op["comp"], op["critical"]), "step_failed")
        elif kind == "block_step" and ending == "cancel":
            return end("cancelled", "cancel", _Step(op["tag"], position, op["comp"], op["critical"]), "cancelled")
        elif kind == "block_wait" and ending == "cancel":
            return end("cancelled", "cancel", None, "cancelled")
        elif kind == "child":
            child, policy = op["child"], op["policy"]
            step = _Step(child["wf"], position, True, False, child)
            if ending == "child_failed":
                children[child["wf"]] = _child_closed(child)
                comps.extend(children[child["wf"]].comps)
                args.update(children[child["wf"]].comp_args)
                return end("failed", "step_failed", None, "child_failed")
            if ending == "cancel" and not child_completed:
                if policy == "terminate":
                    children[child["wf"]] = _child_closed(child)
                    comps.extend(children[child["wf"]].comps)
                    args.update(children[child["wf"]].comp_args)
                else:
                    children[child["wf"]] = expect(child)
                return end("cancelled", "cancel", None, "cancelled")
            children[child["wf"]] = expect(child)
            done.append(step)
        # sleep, signal, poll: no effect on the rollback
    if manual_done:
        return Expected("rolled_back", list(rolled_all), "manual", None, comps, args, children)
    return Expected("completed", list(rolled_all), None, None, comps, args, children)


def _completed_steps(spec: dict) -> tuple[list[_Step], int | None]:
    done: list[_Step] = []
    checkpoint = None
    for position, op in enumerate(spec["ops"]):
        if op["op"] in ("step", "retry_step"):
            done.append(_Step(op["tag"], position, op["comp"], op["critical"]))
        elif op["op"] == "checkpoint":
            checkpoint = position
        elif op["op"] in ("block_wait", "block_step"):
            break
    return done, checkpoint


def _child_compensated(child: dict) -> Expected:
    """A completed child rolled back because its parent rolls back (``manual`` semantics, its strategy)."""
    done, checkpoint = _completed_steps(child)
    plan = _plan(child["strategy"], done, checkpoint, manual=True)
    comps = [(child["wf"], s.tag) for s in plan]
    return Expected("rolled_back", [s.tag for s in plan], "parent_rolled_back", None, comps,
                    {c: "output" for c in comps})


def _child_closed(child: dict) -> Expected:
    """A child blocked in ``block_wait`` cancelled by its parent's close (``terminate``)."""
    done, checkpoint = _completed_steps(child)
    plan = _plan(child["strategy"], done, checkpoint, manual=False)
    comps = [(child["wf"], s.tag) for s in plan]
    return Expected("cancelled", [s.tag for s in plan], "parent_closed", None, comps,
                    {c: "output" for c in comps}, error_code="cancelled")
