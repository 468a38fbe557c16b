"""What an operator repairs executions with: replay, restart, resume, replay from a step; and
the reads that go with them: the related executions of a family, and comparing two.

Each repair is a new execution (new ``workflow_id``) linked to its origin: ``type`` is
``replay | restart | resume``, the link is ``replayed_from | restarted_from | resumed_from``,
and ``family`` is the workflow id of the original all of them descend from. The origin itself
is never changed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from ...errors import InvalidArgumentError, WorkflowStillRunningError
from ..boundary import copy_in
from ..decisions.durations import parse_optional_duration
from ..decisions.lineage import (
    Restoration,
    consumed_signal_seqs,
    merge_input,
    plan_replay_from_step,
    plan_resume,
    step_diffs,
    value_diff,
)
from ..run.entries import read_journal
from ..vocabulary import Record
from .starts import idempotency_scope

if TYPE_CHECKING:
    from .door import FrontDoor

REPLAY_OPTIONS = ("retries", "timeout", "debug")


class Repairs:
    """The repair calls of one engine (they start executions through its front door)."""

    def __init__(self, door: FrontDoor) -> None:
        self._door = door

    async def _origin(self, product: str, env: str, workflow_id: str) -> Record:
        """The origin's record, as the store has it (every repair reads what was committed)."""
        await self._door.executions.record(product, env, workflow_id)
        await self._door.store.commit()
        record = await self._door.store.get_instance(workflow_id)
        assert record is not None
        return record

    async def _start(self, origin: Record, input: Any, extra: Record, *, restoration: Restoration | None = None,
                     timeout_ms: float | None = None, scope: str | None = None) -> Record:
        """Start the new execution linked to ``origin``; its record once it ends or blocks."""
        door = self._door
        definition = door._definition(origin["product"], origin["tag"])
        signals: list[tuple[int, Record]] = []
        if restoration is not None:
            extra["restored"] = restoration.to_record()
            # The signals the origin had taken before the resume point come in again, in order.
            journal = await read_journal(door.store, origin["workflow_id"])
            taken = set(consumed_signal_seqs(journal, restoration.signals_before))
            inbox = await door.store.load_signals(origin["workflow_id"])
            signals = [(n, signal) for n, (seq, signal) in enumerate(s for s in inbox if s[0] in taken)]
        extra["family"] = origin.get("family") or origin["workflow_id"]
        extra["context"] = origin.get("context")
        if timeout_ms is None:
            timeout_ms = origin.get("timeout")
        return await door.launch(definition, origin["env"], input, timeout_ms, extra, scope=scope, signals=signals)

    # -- the repairs ------------------------------------------------------------------------------

    async def replay(self, *, product: str, env: str, workflow_id: str, reason: str | None = None,
                     options: Mapping[str, Any] | None = None, idempotency_key: str | None = None) -> Record:
        """Run the origin again from the start: its input, fresh state. ``options``: ``retries``
        (run a failed replay again, up to that many times), ``timeout``, ``debug`` (the history
        of the replay shows each step's attempts, duration and state)."""
        options = _replay_options(options)
        _check_reason(reason)
        origin = await self._origin(product, env, workflow_id)
        scope = None
        if idempotency_key is not None:
            scope = idempotency_scope(product, env, f"{origin['tag']}\x1freplay", idempotency_key)
        timeout_ms = parse_optional_duration(options.get("timeout"), name="replay timeout")
        extra = {"type": "replay", "replayed_from": workflow_id, "reason": reason,
                 "debug": bool(options.get("debug")), "idempotency_key": idempotency_key}
        record = await self._start(origin, origin.get("input"), dict(extra), timeout_ms=timeout_ms, scope=scope)
        for _ in range(options.get("retries", 0)):
            if record["status"] not in ("failed", "rolled_back"):
                break
            record = await self._start(origin, origin.get("input"), {**extra, "idempotency_key": None},
                                       timeout_ms=timeout_ms)
        return record

    async def restart(self, *, product: str, env: str, workflow_id: str, input: Any = None,
                      input_override: Any = None, merge_input: bool = False, reason: str | None = None) -> Record:
        """Run the origin again with a new input (``input``), or with ``input_override`` merged over
        its input (``merge_input=True``: dicts key by key, nested ones too); fresh state."""
        _check_reason(reason)
        if not isinstance(merge_input, bool):
            raise InvalidArgumentError(f"merge_input must be True or False, got {merge_input!r}")
        if input is not None and input_override is not None:
            raise InvalidArgumentError("restart takes input or input_override, not both")
        origin = await self._origin(product, env, workflow_id)
        override = copy_in(input if input is not None else input_override, "input")
        if merge_input:
            new_input = merge_input_checked(origin.get("input"), override)
        else:
            new_input = override if (input is not None or input_override is not None) else origin.get("input")
        return await self._start(origin, new_input, {"type": "restart", "restarted_from": workflow_id,
                                                     "reason": reason})

    async def resume(self, *, product: str, env: str, workflow_id: str, from_checkpoint: str | None = None,
                     from_step: str | None = None, skip_steps: Any = None, input: Any = None) -> Record:
        """Continue the origin in a new execution that keeps the steps whose effects still stand."""
        origin = await self._origin(product, env, workflow_id)
        if origin["status"] == "running":
            raise WorkflowStillRunningError(f"workflow {workflow_id!r} is still running: it resumes on its own; "
                                            f"cancel it first to resume it as a new execution",
                                            workflow_id=workflow_id)
        journal = await read_journal(self._door.store, workflow_id)
        restoration = plan_resume(journal, origin, from_checkpoint=from_checkpoint, from_step=from_step,
                                  skip_steps=skip_steps)
        new_input = origin.get("input") if input is None else merge_input_checked(origin.get("input"),
                                                                                  copy_in(input, "input"))
        return await self._start(origin, new_input, {"type": "resume", "resumed_from": workflow_id},
                                 restoration=restoration)

    async def replay_from_step(self, *, product: str, env: str, workflow_id: str, from_step: str,
                               step_outputs: Mapping[str, Any] | None = None) -> Record:
        """Run the origin again from ``from_step``: the steps before it keep their recorded outputs
        (or ``step_outputs[tag]``) without running; ``from_step`` and what follows run fresh."""
        if not isinstance(from_step, str) or not from_step:
            raise InvalidArgumentError(f"from_step must be a step tag, got {from_step!r}")
        origin = await self._origin(product, env, workflow_id)
        if origin["status"] == "running":
            raise WorkflowStillRunningError(f"workflow {workflow_id!r} is still running; replay it from a step "
                                            f"once it has ended", workflow_id=workflow_id)
        journal = await read_journal(self._door.store, workflow_id)
        outputs = None if step_outputs is None else copy_in(step_outputs, "step_outputs")
        restoration = plan_replay_from_step(journal, origin, from_step, outputs)
        return await self._start(origin, origin.get("input"),
                                 {"type": "replay", "replayed_from": workflow_id, "from_step": from_step},
                                 restoration=restoration)

    # -- reads ----------------------------------------------------------------------------------------

    async def related_executions(self, *, product: str, env: str, workflow_id: str) -> list[Record]:
        """The whole family of ``workflow_id`` (its original and every repair made from any member),
        oldest first."""
        origin = await self._origin(product, env, workflow_id)
        family = origin.get("family") or origin["workflow_id"]
        records: list[Record] = []
        page = await self._door.store.list_instances(product=product, env=env, family=family, limit=1000)
        while True:  # served by the store's family index: reads the family, nothing else
            records += page.records
            if page.next is None:
                break
            page = await self._door.store.list_instances(product=product, env=env, family=family, limit=1000,
                                                         cursor=page.next)
        # Oldest first; in one millisecond the original first, then by id (generated ids are time-ordered).
        return sorted(records, key=lambda r: (r["created_at"], r.get("family") is not None, r["workflow_id"]))

    async def compare(self, *, product: str, env: str, workflow_ids: Any) -> Record:
        """What differs between two executions: input, output, status, and each step that differs."""
        if isinstance(workflow_ids, str) or not isinstance(workflow_ids, (list, tuple)) or len(workflow_ids) != 2:
            raise InvalidArgumentError(f"workflow_ids must be a list of two workflow ids, got {workflow_ids!r}")
        a_id, b_id = workflow_ids
        a, b = await self._origin(product, env, a_id), await self._origin(product, env, b_id)
        a_journal = await read_journal(self._door.store, a_id)
        b_journal = await read_journal(self._door.store, b_id)
        return {"workflow_ids": [a_id, b_id], "input_diff": value_diff(a.get("input"), b.get("input")),
                "output_diff": value_diff(a.get("output"), b.get("output")),
                "status": {a_id: a["status"], b_id: b["status"]},
                "step_diffs": step_diffs(a_id, a_journal, b_id, b_journal)}


def merge_input_checked(original: Any, override: Any) -> Any:
    if not isinstance(override, Mapping):
        raise InvalidArgumentError(f"an input merged over the original must be a dict, got {override!r}")
    return merge_input(original if isinstance(original, Mapping) else {}, override)


def _check_reason(reason: Any) -> None:
    if reason is not None and not isinstance(reason, str):
        raise InvalidArgumentError(f"a reason must be a string or None, got {reason!r}")


def _replay_options(options: Any) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InvalidArgumentError(f"replay options must be a dict, got {options!r}")
    unknown = sorted(set(options) - set(REPLAY_OPTIONS))
    if unknown:
        raise InvalidArgumentError(f"unknown replay option(s) {unknown}; known: {list(REPLAY_OPTIONS)}")
    retries = options.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidArgumentError(f"replay option retries must be a non-negative int, got {retries!r}")
    if not isinstance(options.get("debug", False), bool):
        raise InvalidArgumentError(f"replay option debug must be True or False, got {options['debug']!r}")
    return dict(options)
