"""Answers from the store, for runs that are not live in this process (ended, or in flight elsewhere).

Each function reads committed records only; the front door asks the live
actor first and comes here when there is none (``Registry.ask`` answered
``NOT_LIVE``).
"""

from __future__ import annotations

import inspect
from typing import Any

from ...errors import InvalidArgumentError, QueryNotFoundError, StepNotFoundError
from ...storage import Store, decode_cursor, encode_cursor, time_bound
from ..boundary import snapshot
from ..clock import Clock
from ..decisions.definitions import Definition, require_name
from ..decisions.history import build_history, progress
from ..handler.context import RestrictedContext
from ..run import Run
from ..run.entries import StepState, read_journal
from ..vocabulary import STATUSES, Record

_MISSING: Any = object()


async def status(store: Store, record: Record) -> Record:
    """The status record; for a run in flight but not live here, with the progress its journal tells."""
    if record["status"] == "running":
        record = {**record, **progress(await read_journal(store, record["workflow_id"]))}
    return record


async def query(store: Store, clock: Clock, definition: Definition, record: Record, name: str, args: Any) -> Any:
    """Run query ``name`` against the state recorded at the run's end (or its last commit)."""
    fn = definition.queries.get(name)
    if fn is None:
        raise QueryNotFoundError(f"workflow {record['tag']!r} has no query {name!r}")
    run = Run(store=store, clock=clock, definition=definition, record=record)
    run.state = record.get("state") or {}
    run.checkpoint_name, run.checkpoint_data = record.get("checkpoint_name"), record.get("checkpoint_data")
    for position, entry in await read_journal(store, record["workflow_id"]):
        if entry.get("k") == "step":
            st = StepState(entry["tag"], position, None)
            st.load(entry)
            run.steps[st.tag] = st
    ctx = RestrictedContext(run, "query")
    value = fn(ctx) if args is None else fn(ctx, args)
    if inspect.isawaitable(value):
        value = await value
    return snapshot(value)


async def update_reply(store: Store, workflow_id: str, update_id: str) -> Any:
    """The reply recorded for ``update_id``, else ``_MISSING`` (see ``has_reply``)."""
    for _, entry in await read_journal(store, workflow_id):
        if entry.get("k") == "update" and entry.get("update_id") == update_id:
            return entry["reply"]
    return _MISSING


def has_reply(reply: Any) -> bool:
    return reply is not _MISSING


async def history(store: Store, workflow_id: str) -> list[Record]:
    record = await store.get_instance(workflow_id)
    assert record is not None
    return build_history(record, await read_journal(store, workflow_id), await store.load_events(workflow_id))


async def step_detail(store: Store, workflow_id: str, step_tag: str) -> Record:
    for _, entry in await read_journal(store, workflow_id):
        if entry.get("k") == "step" and entry["tag"] == step_tag:
            status = entry["status"]
            if status == "completed" and entry.get("rollback_status") == "completed":
                status = "rolled_back"  # a failed step stays "failed" (the seed's example); see rollback_status
            ended = entry.get("ended_at")
            return {"tag": step_tag, "status": status, "input": entry.get("input"),
                    "output": entry["output"], "error": entry["error"], "attempts": entry["attempts"],
                    "duration": None if ended is None else ended - entry["started_at"],
                    "rollback_status": entry.get("rollback_status")}
    raise StepNotFoundError(f"workflow {workflow_id!r} has no step {step_tag!r}")


async def list_page(store: Store, *, product: str, env: str, tag: str | None = None, status: str | None = None,
               started_after: Any = None, started_before: Any = None, limit: int = 100,
               cursor: str | None = None) -> Record:
    """One page of the product/env's executions: ``{"executions": [instance records], "next_cursor"}``.

    Checks every argument (``InvalidArgumentError`` naming the bad one) and passes them to
    ``Store.list_instances``; the cursor is the store's ``next`` position as an opaque string.
    """
    require_name(product, "product")
    require_name(env, "env")
    if tag is not None:
        require_name(tag, "tag")
    if status is not None and status not in STATUSES:
        raise InvalidArgumentError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidArgumentError(f"limit must be a positive int, got {limit!r}")
    after = time_bound(started_after, "started_after", upper=False)
    before = time_bound(started_before, "started_before", upper=True)
    position = None if cursor is None else decode_cursor(cursor)
    await store.commit()
    page = await store.list_instances(product=product, env=env, tag=tag, status=status,
                                           created_after=after, created_before=before,
                                           cursor=position, limit=limit)
    return {"executions": page.records,
            "next_cursor": None if page.next is None else encode_cursor(page.next)}
