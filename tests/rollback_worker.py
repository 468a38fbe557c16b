"""A child program for the rollback-guarantee tests: start a saga, get killed mid-rollback.

    python tests/rollback_worker.py <datadir> <sidefile> --workflow-id ID --kill-point POINT
                                    [--trigger failure|cancel]

The saga (product ``rb``, tag ``three-step-saga``): steps ``s1``, ``s2``, ``s3``
complete, each with a compensation ``undo-s1`` .. ``undo-s3``; then

* trigger ``failure``: step ``s4`` raises, so the rollback runs
  ``undo-s3, undo-s2, undo-s1`` (trigger ``step_failed``);
* trigger ``cancel``: the handler waits for signal ``go`` (which never comes),
  this program cancels the run, and the rollback runs the same compensations
  (trigger ``cancel``). Step ``s4`` after the signal must never run.

Every step and compensation appends one line ``<name> <pid> [<data>]`` to
``sidefile`` and fsyncs it: that file is the ground truth of what really ran.
A compensation writes ``enter-undo-sN`` on entry, then its side effect
``undo-sN`` (data: its idempotency key and the value it was given).

Kill points (where this process stops, to be SIGKILLed):

* ``before:undo-sN`` — ``undo-sN`` wrote ``enter-undo-sN`` and blocks before
  its side effect (the rollback decision is durable; nothing of ``undo-sN`` is).
* ``during:undo-sN`` — ``undo-sN`` wrote its side effect, then blocks (it is
  in flight: its end is not recorded).
* ``after:undo-s3`` / ``after:undo-s2`` — the *next* compensation blocks at its
  very entry (before writing anything): the engine commits a compensation's
  end before it starts the next one, so ``undo-sN`` is recorded done.
* ``after:undo-s1`` — there is no next compensation, so this program kills
  *itself* with SIGKILL at the moment the engine hands the store the run's
  end record (wrapping ``put_instance`` of the engine's store — test-side
  instrumentation, nothing in sagaloop changes): ``undo-s1``'s end is
  committed, the run's end is not.
* ``ended`` — the run ends normally (``ENDED`` is printed); then it blocks.

In the blocking cases the program prints ``KILL-POINT <point>`` once blocked
(after a short pause that lets the group commits already queued land) and
sleeps until the parent kills it.

The module is also imported by the tests, which resume the run in their own
process with ``define_workflow(engine, sidefile, kill_point=None)``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import signal

from worker_common import FOREVER, block_here, marker, side_effect  # tests/, the script's directory; puts the root on sys.path
from worker_common import wait_until_ended as _wait_until_ended

import sagaloop  # after worker_common, which makes it importable from a fresh checkout

PRODUCT = "rb"
ENV = "test"
TAG = "three-step-saga"
COMPENSATIONS = ("undo-s3", "undo-s2", "undo-s1")  # the order the rollback runs them
KILL_POINTS = tuple(f"{when}:{c}" for c in COMPENSATIONS for when in ("before", "during", "after"))

wait_until_ended = functools.partial(_wait_until_ended, product=PRODUCT, env=ENV)  # (engine, workflow_id)


def define_workflow(engine: sagaloop.Engine, sidefile: str | os.PathLike[str], *,
                    kill_point: str | None = None) -> None:
    """Define the saga on ``engine``; ``kill_point`` says where a compensation blocks (None: nowhere)."""

    @engine.workflows.define(product=PRODUCT, tag=TAG)
    async def saga(ctx: sagaloop.WorkflowContext) -> dict:
        def do(n: int):
            async def step() -> dict:
                side_effect(sidefile, f"do-s{n}")
                return {"id": f"r{n}"}
            return step

        def undo(n: int):
            name = f"undo-s{n}"

            async def compensation(result) -> None:
                if kill_point == f"after:undo-s{n + 1}":  # the previous compensation has returned
                    await block_here(engine, f"KILL-POINT {kill_point}")
                key = ctx.idempotency_key(f"s{n}")
                side_effect(sidefile, f"enter-{name}", key)
                if kill_point == f"before:{name}":
                    await block_here(engine, f"KILL-POINT {kill_point}")
                side_effect(sidefile, name, json.dumps({"key": key, "result": result}))
                if kill_point == f"during:{name}":
                    await block_here(engine, f"KILL-POINT {kill_point}")
            return compensation

        for n in (1, 2, 3):
            await ctx.step(f"s{n}", do(n), undo(n))
        if ctx.input["trigger"] == "cancel":
            await ctx.wait_for_signal("go")
            await ctx.step("s4", do(4))
            return {"unreachable": True}

        async def s4() -> None:
            side_effect(sidefile, "do-s4")
            raise RuntimeError("s4 broke")

        await ctx.step("s4", s4)
        return {"unreachable": True}


def _kill_self_at_end_record(engine: sagaloop.Engine, workflow_id: str) -> None:
    """SIGKILL this process when the engine hands the store the run's end record."""
    runtime = getattr(engine, "_runtime", None)
    store = getattr(runtime, "store", None)
    if store is None:
        raise SystemExit("rollback_worker: cannot reach the engine's store to instrument 'after:undo-s1'")
    put_instance = store.put_instance

    def put_instance_or_die(record):
        if record.get("workflow_id") == workflow_id and record.get("status") not in (None, "running"):
            marker("KILL-POINT after:undo-s1")
            os.kill(os.getpid(), signal.SIGKILL)
        return put_instance(record)

    store.put_instance = put_instance_or_die


async def start(args: argparse.Namespace) -> None:
    async with sagaloop.Engine(args.datadir, durability="durable") as engine:
        define_workflow(engine, args.sidefile, kill_point=args.kill_point)
        if args.kill_point == "after:undo-s1":
            _kill_self_at_end_record(engine, args.workflow_id)
        wait = args.trigger == "cancel"  # returns "running" once the handler waits for the signal
        result = await engine.workflows.execute(product=PRODUCT, env=ENV, tag=TAG, input={"trigger": args.trigger},
                                                workflow_id=args.workflow_id, wait=wait)
        marker(f"STARTED {result.workflow_id}")
        pending: list[asyncio.Future] = []  # kept referenced while we sleep
        if args.trigger == "cancel":
            if result.status != "running":
                raise SystemExit(f"rollback_worker: expected the run to wait for its signal, got {result.status}")
            # cancel waits for the end, which a blocked compensation holds up: do not await it.
            pending.append(asyncio.ensure_future(engine.workflows.cancel(
                product=PRODUCT, env=ENV, workflow_id=args.workflow_id, reason="user gave up")))
            marker("CANCEL-SENT")
        if args.kill_point == "ended":
            ended = await wait_until_ended(engine, args.workflow_id)
            marker(f"ENDED {ended.status}")
        await asyncio.sleep(FOREVER)  # the parent kills us long before


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datadir")
    parser.add_argument("sidefile")
    parser.add_argument("--workflow-id", required=True)
    parser.add_argument("--kill-point", required=True, choices=[*KILL_POINTS, "ended"])
    parser.add_argument("--trigger", default="failure", choices=["failure", "cancel"])
    args = parser.parse_args(argv)
    asyncio.run(start(args))


if __name__ == "__main__":
    main()
