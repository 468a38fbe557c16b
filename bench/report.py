"""Tables for the terminal, the results page (``bench/RESULTS.md``) and the plot
(``bench/results.png``), all from the report that ``bench.harness`` builds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.harness import DBOS_FLOORS, DESCRIPTIONS, SWEEP_IN_FLIGHT, WORKLOADS, find

SYSTEM_ORDER = {("sagaloop", "fast"): 0, ("sagaloop", "durable"): 1, ("bare", "-"): 2, ("lmdb-gc", "fast"): 3,
                ("lmdb-gc", "durable"): 4, ("dbos", "-"): 5}
SERIES = [("sagaloop", "durable", "sagaloop durable"), ("sagaloop", "fast", "sagaloop fast"),
          ("lmdb-gc", "durable", "ceiling: msgpack+LMDB put, group commit (durable)"),
          ("lmdb-gc", "fast", "ceiling: msgpack+LMDB put, group commit (fast)"),
          ("bare", "-", "ceiling: bare asyncio calls"), ("dbos", "-", "DBOS Transact on SQLite")]


# -- formatting --------------------------------------------------------------------------------

def rate(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def ms(v: float | None) -> str:
    if v is None:
        return "-"
    if v < 10:
        return f"{v:.3f}"
    return f"{v:.1f}" if v < 1000 else f"{v:,.0f}"


def mib(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def _aligns(n: int, left: int, align: str | None) -> str:
    return align if align is not None else "l" * left + "r" * (n - left)


def text_table(headers: Sequence[str], rows: list[Sequence[str]], left: int = 1, align: str | None = None) -> str:
    """Columns padded to width; ``align`` gives l or r per column (default: the first ``left`` are l)."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    aligns = _aligns(len(headers), left, align)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) if a == "l" else str(c).rjust(w)
                         for c, w, a in zip(cells, widths, aligns)).rstrip()

    out = [line(headers), "-" * len(line(headers))]
    out += [line(r) for r in rows]
    return "\n".join(out)


def md_table(headers: Sequence[str], rows: list[Sequence[str]], left: int = 1, align: str | None = None) -> str:
    aligns = _aligns(len(headers), left, align)
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(":---" if a == "l" else "---:" for a in aligns) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# -- the tables ----------------------------------------------------------------------------------

def description(workload: str, params: dict) -> str:
    steps = params["steps"]
    return DESCRIPTIONS[workload].format(steps=steps, comp=steps - 1, units=2 * steps - 1,
                                         resume_steps=params["resume_steps"],
                                         resume_instances=params["resume_instances"])


def workload_table(report: dict, workload: str) -> tuple[list[str], list[list[str]]] | None:
    rows = [r for r in report["results"] if r["workload"] == workload and not r["sweep_only"]]
    if not rows:
        return None
    rows.sort(key=lambda r: (r["in_flight"], SYSTEM_ORDER.get((r["system"], r["durability"]), 9)))
    with_ceiling = workload in ("W1", "W2")
    headers = ["configuration", "workflows", "runs", "workflows/s", "steps/s", "(min..max)", "p50 ms",
               "p99 ms", "peak RSS MiB", "RSS delta MiB"]
    if with_ceiling:
        headers += ["/bare", "/lmdb-gc"]
    out = []
    for r in rows:
        m = r["median"]
        spread = (f"{r['steps_per_s_min']:,.0f}..{r['steps_per_s_max']:,.0f}"
                  if r["steps_per_s_min"] is not None and r["runs"] and len(r["runs"]) > 1 else "")
        row = [r["label"], f"{r['workflows']:,}", str(len(r["runs"])), rate(m["workflows_per_s"]),
               rate(m["steps_per_s"]), spread, ms(m["p50_ms"]), ms(m["p99_ms"]), mib(m["rss_peak_mib"]),
               mib(m["rss_delta_mib"])]
        if with_ceiling:
            vs_bare = vs_gc = ""
            if r["system"] in ("sagaloop", "lmdb-gc", "dbos"):
                bare = find(report["results"], workload, "bare", "-", r["in_flight"])
                if bare:
                    vs_bare = ratio(m["steps_per_s"] / bare["median"]["steps_per_s"])
            if r["system"] == "sagaloop":
                gc = find(report["results"], workload, "lmdb-gc", r["durability"], r["in_flight"])
                if gc:
                    vs_gc = ratio(m["steps_per_s"] / gc["median"]["steps_per_s"])
            row += [vs_bare, vs_gc]
        out.append(row)
    return headers, out


def dbos_table(report: dict) -> tuple[list[str], list[list[str]]] | None:
    rows = []
    for workload in ("W1", "W2"):
        for in_flight in sorted(DBOS_FLOORS):
            d = find(report["results"], workload, "dbos", "-", in_flight)
            s = find(report["results"], workload, "sagaloop", "durable", in_flight)
            if d is None:
                continue
            dm = d["median"]
            value = s["median"]["steps_per_s"] / dm["steps_per_s"] if s else None
            verdict = ""
            if value is not None:
                limit = DBOS_FLOORS[in_flight]
                verdict = f"{'PASS' if value >= limit else 'FAIL'} (>= {limit:g}x)"
            rows.append([f"{workload} x{in_flight}", f"{len(d['runs'])}", rate(dm["workflows_per_s"]),
                         rate(dm["steps_per_s"]), ms(dm["p50_ms"]), ms(dm["p99_ms"]), mib(dm["rss_peak_mib"]),
                         rate(s["median"]["steps_per_s"]) if s else "-", ms(s["median"]["p99_ms"]) if s else "-",
                         f"{value:,.1f}x" if value is not None else "-", verdict])
    if not rows:
        return None
    return (["shape", "DBOS runs", "DBOS wf/s", "DBOS steps/s", "DBOS p50 ms", "DBOS p99 ms", "DBOS peak RSS MiB",
             "sagaloop durable steps/s", "sagaloop durable p99 ms", "sagaloop / DBOS", "floor"], rows)


def sweep_series(report: dict) -> dict[str, dict[int, float]]:
    series: dict[str, dict[int, float]] = {}
    for system, durability, label in SERIES:
        points = {}
        for r in report["results"]:
            if (r["workload"], r["system"], r["durability"]) == ("W1", system, durability) \
                    and r["in_flight"] in SWEEP_IN_FLIGHT and r["median"]["steps_per_s"]:
                points[r["in_flight"]] = r["median"]["steps_per_s"]
        if points:
            series[label] = points
    return series


def sweep_table(report: dict) -> tuple[list[str], list[list[str]]] | None:
    series = sweep_series(report)
    if not report["params"]["sweep"] or not series:
        return None
    headers = ["W1 steps/s"] + [f"x{n:,}" for n in SWEEP_IN_FLIGHT]
    rows = [[label] + [rate(points.get(n)) for n in SWEEP_IN_FLIGHT] for label, points in series.items()]
    return headers, rows


def memory_table(report: dict) -> tuple[list[str], list[list[str]]] | None:
    memory = report.get("memory")
    if not memory:
        return None
    rows = [[s["after"], mib(s["rss_mib"]), mib(s["rss_anon_mib"]), mib(s.get("rss_file_mib")),
             mib(s.get("store_mib")), str(s["tasks"]), str(s["live_workflows"]), str(s["actors"]),
             ", ".join(f"{k}={v}" for k, v in s["other"].items())] for s in memory["snapshots"]]
    return ["after", "RSS MiB", "anon RSS MiB", "file RSS MiB", "store MiB", "asyncio tasks", "live workflows",
            "actors", "other runtime maps"], rows


def floors_table(report: dict) -> tuple[list[str], list[list[str]]]:
    rows = []
    for c in report["floors"]:
        v = c["value"]
        if v is None:
            shown = "-"
        elif c["unit"] == "steps/s":
            shown = f"{v:,.0f} steps/s"
        elif c["unit"] == "x":
            shown = f"{v:,.1f}x"
        elif c["unit"] == "ratio":
            shown = f"{v:.1%} of the ceiling"
        else:
            shown = f"{v:+.1%}"
        rows.append([c["floor"], shown, c["verdict"], c["note"]])
    return ["floor", "measured", "verdict", "note"], rows

FLOORS_ALIGN = "lrll"
MEMORY_ALIGN = "lrrrrrrrl"


def headline(report: dict) -> str:
    p, env = report["params"], report["environment"]
    wall = report["wall_s"]
    dbos = ""
    if any(r["system"] == "dbos" for r in report["results"]):
        dbos = (f"; DBOS: median of {p['dbos_runs']} run(s) at 1..100 in flight, {p['dbos_x1000_runs']} "
                f"at 1,000")
    fresh = ("every run in a fresh process, runs interleaved" if p.get("process_per_run", True)
             else "the runs of a configuration one after another in a fresh process")
    return (f"Median of {p['runs']} run(s) per configuration{dbos}; {fresh}. "
            f"Python {env['python']}, uvloop {env['uvloop']}, lmdb {env['lmdb']}, "
            f"{env['cpus']} CPUs; wall {wall // 60:.0f} min {wall % 60:.0f} s.")


def notes(report: dict) -> list[str]:
    p = report["params"]
    many = p["in_flight"]
    out = [f"x1: workflows one at a time; x{many:,} (and x100 / the sweep): batches of that many "
           "concurrent executes (asyncio.gather). Latency: from the call to its result.",
           "peak RSS: the measuring process's high-water mark (ru_maxrss), interpreter and imports included; "
           "RSS delta: that peak minus the RSS after the imports, before the engine opened."]
    if any(r["system"] in ("bare", "lmdb-gc") for r in report["results"]):
        out.append("/bare, /lmdb-gc: steps/s as a fraction of the ceiling of the same shape "
                   "(lmdb-gc: same durability).")
    if any(r["system"] == "dbos" for r in report["results"]):
        out.append("DBOS Transact runs on a SQLite system database with SQLite's defaults (synchronous=FULL: "
                   "every commit syncs), so it is compared with sagaloop durable. Its x1,000 runs take about a "
                   "minute each, hence fewer runs there.")
    if p["dbos"] and not report["environment"].get("dbos"):
        out.append("DBOS Transact: skipped, the 'dbos' package is not installed (pip install -e '.[bench]').")
    if report.get("source_changed"):
        out.append("WARNING: sagaloop's source files changed while this ran: the figures mix two versions.")
    if p["sweep"]:
        out.append("DBOS is not run at 10,000 in flight (one batch would take about 7 minutes).")
    return out


def text_report(report: dict) -> str:
    p = report["params"]
    parts = ["", headline(report)]
    for workload in WORKLOADS:
        t = workload_table(report, workload)
        if t:
            parts += ["", f"{workload}: {description(workload, p)}", text_table(*t)]
    t = dbos_table(report)
    if t:
        parts += ["", f"sagaloop durable vs DBOS Transact {report['environment']['dbos']} on SQLite "
                      "(same workload, same shape; ratio of steps/s)", text_table(*t)]
    t = sweep_table(report)
    if t:
        parts += ["", "W1 steps/s by workflows in flight (the plot)", text_table(*t)]
    t = memory_table(report)
    if t:
        m = report["memory"]
        parts += ["", f"memory check: W1 fast, {m['rounds']} rounds of {m['workflows_per_round']:,} in batches "
                      f"of {m['batch']:,}; gc.collect() before each line", text_table(*t, align=MEMORY_ALIGN)]
    if report["floors"]:
        parts += ["", "floors", text_table(*floors_table(report), align=FLOORS_ALIGN)]
    parts += [""] + [f"note: {n}" for n in notes(report)]
    return "\n".join(parts)


# -- the results page and the plot -------------------------------------------------------------------

def plot(report: dict, path: Path) -> bool:
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = sweep_series(report)
    if not series:
        return False
    styles = {"sagaloop durable": ("tab:blue", "o", "-"), "sagaloop fast": ("tab:orange", "o", "-"),
              "ceiling: msgpack+LMDB put, group commit (durable)": ("tab:blue", "^", "--"),
              "ceiling: msgpack+LMDB put, group commit (fast)": ("tab:orange", "^", "--"),
              "ceiling: bare asyncio calls": ("tab:gray", "v", ":"),
              "DBOS Transact on SQLite": ("tab:red", "s", "-")}
    fig, ax = plt.subplots(figsize=(8, 6.2), dpi=120)
    for label, points in series.items():
        xs = sorted(points)
        color, marker, line = styles.get(label, (None, "x", "-"))
        ax.plot(xs, [points[x] for x in xs], marker=marker, linestyle=line, color=color, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(list(SWEEP_IN_FLIGHT))
    ax.set_xticklabels([f"{n:,}" for n in SWEEP_IN_FLIGHT])
    ax.set_xlabel("workflows in flight")
    ax.set_ylabel("steps/s (median)")
    env = report["environment"]
    ax.set_title(f"W1, {report['params']['steps']} trivial steps per workflow: steps/s vs workflows in flight\n"
                 f"{env['cpus']} CPUs, Python {env['python']}; DBOS not run at 10,000", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


INSTALL = "pip install -e '.[test,bench]'"


def results_markdown(report: dict, command: str, plotted: bool) -> str:
    env, p = report["environment"], report["params"]
    machine = [["CPUs", str(env["cpus"])], ["CPU model", env["cpu_model"] or "?"], ["platform", env["platform"]],
               ["Python", f"{env['python']} ({env['implementation']})"], ["uvloop", env["uvloop"] or "-"],
               ["lmdb (py-lmdb)", env["lmdb"] or "-"], ["msgpack", env["msgpack"] or "-"],
               ["dbos", env["dbos"] or "not installed"], ["SQLAlchemy", env["sqlalchemy"] or "-"],
               ["SQLite", env["sqlite"]], ["sagaloop", f"{env['sagaloop']}, git {env['git'] or '?'}, source digest "
                             f"{env.get('sagaloop_source') or '?'}"],
               ["date", env["date"]], ["wall time of the run", f"{report['wall_s'] / 60:.1f} min"]]
    out = ["# sagaloop benchmark results", "",
           f"Written by `{command}`; do not edit by hand, run it again. What each workload does and how it "
           "is measured: [README.md](README.md).", "",
           headline(report), "", "## Machine", "", md_table(["", ""], machine, left=2), "",
           "The machine is shared and noisy (2 cores): figures move by 10-30 % between runs; the "
           "min..max columns show by how much.", "",
           "## Reproduce", "", "```",
           f"{INSTALL:<38}  # dbos, matplotlib, psutil: benchmark-only",
           f"{command:<38}  # this page and results.png",
           "python -m bench --quick                 # smoke run, < 60 s",
           "python -m bench --only W1,W2 --no-dbos  # a subset",
           "python -m bench --profile               # cProfile of W1 sagaloop fast x1000",
           "python -m pytest bench -p no:cacheprovider --benchmark-only",
           "```", "", "## Floors", "", md_table(*floors_table(report), align=FLOORS_ALIGN)]
    for workload in WORKLOADS:
        t = workload_table(report, workload)
        if t:
            out += ["", f"## {workload}", "", description(workload, p) + ".", "", md_table(*t)]
    t = dbos_table(report)
    if t:
        out += ["", "## sagaloop vs DBOS Transact", "",
                f"DBOS Transact {env['dbos']} with a SQLite system database, W1 and W2 written as a DBOS user "
                "would (`@DBOS.step` steps, a `@DBOS.workflow`, W2's compensations by hand in an `except` "
                "block), run through its async API (`asyncio.gather` of async workflow calls) on the same "
                "uvloop. Ratio: sagaloop durable steps/s over DBOS steps/s, same workload and shape.", "",
                md_table(*t)]
    t = sweep_table(report)
    if t:
        out += ["", "## W1 steps/s by workflows in flight", ""]
        if plotted:
            out += ["![W1 steps/s vs workflows in flight](results.png)", ""]
        out += [md_table(*t)]
    t = memory_table(report)
    if t:
        m = report["memory"]
        verdict = "PASS" if m["passed"] else "FAIL: " + "; ".join(m["reasons"])
        split = ""
        if m["judged"] != "RSS":
            split = (f" Total RSS {m['rss_growth']:+.1%}: the file-backed part, LMDB's memory map, grows with "
                     f"the store ({m['rss_file_growth']:+.1%}; the store on disk {m['store_growth']:+.1%}), since "
                     "every ended workflow stays in the journal, by design; the anonymous part (the heap) is "
                     "what would show objects left behind, so it is the one judged.")
        out += ["", "## Memory check", "",
                f"W1 on a `fast` engine, {m['rounds']} rounds of {m['workflows_per_round']:,} workflows in "
                f"batches of {m['batch']:,}, `gc.collect()` before each line. {m['judged'].capitalize()} "
                f"from the first to the last round: {m['growth']:+.1%}. {verdict}.{split}", "", md_table(*t, align=MEMORY_ALIGN)]
    out += ["", "## Notes", ""] + [f"- {n}" for n in notes(report)] + [""]
    return "\n".join(out)


def write_results(report: dict, directory: Path, command: str) -> list[str]:
    png = directory / "results.png"
    plotted = plot(report, png)
    (directory / "RESULTS.md").write_text(results_markdown(report, command, plotted))
    written = [f"{directory.name}/RESULTS.md"]
    if plotted:
        written.append(f"{directory.name}/results.png")
    else:
        written.append("(no plot: matplotlib is not installed or there was no sweep)")
    return written
