"""A child program for the durable-timer and durable-inbox tests: block, get killed, resume.

    python tests/timer_worker.py <mode> <datadir> <sidefile> --workflow-id ID [--durability D]

Modes:

* ``sleep``          — start ``sleeper``: step ``before``, print ``SLEEPING <wall>``,
  ``ctx.sleep(WAIT_MS)``, step ``after`` (which records the wall time it ran).
* ``signal-timeout`` — start ``waiter``: step ``before``, print ``WAITING <wall>``,
  ``ctx.wait_for_signal("never", timeout=WAIT_MS)`` (the timeout is caught), step ``after``.
* ``retry``          — start ``retrier``: step ``flaky`` (``retries=1, retry_delay=WAIT_MS``)
  fails its first attempt ever, printing ``RETRY-WAIT <wall>`` just before it raises;
  the second attempt succeeds and records the wall time it ran.
* ``signal-die``     — start ``inbox`` (it waits for signal ``a``, then ``b``); send ``b``
  then ``a``, and SIGKILL itself the moment the second ``signal`` call returns.
* ``resume``         — open the directory, define the workflows (which starts recovery),
  print ``OPENED <wall>``, wait for the run to end and print ``RESULT <json>``.

In the start modes the parent kills this process long before it would
exit. Every step handler appends ``<name> <pid>`` to ``sidefile`` (fsynced)
before doing anything else: the ground truth of which handlers ran where.

The module is also imported by the tests, which resume in their own process
with ``define_workflows(engine, sidefile)``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import signal
import time
from pathlib import Path

from worker_common import FOREVER, marker, side_effect  # tests/, the script's directory; puts the root on sys.path
from worker_common import wait_until_ended as _wait_until_ended

import sagaloop  # after worker_common, which makes it importable from a fresh checkout

PRODUCT = "timers"
ENV = "test"
WAIT_MS = 3000  # the durable wait every mode blocks in

wait_until_ended = functools.partial(_wait_until_ended, product=PRODUCT, env=ENV)  # (engine, workflow_id)


def read_side_effects(sidefile: str | os.PathLike[str]) -> list[tuple[str, int]]:
    path = Path(sidefile)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        name, pid = line.split(" ")
        out.append((name, int(pid)))
    return out


def define_workflows(engine: sagaloop.Engine, sidefile: str | os.PathLike[str]) -> None:
    async def before() -> dict:
        side_effect(sidefile, "before")
        return {"pid": os.getpid()}

    async def after() -> dict:
        side_effect(sidefile, "after")
        return {"pid": os.getpid(), "at": time.time()}

    @engine.workflows.define(product=PRODUCT, tag="sleeper")
    async def sleeper(ctx: sagaloop.WorkflowContext) -> dict:
        await ctx.step("before", before)
        marker(f"SLEEPING {time.time()!r}")
        await ctx.sleep(WAIT_MS)
        return {"after": await ctx.step("after", after)}

    @engine.workflows.define(product=PRODUCT, tag="waiter")
    async def waiter(ctx: sagaloop.WorkflowContext) -> dict:
        await ctx.step("before", before)
        marker(f"WAITING {time.time()!r}")
        try:
            await ctx.wait_for_signal("never", timeout=WAIT_MS)
            timed_out, code = False, None
        except sagaloop.SignalTimeoutError as exc:
            timed_out, code = True, exc.code
        return {"timed_out": timed_out, "code": code, "after": await ctx.step("after", after)}

    @engine.workflows.define(product=PRODUCT, tag="retrier")
    async def retrier(ctx: sagaloop.WorkflowContext) -> dict:
        async def flaky() -> dict:
            side_effect(sidefile, "flaky")
            if sum(1 for name, _ in read_side_effects(sidefile) if name == "flaky") == 1:
                marker(f"RETRY-WAIT {time.time()!r}")
                raise RuntimeError("first attempt fails")
            return {"pid": os.getpid(), "at": time.time()}

        return {"flaky": await ctx.step("flaky", flaky, retries=1, retry_delay=WAIT_MS)}

    @engine.workflows.define(product=PRODUCT, tag="inbox")
    async def inbox(ctx: sagaloop.WorkflowContext) -> dict:
        a = await ctx.wait_for_signal("a")
        b = await ctx.wait_for_signal("b")

        async def done() -> dict:
            side_effect(sidefile, "done")
            return {"pid": os.getpid()}

        await ctx.step("done", done)
        return {"a": a, "b": b}


TAGS = {"sleep": "sleeper", "signal-timeout": "waiter", "retry": "retrier", "signal-die": "inbox"}


async def start(args: argparse.Namespace) -> None:
    async with sagaloop.Engine(args.datadir, durability=args.durability) as engine:
        define_workflows(engine, args.sidefile)
        # A retry wait is not asserted to make ``execute`` return early: start that one with wait=False.
        result = await engine.workflows.execute(product=PRODUCT, env=ENV, tag=TAGS[args.mode], input={},
                                                workflow_id=args.workflow_id, wait=args.mode != "retry")
        marker(f"STARTED {result.workflow_id} {result.status}")
        if args.mode == "signal-die":
            await engine.workflows.signal(product=PRODUCT, env=ENV, workflow_id=args.workflow_id,
                                          signal="b", payload={"n": 2})
            await engine.workflows.signal(product=PRODUCT, env=ENV, workflow_id=args.workflow_id,
                                          signal="a", payload={"n": 1})
            os.kill(os.getpid(), signal.SIGKILL)  # the very moment signal() returned
        await asyncio.sleep(FOREVER)  # the parent kills us long before


async def resume(args: argparse.Namespace) -> None:
    async with sagaloop.Engine(args.datadir, durability=args.durability) as engine:
        opened = time.time()
        define_workflows(engine, args.sidefile)
        marker(f"OPENED {opened!r}")
        result = await wait_until_ended(engine, args.workflow_id)
        history = await engine.workflows.history(product=PRODUCT, env=ENV, workflow_id=args.workflow_id)
        report = {"result": result.to_dict(), "events": [e.type for e in history.events],
                  "pid": os.getpid(), "opened": opened}
        marker("RESULT " + json.dumps(report))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=[*TAGS, "resume"])
    parser.add_argument("datadir")
    parser.add_argument("sidefile")
    parser.add_argument("--workflow-id", required=True)
    parser.add_argument("--durability", default="durable", choices=["durable", "fast"])
    args = parser.parse_args(argv)
    asyncio.run(resume(args) if args.mode == "resume" else start(args))


if __name__ == "__main__":
    main()
