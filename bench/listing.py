"""``python -m bench.listing``: list latency over 10k, 100k and 1M ended runs, and what a page reads.

For each size, a fresh store is filled with that many ended instance records, written
straight through the store (``LmdbStore.put_instance``, ``fast``, in groups of 50,000):
product ``bench``, env ``prd``, 10 tags, ~1% ``failed``, the rest mostly ``completed``
(some ``rolled_back`` and ``cancelled``), a few runs per millisecond. Then an engine opens
the directory and each listing is timed through ``engine.workflows.list``:

* ``status=failed``: the 100 newest failed runs;
* ``all``: the 100 newest runs;
* ``tag+status``: the 100 newest failed runs of one tag;
* ``status=failed, page 2``: the next page, by the first page's ``next_cursor``;
* ``all, page 50``: the 50th page of the newest-first listing, by cursor.

Each is run ``--repeats`` times after a warm-up; the table gives the median and p99 latency
and the instance records the store read per listing (``StoreStats.listed``): about the
limit at every size, since listings are served from the store's index.

    python -m bench.listing                      # 10k, 100k, 1M (~15 s here, most of it filling 1M)
    python -m bench.listing --sizes 10k,100k     # a quicker look
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import sagaloop
from sagaloop.storage import LmdbStore

PRODUCT, ENV = "bench", "prd"
TAGS = [f"tag-{i}" for i in range(10)]
BATCH = 50_000
LIMIT = 100


def parse_size(text: str) -> int:
    text = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * scale)


def status_of(i: int) -> str:
    if i % 100 == 37:
        return "failed"  # 1%
    if i % 50 == 11:
        return "rolled_back"
    if i % 50 == 23:
        return "cancelled"
    return "completed"


def record(i: int, start_ms: int) -> dict[str, Any]:
    created = start_ms + i // 3  # three runs a millisecond: ties are ordered by workflow_id
    return {"workflow_id": f"wf-{i:08d}", "product": PRODUCT, "env": ENV, "tag": TAGS[(i * 7 + i // 100) % len(TAGS)],
            "status": status_of(i), "type": "original", "input": {"order": i}, "created_at": created,
            "updated_at": created + 40, "ended_at": created + 40, "execution_time": 40,
            "completed_steps": [f"s{k}" for k in range(10)], "output": {"ok": 1}}


async def fill(path: Path, size: int) -> float:
    """Write ``size`` ended instance records; the seconds it took."""
    store = LmdbStore(path, durability="fast", map_size=256 << 20)
    await store.open()
    began = time.perf_counter()
    start_ms = 1_700_000_000_000
    try:
        for first in range(0, size, BATCH):
            for i in range(first, min(size, first + BATCH)):
                store.put_instance(record(i, start_ms))
            await store.commit()
    finally:
        await store.close()
    return time.perf_counter() - began


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def measure(path: Path, repeats: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async with sagaloop.Engine(path, durability="fast") as engine:
        wf = engine.workflows
        stats = engine._runtime.store.stats  # the store's counters: instance records read by listings
        first_failed = await wf.list(product=PRODUCT, env=ENV, status="failed", limit=LIMIT)
        cursor = None
        for _ in range(49):
            page = await wf.list(product=PRODUCT, env=ENV, limit=LIMIT, cursor=cursor)
            cursor = page.next_cursor
        page_50_cursor = cursor

        queries: list[tuple[str, Callable[[], Awaitable[sagaloop.ExecutionList]]]] = [
            ("status=failed", lambda: wf.list(product=PRODUCT, env=ENV, status="failed", limit=LIMIT)),
            ("all", lambda: wf.list(product=PRODUCT, env=ENV, limit=LIMIT)),
            ("tag+status", lambda: wf.list(product=PRODUCT, env=ENV, tag=TAGS[3], status="failed", limit=LIMIT)),
            ("status=failed, page 2", lambda: wf.list(product=PRODUCT, env=ENV, status="failed", limit=LIMIT,
                                                      cursor=first_failed.next_cursor)),
            ("all, page 50", lambda: wf.list(product=PRODUCT, env=ENV, limit=LIMIT, cursor=page_50_cursor)),
        ]
        for name, call in queries:
            for _ in range(5):
                await call()  # warm-up
            times, reads, returned = [], [], 0
            for _ in range(repeats):
                before = stats.listed
                began = time.perf_counter()
                page = await call()
                times.append((time.perf_counter() - began) * 1000)
                reads.append(stats.listed - before)
                returned = len(page)
            rows.append({"query": name, "median_ms": statistics.median(times), "p99_ms": percentile(times, 0.99),
                         "read": statistics.median(reads), "returned": returned})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.listing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10k,100k,1M", help="ended runs per store (default 10k,100k,1M)")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per listing (default 200)")
    parser.add_argument("--dir", default=None, help="where to make the stores (default: a temporary dir)")
    args = parser.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    root = Path(tempfile.mkdtemp(prefix="sagaloop-listing-", dir=args.dir))
    print(f"list latency, limit={LIMIT}, {args.repeats} calls per listing; Python "
          f"{sys.version.split()[0]}, uvloop, fast durability")
    header = f"{'runs':>10}  {'listing':<24}{'median ms':>10}{'p99 ms':>9}{'records read':>14}{'returned':>10}"
    results = []
    try:
        for size in sizes:
            path = root / f"runs-{size}"
            seconds = sagaloop.run(fill(path, size))
            rows = sagaloop.run(measure(path, args.repeats))
            results.append((size, seconds, rows))
            print(f"\n{size:,} runs written in {seconds:.1f} s ({size / seconds:,.0f} records/s)")
            print(header)
            print("-" * len(header))
            for row in rows:
                print(f"{size:>10,}  {row['query']:<24}{row['median_ms']:>10.3f}{row['p99_ms']:>9.3f}"
                      f"{row['read']:>14,.0f}{row['returned']:>10}")
            shutil.rmtree(path, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
