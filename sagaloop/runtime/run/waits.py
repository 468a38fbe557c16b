"""Signals and durable timers: the run's calls that block on the outside world or on time."""

from __future__ import annotations

import asyncio
from typing import Any

from ...errors import InvalidArgumentError, SignalTimeoutError
from ..decisions.durations import parse_duration, parse_optional_duration
from .inbox import Item
from .steps import StepCalls


def signal_value(name: str, payload: Any) -> dict[str, Any]:
    """What ``wait_for_signal`` returns: the payload's fields and ``_signal``, the name."""
    value = dict(payload) if isinstance(payload, dict) else {}
    value["_signal"] = name
    return value


def _time_out(future: asyncio.Future[Item | None]) -> None:
    if not future.done():
        future.set_result(None)


class WaitCalls(StepCalls):
    """Part of ``Run``: waits on signals and durable timers, where the handler blocks."""

    __slots__ = ()

    async def wait_for_signal(self, names: str | list[str] | tuple[str, ...], timeout: Any = None) -> dict[str, Any]:
        if not isinstance(names, (str, list, tuple)):
            raise InvalidArgumentError(f"wait_for_signal needs a signal name or a list of names, got {names!r}")
        wanted = (names,) if isinstance(names, str) else tuple(names)
        if not wanted or not all(isinstance(n, str) and n for n in wanted):
            raise InvalidArgumentError(f"wait_for_signal needs a signal name or a list of names, got {names!r}")
        timeout_ms = parse_optional_duration(timeout, name="signal timeout")
        key = "|".join(wanted)
        position, recorded = await self._next_call("signal", key)
        if recorded is not None and recorded["status"] == "received":
            return signal_value(recorded["name"], recorded["payload"])
        if recorded is not None and recorded["status"] == "timed_out":
            raise SignalTimeoutError(recorded["error"])
        deadline = recorded["deadline"] if recorded is not None else (
            None if timeout_ms is None else self._now() + timeout_ms)
        if self._updates_to_replay:  # updates applied while an earlier process waited here
            await self.replay_updates(position)
        item = self.inbox.take(wanted)
        if item is None:
            if recorded is None:  # the deadline must be durable before we block on it
                self.entries.put(position, {"k": "signal", "tag": key, "status": "waiting",
                                        "deadline": deadline})
                await self._durable()
            item = await self._await_signal(wanted, deadline)
            if item is None:
                message = f"no signal {' or '.join(map(repr, wanted))} arrived within {timeout_ms or 0:.0f} ms"
                self.entries.put(position, {"k": "signal", "tag": key, "status": "timed_out",
                                        "deadline": deadline, "error": message})
                self.event("signal_timed_out", {"signals": list(wanted)})
                await self._durable()
                raise SignalTimeoutError(message)
        seq, signal = item
        self.entries.put(position, {"k": "signal", "tag": key, "status": "received",
                                "name": signal["name"], "payload": signal["payload"],
                                "signal_seq": seq})
        await self._durable()
        return signal_value(signal["name"], signal["payload"])

    async def _await_signal(self, wanted: tuple[str, ...], deadline: float | None) -> Item | None:
        """Block until a wanted signal is delivered (its tuple) or the deadline passes (None)."""
        future = self.inbox.wait(wanted)  # resolved at once by a signal that came in meanwhile
        if future.done():
            return future.result()
        timer = None
        if deadline is not None:
            timer = self.clock.call_at(deadline, lambda: _time_out(future))
        self.blocked(f"signal {' | '.join(wanted)}")
        try:
            return await future
        except BaseException:
            # Interrupted after the signal was handed over but before it was journaled: keep it.
            item = future.result() if future.done() and not future.cancelled() else None
            if item is not None:
                self.inbox.put_back(item)
            raise
        finally:
            self.waiting_for = None
            self.inbox.stop_waiting(future)
            if timer is not None:
                timer.cancel()

    async def sleep(self, duration: Any) -> None:
        ms = parse_duration(duration, name="sleep duration")
        position, recorded = await self._next_call("sleep", "sleep")
        if recorded is not None and recorded["status"] == "done":
            return
        if recorded is None:
            deadline = self._now() + ms
            self.entries.put(position, {"k": "sleep", "tag": "sleep", "status": "waiting",
                                    "deadline": deadline, "ms": ms})
            await self._durable()
        else:
            deadline = recorded["deadline"]  # resumed: only the time that is left
            if self._updates_to_replay:  # updates applied while an earlier process slept here
                await self.replay_updates(position)
        self.blocked(f"timer {ms:.0f} ms")
        try:
            await self.clock.sleep_until(deadline)
        finally:
            self.waiting_for = None
        self.entries.put(position, {"k": "sleep", "tag": "sleep", "status": "done",
                                "deadline": deadline, "ms": ms})
        await self._durable()
