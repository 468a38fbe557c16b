"""Making a signal durable: the one path, for a live run and for one that is not live here."""

from __future__ import annotations

from typing import Any, Callable

from ...storage import Store
from ..decisions.history import next_history_seq
from .entries import read_journal


async def record_signal(store: Store, workflow_id: str, *, seq: int, next_event_seq: Callable[[], int],
                        name: str, payload: Any, now: int) -> bytes:
    """Append signal ``name`` to the instance's durable inbox at ``seq``, with its ``signal_received``
    history event, and wait for the commit. Returns the bytes recorded: the workflow gets a decode of
    them, never the sender's object.

    Raises ``NotSerializableError`` before anything is queued, and the store's error if the commit fails.
    """
    encoded = store.put_signal(workflow_id, seq, {"name": name, "payload": payload, "at": now})
    event_seq = next_event_seq()  # taken only once the signal is queued: no gap in the history
    store.put_event(workflow_id, event_seq, {"type": "signal_received", "timestamp": now, "seq": event_seq,
                                             "data": {"signal": name, "payload": payload}})
    await store.commit()
    return encoded


async def record_signal_not_live(store: Store, workflow_id: str, *, name: str, payload: Any, now: int) -> None:
    """``record_signal`` for an instance in flight but not live in this process: its seq and history
    seq come from the store. Its resumed run takes the signal from the inbox. The caller holds the
    instance's inbox lock (one writer at a time)."""
    await store.commit()  # what this process queued for it is read back below
    # Every read first: a record that does not decode raises before anything is queued.
    signals = await store.load_signals(workflow_id)
    journal = await read_journal(store, workflow_id)
    event_seq = next_history_seq(await store.load_events(workflow_id), journal)
    seq = 1 + max((s for s, _ in signals), default=-1)
    await record_signal(store, workflow_id, seq=seq, next_event_seq=lambda: event_seq, name=name,
                        payload=payload, now=now)
