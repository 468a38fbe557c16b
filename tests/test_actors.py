"""Unit tests for sagaloop.actors, the workflow-agnostic actor kernel.

Each test is a plain function driving its own event loop with asyncio.run,
so no async test plugin is needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from sagaloop.actors import (
    Actor,
    ActorDeadError,
    ActorRef,
    ActorSystem,
    Mailbox,
    MailboxClosed,
)


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(main())


class Recorder(Actor):
    """Records every hook call in order; replies to ask with the message."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    async def on_start(self) -> None:
        self.events.append("start")

    async def receive(self, message: Any) -> Any:
        self.events.append(("msg", message))
        if isinstance(message, BaseException):
            raise message
        return message

    async def on_failure(self, error: BaseException) -> None:
        self.events.append(("failure", error))

    async def on_stop(self) -> None:
        self.events.append("stop")

    async def on_child_exit(self, child: ActorRef, error: BaseException | None) -> None:
        self.events.append(("child_exit", child.id, error))


class Gate(Actor):
    """Blocks in receive("block") until released, so messages pile up behind it; "crash" raises."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.stopped = False

    async def receive(self, message: Any) -> Any:
        if message == "block":
            self.entered.set()
            await self.release.wait()
        elif message == "crash":
            raise RuntimeError("crash")
        return message

    async def on_stop(self) -> None:
        self.stopped = True


def crashes() -> tuple[list[tuple[str, BaseException]], Callable[[ActorRef, BaseException], None]]:
    seen: list[tuple[str, BaseException]] = []
    return seen, lambda ref, error: seen.append((ref.id, error))


# --- mailbox -----------------------------------------------------------------


def test_mailbox_is_fifo_and_delivers_queued_items_after_close() -> None:
    async def main() -> None:
        box: Mailbox[int] = Mailbox()
        got: list[int] = []

        async def consume() -> None:
            while box or await box.wait_ready():
                got.append(box.get_nowait())

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0)  # parks on the waiter
        for i in range(5):
            box.put(i)
        await asyncio.sleep(0)
        box.put(5)
        box.close()
        with pytest.raises(MailboxClosed):
            box.put(6)
        await asyncio.wait_for(consumer, 1)
        assert got == [0, 1, 2, 3, 4, 5]
        assert box.closed and len(box) == 0

    run(main)


def test_mailbox_has_one_consumer_and_drain_empties_it() -> None:
    async def main() -> None:
        box: Mailbox[str] = Mailbox()
        first = asyncio.create_task(box.wait_ready())
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="one consumer"):
            await box.wait_ready()
        box.put("a")
        box.put("b")
        assert await first is True
        assert box.drain() == ["a", "b"]
        with pytest.raises(IndexError):
            box.get_nowait()

    run(main)


# --- messaging -----------------------------------------------------------------


def test_one_task_per_actor_drains_the_mailbox() -> None:
    class TaskSpy(Actor):
        def __init__(self) -> None:
            self.tasks: set[asyncio.Task[Any] | None] = set()

        async def receive(self, message: Any) -> Any:
            self.tasks.add(asyncio.current_task())
            await asyncio.sleep(0)
            return len(asyncio.all_tasks())

    async def main() -> None:
        system = ActorSystem()
        spies = [TaskSpy() for _ in range(3)]
        refs = [system.spawn(spy) for spy in spies]
        for ref in refs:
            for i in range(100):
                ref.tell(i)
        # Asked one by one so the only other task is main: with 300 messages
        # queued there is still exactly one task per actor.
        counts = [await ref.ask("count") for ref in refs]
        assert counts == [4, 4, 4]
        for spy, ref in zip(spies, refs):
            assert spy.tasks == {ref._task}
        await system.shutdown()

    run(main)


def test_messages_are_handled_one_at_a_time_in_arrival_order() -> None:
    class Slow(Actor):
        def __init__(self) -> None:
            self.log: list[tuple[str, int]] = []
            self.busy = False

        async def receive(self, message: int) -> int:
            assert not self.busy, "two messages overlapped"
            self.busy = True
            self.log.append(("in", message))
            for _ in range(message % 3):
                await asyncio.sleep(0)
            self.log.append(("out", message))
            self.busy = False
            return message

    async def main() -> None:
        system = ActorSystem()
        actor = Slow()
        ref = system.spawn(actor)
        for i in range(50):
            ref.tell(i)
        asks = [asyncio.create_task(ref.ask(i)) for i in range(50, 60)]
        assert await asyncio.gather(*asks) == list(range(50, 60))
        expected = [(phase, i) for i in range(60) for phase in ("in", "out")]
        assert actor.log == expected
        await system.shutdown()

    run(main)


def test_ask_error_goes_to_the_caller_and_the_actor_lives_on() -> None:
    async def main() -> None:
        seen, on_crash = crashes()
        system = ActorSystem(on_crash=on_crash)
        actor = Recorder()
        ref = system.spawn(actor)
        with pytest.raises(ValueError, match="bad"):
            await ref.ask(ValueError("bad"))
        # Even a BaseException is the asker's to handle, not a crash.
        with pytest.raises(KeyboardInterrupt):
            await ref.ask(KeyboardInterrupt())
        assert await ref.ask("still here") == "still here"
        assert ref.is_alive and seen == []
        assert not any(e[0] == "failure" for e in actor.events if isinstance(e, tuple))
        await system.shutdown()

    run(main)


def test_ask_timeout_raises_timeout_error_and_leaves_the_actor_alive() -> None:
    async def main() -> None:
        system = ActorSystem()
        gate = Gate()
        ref = system.spawn(gate)
        with pytest.raises(TimeoutError):
            await ref.ask("block", timeout=0.01)
        gate.release.set()
        assert await ref.ask("after", timeout=1) == "after"
        await system.shutdown()

    run(main)


def test_an_actor_asking_itself_fails_instead_of_hanging() -> None:
    class Narcissus(Actor):
        async def receive(self, message: Any) -> Any:
            return await self.ref.ask("me")

    async def main() -> None:
        system = ActorSystem()
        ref = system.spawn(Narcissus())
        with pytest.raises(RuntimeError, match="cannot ask itself"):
            await ref.ask("go", timeout=1)
        await system.shutdown()

    run(main)


def test_default_receive_is_not_implemented() -> None:
    async def main() -> None:
        system = ActorSystem()
        ref = system.spawn(Actor())
        with pytest.raises(NotImplementedError):
            await ref.ask("anything")
        await system.shutdown()

    run(main)


# --- crashes -------------------------------------------------------------------


def test_tell_failure_is_a_crash_isolated_from_other_actors() -> None:
    async def main() -> None:
        seen, on_crash = crashes()
        system = ActorSystem(on_crash=on_crash)
        victim, bystander = Recorder(), Recorder()
        victim_ref = system.spawn(victim, id="victim")
        bystander_ref = system.spawn(bystander, id="bystander")
        error = RuntimeError("boom")
        victim_ref.tell(error)
        assert await victim_ref.wait_stopped() is error
        assert victim.events == ["start", ("msg", error), ("failure", error), "stop"]
        assert seen == [("victim", error)]
        assert not victim_ref.is_alive and system.get("victim") is None
        with pytest.raises(ActorDeadError, match="victim"):
            victim_ref.tell("late")
        assert await bystander_ref.ask("ping") == "ping"
        await system.shutdown()

    run(main)


def test_base_exception_from_receive_is_a_crash_not_a_process_exit() -> None:
    async def main() -> None:
        seen, on_crash = crashes()
        system = ActorSystem(on_crash=on_crash)
        # A CancelledError the actor's own code raises is a failure too; only
        # cancelling the actor's task is a clean stop.
        errors = [KeyboardInterrupt(), SystemExit(3), asyncio.CancelledError()]
        for i, exc in enumerate(errors):
            ref = system.spawn(Recorder(), id=f"a{i}")
            ref.tell(exc)
            assert await ref.wait_stopped() is exc
        assert seen == [("a0", errors[0]), ("a1", errors[1]), ("a2", errors[2])]
        assert len(system) == 0

    run(main)


def test_on_start_failure_is_a_crash_and_fails_queued_asks() -> None:
    class BadStart(Recorder):
        async def on_start(self) -> None:
            await super().on_start()
            raise LookupError("no config")

    async def main() -> None:
        seen, on_crash = crashes()
        system = ActorSystem(on_crash=on_crash)
        actor = BadStart()
        ref = system.spawn(actor, id="bad")
        pending = asyncio.create_task(ref.ask("queued before start"))
        with pytest.raises(ActorDeadError, match="bad"):
            await pending
        error = await ref.wait_stopped()
        assert isinstance(error, LookupError)
        assert actor.events == ["start", ("failure", error), "stop"]
        assert seen == [("bad", error)]

    run(main)


def test_a_crash_fails_every_queued_ask() -> None:
    async def main() -> None:
        system = ActorSystem(on_crash=lambda ref, error: None)
        gate = Gate()
        ref = system.spawn(gate)
        ref.tell("block")
        await gate.entered.wait()
        ref.tell("crash")
        asks = [asyncio.create_task(ref.ask(i)) for i in range(3)]
        await asyncio.sleep(0)  # the asks are queued behind the crash
        gate.release.set()
        results = await asyncio.gather(*asks, return_exceptions=True)
        assert [type(r) for r in results] == [ActorDeadError] * 3
        assert isinstance(await ref.wait_stopped(), RuntimeError)

    run(main)


def test_failing_hooks_during_teardown_are_logged_and_do_not_skip_on_stop(caplog: pytest.LogCaptureFixture) -> None:
    class Clumsy(Recorder):
        async def on_failure(self, error: BaseException) -> None:
            raise RuntimeError("on_failure broke")

    async def main() -> None:
        system = ActorSystem(on_crash=lambda ref, error: None)
        actor = Clumsy()
        ref = system.spawn(actor)
        ref.tell(ValueError("first"))
        assert isinstance(await ref.wait_stopped(), ValueError)
        assert actor.events[-1] == "stop"

    run(main)
    assert "on_failure failed" in caplog.text


def test_default_on_crash_logs(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        system = ActorSystem()
        ref = system.spawn(Recorder(), id="loud")
        ref.tell(ValueError("logged"))
        await ref.wait_stopped()

    run(main)
    assert "'loud' crashed" in caplog.text and "logged" in caplog.text


# --- stopping ------------------------------------------------------------------


def test_ref_stop_handles_queued_messages_first_then_refuses() -> None:
    async def main() -> None:
        system = ActorSystem()
        gate = Gate()
        ref = system.spawn(gate, id="g")
        ref.tell("block")
        await gate.entered.wait()
        queued = [asyncio.create_task(ref.ask(i)) for i in range(3)]
        await asyncio.sleep(0)
        ref.stop()
        assert not ref.is_alive
        with pytest.raises(ActorDeadError, match="'g'"):
            await ref.ask("too late")
        gate.release.set()
        assert await asyncio.gather(*queued) == [0, 1, 2]
        assert await ref.wait_stopped() is None
        assert gate.stopped and system.get("g") is None and len(system) == 0

    run(main)


def test_actor_stop_from_inside_drops_the_rest_and_fails_queued_asks() -> None:
    class Quitter(Recorder):
        async def receive(self, message: Any) -> Any:
            await super().receive(message)
            if message == "quit":
                self.stop()
            await asyncio.sleep(0)
            return message

    async def main() -> None:
        system = ActorSystem()
        actor = Quitter()
        ref = system.spawn(actor)
        quit_reply = asyncio.create_task(ref.ask("quit"))
        later = asyncio.create_task(ref.ask("later"))
        await asyncio.sleep(0)  # both asks are queued now
        ref.tell("dropped")
        assert await quit_reply == "quit"  # the current message still gets its reply
        with pytest.raises(ActorDeadError):
            await later
        assert await ref.wait_stopped() is None
        assert actor.events == ["start", ("msg", "quit"), "stop"]

    run(main)


def test_stop_from_on_start_stops_before_any_message() -> None:
    class Shy(Recorder):
        async def on_start(self) -> None:
            await super().on_start()
            self.stop()

    async def main() -> None:
        system = ActorSystem()
        actor = Shy()
        ref = system.spawn(actor)
        ref.tell("queued before start")
        assert await ref.wait_stopped() is None
        assert actor.events == ["start", "stop"]
        with pytest.raises(ActorDeadError):
            ref.tell("after")

    run(main)


def test_system_stop_waits_for_on_stop_and_frees_the_id() -> None:
    class SlowStop(Recorder):
        async def on_stop(self) -> None:
            await asyncio.sleep(0.01)
            await super().on_stop()

    async def main() -> None:
        system = ActorSystem()
        first = SlowStop()
        ref = system.spawn(first, id="worker")
        with pytest.raises(ValueError, match="'worker'"):
            system.spawn(Recorder(), id="worker")
        assert system.get("worker") is ref
        await system.stop(ref)
        assert first.events[-1] == "stop"
        assert system.get("worker") is None
        again = system.spawn(Recorder(), id="worker")
        assert again is not ref and system.get("worker") is again
        assert await again.ask(1) == 1
        await system.shutdown()

    run(main)


def test_system_stop_times_out_on_a_busy_actor() -> None:
    async def main() -> None:
        system = ActorSystem()
        gate = Gate()
        ref = system.spawn(gate)
        ref.tell("block")
        await gate.entered.wait()
        with pytest.raises(TimeoutError):
            await system.stop(ref, timeout=0.01)
        gate.release.set()
        assert await ref.wait_stopped() is None

    run(main)


def test_cancelling_wait_stopped_does_not_cancel_the_actor() -> None:
    async def main() -> None:
        system = ActorSystem()
        ref = system.spawn(Recorder())
        waiter = asyncio.create_task(ref.wait_stopped())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert await ref.ask("alive") == "alive"
        await system.shutdown()

    run(main)


# --- lazy actors ---------------------------------------------------------------------

def test_a_lazy_actor_gets_its_task_with_its_first_message_and_on_start_runs_first() -> None:
    async def main() -> None:
        system = ActorSystem()
        actor = Recorder()
        ref = system.spawn(actor, lazy=True)
        await asyncio.sleep(0)
        assert ref._task is None and actor.events == [] and ref.is_alive
        assert system.get(ref.id) is ref
        assert await ref.ask("hi") == "hi"
        assert ref._task is not None and actor.events == ["start", ("msg", "hi")]
        await system.stop(ref)
        assert actor.events[-1] == "stop" and system.get(ref.id) is None

    run(main)


def test_a_lazy_actor_that_stops_itself_unasked_ends_at_once_without_a_task() -> None:
    class Parent(Recorder):
        pass

    async def main() -> None:
        system = ActorSystem()
        parent_actor = Parent()
        parent = system.spawn(parent_actor)
        actor = Recorder()
        ref = system.spawn(actor, parent=parent, lazy=True)
        actor.stop()
        assert ref._task is None and not ref.is_alive and actor.events == []  # no hooks: it never started
        assert system.get(ref.id) is None and await ref.wait_stopped() is None
        with pytest.raises(ActorDeadError):
            await ref.ask("late")
        await asyncio.sleep(0)
        assert ("child_exit", ref.id, None) in parent_actor.events  # supervision still hears of it
        await system.shutdown()

    run(main)


def test_stopping_a_lazy_actor_from_outside_runs_its_hooks_and_shutdown_reaches_it() -> None:
    async def main() -> None:
        system = ActorSystem()
        stopped, kept = Recorder(), Recorder()
        ref = system.spawn(stopped, lazy=True)
        system.spawn(kept, lazy=True)
        await system.stop(ref)
        assert stopped.events == ["start", "stop"]
        await system.shutdown()
        assert kept.events == ["start", "stop"] and len(system) == 0

    run(main)


# --- registry and spawn ----------------------------------------------------------


def test_spawn_rules() -> None:
    with pytest.raises(RuntimeError):
        ActorSystem().spawn(Recorder())  # no running loop

    async def main() -> None:
        system = ActorSystem()
        actor = Recorder()
        ref = system.spawn(actor)
        assert actor.ref is ref and ref.id.startswith("Recorder-")
        with pytest.raises(ValueError, match="already spawned"):
            system.spawn(actor)
        taken = system.spawn(Recorder(), id="Recorder-2")  # a generated id must skip it
        assert system.spawn(Recorder()).id != taken.id
        assert len(system) == 3
        await system.stop(ref)
        with pytest.raises(ActorDeadError):
            system.spawn(Recorder(), parent=ref)

    run(main)


def test_spawn_and_stop_ten_thousand_actors_leaves_nothing_behind() -> None:
    async def main() -> None:
        system = ActorSystem()
        refs = [system.spawn(Recorder()) for _ in range(10_000)]
        assert len(system) == 10_000
        for ref in refs:
            ref.tell("hi")
            ref.stop()
        results = await asyncio.gather(*(ref.wait_stopped() for ref in refs))
        assert results == [None] * 10_000
        assert len(system) == 0
        assert asyncio.all_tasks() == {asyncio.current_task()}

    run(main)


# --- supervision -------------------------------------------------------------------


def test_parent_is_told_when_children_exit_cleanly_or_crash() -> None:
    async def main() -> None:
        seen, on_crash = crashes()
        system = ActorSystem(on_crash=on_crash)
        parent = Recorder()
        parent_ref = system.spawn(parent, id="parent")
        calm = system.spawn(Recorder(), id="calm", parent=parent_ref)
        wild = system.spawn(Recorder(), id="wild", parent=parent_ref)
        assert parent.children == [calm, wild] and calm.parent is parent_ref
        await system.stop(calm)
        error = ValueError("child boom")
        wild.tell(error)
        await wild.wait_stopped()
        await parent_ref.ask("sync")  # notices are messages: after this, both are handled
        assert ("child_exit", "calm", None) in parent.events
        assert ("child_exit", "wild", error) in parent.events
        assert parent.children == []
        assert seen == []  # supervised crashes go to the parent, not on_crash
        await system.shutdown()

    run(main)


def test_on_child_exit_runs_in_order_with_other_messages() -> None:
    async def main() -> None:
        system = ActorSystem()
        gate_parent = Recorder()
        parent_ref = system.spawn(gate_parent)
        child = system.spawn(Recorder(), parent=parent_ref)
        parent_ref.tell("before")
        await system.stop(child)
        parent_ref.tell("after")
        await parent_ref.ask("sync")
        events = gate_parent.events
        assert events.index(("msg", "before")) < events.index(("child_exit", child.id, None))
        assert events.index(("child_exit", child.id, None)) < events.index(("msg", "after"))
        await system.shutdown()

    run(main)


def test_failing_on_child_exit_escalates_to_the_grandparent() -> None:
    class Strict(Recorder):
        async def on_child_exit(self, child: ActorRef, error: BaseException | None) -> None:
            if error is not None:
                raise RuntimeError(f"{child.id} failed") from error

    async def main() -> None:
        system = ActorSystem()
        grand = Recorder()
        grand_ref = system.spawn(grand, id="grand")
        strict_ref = system.spawn(Strict(), id="strict", parent=grand_ref)
        leaf = system.spawn(Recorder(), id="leaf", parent=strict_ref)
        leaf.tell(ValueError("leaf boom"))
        escalated = await strict_ref.wait_stopped()
        assert isinstance(escalated, RuntimeError) and isinstance(escalated.__cause__, ValueError)
        await grand_ref.ask("sync")
        assert ("child_exit", "strict", escalated) in grand.events
        await system.shutdown()

    run(main)


def test_children_outlive_a_stopped_parent_and_exit_quietly() -> None:
    async def main() -> None:
        seen, on_crash = crashes()
        system = ActorSystem(on_crash=on_crash)
        parent = Recorder()
        parent_ref = system.spawn(parent)
        child = system.spawn(Recorder(), parent=parent_ref)
        await system.stop(parent_ref)
        assert child.is_alive and await child.ask("orphan") == "orphan"
        await system.stop(child)  # the dead parent is simply not notified
        assert not any(isinstance(e, tuple) and e[0] == "child_exit" for e in parent.events)
        assert len(system) == 0 and seen == []

    run(main)


# --- shutdown --------------------------------------------------------------------


def test_shutdown_stops_everything_and_cancels_stragglers_cleanly() -> None:
    async def main() -> None:
        seen, on_crash = crashes()
        system = ActorSystem(on_crash=on_crash)
        parent = Recorder()
        parent_ref = system.spawn(parent)
        child = Recorder()
        system.spawn(child, parent=parent_ref)
        stuck = Gate()
        stuck_ref = system.spawn(stuck)
        stuck_ref.tell("block")
        await stuck.entered.wait()
        waiting = asyncio.create_task(stuck_ref.ask("never answered"))
        await asyncio.sleep(0)
        await system.shutdown(timeout=0.02)
        assert len(system) == 0
        assert parent.events[-1] == "stop" and child.events[-1] == "stop"
        assert stuck.stopped  # on_stop ran despite the cancel
        with pytest.raises(ActorDeadError):
            await waiting
        assert await stuck_ref.wait_stopped() is None  # a cancel is not a crash
        assert seen == []
        assert asyncio.all_tasks() == {asyncio.current_task()}
        with pytest.raises(RuntimeError, match="shut down"):
            system.spawn(Recorder())

    run(main)


def test_shutdown_reaps_actors_cancelled_before_they_ever_ran() -> None:
    async def main() -> None:
        system = ActorSystem()
        actor = Recorder()
        ref = system.spawn(actor)
        pending = asyncio.create_task(ref.ask("x"))
        await system.shutdown(timeout=0)
        assert len(system) == 0 and not ref.is_alive
        assert await ref.wait_stopped() is None
        with pytest.raises(ActorDeadError):
            await pending

    run(main)


def test_kernel_runs_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        system = ActorSystem(on_crash=lambda ref, error: None)
        ref = system.spawn(Recorder())
        assert await ref.ask("uv") == "uv"
        with pytest.raises(ValueError):
            await ref.ask(ValueError("x"))
        ref.tell(ValueError("crash"))
        assert isinstance(await ref.wait_stopped(), ValueError)
        await system.shutdown()

    uvloop.run(main())
