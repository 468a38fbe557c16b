"""Which executions this process knows of, and where each one is in its life here.

One object holds every table, so the life of a run in this process is
read in one place::

    execute:         reserved ──spawn──> live ──end──> (gone)
    open / define:   orphan ──its workflow defined──> resuming ──loaded──> live
    a failed commit: live ──> suspended ──pause──> resuming ──loaded──> live

- *reserved*: an ``execute`` with this id is on its way in (not journaled yet).
- *orphan*: in flight in the store when the engine opened; its workflow is not
  defined yet, so nothing here runs it (signals to it go to its durable inbox).
- *resuming*: being loaded back from the store; a caller asking about it
  waits for ``loaded`` and then talks to the live actor.
- *live*: one ``WorkflowActor`` runs it here.
- *suspended*: a commit of it failed; it stopped at its last commit and
  resumes after a pause (the count of attempts decides the pause).

A signal to a run that is not live here is written to its durable inbox
under that run's inbox lock; once the run is live, its actor owns the inbox.

An idempotency scope maps to the live run holding it, until that run ends.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ...actors import ActorDeadError
from ..actor.messages import Message
from ..actor.workflow_actor import WorkflowActor
from ..vocabulary import Record

NOT_LIVE: Any = object()  # what ``Registry.ask`` answers for a run that is not live here


class Registry:
    """The lifecycle tables of the runs of one engine (see the module docstring)."""

    def __init__(self) -> None:
        self.live: dict[str, WorkflowActor] = {}
        self.reserved: set[str] = set()
        self.idempotency: dict[str, str] = {}                   # scope -> workflow id, while that run is live
        self.orphans: dict[tuple[str, str], list[Record]] = {}  # (product, tag) -> in-flight records
        self.resuming: dict[str, asyncio.Future[None]] = {}     # done once loaded (live, or failed to load)
        self.suspended: dict[str, int] = {}                     # workflow id -> failed commits in a row
        self.inbox_locks: dict[str, asyncio.Lock] = {}          # one writer at a time to an inbox not live here

    def taken(self, workflow_id: str) -> bool:
        """Whether this process already has a run with this id (live, reserved or being loaded)."""
        return workflow_id in self.live or workflow_id in self.reserved or workflow_id in self.resuming

    async def loaded(self, workflow_id: str) -> WorkflowActor | None:
        """The live actor of ``workflow_id`` once any load of it is over; None if it is not live here."""
        resuming = self.resuming.get(workflow_id)
        if resuming is not None:
            await asyncio.shield(resuming)
        return self.live.get(workflow_id)

    async def ask(self, workflow_id: str, message: Message) -> Any:
        """The live actor's answer to ``message`` (once any load of it is over), else ``NOT_LIVE``.

        The one way the front door talks to a live run: the caller reads the store when it gets ``NOT_LIVE``.
        """
        actor = await self.loaded(workflow_id)
        if actor is None:
            return NOT_LIVE
        try:
            return await actor.ref.ask(message)
        except ActorDeadError:  # it ended between the lookup and the ask: the store has its end
            return NOT_LIVE

    def begin_resuming(self, workflow_id: str) -> None:
        self.resuming[workflow_id] = asyncio.get_running_loop().create_future()

    def end_resuming(self, workflow_id: str) -> None:
        """The load is over, whether the run is live now or could not be loaded."""
        waiter = self.resuming.pop(workflow_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def ended(self, workflow_id: str, failure: BaseException | None) -> int | None:
        """The actor let go of its run. A failed commit (``failure``) makes it suspended: its attempt count."""
        self.live.pop(workflow_id, None)
        if failure is None:
            self.suspended.pop(workflow_id, None)
            return None
        attempt = self.suspended.get(workflow_id, 0) + 1
        self.suspended[workflow_id] = attempt
        return attempt

    def take_orphans(self, key: tuple[str, str]) -> list[Record]:
        """The in-flight records of workflow ``key`` (product, tag), now resuming."""
        records = self.orphans.pop(key, None) or []
        for record in records:
            self.begin_resuming(record["workflow_id"])
        return records
