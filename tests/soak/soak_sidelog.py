"""The soak's side log: what the worker really did, one JSON object a line, written before it goes on.

The engine never reads this file. Each line is written with one ``write`` on
an ``O_APPEND`` descriptor and fsync'd before the worker does anything else,
so after a SIGKILL the file holds every side effect that happened, in the
order it happened, across all the worker's lives. Every line carries
``ev`` (the event) and ``life`` (which start of the worker wrote it).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path
from typing import Any

import orjson


def repair_tail(path: str | os.PathLike[str]) -> None:
    """End the file with a newline, so a torn last line (if any) stays a line of its own."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return
    except FileNotFoundError:
        return
    with open(path, "ab") as f:
        f.write(b"\n")
        f.flush()
        os.fsync(f.fileno())


def read_side_log(path: str | os.PathLike[str]) -> tuple[list[dict], int]:
    """The events in file order, and how many lines could not be parsed (a torn write)."""
    p = Path(path)
    if not p.exists():
        return [], 0
    events, bad = [], 0
    for line in p.read_bytes().splitlines():
        if not line.strip():
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            bad += 1
            continue
        if isinstance(event, dict) and "ev" in event:
            event["n"] = len(events)  # its index: the order things happened in
            events.append(event)
        else:
            bad += 1
    return events, bad


class SideLog:
    """The worker's side log: appends durably and keeps the indexes the worker steers by.

    ``life`` is this start's number (1 + the lives already in the file).
    ``now`` holds ``(ev, wf, step)`` of every event of this life, for the
    senders that wait for a workflow to reach a point before acting.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        repair_tail(path)
        old, _bad = read_side_log(path)
        self.life = 1 + sum(1 for e in old if e["ev"] == "life")
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._runs: Counter[tuple[str, str]] = Counter()
        self.now: set[tuple[str, str | None, str | None]] = set()
        self._by_key: dict[tuple[str, str | None], list[dict]] = {}  # (ev, wf) -> events
        self._changed: asyncio.Event | None = None
        for event in old:
            self._index(event)

    def _index(self, event: dict) -> None:
        self._by_key.setdefault((event["ev"], event.get("wf")), []).append(event)
        if event["ev"] == "step_ran":
            self._runs[(event["wf"], event["step"])] += 1
        if event.get("life") == self.life:
            self.now.add((event["ev"], event.get("wf"), event.get("step")))

    def log(self, ev: str, **fields: Any) -> dict:
        """Append one event durably (write + fsync), then index it and wake the waiters."""
        event = {"ev": ev, "life": self.life, **fields}
        os.write(self._fd, orjson.dumps(event) + b"\n")
        os.fsync(self._fd)
        self._index(event)
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        return event

    def runs(self, wf: str, step: str) -> int:
        """How many times the handler of ``step`` of ``wf`` has started, over all lives."""
        return self._runs[(wf, step)]

    def events(self, ev: str, wf: str | None) -> list[dict]:
        """The events ``ev`` of workflow ``wf`` (None: those without one), oldest first."""
        return self._by_key.get((ev, wf), [])

    def every(self, ev: str) -> list[dict]:
        """Every event ``ev``, of any workflow."""
        return [e for (name, _wf), events in self._by_key.items() if name == ev for e in events]

    def has(self, ev: str, wf: str, **match: Any) -> bool:
        return any(all(e.get(k) == v for k, v in match.items()) for e in self.events(ev, wf))

    async def changed(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) for the next event to be logged."""
        if self._changed is None:
            self._changed = asyncio.Event()
        try:
            async with asyncio.timeout(timeout):
                await self._changed.wait()
        except TimeoutError:
            pass
