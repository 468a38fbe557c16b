"""The real-process harness the crash tests share: worker programs run as children and SIGKILLed.

A plain helper module (not a test file): ``tests/`` is on ``sys.path`` (see
``conftest.py``), so a test imports it as ``from processes import Child, ...``.

* ``child_env()``: the environment a child runs with: this checkout's
  ``sagaloop`` first on ``PYTHONPATH``, unbuffered stdout.
* ``Child(tmp_path, script, *args, name=...)``: ``python script *args`` with its
  stdout lines collected by a reader thread (``wait_for(prefix)``), its stderr
  in a file under ``tmp_path`` (``stderr()``), and ``sigkill()`` /
  ``wait_killed()``, which assert that it really died of SIGKILL.
* ``Spawner(tmp_path, script)``: the children of one test, run on that test's
  data directory and side-effect file, every one cleaned up at the end.
* ``load_module(path, name)``: a worker program imported as a module, for a
  test that resumes its runs in the test process.
* ``end_process(proc, stderr)``: kill a child if it still runs, reap it, close
  its streams (also used by the soak's driver).

Every wait on a child is bounded by ``WAIT_S``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Self

import pytest

TESTS_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = TESTS_DIR.parent

WAIT_S = 20.0  # every wait on a child is bounded by this


def child_env(*, unbuffered: bool = True) -> dict:
    """``os.environ`` with this checkout first on ``PYTHONPATH`` (and ``PYTHONUNBUFFERED=1`` unless told not)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    return env


def end_process(proc: subprocess.Popen, stderr, wait_s: float = WAIT_S) -> None:
    """Kill ``proc`` if it still runs, reap it (within ``wait_s``), close its stdout and ``stderr`` file."""
    if proc.poll() is None:
        proc.kill()
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            pass
    if proc.stdout is not None:
        proc.stdout.close()
    stderr.close()


def load_module(path: Path, module_name: str) -> ModuleType:
    """Import the program at ``path`` as a module named ``module_name`` (not added to ``sys.modules``)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


class Child:
    """``python script *args`` in ``tmp_path``, its stdout lines collected by a reader thread.

    ``name`` labels it in failure messages (default: the script's name and a number);
    its stderr goes to a file in ``tmp_path``.
    """

    _count = 0

    def __init__(self, tmp_path: Path, script: str | os.PathLike[str], *args: object, name: str | None = None) -> None:
        Child._count += 1
        self.name = name or f"{Path(script).stem}#{Child._count}"
        label = re.sub(r"[^\w.-]", "_", self.name)  # a file name
        self.stderr_path = tmp_path / f"child-{Child._count}-{label}.stderr"
        self._stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *map(str, args)],
            stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL, text=True,
            cwd=str(tmp_path), env=child_env())
        self.pid = self.proc.pid
        self.seen: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)  # EOF

    def stderr(self) -> str:
        """The end of what it wrote to stderr so far."""
        self._stderr.flush()
        try:
            return self.stderr_path.read_text()[-4000:]
        except OSError:
            return ""

    def wait_for(self, prefix: str, timeout: float = WAIT_S) -> str:
        """The first stdout line starting with ``prefix``; fails clearly on timeout or early exit."""
        for line in self.seen:
            if line.startswith(prefix):
                return line
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"child {self.name} (pid {self.pid}) printed no {prefix!r} within {timeout} s; "
                            f"stdout so far {self.seen!r}; stderr:\n{self.stderr()}")
            try:
                line = self._lines.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            if line is None:
                code = self.proc.wait(timeout=WAIT_S)
                pytest.fail(f"child {self.name} (pid {self.pid}) exited with {code} before printing {prefix!r}; "
                            f"stdout {self.seen!r}; stderr:\n{self.stderr()}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def report(self) -> dict:
        """The JSON of its ``RESULT <json>`` line."""
        return json.loads(self.wait_for("RESULT ")[len("RESULT "):])

    def sigkill(self) -> None:
        """SIGKILL it and reap it; it must really have been killed, not have exited on its own."""
        assert self.proc.poll() is None, (
            f"child {self.name} ended on its own with {self.proc.returncode}; stderr:\n{self.stderr()}")
        os.kill(self.pid, signal.SIGKILL)
        code = self.proc.wait(timeout=WAIT_S)
        assert code == -signal.SIGKILL, f"child {self.name} ended with {code}, not by SIGKILL"

    def wait_killed(self) -> None:
        """The child SIGKILLs itself; it must have died of exactly that."""
        try:
            code = self.proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"child {self.name} (pid {self.pid}) did not die within {WAIT_S} s; stdout {self.seen!r}")
        assert code == -signal.SIGKILL, f"child {self.name} ended with {code}, not by SIGKILL; stderr:\n{self.stderr()}"

    def wait_exit(self, timeout: float = WAIT_S) -> int:
        """Its exit code, once it has exited by itself."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"child {self.name} (pid {self.pid}) did not exit within {timeout} s; "
                        f"stdout {self.seen!r}; stderr:\n{self.stderr()}")

    def cleanup(self) -> None:
        """Kill it if it still runs, reap it, close its streams."""
        end_process(self.proc, self._stderr)


class Spawner:
    """The children of one test, each running ``script``; a context manager that cleans them all up.

    ``spawner(mode, *extra)`` starts ``script mode <datadir> <sidefile> *extra``;
    ``spawner.start(*args)`` starts ``script *args``. ``datadir`` and ``sidefile``
    are this test's data directory and side-effect file (under ``tmp_path``).
    """

    def __init__(self, tmp_path: Path, script: str | os.PathLike[str], *,
                 sidefile_name: str = "side-effects.log") -> None:
        self.tmp_path, self.script = tmp_path, script
        self.datadir = tmp_path / "data"
        self.sidefile = tmp_path / sidefile_name
        self.children: list[Child] = []

    def start(self, *args: object, name: str | None = None) -> Child:
        child = Child(self.tmp_path, self.script, *args, name=name)
        self.children.append(child)
        return child

    def __call__(self, mode: str, *extra: object, name: str | None = None) -> Child:
        return self.start(mode, self.datadir, self.sidefile, *extra,
                          name=name or f"{mode}#{len(self.children) + 1}")

    def cleanup(self) -> None:
        for child in self.children:
            child.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()
