"""Messages into instances of a real process that is SIGKILLed between them (hypothesis).

A worker process (``message_worker.py``) runs a workflow and a parent whose child takes the
messages; hypothesis picks a sequence of signals, updates, queries and SIGKILLs (each kill
followed by a restart on the same data directory). Every message the engine acknowledged must
count exactly once, in order, across the kills:

* each acknowledged signal is consumed exactly once, in the order ``signal()`` returned;
* each acknowledged update is applied exactly once, in order, and a query sees every update
  acknowledged before it (also right after a restart, while the run replays);
* no instance is left waiting on a message it was sent: both end ``completed``.

Default run: a few examples; ``SAGALOOP_LONG_TESTS=1``: 1,000 (about half an hour).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from processes import TESTS_DIR, child_env

WORKER = TESTS_DIR / "message_worker.py"
SIGNALS = 4  # each of the two receivers consumes this many
ANSWER_S = 20.0
LONG = os.environ.get("SAGALOOP_LONG_TESTS") == "1"

pytestmark = [pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL"), pytest.mark.slow]  # slow: real processes, SIGKILLed


class Worker:
    """The worker process: ``ask(command)`` waits for its answer; ``kill()`` SIGKILLs it."""

    def __init__(self, datadir: str, errors: str) -> None:
        self._stderr = open(errors, "a")
        self.proc = subprocess.Popen([sys.executable, str(WORKER), datadir], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=child_env())
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        assert self._next() == "READY"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _next(self) -> str:
        try:
            line = self._lines.get(timeout=ANSWER_S)
        except queue.Empty:
            raise AssertionError(f"the worker gave no answer within {ANSWER_S} s") from None
        assert line is not None, "the worker exited"
        return line

    def ask(self, command: str) -> object:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self._next()
        assert line.startswith("OK "), f"{command!r} -> {line!r}"
        return json.loads(line[3:])

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=ANSWER_S) == -signal.SIGKILL
        self.close()

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=ANSWER_S)
        self._stderr.close()


RECEIVERS = {"solo": "solo-1", "kid": "parent-1-kid"}  # who consumes the signals and takes the updates

actions = st.lists(st.one_of(
    st.tuples(st.just("signal"), st.sampled_from(sorted(RECEIVERS))),
    st.tuples(st.just("update"), st.sampled_from(sorted(RECEIVERS))),
    st.tuples(st.just("query"), st.sampled_from(sorted(RECEIVERS))),
    st.tuples(st.just("kill"), st.just("")),
), min_size=1, max_size=14)


@settings(max_examples=1000 if LONG else 4, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(plan=actions)
def test_acknowledged_messages_count_exactly_once_in_order_across_sigkills(plan):
    workdir = tempfile.mkdtemp(prefix="sagaloop-message-kills-")
    datadir, errors = os.path.join(workdir, "data"), os.path.join(workdir, "stderr.log")
    worker = Worker(datadir, errors)
    try:
        worker.ask(f"start solo-1 solo {SIGNALS}")
        worker.ask(f"start parent-1 parent {SIGNALS}")
        sent = {name: [] for name in RECEIVERS}
        updated = {name: [] for name in RECEIVERS}
        for kind, who in plan:
            if kind == "kill":
                worker.kill()
                worker = Worker(datadir, errors)
            elif kind == "signal" and len(sent[who]) < SIGNALS:
                worker.ask(f"signal {RECEIVERS[who]} {len(sent[who])}")
                sent[who].append(len(sent[who]))
            elif kind == "update" and len(sent[who]) < SIGNALS:  # still running: it waits for a signal
                k = len(updated[who])
                reply = worker.ask(f"update {RECEIVERS[who]} {k}")
                updated[who].append(k)
                assert reply == updated[who], (who, reply)
            elif kind == "query":
                seen = worker.ask(f"query {RECEIVERS[who]}")
                assert seen["updates"] == updated[who], (who, seen)  # every acknowledged update, once
                assert seen["signals"] == sent[who][:len(seen["signals"])], (who, seen)  # a prefix, in order
        for who in RECEIVERS:  # the rest of the signals: then nobody may be left waiting
            while len(sent[who]) < SIGNALS:
                worker.ask(f"signal {RECEIVERS[who]} {len(sent[who])}")
                sent[who].append(len(sent[who]))
        expected = {who: {"signals": list(range(SIGNALS)), "updates": updated[who]} for who in RECEIVERS}
        assert worker.ask("result solo-1") == {"status": "completed", "output": expected["solo"]}
        assert worker.ask("result parent-1-kid") == {"status": "completed", "output": expected["kid"]}
        assert worker.ask("result parent-1") == {"status": "completed", "output": expected["kid"]}
    finally:
        worker.close()
