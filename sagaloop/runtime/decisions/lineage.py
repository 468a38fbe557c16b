"""Executions made from another (replay, restart, resume, replay from a step), and comparing two.

Pure decisions on recorded data: which steps of the origin a new execution
keeps, the state and checkpoint it starts from, its input, and what differs
between two executions. No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ...errors import InvalidArgumentError, StepNotFoundError
from ..vocabulary import Record

Journal = Sequence[tuple[int, Record]]


@dataclass(slots=True)
class Restoration:
    """What a resumed (or replayed-from-step) execution starts with.

    ``steps``: tag -> the recorded step entry it keeps (``completed`` with its output, or
    ``skipped``); the new run returns these without running them. ``state`` and
    ``checkpoint`` (``{name, data}`` or None) are restored; ``signals`` are the origin's
    signals received before the resume point, in order, delivered again to the new run.
    """

    steps: dict[str, Record] = field(default_factory=dict)
    state: Record = field(default_factory=dict)
    checkpoint: Record | None = None
    signals_before: int | None = None  # journal position: signals consumed before it are kept (None: all)

    def to_record(self) -> Record:
        return {"steps": self.steps, "state": self.state, "checkpoint": self.checkpoint}


def merge_input(original: Any, override: Any) -> Any:
    """``override`` merged over ``original``: dicts key by key, nested dicts likewise; anything else replaced."""
    if isinstance(original, Mapping) and isinstance(override, Mapping):
        merged = dict(original)
        for key, value in override.items():
            merged[key] = merge_input(original.get(key), value) if key in original else value
        return merged
    return override


def _steps(journal: Journal) -> list[tuple[int, Record]]:
    return [(p, e) for p, e in journal if e.get("k") == "step"]


def _position_of_step(journal: Journal, tag: str, workflow_id: str) -> int:
    for position, entry in _steps(journal):
        if entry["tag"] == tag:
            return position
    raise StepNotFoundError(f"workflow {workflow_id!r} has no step {tag!r}")


def _state_before(journal: Journal, before: int | None) -> Record:
    """The state when the call at position ``before`` was made (the end's if None): the last one
    journaled up to it. A step journals the state as it ends, which is the state the handler
    called it with (a step's own code does not change ``ctx.state``)."""
    state: Record = {}
    latest = -1
    for position, entry in journal:
        at = entry["after"] if entry.get("k") == "update" else position
        if (before is None or at <= before) and "state" in entry and at >= latest:
            state, latest = entry["state"], at
    return state


def _check_tags(tags: Any, what: str, journal: Journal, workflow_id: str) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str) or not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
        raise InvalidArgumentError(f"{what} must be a list of step tags, got {tags!r}")
    for tag in tags:
        _position_of_step(journal, tag, workflow_id)
    return list(tags)


def plan_resume(journal: Journal, record: Record, *, from_checkpoint: str | None = None,
                from_step: str | None = None, skip_steps: Any = None) -> Restoration:
    """What ``resume`` keeps: the steps whose effects still stand (completed, not rolled back)
    before the resume point; ``skip_steps`` are kept as ``skipped`` without running."""
    workflow_id = record["workflow_id"]
    if from_checkpoint is not None and from_step is not None:
        raise InvalidArgumentError("resume takes from_checkpoint or from_step, not both")
    skip = _check_tags(skip_steps, "skip_steps", journal, workflow_id)
    cut: int | None = None
    checkpoint: Record | None = None
    if from_checkpoint is not None:
        found = [(p, e) for p, e in journal if e.get("k") == "checkpoint" and e["name"] == from_checkpoint]
        if not found:
            raise InvalidArgumentError(f"workflow {workflow_id!r} has no checkpoint {from_checkpoint!r}")
        cut, entry = found[-1]
        checkpoint = {"name": entry["name"], "data": entry["data"]}
    elif from_step is not None:
        cut = _position_of_step(journal, from_step, workflow_id)
    steps: dict[str, Record] = {}
    for position, entry in _steps(journal):
        if cut is not None and position >= cut:
            continue
        if entry["status"] == "completed" and entry.get("rollback_status") != "completed":
            steps[entry["tag"]] = entry
    for tag in skip:
        steps[tag] = {**_entry_of(journal, tag), "status": "skipped", "output": None, "error": None}
    state = _state_before(journal, cut) if cut is not None else (record.get("state") or _state_before(journal, None))
    return Restoration(steps=steps, state=state, checkpoint=checkpoint, signals_before=cut)


def plan_replay_from_step(journal: Journal, record: Record, from_step: str,
                          step_outputs: Mapping[str, Any] | None = None) -> Restoration:
    """What ``replay_from_step`` keeps: every step before ``from_step`` with its recorded output
    (or ``step_outputs[tag]``), as recorded, without running it."""
    workflow_id = record["workflow_id"]
    cut = _position_of_step(journal, from_step, workflow_id)
    if step_outputs is not None and not isinstance(step_outputs, Mapping):
        raise InvalidArgumentError(f"step_outputs must be a dict of step tag -> output, got {step_outputs!r}")
    before = {e["tag"]: e for p, e in _steps(journal) if p < cut}
    for tag in step_outputs or {}:
        if tag not in before:
            raise InvalidArgumentError(f"step_outputs names step {tag!r}, which is not a step before "
                                       f"{from_step!r} in workflow {workflow_id!r}")
    steps: dict[str, Record] = {}
    for tag, entry in before.items():
        if step_outputs is not None and tag in step_outputs:
            steps[tag] = {**entry, "status": "completed", "output": step_outputs[tag], "error": None}
        elif entry["status"] in ("completed", "skipped"):
            steps[tag] = entry
    return Restoration(steps=steps, state=_state_before(journal, cut), signals_before=cut)


def _entry_of(journal: Journal, tag: str) -> Record:
    return next(e for _, e in _steps(journal) if e["tag"] == tag)


def consumed_signal_seqs(journal: Journal, before: int | None) -> list[int]:
    """The inbox seqs of the signals the origin consumed before position ``before`` (all if None)."""
    return [e["signal_seq"] for p, e in journal
            if e.get("k") == "signal" and e.get("status") == "received" and (before is None or p < before)]


# -- compare -------------------------------------------------------------------------------------------

def value_diff(a: Any, b: Any, prefix: str = "") -> dict[str, list[Any]]:
    """``{dotted key: [a's value, b's value]}`` for every leaf that differs (dicts compared key by key)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out: dict[str, list[Any]] = {}
        for key in sorted(set(a) | set(b), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            out.update(value_diff(a.get(key), b.get(key), name))
        return out
    if a == b and type(a) is type(b):
        return {}
    return {prefix or "": [a, b]}


def _step_view(entry: Record | None) -> Record | None:
    if entry is None:
        return None
    status = entry["status"]
    if status == "completed" and entry.get("rollback_status") == "completed":
        status = "rolled_back"
    error = entry.get("error")
    return {"status": status, "output": entry.get("output"),
            "error": error.get("message") if isinstance(error, Mapping) else error}


def step_diffs(a_id: str, a: Journal, b_id: str, b: Journal) -> list[Record]:
    """One record per step whose status, output or error differs: ``{step, a_id: {...}, b_id: {...}}``,
    in the order the steps first appear (a's order, then b's new ones)."""
    a_steps = {e["tag"]: e for _, e in _steps(a)}
    b_steps = {e["tag"]: e for _, e in _steps(b)}
    order = list(a_steps) + [t for t in b_steps if t not in a_steps]
    out = []
    for tag in order:
        left, right = _step_view(a_steps.get(tag)), _step_view(b_steps.get(tag))
        if left != right:
            out.append({"step": tag, a_id: left, b_id: right})
    return out
