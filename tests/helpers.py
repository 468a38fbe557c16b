"""Helpers the in-process tests share (the crash workers share ``worker_common.py``).

Imported by name (``from helpers import open_engine, execute``): ``conftest.py``
puts ``tests/`` on ``sys.path``.

The engine calls default to the product and env most of these tests use
(``P``, ``E``); a test file of another product passes its own.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any, Iterator

import lmdb

import sagaloop
from sagaloop.storage.lmdb_store import LmdbStore

P, E = "my-product", "prd"


# -- engines and calls ----------------------------------------------------------------------------------


def open_engine(tmp_path: Path, name: str = "db", durability: str = "fast", **kw) -> sagaloop.Engine:
    """An engine on ``tmp_path / name`` (``fast`` durability unless a test asks for ``durable``)."""
    return sagaloop.Engine(tmp_path / name, durability=durability, **kw)


async def execute(engine: sagaloop.Engine, tag: str = "wf", input=None, *, until_end: bool = False,
                  product: str = P, env: str = E, **kw) -> sagaloop.WorkflowResult:
    """``engine.workflows.execute`` on ``product``/``env``.

    ``until_end``: execute answers "running" while a retry waits (a durable timer); follow it to
    the run's end with ``result`` (unless ``wait=False`` was asked for).
    """
    result = await engine.workflows.execute(product=product, env=env, tag=tag, input=input, **kw)
    if until_end and kw.get("wait", True) and result.status == "running":
        result = await engine.workflows.result(product=product, env=env, workflow_id=result.workflow_id)
    return result


async def detail(engine: sagaloop.Engine, workflow_id: str, tag: str, *, product: str = P,
                 env: str = E) -> sagaloop.StepDetail:
    return await engine.workflows.step_detail(product=product, env=env, workflow_id=workflow_id, step_tag=tag)


async def send(engine: sagaloop.Engine, wf: str, name: str, payload=None, *, product: str = P,
               env: str = E) -> None:
    await engine.workflows.signal(product=product, env=env, workflow_id=wf, signal=name, payload=payload)


async def history_types(engine: sagaloop.Engine, wf: str, *, product: str = P, env: str = E) -> list[str]:
    return [e.type for e in (await engine.workflows.history(product=product, env=env, workflow_id=wf)).events]


# -- step handlers ----------------------------------------------------------------------------------------


class Boom(RuntimeError):
    pass


class CardDeclined(Exception):
    code = "card_declined"


def raiser(message: str):
    """A step handler that always fails with ``Boom(message)``."""
    def handler():
        raise Boom(message)
    return handler


class Gate:
    """A step handler that blocks until the test opens it.

    ``entered`` is set once it runs, ``open`` lets it return ``output``;
    ``cancelled`` tells that it was interrupted while it waited.
    """

    def __init__(self, output="gate") -> None:
        self.entered = asyncio.Event()
        self.open = asyncio.Event()
        self.output = output
        self.cancelled = False

    def rearm(self) -> None:
        """The engine restarted: a step that was running runs again, and enters again."""
        self.entered = asyncio.Event()

    async def __call__(self):
        self.entered.set()
        try:
            await self.open.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return self.output


# -- the store --------------------------------------------------------------------------------------------


class FailingStore(LmdbStore):
    """An LMDB store whose next ``fail_groups`` group commits fail (a write error at the store boundary)."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.fail_groups = 0
        self.failed = 0

    def _write(self, group):
        if self.fail_groups > 0:
            self.fail_groups -= 1
            self.failed += 1
            return OSError("simulated write error")
        return super()._write(group)


def engine_on_store(path, store: LmdbStore | None = None, **kw) -> sagaloop.Engine:
    """A ``fast`` engine on ``path``, on a test ``store`` if given (the runtime only sees the Store interface)."""
    return sagaloop.Engine(path, durability="fast", store=store, **kw)


def overwrite_record(path, db: bytes, key: bytes, value: bytes = b"\xc1\xc1") -> None:
    """Overwrite the stored record ``key`` of LMDB database ``db`` with ``value`` (undecodable by default)."""
    env = lmdb.open(str(path), max_dbs=8, subdir=True)
    try:
        with env.begin(write=True) as txn:
            handle = env.open_db(db, txn=txn)
            assert txn.get(key, db=handle) is not None, key
            txn.put(key, value, db=handle)
    finally:
        env.close()


# -- waiting on a condition -------------------------------------------------------------------------------


async def until(predicate, what: str, timeout: float = 10.0) -> None:
    """Poll ``predicate`` (a function, sync or async) until it is true; fail naming ``what`` after
    ``timeout`` real seconds. For conditions ``wait_idle`` cannot tell (while a step is held)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting until {what}")
        await asyncio.sleep(0.002)


def messages_queued(engine: sagaloop.Engine, workflow_id: str) -> int:
    """How many queries and updates of ``workflow_id`` wait their turn (behind a running step or the
    replay of a resumed run); 0 if the run is not live.

    Reads engine internals (no public call tells it): adapt here if the runtime changes shape.
    """
    actor = engine._runtime.registry.live.get(workflow_id)
    return len(actor._queue or ()) if actor is not None else 0


def run_interrupted(engine: sagaloop.Engine, workflow_id: str) -> bool:
    """Whether a cancel or the workflow timeout has reached the live run ``workflow_id``.

    Reads engine internals (no public call tells it): adapt here if the runtime changes shape.
    """
    actor = engine._runtime.registry.live.get(workflow_id)
    return actor is not None and actor.run.interrupt is not None


class EngineOnALoop:
    """One ``fast`` engine on one event loop, kept open across hypothesis examples (``with``).

    ``run(coro)`` runs a coroutine on that loop (30 s at most); ``names(prefix)`` gives fresh
    names (``prefix-0``, ``prefix-1`` ...) so each example has ids of its own.
    """

    def __init__(self, path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.engine = sagaloop.Engine(path, durability="fast")

    @staticmethod
    def names(prefix: str) -> Iterator[str]:
        return (f"{prefix}-{n}" for n in itertools.count())

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout=30))

    def __enter__(self) -> "EngineOnALoop":
        self.run(self.engine.open())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.engine.close())
        finally:
            self.loop.close()
