"""``sagaloop.Engine``: open a data directory, get ``engine.workflows``."""

from __future__ import annotations

import os
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgumentError
from ..runtime.actor.admission import DEFAULT_MAX_ACTIVE
from ..runtime.clock import Clock
from ..runtime.front.door import FrontDoor
from .workflows import Workflows

if TYPE_CHECKING:
    from ..storage import Store

DEFAULT_PATH = "./.sagaloop"


class Engine:
    """A durable workflow engine embedded in this process.

    Example::

        async with sagaloop.Engine("./.sagaloop") as engine:
            @engine.workflows.define(product="shop", tag="order")
            async def order(ctx):
                return await ctx.step("charge", charge, refund)

            result = await engine.workflows.execute(product="shop", env="prd", tag="order", input={})

    Args:
        path: the LMDB directory (created if missing); ``None`` means the
            ``SAGALOOP_DATA`` environment variable, else ``./.sagaloop``.
        durability: ``"durable"`` (default) syncs every commit to disk before
            a step returns; ``"fast"`` does not (a machine crash may lose the
            last commits; a process crash loses none).
        clock: the clock timers follow (``sagaloop.testing`` has one to control).
        max_active_runs: how many runs may be in their first burst of CPU work
            at once; more wait their turn in arrival order, which keeps the
            busy ones in the CPU caches. A run waiting on a signal, a timer, a
            child or a step's I/O holds no turn, and none waits more than a
            second for one. ``"auto"`` (default): 100 with ``fast``, no limit
            with ``durable`` (whose steps wait on the disk); ``None``: no limit
            (see ``sagaloop/runtime/actor/admission.py``).
        store: a ``sagaloop.storage.Store`` to use instead of the LMDB store at
            ``path`` (a test double, or another backend); the engine opens
            and closes it.

    Raises:
        StoreLockedError: another live process holds ``path`` (on open).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, durability: str = "durable",
                 clock: Clock | None = None, max_active_runs: int | str | None = DEFAULT_MAX_ACTIVE,
                 store: Store | None = None, **settings: Any) -> None:
        if settings:
            raise InvalidArgumentError(f"unknown engine setting(s) {sorted(settings)}")
        if path is None:
            path = os.environ.get("SAGALOOP_DATA") or DEFAULT_PATH
        self.path = os.fspath(path)
        self._runtime = FrontDoor(self.path, durability=durability, clock=clock, max_active_runs=max_active_runs,
                                  store=store)
        self.workflows = Workflows(self._runtime)
        #: ``register(app, event, handler)``: what ``ctx.action.run`` calls.
        self.actions = self._runtime.actions
        #: ``define(name, providers)``: what ``ctx.fallback.execute`` tries, in order.
        self.fallbacks = self._runtime.fallbacks
        #: ``register("email", sender)``: what ``ctx.notification.email`` calls.
        self.notifications = self._runtime.notifications

    @property
    def durability(self) -> str:
        return self._runtime.durability

    async def open(self) -> "Engine":
        """Open the store and resume what was in flight for every defined workflow."""
        await self._runtime.open()
        return self

    async def close(self) -> None:
        """Stop every actor cleanly; nothing committed is lost. In-flight runs resume on the next open."""
        await self._runtime.close()

    async def __aenter__(self) -> "Engine":
        return await self.open()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
