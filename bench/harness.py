"""``python -m bench``: workloads W1..W5 on sagaloop, side by side with the ceilings
(bare calls; bare calls plus a msgpack+LMDB put with group commit) and with
DBOS Transact on SQLite, then the floors (PASS/FAIL), an optional in-flight
sweep of W1, a memory check, and a results page.

Every run of every configuration runs in a fresh process (``bench.worker``),
on a fresh temporary directory; runs interleave the configurations, so noise
on a shared machine falls on all of them alike. Each figure is the median
over the runs. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.throughput import FLOOR_IN_FLIGHT, FLOORS
from bench.worker import RESULT_MARK
from bench.workloads import steps_per_workflow

WORKLOADS = ("W1", "W2", "W3", "W4", "W5")
DESCRIPTIONS = {
    "W1": "{steps} trivial steps",
    "W2": "{steps} steps, the last fails: {comp} compensations (reverse_all), ends rolled_back; "
          "steps/s counts {units} per workflow ({steps} steps + {comp} compensations)",
    "W3": "signal round trip: execute (returns once waiting) -> signal -> result",
    "W4": "a parent running 3 children one after another (1, 2, 3 steps); workflows/s counts parents, "
          "steps/s the 6 child steps",
    "W5": "resume after a restart: {resume_steps} completed steps + 1 pending step; open + define until "
          "completed; x1 = one instance per restart, x{resume_instances} = that many at once; steps/s counts "
          "the replayed steps",
}
# Ratio floors, sagaloop durable over DBOS-on-SQLite, by in-flight shape.
DBOS_FLOORS = {1: 5.0, 100: 20.0, 1000: 20.0}
CEILING_FLOOR = 0.5           # W1 x1 durable: at least this fraction of lmdb-gc durable x1
SWEEP_IN_FLIGHT = (1, 10, 100, 1000, 10000)
BENCH_DIR = Path(__file__).resolve().parent


@dataclass
class Params:
    runs: int = 5
    steps: int = 10
    in_flight: int = 1000
    warmup: int = 100
    resume_steps: int = 100
    resume_instances: int = 100
    durabilities: tuple[str, ...] = ("fast", "durable")
    store_ceiling: bool = True
    only: tuple[str, ...] = WORKLOADS
    dbos: bool = True
    dbos_runs: int = 5
    dbos_x1000_runs: int = 1
    dbos_warmup: int = 10
    sweep: bool = False
    memory: bool = False
    memory_workflows: int = 100_000
    process_per_run: bool = True   # else one process per configuration, its runs one after another
    # Workflows per run: workload -> {in flight: count}; "many" is --in-flight. W5: rounds (x1).
    counts: dict = field(default_factory=lambda: {
        "W1": {1: 300, 100: 2000, "many": 5000},
        "W2": {1: 150, 100: 1000, "many": 2000},
        "W3": {1: 300, "many": 2000},
        "W4": {1: 100, "many": 1000},
        "W5": {1: 10},
        "sweep": {10: 1000, 100: 2000, 10000: 10000},
        "dbos-W1": {1: 20, 10: 100, 100: 100, 1000: 1000},
        "dbos-W2": {1: 10, 100: 100, 1000: 1000},
    })


QUICK_COUNTS = {
    "W1": {1: 50, 100: 1000, "many": 2000},
    "W2": {1: 30, 100: 500, "many": 1000},
    "W3": {1: 50, "many": 1000},
    "W4": {1: 20, "many": 1000},
    "W5": {1: 3},
    "sweep": {10: 500, 100: 1000, 10000: 10000},
    "dbos-W1": {1: 10, 10: 50, 100: 100, 1000: 1000},
    "dbos-W2": {1: 5, 100: 100, 1000: 1000},
}


@dataclass(frozen=True)
class Config:
    workload: str
    system: str        # sagaloop | bare | lmdb-gc | dbos
    durability: str    # fast | durable | "-"
    in_flight: int
    workflows: int
    runs: int
    warmup: int
    sweep_only: bool = False   # measured for the W1 sweep, not a row of the main tables

    @property
    def label(self) -> str:
        system = "dbos-sqlite" if self.system == "dbos" else self.system
        middle = "" if self.durability == "-" or self.system == "dbos" else f" {self.durability}"
        return f"{system}{middle} x{self.in_flight}"

    @property
    def name(self) -> str:
        return f"{self.workload} {self.label}"


def dbos_available() -> bool:
    return importlib.util.find_spec("dbos") is not None


def plan(params: Params) -> list[Config]:
    """Every configuration to measure, in the order the runs go through them."""
    out: list[Config] = []
    c = params.counts
    many = params.in_flight

    def add(workload: str, system: str, durability: str, in_flight: int, workflows: int, *,
            runs: int | None = None, warmup: int | None = None, sweep_only: bool = False) -> None:
        out.append(Config(workload, system, durability, in_flight, workflows,
                          params.runs if runs is None else runs,
                          params.warmup if warmup is None else warmup, sweep_only))

    def with_ceilings(workload: str, in_flight: int, workflows: int, sweep_only: bool = False) -> None:
        for durability in params.durabilities:
            add(workload, "sagaloop", durability, in_flight, workflows, sweep_only=sweep_only)
        add(workload, "bare", "-", in_flight, workflows, sweep_only=sweep_only)
        if params.store_ceiling:
            for durability in params.durabilities:
                add(workload, "lmdb-gc", durability, in_flight, workflows, sweep_only=sweep_only)

    with_dbos = params.dbos and dbos_available()
    for workload in params.only:
        if workload in ("W1", "W2"):
            shapes = {1: c[workload][1], many: c[workload]["many"]}
            if with_dbos or (workload == "W1" and params.sweep):
                shapes[100] = c[workload][100]
            for in_flight in sorted(shapes):
                with_ceilings(workload, in_flight, shapes[in_flight])
            if workload == "W1" and params.sweep:
                for in_flight, total in sorted(c["sweep"].items()):
                    if in_flight not in shapes:
                        with_ceilings("W1", in_flight, total, sweep_only=True)
        elif workload in ("W3", "W4"):
            for in_flight, total in ((1, c[workload][1]), (many, c[workload]["many"])):
                for durability in params.durabilities:
                    add(workload, "sagaloop", durability, in_flight, total)
        elif workload == "W5":
            for in_flight, total in ((1, c["W5"][1]), (params.resume_instances, params.resume_instances)):
                for durability in params.durabilities:
                    add(workload, "sagaloop", durability, in_flight, total, warmup=0)
        if with_dbos and workload in ("W1", "W2"):
            for in_flight, total in sorted(c[f"dbos-{workload}"].items()):
                sweep_only = in_flight not in DBOS_FLOORS
                if sweep_only and not params.sweep:
                    continue
                runs = params.dbos_x1000_runs if in_flight >= 1000 else params.dbos_runs
                if runs > 0:
                    add(workload, "dbos", "-", in_flight, total, runs=runs,
                        warmup=min(params.dbos_warmup, total), sweep_only=sweep_only)
    return out


# -- running -----------------------------------------------------------------------------------

class BenchError(RuntimeError):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(BENCH_DIR.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_worker(spec: dict, timeout: float = 1800) -> dict:
    """One measurement in a fresh interpreter (``bench.worker``)."""
    proc = subprocess.run([sys.executable, "-m", "bench.worker", json.dumps(spec)], capture_output=True,
                          text=True, env=worker_env(), timeout=timeout, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
    raise BenchError(f"{spec.get('name', spec)}: worker exited with status {proc.returncode}:\n{tail}",
                     2 if proc.returncode == 2 else 3)


def spec_for(config: Config, params: Params) -> dict:
    return {"name": config.name, "workload": config.workload, "system": config.system,
            "durability": config.durability if config.durability != "-" else "durable",
            "in_flight": config.in_flight, "workflows": config.workflows, "warmup": config.warmup,
            "steps": params.steps, "resume_steps": params.resume_steps}


class Progress:
    """``[12/40] W2 sagaloop durable x1000 run 3/5`` on stderr: one line rewritten on a terminal,
    a line per item otherwise; nothing with ``quiet``."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.done, self.quiet = total, 0, quiet
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self.width = 0

    def start(self, label: str) -> None:
        if self.quiet:
            return
        elapsed = time.monotonic() - self.started
        text = f"[{self.done + 1}/{self.total}] {label}  ({elapsed // 60:.0f}:{elapsed % 60:04.1f})"
        if self.tty:
            sys.stderr.write("\r" + text.ljust(self.width))
            self.width = len(text)
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def finish_item(self) -> None:
        self.done += 1

    def close(self) -> None:
        if not self.quiet and self.tty:
            sys.stderr.write("\r" + " " * self.width + "\r")
            sys.stderr.flush()


def run_plan(params: Params, quiet: bool = False) -> dict:
    configs = plan(params)
    samples: dict[Config, list[dict]] = {c: [] for c in configs}
    memory_items = 1 if params.memory else 0
    progress = Progress(sum(c.runs for c in configs) + memory_items, quiet)
    started = time.perf_counter()
    try:
        if params.process_per_run:
            for run in range(max((c.runs for c in configs), default=0)):
                for config in configs:
                    if run >= config.runs:
                        continue
                    progress.start(f"{config.name} run {run + 1}/{config.runs}")
                    samples[config] += run_worker(spec_for(config, params))["samples"]
                    progress.finish_item()
        else:
            for config in configs:
                progress.start(f"{config.name} runs 1-{config.runs}/{config.runs}")
                samples[config] += run_worker(spec_for(config, params) | {"repeat": config.runs})["samples"]
                progress.done += config.runs
        memory = None
        if params.memory:
            progress.start(f"memory check: 2 x {params.memory_workflows:,} W1 fast workflows")
            memory = run_worker({"name": "memory check", "system": "memory", "workload": "W1",
                                 "workflows": params.memory_workflows, "in_flight": 1000, "rounds": 2,
                                 "steps": params.steps})
            progress.finish_item()
    finally:
        progress.close()
    return {"params": params_dict(params), "wall_s": time.perf_counter() - started,
            "results": [summarize(c, samples[c], params) for c in configs], "memory": memory}


def params_dict(params: Params) -> dict:
    d = asdict(params)
    d["counts"] = {k: {str(i): n for i, n in v.items()} for k, v in params.counts.items()}
    return d


def summarize(config: Config, samples: list[dict], params: Params) -> dict:
    units = steps_per_workflow(config.workload, params.steps, params.resume_steps)
    runs = []
    for s in samples:
        wps = s["workflows"] / s["elapsed"]
        runs.append({"elapsed_s": s["elapsed"], "workflows": s["workflows"], "workflows_per_s": wps,
                     "steps_per_s": wps * units if units else None, "p50_ms": s["p50_ms"],
                     "p99_ms": s["p99_ms"], "rss_peak_mib": s["rss_peak_mib"],
                     "rss_delta_mib": (s["rss_peak_mib"] - s["rss_base_mib"]
                                       if s.get("rss_base_mib") is not None else None)})

    def med(key: str) -> float | None:
        values = [r[key] for r in runs if r[key] is not None]
        return statistics.median(values) if values else None

    steps = [r["steps_per_s"] for r in runs if r["steps_per_s"] is not None]
    return {**asdict(config), "name": config.name, "label": config.label, "steps_per_workflow": units,
            "median": {k: med(k) for k in ("workflows_per_s", "steps_per_s", "p50_ms", "p99_ms",
                                           "rss_peak_mib", "rss_delta_mib")},
            "steps_per_s_min": min(steps) if steps else None, "steps_per_s_max": max(steps) if steps else None,
            "runs": runs}


# -- floors --------------------------------------------------------------------------------------

def find(results: list[dict], workload: str, system: str, durability: str, in_flight: int) -> dict | None:
    for r in results:
        if (r["workload"], r["system"], r["durability"], r["in_flight"]) == (workload, system, durability,
                                                                             in_flight):
            return r
    return None


def floor_checks(report: dict) -> list[dict]:
    """Every floor: what, the figure, the limit, and PASS / FAIL / SKIP (with why)."""
    results, params = report["results"], report["params"]
    checks: list[dict] = []

    def add(name: str, value: float | None, limit: float, unit: str, skip: str | None = None,
            note: str = "") -> None:
        if skip is None and value is None:
            skip = "not measured"
        verdict = "SKIP" if skip else ("PASS" if value >= limit else "FAIL")
        checks.append({"floor": name, "value": value, "limit": limit, "unit": unit, "verdict": verdict,
                       "note": skip or note})

    if "W1" in params["only"]:
        for durability in ("durable", "fast"):
            r = find(results, "W1", "sagaloop", durability, FLOOR_IN_FLIGHT)
            add(f"W1 sagaloop {durability} x{FLOOR_IN_FLIGHT} >= {FLOORS[durability]:,} steps/s",
                r and r["median"]["steps_per_s"], FLOORS[durability], "steps/s",
                None if r else (f"--in-flight is {params['in_flight']}" if params["in_flight"] != FLOOR_IN_FLIGHT
                                else "not measured"))
        s = find(results, "W1", "sagaloop", "durable", 1)
        c = find(results, "W1", "lmdb-gc", "durable", 1)
        add(f"W1 sagaloop durable x1 >= {CEILING_FLOOR:.0%} of lmdb-gc durable x1",
            s and c and s["median"]["steps_per_s"] / c["median"]["steps_per_s"], CEILING_FLOOR, "ratio")
    for workload in ("W1", "W2"):
        if workload not in params["only"]:
            continue
        for in_flight, limit in DBOS_FLOORS.items():
            s = find(results, workload, "sagaloop", "durable", in_flight)
            d = find(results, workload, "dbos", "-", in_flight)
            skip = None
            if not params["dbos"]:
                skip = "--no-dbos"
            elif not report["environment"].get("dbos"):
                skip = "dbos is not installed"
            elif d is None:
                skip = "not run (--dbos-x1000-runs 0)" if in_flight >= 1000 else "not measured"
            add(f"{workload} x{in_flight}: sagaloop durable >= {limit:g}x DBOS (SQLite)",
                s and d and s["median"]["steps_per_s"] / d["median"]["steps_per_s"], limit, "x", skip)
    memory = report.get("memory")
    if memory is not None:
        aside = []
        if memory["judged"] != "RSS" and memory["rss_growth"] is not None:
            aside.append(f"total RSS {memory['rss_growth']:+.1%}, file-backed RSS (LMDB map) "
                         f"{memory['rss_file_growth']:+.1%}, store on disk {memory['store_growth']:+.1%}")
        add(f"memory: {memory['rounds']} x {memory['workflows_per_round']:,} W1 fast workflows leave no "
            f"actors or tasks; {memory['judged']} within {memory['tolerance']:.0%}", memory["growth"],
            memory["tolerance"], "growth", note="; ".join(memory["reasons"] + aside))
        checks[-1]["verdict"] = "PASS" if memory["passed"] else "FAIL"
    return checks


# -- environment -----------------------------------------------------------------------------------

def environment() -> dict:
    import platform
    import sqlite3
    from importlib.metadata import PackageNotFoundError, version

    def dist(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    cpu = None
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"python": platform.python_version(), "implementation": platform.python_implementation(),
            "platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "cpu_model": cpu, "sagaloop": dist("sagaloop"), "uvloop": dist("uvloop"), "lmdb": dist("lmdb"),
            "msgpack": dist("msgpack"), "dbos": dist("dbos") if dbos_available() else None,
            "sqlalchemy": dist("sqlalchemy"), "sqlite": sqlite3.sqlite_version,
            "psutil": dist("psutil"), "matplotlib": dist("matplotlib"), "git": git_revision(),
            "date": time.strftime("%Y-%m-%d %H:%M %Z")}


def source_digest() -> str | None:
    """A short digest of sagaloop's source files, to notice an edit during a run."""
    import hashlib

    spec = importlib.util.find_spec("sagaloop")
    if spec is None or not spec.origin:
        return None
    root = Path(spec.origin).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        try:
            digest.update(path.read_bytes())
        except OSError:
            pass
    return digest.hexdigest()[:12]


def git_revision() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=BENCH_DIR, timeout=10, check=False)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=BENCH_DIR, timeout=10, check=False)
        return head.stdout.strip() + (" with uncommitted changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


# -- CLI ---------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", metavar="W1,W2", help="run only these workloads (of W1..W5)")
    p.add_argument("--runs", type=int, help="runs per configuration; figures are medians (default 5)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run (< 60 s): small counts, 3 runs in one process per configuration, "
                        "DBOS 1 run and not at x1000")
    p.add_argument("--process-per", choices=("run", "config"),
                   help="a fresh process for every run (default), or one per configuration (--quick)")
    p.add_argument("--workflows", type=int, help="W1 workflows per run at --in-flight (default 5000)")
    p.add_argument("--sequential-workflows", type=int, help="W1 workflows per run one at a time (default 300)")
    p.add_argument("--in-flight", type=int, help="workflows in flight in the 'many' shape (default 1000)")
    p.add_argument("--steps", type=int, help="steps per W1 / W2 workflow (default 10)")
    p.add_argument("--warmup", type=int, help="warm-up workflows per engine, not measured (default 100)")
    p.add_argument("--resume-steps", type=int, help="W5: completed steps per instance (default 100)")
    p.add_argument("--resume-instances", type=int, help="W5: instances resumed at once (default 100)")
    p.add_argument("--durability", choices=("both", "fast", "durable"), default="both")
    p.add_argument("--no-store-ceiling", action="store_true", help="skip the lmdb-gc ceiling")
    p.add_argument("--no-dbos", action="store_true", help="skip DBOS Transact")
    p.add_argument("--dbos-runs", type=int, help="DBOS runs at 1, 10 and 100 in flight (default: --runs)")
    p.add_argument("--dbos-x1000-runs", type=int,
                   help="DBOS runs at 1,000 in flight; each takes about a minute (default 1)")
    p.add_argument("--sweep", action="store_true", help="also W1 at 10, 100 and 10,000 in flight (the plot)")
    p.add_argument("--memory", action="store_true", help="also the memory check (2 rounds of W1 fast)")
    p.add_argument("--memory-workflows", type=int, help="workflows per memory round (default 100000)")
    p.add_argument("--write-results", action="store_true",
                   help="implies --sweep --memory; writes bench/RESULTS.md and bench/results.png")
    p.add_argument("--json", metavar="PATH", help="write everything (every run) as JSON")
    p.add_argument("--profile", action="store_true",
                   help="instead: cProfile W1 sagaloop at --in-flight in flight (fast), top 20 by tottime")
    p.add_argument("--strict", action="store_true", help="exit 1 when a floor fails")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress")
    return p.parse_args(argv)


def params_from(args: argparse.Namespace) -> Params:
    params = Params()
    if args.quick:
        params = Params(runs=3, warmup=50, dbos_runs=1, dbos_x1000_runs=0, memory_workflows=20_000,
                        process_per_run=False,
                        counts={k: dict(v) for k, v in QUICK_COUNTS.items()})
    for name in ("runs", "in_flight", "steps", "warmup", "resume_steps", "resume_instances", "dbos_runs",
                 "dbos_x1000_runs", "memory_workflows"):
        value = getattr(args, name)
        if value is not None:
            if value < (0 if name in ("warmup", "dbos_x1000_runs", "dbos_runs") else 1):
                raise SystemExit(f"--{name.replace('_', '-')} must be positive, not {value}")
            setattr(params, name, value)
    if args.runs is not None and args.dbos_runs is None and not args.quick:
        params.dbos_runs = args.runs
    if args.steps is not None and args.steps < 2:
        raise SystemExit("--steps must be at least 2 (W2 needs a step to compensate)")
    for name, key in (("workflows", "many"), ("sequential_workflows", 1)):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                raise SystemExit(f"--{name.replace('_', '-')} must be positive, not {value}")
            params.counts["W1"][key] = value
    if args.only:
        wanted = tuple(w.strip().upper() for w in args.only.split(",") if w.strip())
        unknown = [w for w in wanted if w not in WORKLOADS]
        if unknown or not wanted:
            raise SystemExit(f"--only takes workloads among {','.join(WORKLOADS)}, not {args.only!r}")
        params.only = tuple(w for w in WORKLOADS if w in wanted)
    if args.durability != "both":
        params.durabilities = (args.durability,)
    if args.process_per is not None:
        params.process_per_run = args.process_per == "run"
    params.store_ceiling = not args.no_store_ceiling
    params.dbos = not args.no_dbos
    params.sweep = args.sweep or args.write_results
    params.memory = args.memory or args.write_results
    return params


def reproduce_command(argv: list[str]) -> str:
    """The command line for the results page, without options that name local files (``--json``)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--json":
            skip = True
        elif not arg.startswith("--json="):
            kept.append(arg)
    return " ".join(["python -m bench", *kept])


def main(argv: list[str] | None = None) -> int:
    from bench import report as rep

    args = parse_args(argv)
    params = params_from(args)
    if args.profile:
        from bench.throughput import Params as W1Params
        from bench.throughput import profile
        w1 = W1Params(runs=1, steps=params.steps, workflows=params.counts["W1"]["many"],
                      in_flight=params.in_flight, warmup=params.warmup)
        print(profile(w1, args.durability if args.durability != "both" else "fast", top=20))
        return 0
    env = environment()
    if params.dbos and not env["dbos"] and ({"W1", "W2"} & set(params.only)):
        print("DBOS Transact: skipped, the 'dbos' package is not installed "
              "(pip install -e '.[bench]' installs it).", file=sys.stderr)
    source = source_digest()
    try:
        report = run_plan(params, quiet=args.quiet)
    except BenchError as exc:
        print(f"\nERROR: {exc}", file=sys.stderr)
        return exc.code
    env["sagaloop_source"] = source
    report["source_changed"] = source_digest() != source
    if report["source_changed"]:
        print("WARNING: sagaloop's source files changed during this run; its figures mix two versions.",
              file=sys.stderr)
    report["environment"] = env
    report["floors"] = floor_checks(report)
    print(rep.text_report(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
        print(f"\nresults written to {args.json}")
    if args.write_results:
        written = rep.write_results(report, BENCH_DIR,
                                    command=reproduce_command(sys.argv[1:] if argv is None else list(argv)))
        print("\n" + "\n".join(f"wrote {w}" for w in written))
    if args.strict and any(c["verdict"] == "FAIL" for c in report["floors"]):
        return 1
    return 0
