"""What the helper programs share: the side-effect file and stdout markers.

Every handler appends one JSON line to a side-effect file and fsyncs it before
doing anything else: the file is the ground truth of which handlers really
ran, in which process, whatever the engine recorded.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent
TESTS_DIR = APP_DIR.parent
PROJECT_ROOT = TESTS_DIR.parent

PRODUCT = "upgrades"
REORDER_TAG = "reorder-flow"  # the workflows both versions define
PATCH_TAG = "patch-flow"
ENV = "test"
FOREVER = 3600


def ensure_paths() -> None:
    """Run as a script, make ``sagaloop`` and ``upgrade_app`` importable from this checkout."""
    for path in (str(PROJECT_ROOT), str(TESTS_DIR)):
        if path not in sys.path:
            sys.path.insert(0, path)


def side_effect(sidefile: str | os.PathLike[str], name: str, **data) -> dict:
    """Append ``{"name", "pid", "t", **data}`` as one line, durably."""
    record = {"name": name, "pid": os.getpid(), "t": time.time(), **data}
    with open(sidefile, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return record


def read_side_effects(sidefile: str | os.PathLike[str]) -> list[dict]:
    path = Path(sidefile)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def marker(text: str) -> None:
    print(text, flush=True)


def stepper(engine, sidefile, blocks: dict | None):
    """``step(ctx, name)``: run step ``name`` of ``ctx``'s run, recorded, with a compensation that is
    recorded too, and held if this process was told to block ``name`` of this run (``blocks``)."""
    blocks = blocks or {}

    def step(ctx, name: str):
        return ctx.step(name, make_step(engine, ctx, sidefile, name, blocks), make_undo(ctx, sidefile, name))

    return step


def make_step(engine, ctx, sidefile, name: str, blocks: dict):
    """A step handler that records itself, and hangs if this process was told to block ``name`` of this run."""
    from worker_common import block_here  # tests/ is on sys.path (ensure_paths)

    async def handler() -> dict:
        side_effect(sidefile, name, wf=ctx.workflow_id)
        if blocks.get(ctx.workflow_id) == name:
            # Held once the group commit that journals the step's start has landed.
            await block_here(engine, f"BLOCKED {ctx.workflow_id} {name}")
        return {"step": name, "pid": os.getpid()}

    return handler


def make_undo(ctx, sidefile, name: str):
    """A compensation that only records that it ran."""
    def undo(_output) -> None:
        side_effect(sidefile, f"undo-{name}", wf=ctx.workflow_id)

    return undo
