"""Bringing runs back: those in flight at the last stop, and those a failed commit suspended.

A run is loaded from its committed records (instance, journal, history,
inbox) and spawned under its own id; its handler replays the journal. A
run whose records do not decode ends ``failed`` (code ``corrupt_record``)
instead of staying ``running`` for ever. A run suspended by a failed commit
is loaded again after a pause that doubles with each attempt.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Coroutine

from ...errors import CorruptRecordError
from ...storage import Store
from ..clock import Clock
from ..decisions.definitions import Definition
from ..decisions.history import next_history_seq
from ..run import Run
from ..run.entries import read_journal
from ..vocabulary import Record
from .registry import Registry

log = logging.getLogger(__name__)

FIRST_RESUME_PAUSE_S, MAX_RESUME_PAUSE_S = 0.05, 5.0  # after a failed commit (doubling)


class Recovery:
    """Loads runs back from the store and spawns them (``spawn``) under their own ids."""

    def __init__(self, store: Store, clock: Clock, registry: Registry, definitions: dict[tuple[str, str], Definition],
                 spawn: Callable[[Run], object], background: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        self._store = store
        self._clock = clock
        self._registry = registry
        self._definitions = definitions
        self._spawn = spawn
        self._background = background

    async def find_orphans(self) -> None:
        """Note every run in flight in the store; each resumes once its workflow is defined."""
        orphans = self._registry.orphans
        orphans.clear()
        for record in await self._store.running_instances():
            orphans.setdefault((record["product"], record["tag"]), []).append(record)

    def recover(self, key: tuple[str, str]) -> None:
        """Resume, under their own ids, the runs of workflow ``key`` that were in flight at the last stop."""
        records = self._registry.take_orphans(key)
        if records:
            self._background(self.resume(records))

    async def resume(self, records: list[Record]) -> None:
        """Load each run (marked resuming) from the store and spawn it."""
        for record in records:
            wf = record["workflow_id"]
            try:
                journal = await read_journal(self._store, wf)
                events = await self._store.load_events(wf)
                signals = await self._store.load_signals(wf)
                definition = self._definitions[(record["product"], record["tag"])]
                run = Run(store=self._store, clock=self._clock, definition=definition, record=record,
                          journal=journal, event_seq=next_history_seq(events, journal), signals=signals)
                run.event("workflow_resumed", {"completed_steps": sum(
                    1 for _, e in journal if e.get("k") == "step" and e.get("status") == "completed")})
                self._spawn(run)
            except CorruptRecordError as exc:
                self._fail_corrupt(record, exc)
            except Exception as exc:
                log.exception("could not resume workflow %s", wf)
                if wf in self._registry.suspended:  # suspended by a failed commit: it tries again, later
                    attempt = self._registry.ended(wf, exc)
                    assert attempt is not None
                    self.resume_after(wf, exc, attempt)
            finally:
                self._registry.end_resuming(wf)

    def _fail_corrupt(self, record: Record, error: CorruptRecordError) -> None:
        """A record of this in-flight run does not decode: it ends ``failed`` (code ``corrupt_record``,
        naming the record), loudly, instead of being left ``running`` for ever; the rest run on."""
        log.error("workflow %s cannot resume: %s", record["workflow_id"], error,
                  extra={"workflow_id": record["workflow_id"], "tag": record.get("tag")})
        now = self._clock.now_ms()
        self._store.put_instance({**record, "status": "failed", "ended_at": now, "updated_at": now,
                                  "error": {"message": str(error), "step": None, "code": error.code,
                                            "type": type(error).__name__, "key": error.key}})

    def resume_after(self, workflow_id: str, failure: BaseException, attempt: int) -> None:
        """A commit of the run failed: resume it from its last commit after a pause (longer each attempt)."""
        delay = min(MAX_RESUME_PAUSE_S, FIRST_RESUME_PAUSE_S * 2 ** (attempt - 1))
        log.error("workflow %s stopped at its last commit (%s); it resumes in %.2f s (attempt %d)",
                  workflow_id, failure, delay, attempt, extra={"workflow_id": workflow_id})
        self._background(self._resume_later(workflow_id, delay))

    async def _resume_later(self, workflow_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            record = await self._store.get_instance(workflow_id)
        except Exception as exc:  # the store still fails: try again later
            attempt = self._registry.ended(workflow_id, exc)
            assert attempt is not None
            self.resume_after(workflow_id, exc, attempt)
            return
        if record is None or record["status"] != "running":
            self._registry.suspended.pop(workflow_id, None)  # its start was never committed, or it ended
            return
        if workflow_id in self._registry.live:
            return  # live again
        self._registry.begin_resuming(workflow_id)
        await self.resume([record])
