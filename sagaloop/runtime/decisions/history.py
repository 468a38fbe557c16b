"""What an execution's records imply: its history and its progress.

To keep the hot path at one write per step, a step's start and end events
are not stored as events: the step's journal entry carries their seqs and
times, and the instance record carries the start and end of the run. This
module merges them back, in seq order, into the history the product
document shows. Pure code: records in, events out.
"""

from __future__ import annotations

from ..vocabulary import Record

_STEP_END = {"completed": "step_completed", "failed": "step_failed", "skipped": "step_skipped"}


def build_history(record: Record, journal: list[tuple[int, Record]], events: list[Record]) -> list[Record]:
    """Every event of the run, ``{type, timestamp, data}``, oldest first."""
    merged: list[tuple[int, str, int, Record]] = [(0, "workflow_started", record["created_at"],
                                                 {"input": record.get("input")})]
    for event in events:
        merged.append((event["seq"], event["type"], event["timestamp"], event["data"]))
    debug = bool(record.get("debug"))  # a replay with options={"debug": True}: each step in full
    for _, entry in journal:
        kind = entry.get("k")
        if kind == "step":
            tag = entry["tag"]
            merged.append((entry["seq"], "step_started", entry["started_at"], {"step": tag}))
            end = _STEP_END.get(entry["status"])
            if end is not None:
                data = {"step": tag, "output": entry["output"]} if end == "step_completed" else \
                    {"step": tag, "error": entry["error"]}
                if debug:
                    data.update(attempts=entry["attempts"], duration=entry["ended_at"] - entry["started_at"],
                                state=entry.get("state"))
                merged.append((entry["end_seq"], end, entry["ended_at"], data))
        elif kind == "checkpoint":
            merged.append((entry["seq"], "checkpoint_created", entry["at"],
                           {"name": entry["name"], "data": entry["data"]}))
    if record.get("end_seq") is not None:
        data = {"error": record["error"]} if record.get("error") else {}
        merged.append((record["end_seq"], f"workflow_{record['status']}", record["ended_at"], data))
    merged.sort(key=lambda e: e[0])
    return [{"type": t, "timestamp": ts, "data": data} for _, t, ts, data in merged]


def progress(journal: list[tuple[int, Record]]) -> Record:
    """Completed steps, current step, last checkpoint and last state, as the journal records them."""
    done = sorted((e["order"], e["tag"]) for _, e in journal if e.get("k") == "step" and e["status"] == "completed")
    current = checkpoint = state = None
    state_at: tuple[float, float] = (-1, -1)
    for position, entry in journal:
        kind = entry.get("k")
        if kind == "step" and entry["status"] == "running":
            current = entry["tag"]
        elif kind == "checkpoint":
            checkpoint = entry
        # The newest state written (steps and updates): by time, then by place in the call order
        # (an update sits just after the call it followed), so one millisecond cannot reorder them.
        at = (entry.get("ended_at") or entry.get("at") or 0,
              entry["after"] + 0.5 if kind == "update" else position)
        if entry.get("state") and at >= state_at:
            state, state_at = entry["state"], at
    return {"completed_steps": [tag for _, tag in done], "current_step": current,
            "checkpoint_name": checkpoint["name"] if checkpoint else None,
            "checkpoint_data": checkpoint["data"] if checkpoint else None, "state": state or {}}


def next_history_seq(events: list[Record], journal: list[tuple[int, Record]]) -> int:
    """The history seq a resumed run continues from."""
    last = max((e.get("seq", -1) for e in events), default=0)
    for _, entry in journal:
        last = max(last, entry.get("seq", -1), entry.get("end_seq", -1))
    return last + 1
