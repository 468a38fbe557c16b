"""The scheduler: dispatched jobs (one-off and cron), one actor fired by one timer on the engine's clock.

Every job lives in the store (``Store.put_job``) and, while the engine is open, in one
``SchedulerActor`` of the engine's actor system (id ``SCHEDULER_ID``), spawned at open after
recovery and stopped at close. The calls (dispatch, cancel, pause/resume, list) are messages
asked of it through ``Scheduler``, answered in mailbox order; the messages are
``scheduler_messages``. A heap holds ``(due, seq, job_id)`` and one clock timer
(``clock.call_at``) is set for the earliest due time; when it fires it only ``tell``s the actor
``Wake``, and the actor ticks every job due and sets the timer again. So 100,000 jobs cost their
records and heap entries, one timer and the actor's one task: no task and no wake-up per job.

A tick is an ordinary execution with ``context={"job_id", "scheduled_for"}`` and the idempotency key
``f"{job_id}:{scheduled_for}"`` (a retry: ``...#{attempt}``). The actor starts it itself through the
door's ``launch(..., wait=False)``, never waiting for a run to end, with at most ``MAX_STARTS``
starts in flight (each a short background task of the door until its start is committed); the
rest wait in its queue. The run's end future tells it ``RunEnded``, and overlap, ``buffer_one`` and
retries go on from that message.

Durable: the job's stored record holds, besides its schedule, ``running`` (the ``[tick, attempt]``
runs started or to start and not seen ending) and ``buffered`` (the tick ``buffer_one`` keeps).
A run is added to ``running`` before its start is queued, in the same group commit or an earlier
one, so a crash anywhere leaves it there; at the next open each entry is looked up by its
idempotency key: not started -> started now, running -> it counts (its end is told once it is
recovered), failed with retries left -> the next attempt starts, else it is done; then a
``buffered`` tick with nothing running starts. So a tick never runs twice, and neither a kept tick
nor a retry is lost by a restart.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ...actors import Actor, ActorDeadError, ActorRef
from ...errors import EngineClosedError, InvalidArgumentError, WorkflowNotFoundError
from ..boundary import copy_in, snapshot
from ..clock import Clock, TimerHandle
from ..decisions.definitions import Definition, require_name
from ..decisions.schedules import (
    missed_ticks,
    next_tick,
    parse_job_options,
    parse_schedule,
)
from ..vocabulary import Record
from .scheduler_messages import (
    CancelJob,
    Defined,
    Dispatch,
    ListJobs,
    Ready,
    RunEnded,
    SetPaused,
    Started,
    Wake,
)
from .starts import idempotency_scope

if TYPE_CHECKING:
    from ..actor.workflow_actor import WorkflowActor
    from .door import FrontDoor

log = logging.getLogger(__name__)

SCHEDULER_ID = "sagaloop.scheduler"
MAX_STARTS = 256  # run starts in flight at once; the rest wait in the actor's queue


def new_job_id() -> str:
    return f"job-{time.time_ns():x}-{os.urandom(6).hex()}"


def run_key(job_id: str, tick: int, attempt: int) -> str:
    """The idempotency key of run ``attempt`` (0: the first) of ``tick``."""
    return f"{job_id}:{tick}" if attempt == 0 else f"{job_id}:{tick}#{attempt}"


def attempt_of(key: Any) -> int:
    if isinstance(key, str) and "#" in key:
        try:
            return int(key.rsplit("#", 1)[1])
        except ValueError:
            return 0
    return 0


def _status(ended: asyncio.Future[Record]) -> str | None:
    if ended.cancelled() or ended.exception() is not None:
        return None
    status: str | None = ended.result().get("status")
    return status


class Job:
    """A job while the engine is open: its stored record and what only this process knows."""

    __slots__ = ("record", "due", "catch_up")

    def __init__(self, record: Record) -> None:
        self.record = record
        record.setdefault("running", [])  # [[tick, attempt], ...]: started (or to start), end not seen
        record.setdefault("buffered", None)  # the tick buffer_one keeps for when the runs end
        self.due: int | None = None  # when the heap is to look at it next (None: not in the heap)
        self.catch_up: list[int] = []  # ticks to fire at once (missed while closed, or waiting for define)

    @property
    def running(self) -> list[list[int]]:
        running: list[list[int]] = self.record["running"]
        return running

    @property
    def key(self) -> tuple[str, str]:
        return self.record["product"], self.record["workflow"]


class SchedulerActor(Actor):
    """The jobs of one engine, the heap of their due times and the one timer that fires them."""

    def __init__(self, door: FrontDoor) -> None:
        self._door = door
        self.jobs: dict[str, Job] = {}
        self._heap: list[tuple[int, int, str]] = []
        self._seq = itertools.count()
        self._timer: TimerHandle | None = None
        self._armed_at: int | None = None
        self._waiting: dict[tuple[str, str], list[Job]] = {}  # jobs whose due ticks wait for define
        self._queue: deque[tuple[str, int, int]] = deque()  # (job_id, tick, attempt) starts to make
        self._parked: dict[tuple[str, str], list[tuple[str, int, int]]] = {}  # starts waiting for define
        self.in_flight = 0  # starts under way (at most MAX_STARTS)
        self.handling = False  # a message is being handled (testing's idleness reads it)

    @property
    def _clock(self) -> Clock:
        return self._door.clock

    # -- lifecycle ----------------------------------------------------------------------------

    async def on_start(self) -> None:
        """Load the jobs; settle their stored runs; ticks missed while closed follow ``catch_up``."""
        self.handling = True
        try:
            records = await self._door.store.load_jobs()
            now = self._clock.now_ms()
            for record in records:
                job = Job(record)
                self.jobs[record["job_id"]] = job
                await self._resume_runs(job)
                first = record.get("next_run_at")
                if first is None:  # a one-off job whose tick fired: done once its runs are
                    self._settle(job)
                    continue
                if first <= now:
                    job.catch_up = missed_ticks(record["schedule"], first, now, record["options"]["catch_up"])
                    record["next_run_at"] = next_tick(record["schedule"], now)
                    self._push(job, now)
                else:
                    self._push(job, first)
            self._arm()
            self._pump()
        finally:
            self.handling = False

    async def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._armed_at = None

    async def _resume_runs(self, job: Job) -> None:
        """A job's runs stored as going at the last stop: each is looked up by its idempotency key."""
        record, store = job.record, self._door.store
        stored = [list(entry) for entry in job.running]
        if not stored and record["buffered"] is None:
            return
        running: list[list[int]] = []
        for tick, attempt in stored:
            scope = idempotency_scope(record["product"], record["env"], record["workflow"],
                                      run_key(record["job_id"], tick, attempt))
            workflow_id = self._door.registry.idempotency.get(scope) or await store.get_idempotency(scope)
            instance = None if workflow_id is None else await store.get_instance(workflow_id)
            status = None if instance is None else instance.get("status")
            if instance is None:  # its start was never committed: start it now
                running.append([tick, attempt])
                self._queue.append((record["job_id"], tick, attempt))
            elif status == "running":  # in flight: recovered once defined, and its end told then
                running.append([tick, attempt])
            elif status == "failed" and attempt < record["options"]["retries"]:
                running.append([tick, attempt + 1])  # failed before the retry started: retry now
                self._queue.append((record["job_id"], tick, attempt + 1))
        record["running"] = running
        self._start_buffered(job)
        self._save(job)

    # -- messages -----------------------------------------------------------------------------

    async def receive(self, message: Any) -> Any:
        self.handling = True
        try:
            if isinstance(message, Wake):
                return self._guarded(self._wake)
            if isinstance(message, RunEnded):
                return self._guarded(self._ended, message)
            if isinstance(message, Started):
                return self._guarded(self._started, message)
            if isinstance(message, Defined):
                return self._guarded(self._defined, message.key)
            if isinstance(message, Dispatch):
                return self._dispatch(message)
            if isinstance(message, CancelJob):
                return self._cancel(message)
            if isinstance(message, SetPaused):
                return self._set_paused(message)
            if isinstance(message, ListJobs):
                return self._list_jobs(message)
            if isinstance(message, Ready):
                return None
            raise TypeError(f"the scheduler takes no {type(message).__name__} message")
        finally:
            self.handling = False

    def _guarded(self, handle: Any, *args: Any) -> None:
        """A notice (told: nobody waits for it) must not crash the actor: a failure is logged."""
        try:
            handle(*args)
        except Exception:
            log.exception("the scheduler failed to handle a notice")

    def _tell(self, message: Any) -> None:
        try:
            self.ref.tell(message)
        except ActorDeadError:
            pass  # stopped (the engine closes): the next open settles from the store

    # -- the calls ----------------------------------------------------------------------------

    def _dispatch(self, m: Dispatch) -> tuple[Record, asyncio.Future[None]]:
        self._door._require_open()
        require_name(m.product, "product")
        require_name(m.env, "env")
        definition = self._door._definition(m.product, m.workflow)
        now = self._clock.now_ms()
        parsed = parse_schedule(m.schedule, now)
        opts = parse_job_options(m.options)
        first = next_tick(parsed, now - 1) if "start_at" in parsed else next_tick(parsed, now)
        job_id = new_job_id()
        idempotency_scope(m.product, m.env, definition.tag, f"{job_id}:{first}")  # the key fits (long names)
        record = {"job_id": job_id, "product": m.product, "env": m.env, "workflow": definition.tag,
                  "input": copy_in(m.input, "input"), "schedule": parsed, "options": opts, "created_at": now,
                  "next_run_at": first, "last_run_at": None, "paused": False, "running": [], "buffered": None}
        store = self._door.store
        store.put_job(job_id, record)  # raises NotSerializableError for a bad input: nothing stored
        job = Job(record)
        self.jobs[job_id] = job
        if first is not None:
            self._push(job, first)
            self._arm()
        return {"job_id": job_id, "scheduled_at": first}, store.commit()

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

    def _cancel(self, m: CancelJob) -> asyncio.Future[None]:
        job = self._job(m.product, m.env, m.job_id)
        del self.jobs[m.job_id]
        job.due = None
        job.catch_up = []
        self._door.store.put_job(m.job_id, None)
        return self._door.store.commit()

    def _set_paused(self, m: SetPaused) -> asyncio.Future[None]:
        job = self._job(m.product, m.env, m.job_id)
        job.record["paused"] = m.paused
        if m.paused:
            job.record["buffered"] = None
        self._save(job)
        return self._door.store.commit()

    def _list_jobs(self, m: ListJobs) -> list[Record]:
        self._door._require_open()
        require_name(m.product, "product")
        require_name(m.env, "env")
        if m.tag is not None:
            require_name(m.tag, "tag")
        out = []
        for job_id in sorted(self.jobs):
            r = self.jobs[job_id].record
            if r["product"] == m.product and r["env"] == m.env and (m.tag is None or r["workflow"] == m.tag):
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
        if not heap or not self._door.is_open:
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
        self._timer = self._clock.call_at(earliest, self._ring)

    def _ring(self) -> None:
        """The timer callback: it only tells the actor."""
        self._tell(Wake())

    def _wake(self) -> None:
        self._timer = self._armed_at = None
        if not self._door.is_open:
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
        self._pump()

    def _defined(self, key: tuple[str, str]) -> None:
        """A workflow was defined: its jobs' ticks, and starts, that came due before it go now."""
        for job in self._waiting.pop(key, ()):
            if job.record["job_id"] in self.jobs:
                self._push(job, self._clock.now_ms())
        self._queue.extend(self._parked.pop(key, ()))
        self._arm()
        self._pump()

    def _tick(self, job: Job, now: int) -> None:
        record = job.record
        ticks, job.catch_up = job.catch_up, []
        scheduled = record.get("next_run_at")
        if scheduled is not None and scheduled <= now:
            ticks.append(scheduled)
            record["next_run_at"] = next_tick(record["schedule"], max(scheduled, now))
        definition = self._door.definitions.get(job.key)
        if ticks and definition is None and not record["paused"]:
            job.catch_up = ticks  # fire when the workflow is defined (after a restart, say)
            self._waiting.setdefault(job.key, []).append(job)
            log.info("job %s: workflow %r is not defined yet; its tick waits", record["job_id"], record["workflow"])
            return
        if record["next_run_at"] is not None:
            self._push(job, record["next_run_at"])
        if not record["paused"] and definition is not None:
            busy = bool(job.running)  # the ticks of one wake (catch-up ones) see the runs before it
            for tick in [t for t in ticks if self._admit(job, t, busy)]:
                self._run(job, tick, 0)
        self._settle(job)

    def _admit(self, job: Job, tick: int, busy: bool) -> bool:
        """Whether ``tick`` starts a run now (overlap); a tick kept for later is ``buffered``."""
        if not busy:
            return True
        overlap = job.record["options"]["overlap"]
        if overlap == "allow":
            return True
        if overlap == "buffer_one" and job.record["buffered"] is None:
            job.record["buffered"] = tick
        return False

    def _run(self, job: Job, tick: int, attempt: int) -> None:
        """Note run ``attempt`` of ``tick`` as going (saved by the caller) and queue its start."""
        job.running.append([tick, attempt])
        self._queue.append((job.record["job_id"], tick, attempt))
        last = job.record["last_run_at"]
        if attempt == 0 and (last is None or tick > last):
            job.record["last_run_at"] = tick

    def _start_buffered(self, job: Job) -> None:
        record = job.record
        if not job.running and record["buffered"] is not None:
            tick, record["buffered"] = record["buffered"], None
            if not record["paused"]:
                self._run(job, tick, 0)

    def _settle(self, job: Job) -> None:
        """The job changed: it is saved, or, a one-off job with nothing left to run, it leaves."""
        record = job.record
        if record["job_id"] not in self.jobs:
            return  # cancelled meanwhile
        if record["next_run_at"] is None and not job.running and record["buffered"] is None and not job.catch_up:
            del self.jobs[record["job_id"]]
            if self._door.is_open:
                self._door.store.put_job(record["job_id"], None)
        else:
            self._save(job)

    def _save(self, job: Job) -> None:
        if self._door.is_open and job.record["job_id"] in self.jobs:
            record = job.record
            if job.catch_up:  # ticks waiting for define: a crash now must leave them due
                due = min(job.catch_up)
                if record["next_run_at"] is None or due < record["next_run_at"]:
                    record = {**record, "next_run_at": due}
            self._door.store.put_job(record["job_id"], record)

    # -- runs ---------------------------------------------------------------------------------

    def _pump(self) -> None:
        """Start queued runs while fewer than ``MAX_STARTS`` starts are in flight."""
        door = self._door
        while self._queue and self.in_flight < MAX_STARTS and door.is_open:
            job_id, tick, attempt = self._queue.popleft()
            job = self.jobs.get(job_id)
            if job is None or [tick, attempt] not in job.running:
                continue  # cancelled, or settled meanwhile
            definition = door.definitions.get(job.key)
            if definition is None:
                self._parked.setdefault(job.key, []).append((job_id, tick, attempt))
                continue
            self.in_flight += 1
            door._in_background(self._start(job.record, definition, tick, attempt))

    async def _start(self, record: Record, definition: Definition, tick: int, attempt: int) -> None:
        """Start one run (a short task of the door, one of at most ``MAX_STARTS``); tell how it went."""
        job_id = record["job_id"]
        key = run_key(job_id, tick, attempt)
        extra = {"context": {"job_id": job_id, "scheduled_for": tick}, "idempotency_key": key, "type": "original"}
        scope = idempotency_scope(record["product"], record["env"], definition.tag, key)
        timeout = record["options"]["timeout"]
        ok = False
        try:
            started = await self._door.launch(definition, record["env"], copy_in(record["input"], "input"),
                                              definition.timeout_ms if timeout is None else timeout, extra,
                                              scope=scope, wait=False)
            ok = True
            actor = self._door.registry.live.get(started["workflow_id"])
            if actor is not None:
                watch(self.ref, actor.ended, job_id, tick, attempt)
            elif started.get("status") != "running":  # ended already (here, or in an earlier process)
                self._tell(RunEnded(job_id, tick, attempt, started.get("status")))
            # else: a run being loaded back; Scheduler.recovered watches it once it is live
        except asyncio.CancelledError:
            raise
        except Exception:
            if self._door.is_open:
                log.exception("job %s: could not start the run of tick %s", job_id, tick)
        finally:
            self._tell(Started(job_id, tick, attempt, ok))

    def _started(self, m: Started) -> None:
        self.in_flight -= 1
        if not m.ok:  # the start raised: the run is given up (not retried)
            self._ended(RunEnded(m.job_id, m.tick, m.attempt, None), given_up=True)
        self._pump()

    def _ended(self, m: RunEnded, given_up: bool = False) -> None:
        job = self.jobs.get(m.job_id)
        entry = [m.tick, m.attempt]
        if job is None or entry not in job.running:
            return  # cancelled, or settled already (at open, from the store)
        if m.status is None and not given_up:
            return  # its end future failed: a commit failed and the run resumes by itself (then told again)
        job.running.remove(entry)
        if m.status == "failed" and m.attempt < job.record["options"]["retries"]:
            self._run(job, m.tick, m.attempt + 1)
        else:
            self._start_buffered(job)
        self._settle(job)
        self._pump()


def watch(ref: ActorRef, ended: asyncio.Future[Record], job_id: str, tick: int, attempt: int) -> None:
    """When the run ends, tell the scheduler ``RunEnded`` (the callback does nothing else)."""
    def tell(future: asyncio.Future[Record]) -> None:
        try:
            ref.tell(RunEnded(job_id, tick, attempt, _status(future)))
        except ActorDeadError:
            pass  # the engine closed: the next open reads the run's end from the store

    ended.add_done_callback(tell)


class Scheduler:
    """The front door's handle on the scheduler actor: each call is a message asked of it."""

    def __init__(self, door: FrontDoor) -> None:
        self._door = door
        self.actor: SchedulerActor | None = None
        self._ref: ActorRef | None = None

    async def start(self) -> None:
        """Spawn the actor (at engine open, after recovery) and wait until it has loaded the jobs."""
        system = self._door._require_open()
        self.actor = SchedulerActor(self._door)
        self._ref = system.spawn(self.actor, id=SCHEDULER_ID)
        await self._ref.ask(Ready())

    async def stop(self) -> None:
        ref, self._ref = self._ref, None
        system = self._door._system
        if ref is not None and system is not None:
            await system.stop(ref)

    @property
    def busy(self) -> bool:
        """Messages wait in its mailbox or one is being handled (``sagaloop.testing``'s idleness)."""
        ref, actor = self._ref, self.actor
        return ref is not None and actor is not None and (len(ref._mailbox) > 0 or actor.handling)

    def _actor(self) -> ActorRef:
        self._door._require_open()
        if self._ref is None or not self._ref.is_alive:
            raise EngineClosedError("the engine is closing")
        return self._ref

    def defined(self, key: tuple[str, str]) -> None:
        if self._ref is not None and self._ref.is_alive:
            self._ref.tell(Defined(key))

    def recovered(self, actor: WorkflowActor) -> None:
        """A run in flight at the last stop is live again: if it is a job's, its end is told."""
        record = actor.run.record
        context = record.get("context")
        if not isinstance(context, dict) or "job_id" not in context or self._ref is None or not self._ref.is_alive:
            return
        watch(self._ref, actor.ended, str(context["job_id"]), int(context.get("scheduled_for", 0)),
              attempt_of(record.get("idempotency_key")))

    async def dispatch(self, *, product: str, env: str, workflow: str, input: Any, schedule: Any,
                       options: Any) -> Record:
        result, committed = await self._actor().ask(Dispatch(product, env, workflow, input, schedule, options))
        await committed
        out: Record = result
        return out

    async def cancel(self, *, product: str, env: str, job_id: str) -> None:
        await (await self._actor().ask(CancelJob(product, env, job_id)))

    async def set_paused(self, *, product: str, env: str, job_id: str, paused: bool) -> None:
        await (await self._actor().ask(SetPaused(product, env, job_id, paused)))

    async def list_jobs(self, *, product: str, env: str, tag: str | None = None) -> list[Record]:
        jobs: list[Record] = await self._actor().ask(ListJobs(product, env, tag))
        return jobs
