"""The scheduler: dispatched jobs (one-off and cron), fired by one timer on the engine's clock.

Every job lives in the store (``Store.put_job``) and, while the engine is open, in ``jobs`` here;
a heap holds ``(due, seq, job_id)`` and one clock timer (``clock.call_at``) is set for the earliest
due time. When it fires, every job due is ticked and the timer is set again for the next one. So
100,000 jobs cost their records and heap entries, and the scheduler costs no task at all: a tick
that starts a run does its I/O in one background task of the door, for that tick only. No actor
with a mailbox either: every call that changes a job runs on the loop thread and changes it at once.

A tick is an ordinary execution with ``context={"job_id", "scheduled_for"}`` and the idempotency key
``f"{job_id}:{scheduled_for}"``. The job's stored ``next_run_at`` moves past a tick only once that
tick's run start is committed: a crash in between leaves the tick due, it fires again at the next
open and the idempotency key finds the run it already started. So a tick never runs twice.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from ...errors import InvalidArgumentError, WorkflowNotFoundError
from ..boundary import copy_in, snapshot
from ..clock import Clock, TimerHandle
from ..decisions.definitions import Definition, require_name
from ..decisions.schedules import missed_ticks, next_tick, parse_job_options, parse_schedule
from ..vocabulary import Record
from .starts import idempotency_scope

if TYPE_CHECKING:
    from ..actor.workflow_actor import WorkflowActor
    from .door import FrontDoor

log = logging.getLogger(__name__)


def new_job_id() -> str:
    return f"job-{time.time_ns():x}-{os.urandom(6).hex()}"


class Job:
    """A job while the engine is open: its stored record and what only this process knows."""

    __slots__ = ("record", "due", "catch_up", "active", "buffered", "starting")

    def __init__(self, record: Record) -> None:
        self.record = record
        self.due: int | None = None  # when the heap is to look at it next (None: not in the heap)
        self.catch_up: list[int] = []  # ticks to fire at once (missed while no engine ran)
        self.active = 0  # its runs started here and not ended (overlap)
        self.buffered: int | None = None  # a tick kept for when the active run ends (buffer_one)
        self.starting: list[int] = []  # ticks whose run start is not committed yet: stored as still due


class Scheduler:
    """The jobs of one engine and the one timer that fires them."""

    def __init__(self, door: FrontDoor) -> None:
        self._door = door
        self.jobs: dict[str, Job] = {}
        self._heap: list[tuple[int, int, str]] = []
        self._seq = itertools.count()
        self._timer: TimerHandle | None = None
        self._armed_at: int | None = None
        self._waiting: dict[tuple[str, str], list[Job]] = {}  # jobs whose workflow is not defined yet
        self._running = False

    @property
    def _clock(self) -> Clock:
        return self._door.clock

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the jobs (at engine open, after recovery); ticks missed while closed follow ``catch_up``."""
        self.jobs.clear()
        self._heap.clear()
        self._waiting.clear()
        self._running = True
        records = await self._door.store.load_jobs()
        if not records:
            return  # no job: no timer, nothing to do
        now = self._clock.now_ms()
        for record in records:
            job = Job(record)
            self.jobs[record["job_id"]] = job
            first = record.get("next_run_at")
            if first is None:  # a one-off job whose run started (its run, if unfinished, is recovered)
                self._finish(job)
                continue
            if first <= now:
                job.catch_up = missed_ticks(record["schedule"], first, now, record["options"]["catch_up"])
                record["next_run_at"] = next_tick(record["schedule"], now)
                self._push(job, now)
            else:
                self._push(job, first)
        self._arm()

    def stop(self) -> None:
        self._running = False
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._armed_at = None

    def defined(self, key: tuple[str, str]) -> None:
        """A workflow was defined: its jobs that came due before it was fire now."""
        for job in self._waiting.pop(key, ()):
            if job.record["job_id"] in self.jobs:
                self._push(job, self._clock.now_ms())
        self._arm()

    def recovered(self, actor: WorkflowActor) -> None:
        """A run in flight at the last stop is live again: if it is a job's, it counts for its overlap."""
        context = actor.run.record.get("context")
        if not isinstance(context, dict) or not self._running:
            return
        job = self.jobs.get(str(context.get("job_id")))
        if job is None:
            return
        tick: int = context.get("scheduled_for", 0)
        definition, no_retry = actor.run.definition, job.record["options"]["retries"]
        job.active += 1
        actor.ended.add_done_callback(
            lambda f: self._ended(job, definition, tick, no_retry,
                                  None if f.cancelled() or f.exception() is not None else f.result().get("status")))

    # -- the calls ----------------------------------------------------------------------------

    async def dispatch(self, *, product: str, env: str, workflow: str, input: Any, schedule: Any,
                       options: Any) -> Record:
        self._door._require_open()
        require_name(product, "product")
        require_name(env, "env")
        definition = self._door._definition(product, workflow)
        now = self._clock.now_ms()
        parsed = parse_schedule(schedule, now)
        opts = parse_job_options(options)
        first = next_tick(parsed, now - 1) if "start_at" in parsed else next_tick(parsed, now)
        job_id = new_job_id()
        idempotency_scope(product, env, definition.tag, f"{job_id}:{first}")  # the key fits (long names)
        record = {"job_id": job_id, "product": product, "env": env, "workflow": definition.tag,
                  "input": copy_in(input, "input"), "schedule": parsed, "options": opts, "created_at": now,
                  "next_run_at": first, "last_run_at": None, "paused": False}
        store = self._door.store
        store.put_job(job_id, record)  # raises NotSerializableError for a bad input: nothing stored
        await store.commit()
        job = Job(record)
        self.jobs[job_id] = job
        if first is not None:
            self._push(job, first)
            self._arm()
        return {"job_id": job_id, "scheduled_at": first}

    def _job(self, product: str, env: str, job_id: str) -> Job:
        self._door._require_open()
        require_name(product, "product")
        require_name(env, "env")
        if not isinstance(job_id, str) or not job_id:
            raise InvalidArgumentError(f"job_id must be a non-empty str, got {job_id!r}")
        job = self.jobs.get(job_id)
        if job is None or job.record["product"] != product or job.record["env"] != env:
            raise WorkflowNotFoundError(f"no dispatched job {job_id!r} in product {product!r}, env {env!r}")
        return job

    async def cancel(self, *, product: str, env: str, job_id: str) -> None:
        job = self._job(product, env, job_id)
        del self.jobs[job_id]
        job.due = job.buffered = None
        job.catch_up = []
        self._door.store.put_job(job_id, None)
        await self._door.store.commit()

    async def set_paused(self, *, product: str, env: str, job_id: str, paused: bool) -> None:
        job = self._job(product, env, job_id)
        job.record["paused"] = paused
        if paused:
            job.buffered = None
        self._save(job)
        await self._door.store.commit()

    def list_jobs(self, *, product: str, env: str, tag: str | None = None) -> list[Record]:
        self._door._require_open()
        require_name(product, "product")
        require_name(env, "env")
        if tag is not None:
            require_name(tag, "tag")
        out = []
        for job_id in sorted(self.jobs):
            r = self.jobs[job_id].record
            if r["product"] == product and r["env"] == env and (tag is None or r["workflow"] == tag):
                out.append(snapshot({name: r[name] for name in
                                     ("job_id", "workflow", "schedule", "next_run_at", "last_run_at", "paused")}))
        return out

    # -- the timer ----------------------------------------------------------------------------

    def _push(self, job: Job, due: int) -> None:
        job.due = due
        heapq.heappush(self._heap, (due, next(self._seq), job.record["job_id"]))

    def _arm(self) -> None:
        heap = self._heap
        while heap:
            due, _, job_id = heap[0]
            job = self.jobs.get(job_id)
            if job is not None and job.due == due:
                break
            heapq.heappop(heap)  # stale: cancelled, or moved
        if not heap or not self._running:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._armed_at = None
            return
        earliest = heap[0][0]
        if self._timer is not None and self._armed_at == earliest:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = earliest
        self._timer = self._clock.call_at(earliest, self._wake)

    def _wake(self) -> None:
        self._timer = self._armed_at = None
        if not self._running or not self._door.is_open:
            return
        now = self._clock.now_ms()
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, _, job_id = heapq.heappop(heap)
            job = self.jobs.get(job_id)
            if job is not None and job.due == due:
                job.due = None
                self._tick(job, now)
        self._arm()

    def _tick(self, job: Job, now: int) -> None:
        record = job.record
        ticks, job.catch_up = job.catch_up, []
        scheduled = record.get("next_run_at")
        if scheduled is not None and scheduled <= now:
            ticks.append(scheduled)
            record["next_run_at"] = next_tick(record["schedule"], max(scheduled, now))
        definition = self._door.definitions.get((record["product"], record["workflow"]))
        if ticks and definition is None and not record["paused"]:
            job.catch_up = ticks  # fire when the workflow is defined (after a restart, say)
            self._waiting.setdefault((record["product"], record["workflow"]), []).append(job)
            log.info("job %s: workflow %r is not defined yet; its tick waits", record["job_id"], record["workflow"])
            return
        if record["next_run_at"] is not None:
            self._push(job, record["next_run_at"])
        if record["paused"] or definition is None:
            self._after(job, [])
            return
        fired = [t for t in ticks if self._admit(job, t)]
        if not fired:
            self._after(job, [])
            return
        job.active += len(fired)
        job.starting.extend(fired)  # from now until each start is committed, the stored job keeps it due
        self._door._in_background(self._fire(job, definition, fired))

    def _admit(self, job: Job, tick: int) -> bool:
        """Whether ``tick`` starts a run now (overlap); a tick kept for later is ``buffered``."""
        if job.active == 0:
            return True
        overlap = job.record["options"]["overlap"]
        if overlap == "allow":
            return True
        if overlap == "buffer_one" and job.buffered is None:
            job.buffered = tick
        return False

    def _after(self, job: Job, ran: list[int]) -> None:
        """A tick is dealt with (its runs started, or skipped, or kept): the stored record moves past it."""
        record = job.record
        if record["job_id"] not in self.jobs:
            return  # cancelled meanwhile
        if ran:
            last = max(ran)
            if record["last_run_at"] is None or last > record["last_run_at"]:
                record["last_run_at"] = last
        if record["next_run_at"] is None and job.buffered is None and job.active == 0:
            self._finish(job)
        else:
            self._save(job)

    def _save(self, job: Job) -> None:
        if self._door.is_open and job.record["job_id"] in self.jobs:
            record = job.record
            if job.starting or job.catch_up:  # a crash now must leave those ticks due: they fire again
                due = min(job.starting + job.catch_up)
                if record["next_run_at"] is None or due < record["next_run_at"]:
                    record = {**record, "next_run_at": due}
            self._door.store.put_job(record["job_id"], record)

    def _finish(self, job: Job) -> None:
        """A one-off job whose run started (or was skipped): it leaves the store."""
        job_id = job.record["job_id"]
        if self.jobs.get(job_id) is job:
            del self.jobs[job_id]
            if self._door.is_open:
                self._door.store.put_job(job_id, None)

    # -- runs ---------------------------------------------------------------------------------

    async def _fire(self, job: Job, definition: Definition, fired: list[int]) -> None:
        try:
            for tick in fired:
                try:
                    await self._start_run(job, definition, tick, 0)
                finally:
                    job.starting.remove(tick)
        finally:
            self._after(job, fired)

    async def _start_run(self, job: Job, definition: Definition, tick: int, attempt: int) -> None:
        """Start one run of ``tick`` (``attempt`` > 0: a retry); ``job.active`` already counts it."""
        record = job.record
        key = f"{record['job_id']}:{tick}" if attempt == 0 else f"{record['job_id']}:{tick}#{attempt}"
        extra = {"context": {"job_id": record["job_id"], "scheduled_for": tick}, "idempotency_key": key,
                 "type": "original"}
        scope = idempotency_scope(record["product"], record["env"], definition.tag, key)
        timeout = record["options"]["timeout"]
        try:
            started = await self._door.launch(definition, record["env"], copy_in(record["input"], "input"),
                                              definition.timeout_ms if timeout is None else timeout, extra,
                                              scope=scope, wait=False)
        except Exception:
            log.exception("job %s: could not start the run of tick %s", record["job_id"], tick)
            self._ended(job, definition, tick, attempt, None)
            return
        actor = self._door.registry.live.get(started["workflow_id"])
        if actor is None:  # ended already (or started by an earlier process and ended there)
            self._ended(job, definition, tick, attempt, started.get("status"))
            return
        actor.ended.add_done_callback(
            lambda f: self._ended(job, definition, tick, attempt,
                                  None if f.cancelled() or f.exception() is not None else f.result().get("status")))

    def _ended(self, job: Job, definition: Definition, tick: int, attempt: int, status: str | None) -> None:
        if not self._running or not self._door.is_open:
            return
        if status == "failed" and attempt < job.record["options"]["retries"] and job.record["job_id"] in self.jobs:
            self._door._in_background(self._start_run(job, definition, tick, attempt + 1))  # still active
            return
        job.active -= 1
        if job.active == 0 and job.buffered is not None:
            tick, job.buffered = job.buffered, None
            if job.record["job_id"] in self.jobs and not job.record["paused"]:
                job.active += 1
                self._door._in_background(self._buffered(job, definition, tick))
                return
        if job.record["next_run_at"] is None and job.active == 0:
            self._finish(job)

    async def _buffered(self, job: Job, definition: Definition, tick: int) -> None:
        job.starting.append(tick)
        try:
            await self._start_run(job, definition, tick, 0)
        finally:
            job.starting.remove(tick)
            self._after(job, [tick])

