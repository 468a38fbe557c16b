"""One measurement in a process of its own: ``python -m bench.worker '<spec as JSON>'``.

``python -m bench`` runs every run of every configuration through this, so
each gets a fresh interpreter: its peak RSS is its own (``ru_maxrss``), and
neither heap growth nor threads (DBOS starts many) carry over to the next.
With ``"repeat": n`` in the spec it measures n runs one after another
(``--quick`` does that, to save the start-ups). The result is one line on
stdout, ``RESULT_MARK`` followed by JSON; a
workflow that does not complete exits with status 2, any other error with 1.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

RESULT_MARK = "@@bench-result "


def run(spec: dict) -> dict:
    import sagaloop
    from bench.rss import current_rss, mib, peak_rss

    # Import what the measurement needs first, so the baseline RSS includes it.
    if spec["system"] == "memory":
        from bench.memory import memory_check
    elif spec["system"] == "dbos":
        from bench.dbos_workloads import measure_dbos
    else:
        from bench.workloads import measure
    if spec["system"] == "memory":
        base = current_rss()

        def progress(line: str) -> None:
            print(line, file=sys.stderr, flush=True)

        result = sagaloop.run(memory_check(workflows=spec["workflows"], rounds=spec.get("rounds", 2),
                                           batch=spec["in_flight"], steps=spec["steps"], progress=progress))
        result["rss_base_mib"], result["rss_peak_mib"] = mib(base), mib(peak_rss())
        return result
    samples = []
    base = current_rss()  # once: with "repeat", later runs reuse what earlier ones grew
    for _ in range(spec.get("repeat", 1)):
        sample = sagaloop.run(measure_dbos(spec) if spec["system"] == "dbos" else measure(spec))
        sample["rss_base_mib"], sample["rss_peak_mib"] = mib(base), mib(peak_rss())
        samples.append(sample)
    return {"samples": samples}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m bench.worker '<spec as JSON>'", file=sys.stderr)
        return 64
    spec = json.loads(argv[0])
    from bench.throughput import WorkflowFailed
    try:
        result = run(spec)
    except WorkflowFailed as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        return 1
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: DBOS's threads would hold it up (DBOS.destroy waits ~0.6 s for them).
    os._exit(code)
