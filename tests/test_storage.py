"""The LMDB store: records, group commit, map growth, the writer lock, crashes."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import lmdb
import pytest
from processes import child_env

from sagaloop.errors import (
    InvalidArgumentError,
    NotSerializableError,
    StorageError,
    StoreLockedError,
)
from sagaloop.storage import EntryWriter, LmdbStore, Store, StoreStats, decode, encode, open_store
from sagaloop.storage.lock import DirectoryLock

DURABILITIES = ["durable", "fast"]


def instance(workflow_id: str, created_at: int, status: str = "running", **extra) -> dict:
    return {"workflow_id": workflow_id, "product": "shop", "env": "prod", "tag": "order",
            "status": status, "created_at": created_at, **extra}


def run(coro):
    return asyncio.run(coro)


async def opened(path, durability="durable", **kwargs) -> LmdbStore:
    store = LmdbStore(path, durability=durability, **kwargs)
    await store.open()
    return store


# -- codec -------------------------------------------------------------------------------


def test_codec_round_trip_and_tuples():
    value = {"a": 1, "b": [1, 2.5, "x", b"\x00\xff", None, True], "c": {"d": -(2 ** 63)},
             "t": (1, 2), 7: "int key"}
    back = decode(encode(value))
    assert back["t"] == [1, 2]  # tuples come back as lists
    assert back[7] == "int key"
    assert back["b"][3] == b"\x00\xff" and isinstance(back["b"][2], str)
    assert decode(encode({(1, 2): "tuple key"})) == {(1, 2): "tuple key"}


@pytest.mark.parametrize("bad, type_name", [
    ({"x": [1, {1, 2}]}, "set"),
    ({"when": object()}, "object"),
    ({"n": 2 ** 64}, "int"),
])
def test_codec_names_the_offending_type(bad, type_name):
    with pytest.raises(NotSerializableError) as info:
        encode(bad)
    assert f"value of type {type_name} is not msgpack-serialisable" in str(info.value)
    assert isinstance(info.value, TypeError)
    # The per-thread packer is still clean after a failure.
    assert decode(encode({"ok": 1})) == {"ok": 1}


# -- records -------------------------------------------------------------------------------


@pytest.mark.parametrize("durability", DURABILITIES)
def test_round_trip_of_each_record_kind(tmp_path, durability):
    async def main():
        store = open_store(tmp_path / "data", durability)
        assert isinstance(store, Store) and store.durability == durability
        await store.open()
        record = instance("wf-1", 1000, input={"amount": 12.5, "items": ["a", "b"]})
        store.put_instance(record)
        for pos in (2, 0, 1):
            store.put_entry("wf-1", pos, {"kind": "step", "tag": f"s{pos}", "output": pos * 10})
        for seq in range(3):
            store.put_event("wf-1", seq, {"type": "e", "timestamp": seq, "data": {"seq": seq}})
        store.put_idempotency("shop/prod/order/key-1", "wf-1")
        await store.commit()

        assert await store.get_instance("wf-1") == record
        assert await store.get_instance("nope") is None
        journal = await store.load_journal("wf-1")
        assert [p for p, _ in journal] == [0, 1, 2]
        assert journal[2][1] == {"kind": "step", "tag": "s2", "output": 20}
        events = await store.load_events("wf-1")
        assert [e["data"]["seq"] for e in events] == [0, 1, 2]
        assert await store.get_idempotency("shop/prod/order/key-1") == "wf-1"
        assert await store.get_idempotency("shop/prod/order/other") is None
        assert await store.load_journal("nope") == [] and await store.load_events("nope") == []
        await store.close()

    run(main())


def test_reopen_after_close_keeps_data(tmp_path):
    async def main():
        store = await opened(tmp_path, "fast")
        store.put_instance(instance("wf-1", 1))
        store.put_entry("wf-1", 0, {"v": "kept"})
        store.put_event("wf-1", 0, {"type": "started"})
        # Not awaited: close() must flush what is queued.
        await store.close()
        await store.close()  # idempotent
        with pytest.raises(StorageError, match="store is closed"):
            store.put_event("wf-1", 1, {"type": "late"})
        with pytest.raises(StorageError):
            await store.get_instance("wf-1")

        again = await opened(tmp_path, "durable")
        assert (await again.get_instance("wf-1"))["workflow_id"] == "wf-1"
        assert await again.load_journal("wf-1") == [(0, {"v": "kept"})]
        assert await again.load_events("wf-1") == [{"type": "started"}]
        await again.close()

        # The same object can be opened again too.
        await store.open()
        assert await store.load_journal("wf-1") == [(0, {"v": "kept"})]
        await store.close()

    run(main())


def test_invalid_ids_are_rejected(tmp_path):
    async def main():
        store = await opened(tmp_path)
        for bad in ("", "a\x00b", 42, "x" * 600):
            with pytest.raises(InvalidArgumentError):
                store.put_entry(bad, 0, {})
            with pytest.raises(InvalidArgumentError):
                store.put_event(bad, 0, {})
            with pytest.raises(InvalidArgumentError):
                store.put_instance(instance(bad, 1))
            with pytest.raises(InvalidArgumentError):
                await store.get_instance(bad)
        with pytest.raises(InvalidArgumentError):
            store.put_entry("wf", -1, {})
        with pytest.raises(InvalidArgumentError):
            store.put_instance({"workflow_id": "wf"})  # no created_at
        with pytest.raises(InvalidArgumentError):
            store.put_idempotency("", "wf")
        assert store.commit().done()  # nothing was queued by any of these
        await store.close()

    run(main())


def test_prefix_isolation(tmp_path):
    async def main():
        store = await opened(tmp_path, "fast")
        for wid in ("wf-1", "wf-10", "wf-1a", "wf-"):
            for i in range(3):
                store.put_entry(wid, i, {"wid": wid, "i": i})
                store.put_event(wid, i, {"wid": wid, "i": i})
        await store.commit()
        for wid in ("wf-1", "wf-10", "wf-1a", "wf-"):
            journal = await store.load_journal(wid)
            assert [(p, e["wid"]) for p, e in journal] == [(i, wid) for i in range(3)]
            assert [e["wid"] for e in await store.load_events(wid)] == [wid] * 3
        await store.close()

    run(main())


def test_positions_sort_numerically(tmp_path):
    async def main():
        store = await opened(tmp_path, "fast")
        for pos in (300, 2, 256, 1, 70000):
            store.put_entry("wf", pos, {"p": pos})
        await store.commit()
        assert [p for p, _ in await store.load_journal("wf")] == [1, 2, 256, 300, 70000]
        await store.close()

    run(main())


def test_list_instances_newest_first_with_filters_and_limit(tmp_path):
    async def main():
        store = await opened(tmp_path, "fast")
        store.put_instance(instance("a", 1000, product="shop", status="completed"))
        store.put_instance(instance("b", 3000, product="shop", status="running"))
        store.put_instance(instance("c", 2000, product="bank", status="running", env="dev"))
        store.put_instance(instance("d", 4000, product="shop", status="failed", tag="refund"))
        store.put_instance(instance("e", 5000, product="shop", status="running", env="dev"))
        await store.commit()

        async def ids(product="shop", env="prod", **kw):
            page = await store.list_instances(product=product, env=env, **kw)
            return [r["workflow_id"] for r in page.records]

        assert await ids() == ["d", "b", "a"]
        assert await ids(limit=2) == ["d", "b"]
        assert await ids(status="running") == ["b"]
        assert await ids(env="dev") == ["e"]
        assert await ids(product="bank", env="dev") == ["c"]
        assert await ids(tag="refund") == ["d"]
        assert await ids(tag="order", status="running") == ["b"]
        assert await ids(product="nobody") == []

        # Re-putting an instance (a status change) does not duplicate it in the listing.
        store.put_instance(instance("b", 3000, product="shop", status="completed"))
        await store.commit()
        assert await ids() == ["d", "b", "a"]
        assert await ids(status="completed") == ["b", "a"]
        assert await ids(status="running") == []
        await store.close()

    run(main())


@pytest.mark.parametrize("durability", DURABILITIES)
def test_running_index_follows_status(tmp_path, durability):
    async def main():
        store = await opened(tmp_path, durability)
        store.put_instance(instance("a", 1, status="running"))
        store.put_instance(instance("b", 2, status="running"))
        store.put_instance(instance("c", 3, status="completed"))
        await store.commit()
        assert sorted(r["workflow_id"] for r in await store.running_instances()) == ["a", "b"]

        store.put_instance(instance("a", 1, status="completed"))
        store.put_instance(instance("c", 3, status="running"))
        await store.commit()
        assert sorted(r["workflow_id"] for r in await store.running_instances()) == ["b", "c"]

        # Within one group the last put wins.
        store.put_instance(instance("b", 2, status="failed"))
        store.put_instance(instance("b", 2, status="running"))
        store.put_instance(instance("c", 3, status="running"))
        store.put_instance(instance("c", 3, status="cancelled"))
        await store.commit()
        running = await store.running_instances()
        assert [r["workflow_id"] for r in running] == ["b"]
        assert running[0]["status"] == "running"
        await store.close()

    run(main())


# -- group commit ----------------------------------------------------------------------------


@pytest.mark.parametrize("durability", DURABILITIES)
def test_one_turn_is_one_transaction(tmp_path, durability):
    async def main():
        store = await opened(tmp_path, durability)
        assert store.commit().done()  # nothing queued: an already resolved future
        for i in range(100):
            store.put_event("wf", i, {"i": i})
        future = store.commit()
        assert not future.done()
        assert store.commit() is future  # same group
        await future
        assert store.stats.groups == 1 and store.stats.records == 100
        assert len(await store.load_events("wf")) == 100

        # Two turns, each awaited: two groups.
        for turn in range(2):
            store.put_entry("wf", turn, {"turn": turn})
            await store.commit()
        assert store.stats.groups == 3
        await store.close()

    run(main())


@pytest.mark.parametrize("durability", DURABILITIES)
def test_overwrite_within_a_group(tmp_path, durability):
    async def main():
        store = await opened(tmp_path, durability)
        store.put_entry("wf", 0, {"v": "first"})
        store.put_entry("wf", 0, {"v": "second"})
        store.put_instance(instance("wf", 5, status="running"))
        store.put_instance(instance("wf", 5, status="completed"))
        await store.commit()
        assert store.stats.records == 2  # one journal put, one instance put
        assert await store.load_journal("wf") == [(0, {"v": "second"})]
        assert (await store.get_instance("wf"))["status"] == "completed"
        await store.close()

    run(main())


# -- deferred journal entries ------------------------------------------------------------------


@pytest.mark.parametrize("durability", DURABILITIES)
def test_a_deferred_entry_replaced_before_its_group_commits_is_never_made(tmp_path, durability):
    async def main():
        store = await opened(tmp_path, durability)
        made = []

        def make(name):
            def make_entry():
                made.append(name)
                return {"v": name}
            return make_entry

        assert store.put_entry_deferred("wf", 0, make("deferred")) is None
        assert store.put_entry("wf", 0, {"v": "later"}) == encode({"v": "later"})
        store.put_entry_deferred("wf", 1, make("first"))
        store.put_entry_deferred("wf", 1, make("second"))  # a deferred one replaces a deferred one too
        store.put_entry("wf", 2, {"v": "earlier"})
        store.put_entry_deferred("wf", 2, make("deferred after a put"))  # ... and a put
        await store.commit()
        assert made == ["second", "deferred after a put"]  # each called once, when the group started
        assert await store.load_journal("wf") == [
            (0, {"v": "later"}), (1, {"v": "second"}), (2, {"v": "deferred after a put"})]
        assert store.stats.records == 3
        await store.close()

    run(main())


@pytest.mark.parametrize("durability", DURABILITIES)
def test_a_deferred_entry_not_replaced_is_made_once_when_its_group_commits(tmp_path, durability):
    async def main():
        store = await opened(tmp_path, durability)
        state = {"status": "queued"}
        calls = []

        def make_entry():
            calls.append(state["status"])
            return ("step", "s0", state["status"])  # a tuple: stored as an array

        store.put_entry_deferred("wf", 0, make_entry)
        state["status"] = "running"  # later in the same turn: the entry is made from live state
        assert calls == []  # nothing made at put time
        future = store.commit()
        await future
        assert calls == ["running"]
        assert await store.load_journal("wf") == [(0, ["step", "s0", "running"])]  # read back as a list

        store.put_entry("wf", 0, ("step", "s0", "completed"))  # a later group replaces what was written
        await store.commit()
        assert calls == ["running"]  # not made again
        assert await store.load_journal("wf") == [(0, ["step", "s0", "completed"])]
        await store.close()

    run(main())


def test_a_deferred_entry_that_fails_is_left_out_and_its_group_commits(tmp_path, caplog):
    async def main():
        store = await opened(tmp_path, "fast")

        def raises():
            raise RuntimeError("no entry")

        store.put_entry_deferred("wf", 0, raises)
        store.put_entry_deferred("wf", 1, lambda: {"bad": {1, 2}})  # does not encode
        store.put_entry_deferred("wf", 2, lambda: {"ok": 2})
        store.put_event("wf", 0, {"n": 0})
        await store.commit()
        assert await store.load_journal("wf") == [(2, {"ok": 2})]
        assert len(await store.load_events("wf")) == 1
        assert store.stats.records == 2 and store.stats.failed_groups == 0
        await store.close()

    run(main())
    assert caplog.text.count("could not encode a deferred journal entry") == 2


def test_entry_writer_binds_a_run_and_checks_its_id_once(tmp_path):
    async def main():
        store = await opened(tmp_path, "fast")
        writer = store.entry_writer("wf")
        assert isinstance(writer, EntryWriter)
        assert writer.put(0, {"v": 0}) == encode({"v": 0})
        assert writer.put_deferred(1, lambda: {"v": 1}) is None
        with pytest.raises(NotSerializableError):
            writer.put(2, {"bad": {1}})
        with pytest.raises(InvalidArgumentError, match="position"):
            writer.put(-1, {})
        with pytest.raises(InvalidArgumentError, match="position"):
            writer.put_deferred(-1, dict)
        with pytest.raises(InvalidArgumentError):
            store.entry_writer("bad\x00id")
        await store.commit()
        assert await store.load_journal("wf") == [(0, {"v": 0}), (1, {"v": 1})]
        await store.close()
        with pytest.raises(StorageError, match="closed"):
            writer.put(3, {})
        with pytest.raises(StorageError, match="closed"):
            writer.put_deferred(3, dict)

    run(main())


# -- statistics ---------------------------------------------------------------------------------


@pytest.mark.parametrize("durability", DURABILITIES)
def test_stats_count_groups_records_failures_and_growth(tmp_path, durability):
    async def main():
        store = await opened(tmp_path, durability, map_size=128 * 1024)  # the first group fits
        stats = store.stats
        assert isinstance(stats, StoreStats) and stats == StoreStats()  # all zero
        assert (stats.groups, stats.records, stats.failed_groups, stats.map_resizes) == (0, 0, 0, 0)

        store.put_instance(instance("wf", 1))  # one record; its two index entries do not count
        store.put_entry("wf", 0, {"v": 0})
        store.put_entry("wf", 0, {"v": 1})  # the same key twice in one group: one record
        store.put_entry_deferred("wf", 1, lambda: {"v": 2})
        store.put_event("wf", 0, {"n": 0})
        store.put_signal("wf", 0, {"name": "go"})
        store.put_idempotency("shop|prod|order|k", "wf")
        await store.commit()
        assert store.stats is stats  # one object, updated in place
        assert (stats.groups, stats.records, stats.failed_groups, stats.map_resizes) == (1, 6, 0, 0)

        real_env = store._env
        store._env = _FailingEnv(real_env, failures=1)
        store.put_event("wf", 1, {"n": 1})
        with pytest.raises(StorageError):
            await store.commit()
        store._env = real_env
        assert (stats.groups, stats.records, stats.failed_groups) == (1, 6, 1)  # a failed group counts no record

        for i in range(100):
            store.put_event("wf", 100 + i, {"blob": b"x" * 2000})
        await store.commit()
        assert stats.groups == 2 and stats.records == 106 and stats.map_resizes >= 1
        await store.close()
        assert store.stats is stats

    run(main())


@pytest.mark.parametrize("durability", DURABILITIES)
def test_commit_order_and_pipelining(tmp_path, durability):
    async def main():
        store = await opened(tmp_path, durability)
        store.put_event("wf", 0, {"n": 0})
        first = store.commit()
        await asyncio.sleep(0)  # the first group starts
        store.put_event("wf", 1, {"n": 1})
        second = store.commit()
        assert second is not first
        order = []
        first.add_done_callback(lambda f: order.append(1))
        second.add_done_callback(lambda f: order.append(2))
        await second
        assert first.done() and first.exception() is None
        await asyncio.sleep(0)
        assert order == [1, 2]
        assert [e["n"] for e in await store.load_events("wf")] == [0, 1]

        # While a durable group is in flight, puts over several turns join the next group.
        store.put_event("wf", 2, {"n": 2})
        in_flight = store.commit()
        await asyncio.sleep(0)
        later = []
        for seq in range(3, 6):
            store.put_event("wf", seq, {"n": seq})
            later.append(store.commit())
            await asyncio.sleep(0)
        await later[-1]
        assert in_flight.done()
        assert len(await store.load_events("wf")) == 6
        await store.close()

    run(main())


def test_group_futures_survive_a_cancelled_waiter(tmp_path):
    async def main():
        # On the writer thread the group is still in flight when the waiter is cancelled.
        store = await opened(tmp_path, "durable", commit_in_thread=True)
        store.put_event("wf", 0, {"n": 0})
        group = store.commit()
        async def wait_for_group():
            await store.commit()

        waiter = asyncio.ensure_future(wait_for_group())
        await asyncio.sleep(0)
        waiter.cancel()
        assert group.cancel() is False  # shared by every caller: not cancellable
        await group  # still resolves for everyone else
        await asyncio.sleep(0)
        assert waiter.cancelled()  # the cancelled waiter ends once the group is done
        assert len(await store.load_events("wf")) == 1
        await store.close()

    run(main())


@pytest.mark.parametrize("durability", DURABILITIES)
def test_not_serialisable_queues_nothing(tmp_path, durability):
    async def main():
        store = await opened(tmp_path, durability)
        store.put_entry("wf", 0, {"ok": True})
        with pytest.raises(NotSerializableError, match="value of type set is not msgpack-serialisable"):
            store.put_entry("wf", 1, {"bad": {1, 2}})
        with pytest.raises(NotSerializableError, match="type int"):
            store.put_event("wf", 0, {"big": 2 ** 70})
        with pytest.raises(NotSerializableError, match="type PosixPath"):
            store.put_instance(instance("wf", 1, where=Path("/")))
        await store.commit()
        assert await store.load_journal("wf") == [(0, {"ok": True})]
        assert await store.load_events("wf") == []
        assert await store.get_instance("wf") is None
        assert store.stats.records == 1
        await store.close()

    run(main())


class _FailingEnv:
    """An environment whose next write transactions fail."""

    def __init__(self, env, failures):
        self._env = env
        self.failures = failures

    def begin(self, write=False, **kwargs):
        if write and self.failures:
            self.failures -= 1
            raise lmdb.DiskError("injected disk failure")
        return self._env.begin(write=write, **kwargs)

    def __getattr__(self, name):
        return getattr(self._env, name)


@pytest.mark.parametrize("durability", DURABILITIES)
def test_failing_commit_fails_its_group_and_store_stays_usable(tmp_path, durability):
    async def main():
        loop = asyncio.get_running_loop()
        reported = []
        loop.set_exception_handler(lambda loop, context: reported.append(context))
        store = await opened(tmp_path, durability)
        real_env = store._env
        store._env = _FailingEnv(real_env, failures=2)

        store.put_event("wf", 0, {"n": 0})
        with pytest.raises(StorageError, match="injected disk failure") as info:
            await store.commit()
        assert isinstance(info.value.__cause__, lmdb.DiskError)

        store.put_event("wf", 1, {"n": 1})  # fails too, and nobody awaits it
        unawaited = store.commit()
        await asyncio.wait([unawaited])
        del unawaited

        store.put_event("wf", 2, {"n": 2})
        await store.commit()
        store._env = real_env
        assert [e["n"] for e in await store.load_events("wf")] == [2]
        assert store.stats.failed_groups == 2
        await store.close()
        gc.collect()
        assert reported == []  # no "Future exception was never retrieved"

    run(main())


# -- map growth ---------------------------------------------------------------------------------


@pytest.mark.parametrize("durability", DURABILITIES)
def test_map_grows_when_full(tmp_path, durability):
    async def main():
        store = await opened(tmp_path, durability, map_size=64 * 1024)
        blob = os.urandom(2000)
        for turn in range(10):
            for i in range(200):
                store.put_event(f"wf-{turn}", i, {"blob": blob, "i": i})
            if turn % 3 == 0:
                await store.commit()
                # Reads between growths (reader slots survive the remap).
                assert len(await store.load_events(f"wf-{turn}")) == 200
        await store.commit()  # about 4 MB in all
        assert store.stats.map_resizes >= 5
        for turn in range(10):
            events = await store.load_events(f"wf-{turn}")
            assert [e["i"] for e in events] == list(range(200))
            assert all(e["blob"] == blob for e in events)
        await store.close()

        again = await opened(tmp_path, durability, map_size=64 * 1024)  # keeps the grown map
        assert len(await again.load_events("wf-9")) == 200
        assert again._map_size >= 4 * 1024 * 1024
        await again.close()

    run(main())


# -- the writer lock and crashes -----------------------------------------------------------------


LOCK_PROBE = textwrap.dedent("""
    import asyncio, sys
    from sagaloop.errors import StoreLockedError
    from sagaloop.storage import LmdbStore

    async def main():
        store = LmdbStore(sys.argv[1])
        try:
            await store.open()
        except StoreLockedError as exc:
            print("locked", exc.pid, exc)
            return
        print("opened", (await store.get_instance("wf-1") or {}).get("status"))
        await store.close()

    asyncio.run(main())
""")


def probe(path) -> str:
    done = subprocess.run([sys.executable, "-c", LOCK_PROBE, str(path)], env=child_env(unbuffered=False),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.slow  # real processes, SIGKILLed
def test_writer_lock_in_another_process(tmp_path):
    async def main():
        store = await opened(tmp_path / "data")
        store.put_instance(instance("wf-1", 1, status="completed"))
        await store.commit()
        answer = probe(tmp_path / "data")
        assert answer.startswith(f"locked {os.getpid()} ")
        assert f"held for writing by process {os.getpid()}" in answer
        await store.close()
        assert probe(tmp_path / "data") == "opened completed"

    run(main())


def test_second_store_in_the_same_process_is_refused(tmp_path):
    async def main():
        store = await opened(tmp_path)
        with pytest.raises(StoreLockedError) as info:
            await opened(tmp_path)
        assert info.value.pid == os.getpid()
        await store.close()
        again = await opened(tmp_path)  # the refused open left nothing behind
        await again.close()

    run(main())


def test_directory_lock_names_the_holder(tmp_path):
    with DirectoryLock(tmp_path / "new" / "dir") as lock:
        assert (tmp_path / "new" / "dir" / "writer.lock").read_text() == str(os.getpid())
        other = DirectoryLock(tmp_path / "new" / "dir")
        with pytest.raises(StoreLockedError, match=f"process {os.getpid()}"):
            other.acquire()
        assert lock.held and not other.held
    other.acquire()
    other.release()
    other.release()  # idempotent


CRASH_WRITER = textwrap.dedent("""
    import asyncio, sys, time
    from sagaloop.storage import LmdbStore

    async def main():
        store = LmdbStore(sys.argv[1], durability=sys.argv[2])
        await store.open()
        store.put_instance({"workflow_id": "wf-1", "status": "running", "created_at": 1})
        for i in range(500):
            store.put_entry("wf-1", i, {"i": i})
        store.put_idempotency("scope", "wf-1")
        await store.commit()
        store.put_event("wf-1", 0, {"type": "committed"})
        await store.commit()
        print("committed", flush=True)
        store.put_event("wf-1", 1, {"type": "queued, maybe lost"})
        time.sleep(60)  # blocks the loop: the last put never commits

    asyncio.run(main())
""")


@pytest.mark.slow  # real processes, SIGKILLed
@pytest.mark.parametrize("durability", DURABILITIES)
def test_sigkill_keeps_committed_data_and_releases_the_lock(tmp_path, durability):
    child = subprocess.Popen([sys.executable, "-c", CRASH_WRITER, str(tmp_path), durability],
                             env=child_env(unbuffered=False), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        line = child.stdout.readline()
        assert line.strip() == "committed", child.stderr.read()
        assert probe(tmp_path).startswith(f"locked {child.pid} ")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL

    async def main():
        store = await opened(tmp_path, durability)  # the dead writer's lock is gone
        assert (await store.get_instance("wf-1"))["status"] == "running"
        assert [p for p, _ in await store.load_journal("wf-1")] == list(range(500))
        assert (await store.load_events("wf-1"))[0] == {"type": "committed"}
        assert await store.get_idempotency("scope") == "wf-1"
        assert [r["workflow_id"] for r in await store.running_instances()] == ["wf-1"]
        await store.close()

    run(main())


def test_concurrent_close_and_commit_before_open(tmp_path):
    async def main():
        store = LmdbStore(tmp_path)
        with pytest.raises(StorageError):
            store.commit()
        with pytest.raises(StorageError):
            store.put_event("wf", 0, {})
        await store.open()
        for i in range(50):
            store.put_event("wf", i, {"i": i})
        await asyncio.gather(store.close(), store.close(), store.close())
        assert store.stats.records == 50
        assert store.commit().done()

    run(main())


def test_job_records_put_replace_remove_and_survive_a_reopen(tmp_path):
    async def main():
        store = await opened(tmp_path, "fast")
        store.put_job("job-b", {"job_id": "job-b", "n": 1})
        store.put_job("job-a", {"job_id": "job-a", "n": 1})
        store.put_job("job-a", {"job_id": "job-a", "n": 2})  # replaced in the same group
        store.put_job("job-c", {"job_id": "job-c"})
        await store.commit()
        store.put_job("job-c", None)  # removed
        with pytest.raises(NotSerializableError):
            store.put_job("job-d", {"job_id": "job-d", "x": object()})
        await store.close()
        again = await opened(tmp_path, "fast")
        assert await again.load_jobs() == [{"job_id": "job-a", "n": 2}, {"job_id": "job-b", "n": 1}]
        await again.close()

    run(main())
