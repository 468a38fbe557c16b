"""``sagaloop.run``: run a coroutine on uvloop, tuned for many workflows in flight."""

from __future__ import annotations

import asyncio
import gc
from typing import Any, Coroutine, TypeVar

T = TypeVar("T")

# Thousands of live workflows hold many small container objects (frames, futures, step
# records), and every first-generation collection rescans the young ones: at 1,000 in flight
# that is ~50,000 objects. Runs leave no reference cycles behind (tests/test_engine_lifecycle),
# so the collector has almost nothing to find: let it run rarely. Measured on W1 (bench/) at
# 1,000 in flight: 50,000 spent ~10% of the time in 4 collections, 200,000 none.
GC_GEN0_THRESHOLD = 200_000


def run(main: Coroutine[Any, Any, T], *, debug: bool | None = None, tune_gc: bool = True) -> T:
    """Run ``main`` to completion on a new uvloop event loop (asyncio's where uvloop is missing).

    Args:
        tune_gc: raise the cyclic GC's first-generation threshold to ``GC_GEN0_THRESHOLD``
            while ``main`` runs (restored afterwards).
    """
    saved = gc.get_threshold()
    if tune_gc and saved[0] < GC_GEN0_THRESHOLD:
        gc.set_threshold(GC_GEN0_THRESHOLD, *saved[1:])
    try:
        try:
            import uvloop
        except ImportError:  # e.g. Windows
            return asyncio.run(main, debug=debug)
        return uvloop.run(main, debug=debug)
    finally:
        gc.set_threshold(*saved)
