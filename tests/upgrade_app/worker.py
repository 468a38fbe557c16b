"""A child program for the upgrade tests: the same data directory, run by v1 or v2 of the code.

    python tests/upgrade_app/worker.py start|resume <datadir> <sidefile> --version v1|v2
        [--start ID:TAG]... [--block ID:STEP]... [--wait ID]... [--hold]

* ``--version`` picks the module (``upgrade_app/v1.py`` or ``v2.py``) that defines the workflows:
  the "code change" is the other module, loaded in a new process.
* ``--start ID:TAG`` starts an instance (``wait=False``) and prints ``STARTED ID``.
* ``--block ID:STEP`` makes step STEP of instance ID hang in *this* process
  (it prints ``BLOCKED ID STEP`` first); the test SIGKILLs the process then.
* ``--wait ID`` waits for the instance to end; then ``RESULT <json>`` is printed
  with each waited instance's result, status and step details, and the ids
  ``list(status="running")`` still shows.
* ``start`` always stays alive at the end (to be killed); ``resume`` exits
  after printing, unless ``--hold``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import json
import os
import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parent.parent
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from upgrade_app.common import ENV, FOREVER, PRODUCT, ensure_paths, marker  # noqa: E402

ensure_paths()

import sagaloop  # noqa: E402
from worker_common import wait_until_ended as _wait_until_ended  # noqa: E402

wait_until_ended = functools.partial(_wait_until_ended, product=PRODUCT, env=ENV)  # (engine, workflow_id)


async def main(args: argparse.Namespace) -> None:
    app = importlib.import_module(f"upgrade_app.{args.version}")
    blocks = dict(item.split(":", 1) for item in args.block)
    async with sagaloop.Engine(args.datadir, durability="durable") as engine:
        app.define(engine, args.sidefile, blocks)  # registering resumes what was in flight
        marker(f"DEFINED {args.version} {os.getpid()}")
        for item in args.start:
            workflow_id, tag = item.split(":", 1)
            await engine.workflows.execute(product=PRODUCT, env=ENV, tag=tag, input={}, workflow_id=workflow_id,
                                           wait=False)
            marker(f"STARTED {workflow_id}")
        if args.wait:
            report: dict = {"pid": os.getpid(), "version": args.version, "runs": {}}
            for workflow_id in args.wait:
                result = await wait_until_ended(engine, workflow_id)
                status = await engine.workflows.status(product=PRODUCT, env=ENV, workflow_id=workflow_id)
                details = {}
                for tag in ("a", "b", "c", "x"):
                    try:
                        details[tag] = (await engine.workflows.step_detail(
                            product=PRODUCT, env=ENV, workflow_id=workflow_id, step_tag=tag)).to_dict()
                    except sagaloop.StepNotFoundError:
                        pass
                report["runs"][workflow_id] = {"result": result.to_dict(), "status": status.status,
                                               "details": details}
            listed = await engine.workflows.list(product=PRODUCT, env=ENV)
            report["listed"] = {s.workflow_id: s.status for s in listed}
            report["running"] = [s.workflow_id for s in
                                 await engine.workflows.list(product=PRODUCT, env=ENV, status="running")]
            marker("RESULT " + json.dumps(report))
        if args.mode == "start" or args.hold:
            await asyncio.sleep(FOREVER)  # the test kills us


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["start", "resume"])
    parser.add_argument("datadir")
    parser.add_argument("sidefile")
    parser.add_argument("--version", required=True, choices=["v1", "v2"])
    parser.add_argument("--start", action="append", default=[])
    parser.add_argument("--block", action="append", default=[])
    parser.add_argument("--wait", action="append", default=[])
    parser.add_argument("--hold", action="store_true")
    asyncio.run(main(parser.parse_args()))
