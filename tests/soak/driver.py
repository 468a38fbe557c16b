"""The SIGKILL soak's driver: run the worker, kill it at seeded random moments, restart it, then check.

    python -m tests.soak.driver --cycles N --seed S [--durability fast|durable] [--workdir DIR] [--keep]
    python tests/soak/driver.py --cycles N --seed S ...

Each cycle starts ``soak_worker.py`` on the same data directory and side log,
waits for its ``READY`` (engine open, workflows defined, recovery under way),
lets it run for a seeded random time (a few ms: a kill during recovery;
mostly 0.05-0.6 s; sometimes up to 2.5 s) and SIGKILLs it. Life ``c`` may have
started ``per_cycle * (c + 1)`` workflows in all, so starts spread over the
cycles. Then a final worker runs un-killed with a few more workflows until
everything has ended (bounded), and the driver opens the engine itself (no
definitions: nothing resumes) to read every instance's result, state,
history and step details, and runs ``soak_checks``.

Prints the figures and every violation, with the seed that reproduces the
run (kill timing is seeded too, but subject to scheduling). Exit status 0
when nothing was violated, 1 otherwise, 2 when the harness itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parent.parent
for _path in (str(_ROOT), str(_HERE.parent), str(_HERE)):  # tests/ for processes.py
    if _path not in sys.path:
        sys.path.insert(0, _path)

import sagaloop  # noqa: E402
from processes import end_process  # noqa: E402
from soak_checks import Figures, Violation, check  # noqa: E402
from soak_plan import ENV, PRODUCT, child_specs, make_spec, step_ops  # noqa: E402
from soak_sidelog import read_side_log, repair_tail  # noqa: E402

WORKER = _HERE / "soak_worker.py"
READY_TIMEOUT_S = 30.0   # a worker prints READY within this (it opens the engine and defines)
EXIT_TIMEOUT_S = 20.0    # a killed worker is reaped within this


@dataclass
class Settings:
    cycles: int
    seed: int
    durability: str = "fast"
    per_cycle: int = 8          # life c may have started per_cycle * (c + 1) workflows in all
    final_extra: int = 32       # workflows only the final, un-killed life starts
    inflight: int = 24          # started, not ended, at once
    final_timeout: float = 10.0  # the final life waits this long for every workflow to end
    loop: str = "uvloop"


@dataclass
class Report:
    settings: Settings
    workdir: Path
    kills: int = 0
    lives: int = 0
    wall_s: float = 0.0
    harness: list[str] = field(default_factory=list)      # the driver's own problems (worker crashed, ...)
    violations: list[Violation] = field(default_factory=list)
    figures: Figures = field(default_factory=Figures)
    torn_lines: int = 0
    inputs: dict = field(default_factory=dict)  # what the checks were given (``soak_checks.check``'s arguments)

    @property
    def ok(self) -> bool:
        return not self.harness and not self.violations


class Worker:
    """One life of the worker program, its stdout read by a thread, its stderr in a file."""

    def __init__(self, workdir: Path, life: int, args: list[str]) -> None:
        self.name = f"life {life}"
        self.stderr_path = workdir / f"worker-{life:04d}.stderr"
        self._stderr = open(self.stderr_path, "w")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen([sys.executable, str(WORKER), *args], stdout=subprocess.PIPE,
                                     stderr=self._stderr, stdin=subprocess.DEVNULL, text=True, cwd=str(workdir),
                                     env=env)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, prefix: str, timeout: float) -> str | None:
        """The first stdout line starting with ``prefix``, or None (timeout or exit)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            if line is None:
                return None
            self.seen.append(line)
            if line.startswith(prefix):
                return line
        return None

    def stderr_tail(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-3000:]

    def kill(self) -> bool:
        """SIGKILL it; False if it had already exited by itself."""
        if self.proc.poll() is not None:
            return False
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=EXIT_TIMEOUT_S)
        return self.proc.returncode == -signal.SIGKILL

    def close(self) -> None:
        end_process(self.proc, self._stderr, EXIT_TIMEOUT_S)
        if self.stderr_path.stat().st_size == 0:
            self.stderr_path.unlink()  # keep only the stderr of a life that had something to say


def kill_delay(rng: random.Random) -> float:
    """How long a life runs after READY before its SIGKILL."""
    r = rng.random()
    if r < 0.1:
        return rng.uniform(0.0, 0.03)   # in the middle of recovery
    if r < 0.8:
        return rng.uniform(0.05, 0.6)
    return rng.uniform(0.8, 2.5)        # long enough for the stuck-signal watchdog


def run_soak(settings: Settings, workdir: Path, *, log=print) -> Report:
    """Run the cycles and the final life in ``workdir``, then check; never raises for a violation."""
    started_at = time.monotonic()
    report = Report(settings, workdir)
    datadir, sidelog = workdir / "data", workdir / "side.jsonl"
    rng = random.Random(f"sagaloop-soak-driver/{settings.seed}")
    common = [str(datadir), str(sidelog), "--seed", str(settings.seed), "--durability", settings.durability,
              "--inflight", str(settings.inflight), "--loop", settings.loop]
    pids: dict[int, int] = {}     # life -> the pid the driver ran it as
    killed: set[int] = set()      # the lives the driver SIGKILLed
    for cycle in range(settings.cycles):
        quota = settings.per_cycle * (cycle + 1)
        report.lives += 1
        worker = Worker(workdir, report.lives, [*common, "--quota", str(quota)])
        pids[report.lives] = worker.proc.pid
        try:
            if worker.wait_for("READY", READY_TIMEOUT_S) is None:
                report.harness.append(f"cycle {cycle}: the worker printed no READY within {READY_TIMEOUT_S} s "
                                      f"(exit {worker.proc.poll()}); stderr:\n{worker.stderr_tail()}")
                return _finish(report, started_at)
            delay = kill_delay(rng)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and worker.proc.poll() is None:
                time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
            if worker.kill():
                report.kills += 1
                killed.add(report.lives)
            else:
                report.harness.append(f"cycle {cycle}: the worker exited by itself with {worker.proc.returncode} "
                                      f"before its kill; stderr:\n{worker.stderr_tail()}")
        finally:
            worker.close()
        if (cycle + 1) % 50 == 0:
            log(f"  ... {cycle + 1} cycles, {time.monotonic() - started_at:.0f} s")

    report.lives += 1
    final_quota = settings.per_cycle * settings.cycles + settings.final_extra
    worker = Worker(workdir, report.lives, [*common, "--quota", str(final_quota), "--final",
                                            "--final-timeout", str(settings.final_timeout)])
    pids[report.lives] = worker.proc.pid
    try:
        line = worker.wait_for("FINAL ", READY_TIMEOUT_S + settings.final_timeout + 60)
        if line is None:
            report.harness.append(f"the final worker printed no FINAL line (exit {worker.proc.poll()}); "
                                  f"stdout {worker.seen}; stderr:\n{worker.stderr_tail()}")
        else:
            code = worker.proc.wait(timeout=EXIT_TIMEOUT_S)
            if code != 0:
                report.harness.append(f"the final worker exited with {code}; stderr:\n{worker.stderr_tail()}")
    except subprocess.TimeoutExpired:
        report.harness.append("the final worker did not exit after its FINAL line")
    finally:
        worker.close()

    repair_tail(sidelog)
    events, report.torn_lines = read_side_log(sidelog)
    logged = {e["life"]: e["pid"] for e in events if e["ev"] == "life"}
    if logged != pids:
        report.harness.append(f"the side log's lives {logged} are not the workers the driver ran {pids}")
    started = sorted({e["wf"] for e in events if e["ev"] == "started"})
    specs = {wf: make_spec(settings.seed, int(wf[1:])) for wf in started}
    assert all(specs[wf]["wf"] == wf for wf in specs)
    records, listed = asyncio.run(read_records(datadir, specs, events))
    report.inputs = {"events": events, "killed": killed, "specs": specs, "records": records, "listed": listed}
    report.violations, report.figures = check(**report.inputs)
    return _finish(report, started_at)


def _finish(report: Report, started_at: float) -> Report:
    report.wall_s = time.monotonic() - started_at
    return report


async def read_records(datadir: Path, specs: dict[str, dict], events: list[dict]) -> tuple[dict, dict]:
    """What the engine says of every workflow and child, read after the last worker exited."""
    step_tags: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e["ev"] in ("step_ran", "step_acked"):
            step_tags[e["wf"]].add(e["step"])
    members = []
    for spec in specs.values():
        kids = child_specs(spec)
        members.append((spec, [k["wf"] for k in kids]))
        members += [(k, []) for k in kids]
    records: dict[str, dict] = {}
    async with sagaloop.Engine(datadir, durability="fast") as engine:
        w = engine.workflows
        listed = {s.workflow_id: s.type for s in await w.list(product=PRODUCT, env=ENV, limit=10**9)}
        for spec, kids in members:
            wf = spec["wf"]
            if wf not in listed:
                continue
            result = await w.result(product=PRODUCT, env=ENV, workflow_id=wf, timeout=1)
            status = await w.status(product=PRODUCT, env=ENV, workflow_id=wf)
            history = await w.history(product=PRODUCT, env=ENV, workflow_id=wf)
            steps = {}
            for tag in sorted({op["tag"] for op in step_ops(spec)} | step_tags[wf] | set(kids)):
                try:
                    detail = await w.step_detail(product=PRODUCT, env=ENV, workflow_id=wf, step_tag=tag)
                    steps[tag] = detail.to_dict()
                except sagaloop.StepNotFoundError:
                    steps[tag] = None
            records[wf] = {"result": result.to_dict(), "state": dict(status.state or {}),
                           "history": [e.to_dict() for e in history.events], "steps": steps}
    return records, listed


def format_report(report: Report, *, limit: int = 60) -> str:
    """The figures, then the violations grouped by check and workflow shape, then each one (up to ``limit``)."""
    s, f = report.settings, report.figures
    ends = ", ".join(f"{k} {v}" for k, v in sorted(f.statuses.items()))
    lines = [
        f"sagaloop SIGKILL soak: seed {s.seed}, durability {s.durability}, {report.kills} of {s.cycles} cycles "
        f"survived a SIGKILL, wall {report.wall_s:.1f} s",
        f"  workflows {f.workflows} (+{f.children} children), steps {f.steps}, signals {f.signals}, "
        f"updates {f.updates}, cancels {f.cancels}, rollbacks checked {f.rollbacks} "
        f"({f.compensations} compensations), kills {report.kills}",
        f"  ends: {ends}",
        f"  recovery: {f.spanned} workflows lived through a kill; {f.steps_rerun} steps and {f.comps_rerun} "
        f"compensations ran again after one; {f.sends_in_doubt} signal/update/cancel calls were cut by one",
        f"  reproduce: python -m tests.soak.driver --cycles {s.cycles} --seed {s.seed} --durability {s.durability}",
    ]
    if report.torn_lines:
        lines.append(f"  note: {report.torn_lines} torn side-log line(s) skipped")
    for problem in report.harness:
        lines.append(f"HARNESS: {problem}")
    if report.violations:
        groups: dict[tuple[str, str], list[Violation]] = defaultdict(list)
        for v in report.violations:
            groups[(v.check, v.kind)].append(v)
        lines.append(f"VIOLATIONS: {len(report.violations)} in {len(groups)} group(s) (check, workflow kind):")
        for (name, kind), found in sorted(groups.items()):
            ids = ", ".join(sorted({v.workflow for v in found})[:6])
            shapes = ", ".join(sorted({v.shape for v in found})[:4])
            lines.append(f"  {name} x{len(found)} [{kind}] e.g. {ids}; shapes {shapes}")
            lines.append(f"      {found[0].workflow}: {found[0].detail}")
        lines.append("every violation:")
        lines += [f"  {v}" for v in report.violations[:limit]]
        if len(report.violations) > limit:
            lines.append(f"  ... and {len(report.violations) - limit} more")
        lines.append(f"  side log and data directory: {report.workdir}")
    else:
        lines.append("no violations")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None, help="default: a random one (printed)")
    parser.add_argument("--durability", default="fast", choices=["fast", "durable"])
    parser.add_argument("--per-cycle", type=int, default=Settings.per_cycle)
    parser.add_argument("--inflight", type=int, default=Settings.inflight)
    parser.add_argument("--final-timeout", type=float, default=Settings.final_timeout)
    parser.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the workdir even when the run passes")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    settings = Settings(cycles=args.cycles, seed=seed, durability=args.durability, per_cycle=args.per_cycle,
                        inflight=args.inflight, final_timeout=args.final_timeout, loop=args.loop)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"sagaloop-soak-{seed}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"soak: {settings.cycles} cycles, seed {seed}, in {workdir}", flush=True)
    report = run_soak(settings, workdir)
    print(format_report(report))
    if report.ok and not args.keep and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if report.ok else (2 if report.harness and not report.violations else 1)


if __name__ == "__main__":
    sys.exit(main())
