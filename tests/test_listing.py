"""``engine.workflows.list`` as an operator needs it: filters, time bounds, cursor paging, the index.

- Paging through random runs with random filters lists exactly what filtering the whole set
  gives, newest first (``created_at``, then ``workflow_id`` descending), with no repeats and no
  gaps (hypothesis, on a real store; the records are written through the store, re-put with
  other statuses and tags as runs are).
- A cursor stays good while new runs start and statuses change; a listing reads about
  ``limit`` records however many are stored (``StoreStats.listed``).
- ``Store.list_instances(family=...)`` lists one family; a data directory written before the
  index gets it built at open.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import lmdb
import msgpack
import pytest
from helpers import E, EngineOnALoop, P, open_engine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sagaloop
from sagaloop.errors import InvalidArgumentError
from sagaloop.storage import LmdbStore, decode_cursor, encode_cursor, lmdb_store
from sagaloop.storage.lmdb_listing import ListingIndex

LONG = os.environ.get("SAGALOOP_LONG_TESTS") == "1"
STATUSES = ("running", "completed", "failed", "rolled_back", "cancelled")
UTC = timezone.utc


def record(workflow_id: str, created_at: int, *, product: str = P, env: str = E, tag: str = "order",
           status: str = "completed", **extra) -> dict:
    return {"workflow_id": workflow_id, "product": product, "env": env, "tag": tag, "status": status,
            "created_at": created_at, **extra}


def ms_to_datetime(ms: int, micros: int = 0) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms, microseconds=micros)


def store_of(engine: sagaloop.Engine) -> LmdbStore:
    return engine._runtime.store  # type: ignore[attr-defined,return-value]


async def put(store, *records: dict) -> None:
    for rec in records:
        store.put_instance(rec)
    await store.commit()


async def every_page(wf, limit: int, **filters) -> list[list[str]]:
    """The ids of every page, following next_cursor to the end."""
    pages, cursor = [], None
    while True:
        page = await wf.list(limit=limit, cursor=cursor, **filters)
        pages.append([s.workflow_id for s in page])
        if page.next_cursor is None:
            return pages
        assert len(page) == limit  # only the last page is short
        assert page.next_cursor != cursor and len(pages) <= 10_000, "paging does not move on"
        cursor = page.next_cursor


def newest_first(records) -> list[str]:
    return [r["workflow_id"] for r in sorted(records, key=lambda r: (r["created_at"], r["workflow_id"].encode()),
                                             reverse=True)]


# -- the property: paging equals filtering the whole set ------------------------------------------------


ids = st.text(alphabet="abz09-~é€😀", min_size=1, max_size=4)  # multi-byte: the order is UTF-8 bytes
runs = st.lists(st.tuples(ids, st.integers(1000, 1008), st.sampled_from(("a", "b", "c")),
                          st.sampled_from(STATUSES), st.sampled_from(("e1", "e2"))),
                min_size=1, max_size=40, unique_by=lambda r: r[0])
bound = st.none() | st.integers(999, 1009) | st.tuples(st.integers(999, 1009), st.integers(0, 999))
changes = st.lists(st.tuples(st.integers(0, 1000), st.sampled_from(STATUSES), st.booleans()), max_size=15)


def as_bound(value):
    """A drawn bound as the caller passes it, and its value in microseconds."""
    if value is None:
        return None, None
    if isinstance(value, int):
        return value, value * 1000
    ms, micros = value
    return ms_to_datetime(ms, micros), ms * 1000 + micros


def test_paging_through_random_runs_equals_filtering_the_whole_set(tmp_path):
    checked = []
    products = EngineOnALoop.names("prop")
    with EngineOnALoop(tmp_path / "db") as h:
        @settings(max_examples=2000 if LONG else 200, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(runs=runs, changes=changes, tag=st.none() | st.sampled_from(("a", "b", "x")),
               status=st.none() | st.sampled_from(STATUSES), after=bound, before=bound,
               limit=st.integers(1, 7), group=st.booleans())
        def check(runs, changes, tag, status, after, before, limit, group):
            product = next(products)
            h.run(example(h.engine, product, runs, changes, tag, status, after, before, limit, group))
            checked.append(1)

        check()
    assert len(checked) >= 100  # hypothesis did run the examples


async def example(engine, product, runs, changes, tag, status, after, before, limit, group):
    store = store_of(engine)
    records = {wid: record(wid, at, product=product, env=env, tag=t, status=s) for wid, at, t, s, env in runs}
    await put(store, *records.values())
    order = list(records)
    for i, new_status, retag in changes:  # runs move on: status changes (and a tag change), one by one
        if not order:
            break
        rec = records[order[i % len(order)]]
        rec.update(status=new_status, tag="a" if retag else rec["tag"])
        store.put_instance(dict(rec))
        if not group:  # else: all in one group, each replacing the last put of its key
            await store.commit()
    await store.commit()
    (after_arg, after_us), (before_arg, before_us) = as_bound(after), as_bound(before)
    want = newest_first(r for r in records.values()
                        if r["env"] == "e1" and (tag is None or r["tag"] == tag)
                        and (status is None or r["status"] == status)
                        and (after_us is None or r["created_at"] * 1000 > after_us)
                        and (before_us is None or r["created_at"] * 1000 < before_us))
    pages = await every_page(engine.workflows, limit, product=product, env="e1", tag=tag, status=status,
                             started_after=after_arg, started_before=before_arg)
    assert [wid for page in pages for wid in page] == want
    assert len(pages) == max(1, -(-len(want) // limit))  # next_cursor is None right at the end


# -- cursors while the runs move on ------------------------------------------------------------------------


async def test_a_cursor_stays_good_while_new_runs_start(tmp_path):
    async with open_engine(tmp_path) as engine:
        @engine.workflows.define(product=P, tag="wf")
        async def wf(ctx):
            return ctx.input

        async def start(n: int) -> list[str]:  # many in one millisecond: ties broken by workflow_id
            results = await asyncio.gather(*(engine.workflows.execute(product=P, env=E, tag="wf", input=i)
                                             for i in range(n)))
            return [r.workflow_id for r in results]

        first = await start(25)
        seen: list[str] = []
        page = await engine.workflows.list(product=P, env=E, limit=10)
        while True:
            seen += [s.workflow_id for s in page]
            assert len(seen) <= 25, "paging repeats"
            await start(5)  # newer than every position handed out: not on a later page
            if page.next_cursor is None:
                break
            page = await engine.workflows.list(product=P, env=E, limit=10, cursor=page.next_cursor)
        assert sorted(seen) == sorted(first) and len(seen) == 25
        listed = await engine.workflows.list(product=P, env=E, limit=1000)
        assert [s.workflow_id for s in listed][-25:] == seen  # the same order as one big page
        assert len(listed) == 25 + 5 * 3 and listed.next_cursor is None
        assert [(s.created_at, s.workflow_id) for s in listed] == sorted(
            ((s.created_at, s.workflow_id) for s in listed), reverse=True)


async def test_a_status_change_between_pages(tmp_path):
    """With ``status=``, each page reads the statuses as they are then; nothing is listed twice."""
    async with open_engine(tmp_path) as engine:
        store, wf = store_of(engine), engine.workflows
        await put(store, *(record(f"r{i}", 1000 + i, status="running") for i in range(10)),
                  record("c0", 1000 - 1, status="completed"))
        page = await wf.list(product=P, env=E, status="running", limit=3)
        assert [s.workflow_id for s in page] == ["r9", "r8", "r7"]
        await put(store, record("r8", 1008, status="completed"),   # listed already: stays listed once
                  record("r5", 1005, status="completed"),          # not reached yet: no longer matches
                  record("c0", 999, status="running"),             # older, now matches: on a later page
                  record("new", 2000, status="running"))           # newer than the cursor: not on a later page
        later = []
        cursor = page.next_cursor
        while cursor is not None:
            page = await wf.list(product=P, env=E, status="running", limit=3, cursor=cursor)
            later += [s.workflow_id for s in page]
            assert page.next_cursor != cursor and len(later) < 100, "paging does not move on"
            cursor = page.next_cursor
        assert later == ["r6", "r4", "r3", "r2", "r1", "r0", "c0"]
        fresh = await wf.list(product=P, env=E, status="running", limit=100)
        assert [s.workflow_id for s in fresh] == ["new", "r9", "r7", "r6", "r4", "r3", "r2", "r1", "r0", "c0"]
        completed = await wf.list(product=P, env=E, status="completed")
        assert [s.workflow_id for s in completed] == ["r8", "r5"]


async def test_a_cursor_may_continue_with_other_filters_and_is_opaque(tmp_path):
    async with open_engine(tmp_path) as engine:
        store, wf = store_of(engine), engine.workflows
        await put(store, *(record(f"w{i}", 1000 + i, tag="ab"[i % 2]) for i in range(6)))
        page = await wf.list(product=P, env=E, limit=2)
        assert [s.workflow_id for s in page] == ["w5", "w4"]
        assert isinstance(page.next_cursor, str) and "w4" not in page.next_cursor
        assert decode_cursor(page.next_cursor) == (1004, "w4")
        tagged = await wf.list(product=P, env=E, tag="a", cursor=page.next_cursor)  # a position: strictly older
        assert [s.workflow_id for s in tagged] == ["w2", "w0"] and tagged.next_cursor is None


# -- bounds ------------------------------------------------------------------------------------------------


async def test_started_after_and_before_are_strict_bounds_on_created_at(tmp_path):
    async with open_engine(tmp_path) as engine:
        store, wf = store_of(engine), engine.workflows
        base = 1_700_000_000_000
        await put(store, *(record(f"t{i}", base + i) for i in range(5)))

        async def ids(**kw):
            return [s.workflow_id for s in await wf.list(product=P, env=E, **kw)]

        assert await ids(started_after=base + 1) == ["t4", "t3", "t2"]            # strictly after
        assert await ids(started_before=base + 3) == ["t2", "t1", "t0"]           # strictly before
        assert await ids(started_after=base + 1, started_before=base + 3) == ["t2"]
        assert await ids(started_after=base + 3, started_before=base + 1) == []
        assert await ids(started_after=-5, started_before=10**30) == ["t4", "t3", "t2", "t1", "t0"]
        assert await ids(started_before=0) == []
        # An aware datetime means the same instant; a fraction of a millisecond counts.
        assert await ids(started_after=ms_to_datetime(base + 1)) == ["t4", "t3", "t2"]
        assert await ids(started_after=ms_to_datetime(base + 1, 500)) == ["t4", "t3", "t2"]
        assert await ids(started_before=ms_to_datetime(base + 3)) == ["t2", "t1", "t0"]
        assert await ids(started_before=ms_to_datetime(base + 2, 1)) == ["t2", "t1", "t0"]
        plus_two = timezone(timedelta(hours=2))
        assert await ids(started_after=ms_to_datetime(base + 3).astimezone(plus_two)) == ["t4"]
        # With paging: the bounds hold on every page.
        assert await every_page(wf, 1, product=P, env=E, started_after=base, started_before=base + 4) == [
            ["t3"], ["t2"], ["t1"]]


# -- families ----------------------------------------------------------------------------------------------


async def test_a_family_is_listed_from_the_store_newest_first_in_pages(tmp_path):
    store = LmdbStore(tmp_path / "db", durability="fast")
    await store.open()
    try:
        await put(store,
                  record("o", 1000),                                            # the original: no family
                  record("o-replay", 1002, family="o", status="failed"),
                  record("o-restart", 1001, family="o", tag="other"),
                  record("x", 1003),                                            # another family
                  record("o-far", 1004, family="o", env="stg"))                # another env

        async def family(name, limit=100, **kw):
            out, cursor = [], None
            while True:
                page = await store.list_instances(product=P, env=E, family=name, limit=limit, cursor=cursor, **kw)
                out.append([r["workflow_id"] for r in page.records])
                if page.next is None:
                    return out
                assert page.next != cursor and len(out) < 100, "paging does not move on"
                cursor = page.next

        assert await family("o") == [["o-replay", "o-restart", "o"]]
        assert await family("o", limit=1) == [["o-replay"], ["o-restart"], ["o"]]
        assert await family("o", status="completed") == [["o-restart", "o"]]
        assert await family("o", status="completed", limit=1) == [["o-restart"], ["o"]]
        assert await family("o", tag="other") == [["o-restart"]]
        assert await family("o", created_after=1000, created_before=1002) == [["o-restart"]]
        assert await family("x") == [["x"]]
        assert await family("o-replay") == [[]]  # a member is not a family of its own
        assert [r["workflow_id"] for r in (await store.list_instances(product=P, env="stg", family="o")).records] \
            == ["o-far"]
        # A record re-put with a family moves to it; a status change keeps it in its family.
        await put(store, record("x", 1003, family="o", status="running"))
        assert await family("o") == [["x", "o-replay", "o-restart", "o"]]
        assert await family("x") == [[]]
        # The plain listing is not changed by families.
        page = await store.list_instances(product=P, env=E)
        assert [r["workflow_id"] for r in page.records] == ["x", "o-replay", "o-restart", "o"]
    finally:
        await store.close()


# -- the index: reads stay about the limit -----------------------------------------------------------------


async def test_a_listing_reads_about_limit_records_however_many_are_stored(tmp_path):
    store = LmdbStore(tmp_path / "db", durability="fast")
    await store.open()
    try:
        for i in range(3000):
            store.put_instance(record(f"w{i:05}", 1000 + i, tag="ab"[i % 2],
                                      status="failed" if i % 100 == 7 else "completed"))
        await store.commit()
        stats = store.stats

        async def reads(**kw):
            before = stats.listed
            page = await store.list_instances(product=P, env=E, **kw)
            return len(page.records), stats.listed - before, page.next

        assert (await reads(status="failed", limit=10))[:2] == (10, 10)
        count, read, nxt = await reads(status="failed", limit=10)
        assert (await reads(status="failed", limit=10, cursor=nxt))[:2] == (10, 10)
        assert (await reads(status="failed", limit=100))[:2] == (30, 30)  # all 30: no more read
        assert (await reads(limit=100))[:2] == (100, 100)
        assert (await reads(tag="b", status="failed", limit=5))[:2] == (5, 5)
        assert (await reads(created_before=1100, limit=10))[:2] == (10, 10)
    finally:
        await store.close()


async def test_re_puts_move_index_entries_and_leave_none_behind(tmp_path):
    store = LmdbStore(tmp_path / "db", durability="fast")
    await store.open()
    try:
        await put(store, record("a", 1000, status="running"))
        await put(store, record("a", 1000, status="running", state={"n": 1}))  # nothing indexed changed
        await put(store, record("a", 1500, status="failed", tag="t2"))          # created_at, tag, status
        await put(store, record("a", 1500, status="failed", tag="t2", product="other"))  # another product

        async def ids(product=P, **kw):
            return [r["workflow_id"] for r in (await store.list_instances(product=product, env=E, **kw)).records]

        assert await ids() == [] and await ids(status="running") == [] and await ids(tag="order") == []
        assert await ids("other") == ["a"] and await ids("other", tag="t2", status="failed") == ["a"]
        assert await ids("other", created_after=1000, created_before=1501) == ["a"]
        with store._env.begin() as txn:  # one entry (its tag and status; its own family has none)
            assert sum(1 for _ in txn.cursor(store._listing.db_entries)) == 1
    finally:
        await store.close()


# -- the result --------------------------------------------------------------------------------------------


async def test_an_execution_list_is_the_sequence_of_its_executions(tmp_path):
    async with open_engine(tmp_path) as engine:
        await put(store_of(engine), *(record(f"w{i}", 1000 + i) for i in range(3)))
        page = await engine.workflows.list(product=P, env=E, limit=2)
        assert isinstance(page, sagaloop.ExecutionList) and isinstance(page, Sequence)
        assert len(page) == 2 and bool(page) and [s.workflow_id for s in page] == ["w2", "w1"]
        assert page[0] is page.executions[0] and page[-1].workflow_id == "w1" and page[1:] == [page[1]]
        assert page == list(page.executions) and page["next_cursor"] == page.next_cursor
        assert page.to_dict() == {"executions": [s.to_dict() for s in page], "next_cursor": page.next_cursor}
        assert page[0] in page and page.index(page[1]) == 1
        assert await engine.workflows.list(product=P, env="none") == []
        with pytest.raises(AttributeError):
            page.next_cursor = None  # frozen


# -- bad input ---------------------------------------------------------------------------------------------


NAIVE = datetime(2024, 1, 1)
BAD = [
    ({"limit": 0}, "0"), ({"limit": -1}, "-1"), ({"limit": 1.5}, "1.5"), ({"limit": "10"}, "'10'"),
    ({"limit": True}, "True"), ({"limit": None}, "None"),
    ({"cursor": "garbage!"}, "'garbage!'"), ({"cursor": ""}, "''"), ({"cursor": 5}, "5"),
    ({"cursor": encode_cursor((1, "w"))[:-1] + "~"}, "cursor"), ({"cursor": "AQ"}, "'AQ'"),
    ({"status": "bogus"}, "'bogus'"), ({"status": 3}, "3"),
    ({"product": ""}, "product"), ({"env": ""}, "env"), ({"product": None}, "None"),
    ({"tag": ""}, "tag"), ({"tag": 5}, "5"),
    ({"started_after": NAIVE}, "started_after"), ({"started_before": NAIVE}, "naive"),
    ({"started_after": "yesterday"}, "'yesterday'"), ({"started_before": 1.5}, "1.5"),
    ({"started_after": True}, "True"),
]


@pytest.mark.parametrize("kw,named", BAD, ids=[f"{next(iter(kw))}={list(kw.values())[0]!r}" for kw, _ in BAD])
async def test_bad_input_raises_invalid_argument_naming_it_and_changes_nothing(tmp_path, kw, named):
    async with open_engine(tmp_path) as engine:
        await put(store_of(engine), record("w1", 1000), record("w2", 1001))
        args = {"product": P, "env": E, **kw}
        with pytest.raises(InvalidArgumentError, match=named.replace("(", r"\(").replace(".", r"\.")):
            await engine.workflows.list(**args)
        assert [s.workflow_id for s in await engine.workflows.list(product=P, env=E)] == ["w2", "w1"]


async def test_the_store_checks_its_own_arguments(tmp_path):
    store = LmdbStore(tmp_path / "db", durability="fast")
    await store.open()
    try:
        for kw in ({"limit": 0}, {"limit": True}, {"product": ""}, {"env": None}):
            with pytest.raises(InvalidArgumentError):
                await store.list_instances(**{"product": P, "env": E, **kw})
    finally:
        await store.close()


# -- a data directory written before the index -------------------------------------------------------------


def write_old_layout(path: Path, records: list[dict], corrupt: tuple[str, ...] = ()) -> None:
    """A data directory as sagaloop wrote it before the listing index: instances, by_time, running."""
    path.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(path), map_size=64 << 20, max_dbs=8, subdir=True)
    dbs = {name: env.open_db(name.encode()) for name in
           ("instances", "journal", "events", "idempotency", "by_time", "running", "inbox")}
    with env.begin(write=True) as txn:
        for rec in records:
            key = rec["workflow_id"].encode()
            txn.put(key, msgpack.packb(rec, use_bin_type=True), db=dbs["instances"])
            txn.put(int(rec["created_at"]).to_bytes(8, "big") + key, b"", db=dbs["by_time"])
            if rec["status"] == "running":
                txn.put(key, b"", db=dbs["running"])
        for workflow_id in corrupt:
            key = workflow_id.encode()
            txn.put(key, b"\xc1 not msgpack", db=dbs["instances"])
            txn.put((999).to_bytes(8, "big") + key, b"", db=dbs["by_time"])
    env.close()


async def test_a_data_directory_without_the_index_gets_it_at_open(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(lmdb_store, "_REBUILD_BATCH", 7)  # several build transactions
    path = tmp_path / "old"
    old = [record(f"w{i:02}", 1000 + i // 2, tag="ab"[i % 2], status=STATUSES[i % 5],
                  **({"family": "w00"} if i % 10 == 3 else {}))
           for i in range(40)]
    old.append(record("other-env", 5000, env="stg"))
    write_old_layout(path, old, corrupt=("broken",))
    caplog.set_level(logging.INFO, logger="sagaloop")
    async with open_engine(tmp_path, "old") as engine:
        mine = [r for r in old if r["env"] == E]
        assert sum(await every_page(engine.workflows, 6, product=P, env=E), []) == newest_first(mine)
        assert sum(await every_page(engine.workflows, 4, product=P, env=E, tag="b", status="failed"), []) == \
            newest_first(r for r in mine if r["tag"] == "b" and r["status"] == "failed")
        store = store_of(engine)
        family = await store.list_instances(product=P, env=E, family="w00")
        assert [r["workflow_id"] for r in family.records] == newest_first(
            r for r in mine if r.get("family") == "w00" or r["workflow_id"] == "w00")
        # The index is kept up from here on: a status change moves the run.
        await put(store, {**old[0], "status": "failed"})
        assert "w00" in [s.workflow_id for s in await engine.workflows.list(product=P, env=E, status="failed",
                                                                             limit=100)]
        with store._env.begin() as txn:
            assert txn.get(b"listing", db=store._listing.db_meta) == b"1"
            with pytest.raises(lmdb.NotFoundError):
                store._env.open_db(b"by_time", txn=txn, create=False)  # the old index is gone
    assert any("built the listing index" in r.getMessage() and "41 instances" in r.getMessage()
               for r in caplog.records)
    assert any("broken" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)

    # Built once: the next open does not build it again.
    caplog.clear()
    async with open_engine(tmp_path, "old") as engine:
        assert len(await engine.workflows.list(product=P, env=E, limit=100)) == 40
    assert not any("built the listing index" in r.getMessage() for r in caplog.records)


async def test_a_build_cut_short_is_done_again_from_scratch(tmp_path, monkeypatch):
    path = tmp_path / "old"
    write_old_layout(path, [record(f"w{i}", 1000 + i) for i in range(10)])
    monkeypatch.setattr(lmdb_store, "_REBUILD_BATCH", 3)
    calls = 0
    real = ListingIndex.update

    def failing(self, *args, **kw):
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt  # the process stops in the middle of the build
        return real(self, *args, **kw)

    monkeypatch.setattr(ListingIndex, "update", failing)
    store = LmdbStore(path, durability="fast")
    with pytest.raises(KeyboardInterrupt):
        await store.open()
    monkeypatch.setattr(ListingIndex, "update", real)
    store = LmdbStore(path, durability="fast")
    await store.open()  # the lock was released; the build starts over
    try:
        page = await store.list_instances(product=P, env=E)
        assert [r["workflow_id"] for r in page.records] == [f"w{i}" for i in reversed(range(10))]
        with store._env.begin() as txn:
            assert sum(1 for _ in txn.cursor(store._listing.db_entries)) == 10
    finally:
        await store.close()


# -- the instances in flight come from the same index ----------------------------------------------------


async def test_running_instances_are_those_under_the_running_facets(tmp_path):
    path = tmp_path / "db"
    store = LmdbStore(path, durability="fast")
    await store.open()
    try:
        await put(store, record("a", 1000, status="running"), record("b", 1001, status="running", env="stg"),
                  record("c", 1002, status="completed"), record("d", 1003, status="running", product="other"),
                  {"workflow_id": "odd", "created_at": 1004, "status": "running", "tag": None})  # no product
        assert [r["workflow_id"] for r in await store.running_instances()] == ["a", "b", "d", "odd"]
        await put(store, record("a", 1000, status="failed"), record("c", 1002, status="running"))
        assert [r["workflow_id"] for r in await store.running_instances()] == ["b", "c", "d", "odd"]
        # "odd" is in flight, but listed nowhere: its fields are not names
        assert [r["workflow_id"] for r in (await store.list_instances(product=P, env=E)).records] == ["c", "a"]
    finally:
        await store.close()
    store = LmdbStore(path, durability="fast")  # a new process: nothing cached, the same answers
    await store.open()
    try:
        await put(store, record("b", 1001, status="completed", env="stg"))
        assert [r["workflow_id"] for r in await store.running_instances()] == ["c", "d", "odd"]
    finally:
        await store.close()


async def test_an_upgraded_data_directory_resumes_what_was_in_flight(tmp_path):
    write_old_layout(tmp_path / "old", [record("done", 1000), record("flying", 1001, status="running")])
    store = LmdbStore(tmp_path / "old", durability="fast")
    await store.open()
    try:
        assert [r["workflow_id"] for r in await store.running_instances()] == ["flying"]
        with store._env.begin() as txn:
            with pytest.raises(lmdb.NotFoundError):
                store._env.open_db(b"running", txn=txn, create=False)  # the old index of them is gone
    finally:
        await store.close()


async def test_names_and_ids_past_lmdbs_key_limit_are_listed_too(tmp_path):
    """A facet key longer than 511 bytes is stored as its digest; a 503-byte id still fits an entry."""
    product, env, tag = "p" * 300, "e" * 300, "t" * 600
    long_id, other_id = "w" * 503, "v" * 503
    async with open_engine(tmp_path) as engine:
        store = store_of(engine)
        await put(store, record(long_id, 1000, product=product, env=env, tag=tag, status="running"),
                  record(other_id, 1000, product=product, env=env, tag=tag, status="failed", family=long_id),
                  record("short", 999, product=product, env=env, tag="x", status="failed"))

        async def pages(limit=1, **kw):
            return await every_page(engine.workflows, limit, product=product, env=env, **kw)

        assert await pages() == [[long_id], [other_id], ["short"]]  # ties: the greater id first
        assert await pages(tag=tag) == [[long_id], [other_id]]
        assert await pages(status="failed") == [[other_id], ["short"]]
        assert await pages(tag=tag, status="failed") == [[other_id]]
        family = await store.list_instances(product=product, env=env, family=long_id)
        assert [r["workflow_id"] for r in family.records] == [long_id, other_id]
        assert [r["workflow_id"] for r in await store.running_instances()] == [long_id]


async def test_the_build_grows_the_map_when_it_runs_out(tmp_path, monkeypatch):
    """An old directory opens with a map just the size of its data (LMDB takes the larger of the one
    asked for and that): any write of the build may run out of map, the first (dropping the old
    indexes) too, and is done again with a bigger map."""
    path = tmp_path / "old"
    write_old_layout(path, [record(f"w{i:05}", 1000 + i) for i in range(300)])
    real, full = ListingIndex.clear, [True]

    def clear(self, txn):
        if full.pop() if full else False:
            raise lmdb.MapFullError("out of map")  # as dropping a big by_time did (1M runs)
        return real(self, txn)

    monkeypatch.setattr(ListingIndex, "clear", clear)
    monkeypatch.setattr(lmdb_store, "_REBUILD_BATCH", 100)
    store = LmdbStore(path, durability="fast", map_size=64 * 1024)
    await store.open()
    try:
        assert store.stats.map_resizes >= 1 and not full
        page = await store.list_instances(product=P, env=E, limit=3)
        assert [r["workflow_id"] for r in page.records] == ["w00299", "w00298", "w00297"]
    finally:
        await store.close()
