"""Test plumbing: ``async def test_*`` functions run on a fresh event loop.

No pytest-asyncio: a coroutine test is run with ``asyncio.run`` (uvloop's
policy is not installed, so tests exercise the stdlib loop; the benchmarks
use uvloop).

It also puts ``tests/`` on ``sys.path`` whatever pytest's import mode, so the
tests import the helper modules beside them (``helpers``, ``processes``,
``worker_common``, ``upgrade_app``) by name.

Markers (``pyproject.toml``): ``slow`` marks the tests that take real time with
real processes (the SIGKILL crash tests, the short soak); they run by default,
and ``-m "not slow"`` leaves them out for a fast inner loop. ``soak`` marks the
long soak, skipped unless ``SAGALOOP_SOAK_CYCLES=N`` is set.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from pathlib import Path

import pytest

TESTS_DIR = str(Path(__file__).resolve().parent)
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(asyncio.wait_for(pyfuncitem.obj(**kwargs), timeout=60))
        return True
    return None
