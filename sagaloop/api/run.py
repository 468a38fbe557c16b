"""``sagaloop.run``: run a coroutine on uvloop, the loop sagaloop is tuned for."""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], *, debug: bool | None = None) -> T:
    """Run ``main`` to completion on a new uvloop event loop (asyncio's where uvloop is missing)."""
    try:
        import uvloop
    except ImportError:  # e.g. Windows
        return asyncio.run(main, debug=debug)
    return uvloop.run(main, debug=debug)
