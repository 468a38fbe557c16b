"""What the crash-test worker programs share: the side-effect file, stdout markers, holding a
handler until the test kills the process, waiting for a run's end.

Used by ``crash_worker.py``, ``children_worker.py``, ``rollback_worker.py`` and
``timer_worker.py`` (run as scripts, their own directory, ``tests/``, is on
``sys.path``; imported by the tests, ``conftest.py`` puts it there), and by the
tests that read the side-effect file.

Every step and compensation handler appends one line ``<name> <pid> [<data>]``
to the side-effect file and fsyncs it before doing anything else: that file is
the ground truth of which handlers actually ran, in which process, whatever the
engine recorded.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

# A worker runs as a script, with only tests/ on sys.path: put the repository root there too,
# so the child imports the same sagaloop as the parent (workers import this module first).
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

if TYPE_CHECKING:
    import sagaloop

FOREVER = 3600  # seconds a held handler or a worker at rest sleeps: the test kills it long before


def side_effect(sidefile: str | os.PathLike[str], name: str, data: str = "") -> None:
    """Append ``name pid data`` to the side-effect file, durably, before anything else happens."""
    line = f"{name} {os.getpid()} {data}".rstrip() + "\n"
    with open(sidefile, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_side_effects(sidefile: str | os.PathLike[str]) -> list[tuple[str, int, str]]:
    """The side-effect file as ``(name, pid, data)`` tuples, in the order they ran."""
    path = Path(sidefile)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        name, pid, *rest = line.split(" ", 2)
        out.append((name, int(pid), rest[0] if rest else ""))
    return out


def side_names(sidefile: str | os.PathLike[str]) -> list[str]:
    """The names of the handlers that ran, in order."""
    return [name for name, _pid, _data in read_side_effects(sidefile)]


def runs_of(sidefile: str | os.PathLike[str], name: str) -> list[tuple[int, str]]:
    """(pid, data) of every run of handler ``name``, in order."""
    return [(pid, data) for n, pid, data in read_side_effects(sidefile) if n == name]


def marker(text: str) -> None:
    """A line for the parent test to wait for, flushed at once."""
    print(text, flush=True)


async def block_here(engine: sagaloop.Engine, text: str) -> None:
    """Hold the calling step or compensation until the test kills the process.

    First everything the engine queued so far (this step's "running" record, the
    end of the compensation before this one) is committed; then ``text`` is
    printed, for the test to wait for before it kills.
    """
    # Imported here: sagaloop is importable once this module has put the root on sys.path.
    from sagaloop.testing import wait_committed

    await asyncio.sleep(0)  # a step's "running" record is queued at its first suspension
    await wait_committed(engine)
    marker(text)
    await asyncio.sleep(FOREVER)


async def wait_until_ended(engine: sagaloop.Engine, workflow_id: str, *, product: str, env: str,
                           timeout: float = 20.0) -> sagaloop.WorkflowResult:
    """``result()`` until the instance has ended, within ``timeout`` seconds.

    ``result`` should wait by itself; the loop only keeps the crash tests
    about recovery from hanging on a separate problem (see the test
    ``test_result_right_after_define_waits_for_the_recovered_run``).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        result = await engine.workflows.result(product=product, env=env, workflow_id=workflow_id,
                                               timeout=max(1, int(left * 1000)))
        if result.status != "running":
            return result
        if loop.time() >= deadline:
            raise AssertionError(f"workflow {workflow_id!r} was still running after {timeout} s")
        await asyncio.sleep(0.05)
