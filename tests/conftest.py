"""Test plumbing: ``async def test_*`` functions run on a fresh event loop.

No pytest-asyncio: a coroutine test is run with ``asyncio.run`` (uvloop's
policy is not installed, so tests exercise the stdlib loop; the benchmarks
use uvloop).
"""

from __future__ import annotations

import asyncio
import inspect

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(asyncio.wait_for(pyfuncitem.obj(**kwargs), timeout=60))
        return True
    return None
