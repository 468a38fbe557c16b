"""The soak's worker program: a seeded mixed load on one data directory, killed at random and restarted.

    python tests/soak/soak_worker.py DATADIR SIDELOG --seed S --quota Q [--final]
                                     [--durability fast|durable] [--inflight N] [--start-every MS]
                                     [--final-timeout S]

Each start (a *life*) opens ``sagaloop.Engine(DATADIR)``, defines one workflow
per rollback strategy (all four run the same interpreter of a spec, see
``soak_plan``), which resumes what was in flight, and prints ``READY``. Then it
starts workflows ``0 .. Q-1`` that no earlier life started (one every
``--start-every`` ms, at most ``--inflight`` running at once), and for each
started workflow it runs:

* a watcher that logs ``ended`` once ``result()`` gives the end;
* the workflow's signal sender (``signals`` specs): ``signal()`` calls spaced by
  the spec's gaps (some back to back, some a turn or two later, while the
  instance is between two waits); a signal ``sending`` but never ``accepted``
  in a killed life is looked up in the history and sent again if absent;
* its update sender: ``update(update_id=...)`` then a ``query``; an update in
  doubt after a kill is sent again with the same ``update_id``;
* its canceller (``cancel`` and ``parent-cancel`` specs): ``cancel()`` once the
  workflow (or its child) has reached its blocking point in this life;
* a watchdog that logs ``stuck_seen`` when an instance waits for a signal
  while a signal it accepted stays unconsumed for seconds.

Every side effect goes to SIDELOG first (``soak_sidelog``). Without ``--final``
the worker runs until it is killed (it exits with 3 after ``--max-life`` s as a
safety net); with ``--final`` it waits (at most ``--final-timeout`` s) for every
started workflow and child to end, closes the engine and prints ``FINAL <json>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable

_HERE = Path(__file__).resolve().parent
for _path in (str(_HERE.parent.parent), str(_HERE)):  # this checkout's sagaloop, then the soak modules
    if _path not in sys.path:
        sys.path.insert(0, _path)

import sagaloop  # noqa: E402
from soak_plan import (  # noqa: E402
    BLOCK_STEP_S,
    ENV,
    NEVER,
    PRODUCT,
    QUERY,
    SIGNAL,
    STRATEGIES,
    UPDATE,
    child_specs,
    label,
    make_spec,
    tag_for,
    workflow_id,
)
from soak_sidelog import SideLog  # noqa: E402

CALL_TIMEOUT_S = 10.0   # every engine call the worker makes is bounded by this
STUCK_AFTER_S = 1.5     # a wait that ignores an accepted signal this long is reported
WATCHDOG_EVERY_S = 0.5


def marker(text: str) -> None:
    print(text, flush=True)


async def bounded(awaitable: Awaitable[Any], timeout: float = CALL_TIMEOUT_S) -> Any:
    async with asyncio.timeout(timeout):
        return await awaitable


class Worker:
    """One life of the worker: the definitions, the starter, and the per-workflow tasks."""

    def __init__(self, engine: sagaloop.Engine, side: SideLog, args: argparse.Namespace) -> None:
        self.engine, self.side, self.args = engine, side, args
        self.api = engine.workflows
        self.specs: dict[str, dict] = {}
        self.started: list[str] = []
        self.ended: dict[str, str] = {}
        self.tasks: set[asyncio.Task] = set()       # per-workflow tasks
        self._all_tasks: set[asyncio.Task] = set()  # and the watchdog
        self._suspects: dict[tuple, float] = {}
        self._reported: set[tuple] = set()

    # -- definitions: one interpreter of a spec's ops --------------------------------------------------

    def define(self) -> None:
        for strategy in STRATEGIES:
            self.api.define(product=PRODUCT, tag=tag_for(strategy), handler=self._saga,
                           options={"rollback_strategy": strategy},
                           queries={QUERY: {"handler": _progress}},
                           updates={UPDATE: {"handler": _bump}})

    async def _saga(self, ctx: sagaloop.WorkflowContext) -> dict:
        """The handler of every definition: run the spec's ops (its input), logging what it saw."""
        spec, wf, side = ctx.input, ctx.workflow_id, self.side
        for op in spec["ops"]:
            kind = op["op"]
            if kind in ("step", "retry_step", "fail_step", "block_step"):
                await self._step(ctx, wf, op)
            elif kind == "checkpoint":
                await ctx.checkpoint(op["name"], {"wf": wf})
            elif kind == "sleep":
                await ctx.sleep(op["ms"])
            elif kind == "signal":
                got = await ctx.wait_for_signal(SIGNAL)
                side.log("signal_got", wf=wf, k=op["k"], seq=got.get("seq"))
            elif kind == "rollback":
                result = await ctx.trigger_rollback("soak: manual rollback")
                side.log("rollback_returned", wf=wf, rolled=list(result.rolled_back_steps))
            elif kind == "block_wait":
                side.log("blocking", wf=wf)
                await ctx.wait_for_signal(NEVER)
            elif kind == "child":
                child = op["child"]
                await ctx.workflow(child["wf"], tag_for(child["strategy"]), child,
                                   parent_close_policy=op["policy"])
                side.log("child_acked", wf=wf, child=child["wf"])
            elif kind == "poll":
                for j in range(op["n"]):
                    if ctx.cancel_requested:
                        side.log("stop_requested", wf=wf, at=j)
                        break
                    await self._step(ctx, wf, {"op": "step", "tag": f"poll-{j}", "comp": False, "critical": False,
                                               "sync": False, "ms": op["ms"]})
            else:
                raise AssertionError(f"unknown op {kind!r}")
        if ctx.cancel_requested:  # an abandoned child must never be asked to cancel
            side.log("cancel_requested_seen", wf=wf)
        return {"wf": wf, "ops": len(spec["ops"])}

    async def _step(self, ctx: sagaloop.WorkflowContext, wf: str, op: dict) -> Any:
        tag, options = op["tag"], {"critical": op["critical"]}
        if op["op"] == "retry_step":
            if op["form"] == "policy":
                options["retry"] = {"max_attempts": 12, "initial_delay": op["delay"], "backoff": 2.0,
                                    "max_delay": 100, "jitter": True}
            else:
                options.update(retries=11, retry_delay=op["delay"])
        comp = self._compensation(wf, op) if op["comp"] else None
        output = await ctx.step(tag, self._body(wf, op), comp, **options)
        self.side.log("step_acked", wf=wf, step=tag, token=output["token"])
        return output

    def _body(self, wf: str, op: dict) -> Callable[[], Any]:
        """The step handler: logs ``step_ran`` first; fails as the op says (retry steps by run count)."""
        side, tag, kind = self.side, op["tag"], op["op"]

        def begin() -> str:
            token = os.urandom(8).hex()
            side.log("step_ran", wf=wf, step=tag, token=token, pid=os.getpid())
            return token

        def end(token: str) -> dict:
            if kind == "fail_step":
                raise RuntimeError(f"planned failure of step {tag}")
            if kind == "retry_step" and side.runs(wf, tag) <= op["fails"]:
                raise RuntimeError(f"planned flaky failure {side.runs(wf, tag)} of step {tag}")
            return {"token": token}

        if op.get("sync"):
            return lambda: end(begin())

        async def body() -> dict:
            token = begin()
            if kind == "block_step":
                await asyncio.sleep(BLOCK_STEP_S)
            elif op["ms"]:
                await asyncio.sleep(op["ms"] / 1000)
            return end(token)

        return body

    def _compensation(self, wf: str, op: dict) -> Callable[[Any], Any]:
        """The compensation: logs ``comp_ran`` with the token it was given, then ``comp_done``."""
        side, tag = self.side, op["tag"]

        def begin(output: Any) -> None:
            side.log("comp_ran", wf=wf, step=tag, arg=output.get("token") if isinstance(output, dict) else None)

        if op.get("comp_sync"):
            def comp(output: Any) -> None:
                begin(output)
                side.log("comp_done", wf=wf, step=tag)
            return comp

        async def acomp(output: Any) -> None:
            begin(output)
            if op.get("comp_ms"):
                await asyncio.sleep(op["comp_ms"] / 1000)
            side.log("comp_done", wf=wf, step=tag)

        return acomp

    # -- the life ----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Pick up the workflows earlier lives started, start the rest of the quota, then (final) drain."""
        side = self.side
        started = {e["wf"] for e in side.every("started")}
        self.ended = {e["wf"]: e["status"] for e in side.every("ended")}
        for i in range(self.args.quota):
            wf = workflow_id(i)
            self.specs[wf] = make_spec(self.args.seed, i)
            if wf in started:
                self.started.append(wf)
                self._track(self.specs[wf])
        self._spawn("watchdog", None, self._watchdog(), tracked=False)
        for i in range(self.args.quota):
            wf = workflow_id(i)
            if wf in started:
                continue
            if not await self._slot():
                side.log("starter_stalled", left=self.args.quota - i)  # the checks report it
                break
            await self._start(self.specs[wf])
            if not self.args.final:  # spread the starts over the life: a kill finds runs at every stage
                await asyncio.sleep(self.args.start_every / 1000)
        if self.args.final:
            await self._drain()
        else:
            await asyncio.sleep(self.args.max_life)
            sys.exit(3)  # never killed: the driver is gone

    async def _slot(self) -> bool:
        """Wait until fewer than ``--inflight`` started workflows are running (one seen stuck does not
        count); False if none ended for ``--final-timeout`` s (the final life must not hang here)."""
        loop = asyncio.get_running_loop()
        last_end, ended = loop.time(), len(self.ended)
        while True:
            stuck = {key[0] for key in self._reported}
            if sum(1 for w in self.started if w not in self.ended and w not in stuck) < self.args.inflight:
                return True
            if len(self.ended) != ended:
                last_end, ended = loop.time(), len(self.ended)
            elif loop.time() - last_end > self.args.final_timeout:
                return False
            await self.side.changed(0.2)

    async def _start(self, spec: dict) -> None:
        """Start one workflow (``wait=False``); one an earlier life started before its kill counts as started."""
        wf, side = spec["wf"], self.side
        earlier = bool(side.events("start_req", wf))
        side.log("start_req", wf=wf)
        try:
            await bounded(self.api.execute(product=PRODUCT, env=ENV, tag=tag_for(spec["strategy"]), input=spec,
                                          workflow_id=wf, idempotency_key=wf if spec["idempotent"] else None,
                                          wait=False))
            existing = earlier
        except sagaloop.WorkflowExistsError:
            existing = True
        side.log("started", wf=wf, kind=spec["kind"], label=label(spec), existing=existing)
        self.started.append(wf)
        self._track(spec)

    def _track(self, spec: dict) -> None:
        """The tasks that follow one started workflow in this life."""
        wf = spec["wf"]
        if wf not in self.ended:
            self._spawn("watch", wf, self._watch(wf))
        if spec["signals"]:
            self._spawn("signals", wf, self._send_signals(spec))
        if spec["updates"]:
            self._spawn("updates", wf, self._send_updates(spec))
        if spec["cancel_when"]:
            self._spawn("cancel", wf, self._cancel(spec))

    def _spawn(self, what: str, wf: str | None, coro: Awaitable[None], *, tracked: bool = True) -> None:
        """Run ``coro`` as a task; an exception it raises is logged as ``call_error`` (the checks list them).

        ``tracked`` tasks are the per-workflow ones the final life lets finish before it exits.
        """
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the checks list every one of these
                self.side.log("call_error", wf=wf, what=what, error=f"{type(exc).__name__}: {exc}")

        task = asyncio.get_running_loop().create_task(guarded())
        self._all_tasks.add(task)
        task.add_done_callback(self._all_tasks.discard)
        if tracked:
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _watch(self, wf: str) -> None:
        """Log ``ended`` with what ``result()`` says, once it says the workflow ended."""
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            result = await bounded(self.api.result(product=PRODUCT, env=ENV, workflow_id=wf, timeout=2000))
            if result.status != "running":
                rb = result.rollback_result
                self.side.log("ended", wf=wf, status=result.status, failed_step=result.failed_step,
                              code=result.error.code if result.error else None,
                              rolled=list(rb.rolled_back_steps) if rb else None, trigger=rb.trigger if rb else None)
                self.ended[wf] = result.status
                return
            if loop.time() - began < 0.05:
                await asyncio.sleep(0.05)

    async def _send_signals(self, spec: dict) -> None:
        """Send the spec's signals (payload ``{"seq": n}``) that no earlier life got accepted, in order."""
        wf, side = spec["wf"], self.side
        for seq, gap in enumerate(spec["signals"]):
            if side.has("signal_accepted", wf, seq=seq) or side.has("signal_refused", wf, seq=seq):
                continue
            if side.has("signal_sending", wf, seq=seq) and await self._signal_recorded(wf, seq):
                side.log("signal_accepted", wf=wf, seq=seq, recovered=True)  # in the inbox before the kill
                continue
            if wf in self.ended or side.events("signal_refused", wf):
                return  # it ended: nothing more to send (a signal in doubt was settled above)
            await self._pause(gap)
            side.log("signal_sending", wf=wf, seq=seq)
            try:
                await bounded(self.api.signal(product=PRODUCT, env=ENV, workflow_id=wf, signal=SIGNAL,
                                             payload={"seq": seq}))
            except sagaloop.WorkflowEndedError:
                side.log("signal_refused", wf=wf, seq=seq)
                return
            side.log("signal_accepted", wf=wf, seq=seq)

    @staticmethod
    async def _pause(gap: list) -> None:
        """Space a signal from the one before as the spec says (``soak_plan._signal_gap``)."""
        kind, n = gap
        if kind == "ms":
            await asyncio.sleep(n / 1000)
        for _ in range(n if kind == "turns" else 0):
            await asyncio.sleep(0)

    async def _signal_recorded(self, wf: str, seq: int) -> bool:
        """Whether a signal whose ``signal()`` a kill interrupted made it into the instance's history."""
        history = await bounded(self.api.history(product=PRODUCT, env=ENV, workflow_id=wf))
        return any(e.type == "signal_received" and (e.data.get("payload") or {}).get("seq") == seq
                   for e in history.events)

    async def _send_updates(self, spec: dict) -> None:
        """Send the spec's updates (``update_id`` = ``<wf>/u<n>``), each followed by a query."""
        wf, side = spec["wf"], self.side
        for n, gap in enumerate(spec["updates"]):
            uid = f"{wf}/u{n}"
            if side.has("update_acked", wf, uid=uid) or side.has("update_refused", wf, uid=uid):
                continue
            if wf in self.ended and not side.has("update_sending", wf, uid=uid):
                continue  # never sent, and it ended: nothing to do (one in doubt is sent again: same update_id)
            await asyncio.sleep(gap / 1000)
            side.log("update_sending", wf=wf, uid=uid)
            try:
                reply = await bounded(self.api.update(product=PRODUCT, env=ENV, workflow_id=wf, update=UPDATE,
                                                     args={"id": uid}, update_id=uid))
            except sagaloop.WorkflowEndedError:
                side.log("update_refused", wf=wf, uid=uid)
                continue
            side.log("update_acked", wf=wf, uid=uid, reply=reply)
            progress = await bounded(self.api.query(product=PRODUCT, env=ENV, workflow_id=wf, query=QUERY))
            side.log("query", wf=wf, updates=progress["updates"])

    async def _cancel(self, spec: dict) -> None:
        """Cancel once the workflow has reached its blocking point in this life (or give up: it ended)."""
        wf, side = spec["wf"], self.side
        if side.events("cancel_done", wf):
            return
        when = [tuple(w) for w in spec["cancel_when"]]
        while not any(w in side.now for w in when):
            if wf in self.ended:
                return
            await side.changed(0.5)
        side.log("cancel_sent", wf=wf)
        result = await bounded(self.api.cancel(product=PRODUCT, env=ENV, workflow_id=wf, reason="soak cancel"))
        side.log("cancel_done", wf=wf, cancelled=result.cancelled, status=result.status)

    async def _watchdog(self) -> None:
        """Log ``stuck_seen`` for an instance that waits for a signal while one it accepted stays unconsumed."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(WATCHDOG_EVERY_S)
            for wf in list(self.started):
                if wf in self.ended or not self.specs[wf]["signals"]:
                    continue
                accepted = {e["seq"] for e in self.side.events("signal_accepted", wf)}
                got = {e["seq"] for e in self.side.events("signal_got", wf)}
                pending = sorted(accepted - got)
                if not pending:
                    continue
                status = await bounded(self.api.status(product=PRODUCT, env=ENV, workflow_id=wf))
                waiting = status.waiting_for or ""
                key = (wf, tuple(pending), len(got))
                if status.status != "running" or not str(waiting).startswith("signal"):
                    self._suspects.pop(key, None)
                    continue
                first = self._suspects.setdefault(key, loop.time())
                if loop.time() - first >= STUCK_AFTER_S and key not in self._reported:
                    self._reported.add(key)
                    self.side.log("stuck_seen", wf=wf, pending=pending, got=sorted(got), waiting_for=str(waiting),
                                  for_s=round(loop.time() - first, 2))

    async def _drain(self) -> None:
        """Final life: wait for every started workflow and its child to end, then report."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.args.final_timeout
        kids = {c["wf"]: wf for wf in self.started for c in child_specs(self.specs[wf])}
        kids_ended: dict[str, str] = {}
        while loop.time() < deadline:
            for kid, parent in kids.items():
                if kid in kids_ended:
                    continue
                try:
                    status = await bounded(self.api.status(product=PRODUCT, env=ENV, workflow_id=kid))
                except sagaloop.WorkflowNotFoundError:
                    if parent in self.ended:
                        kids_ended[kid] = "absent"
                    continue
                if status.status != "running":
                    kids_ended[kid] = status.status
            left = [w for w in self.started if w not in self.ended] + [k for k in kids if k not in kids_ended]
            if not left:
                break
            await self.side.changed(0.2)
        unfinished = [w for w in self.started if w not in self.ended] + [k for k in kids if k not in kids_ended]
        if self.tasks and not unfinished:  # senders of ended workflows finish by themselves (refused, replied)
            await asyncio.wait(list(self.tasks), timeout=CALL_TIMEOUT_S)
        for task in list(self._all_tasks):
            task.cancel()
        await asyncio.gather(*self._all_tasks, return_exceptions=True)
        self.side.log("final", started=len(self.started), unfinished=unfinished)
        marker("FINAL " + json.dumps({"started": len(self.started), "children": len(kids),
                                      "unfinished": unfinished}))


def _progress(ctx: sagaloop.WorkflowContext) -> dict:
    return {"updates": list(ctx.state.get("updates", []))}


def _bump(ctx: sagaloop.WorkflowContext, args: dict) -> int:
    updates = ctx.state.setdefault("updates", [])
    updates.append(args["id"])
    return len(updates)


class EngineLogToSideLog(logging.Handler):
    """The engine's own warnings and errors (an actor crashed, a run could not finish or resume) go to
    the side log, where the checks report them."""

    def __init__(self, side: SideLog) -> None:
        super().__init__(logging.WARNING)
        self.side = side

    def emit(self, record: logging.LogRecord) -> None:
        error = f"{record.exc_info[0].__name__}: {record.exc_info[1]}" if record.exc_info else None
        self.side.log("engine_log", level=record.levelname, logger=record.name, message=record.getMessage(),
                      error=error)


async def amain(args: argparse.Namespace) -> None:
    side = SideLog(args.sidelog)
    side.log("life", pid=os.getpid(), mode="final" if args.final else "soak", durability=args.durability,
             quota=args.quota)
    logging.getLogger("sagaloop").addHandler(EngineLogToSideLog(side))
    async with sagaloop.Engine(args.datadir, durability=args.durability) as engine:
        worker = Worker(engine, side, args)
        worker.define()
        marker(f"READY life={side.life} pid={os.getpid()}")
        await worker.run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datadir")
    parser.add_argument("sidelog")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--quota", type=int, required=True, help="start workflows 0..QUOTA-1 (over all lives)")
    parser.add_argument("--final", action="store_true", help="wait for every workflow to end, then exit")
    parser.add_argument("--durability", default="fast", choices=["fast", "durable"])
    parser.add_argument("--inflight", type=int, default=10, help="at most this many started, not ended")
    parser.add_argument("--start-every", type=float, default=50.0, help="ms between starts (not in --final)")
    parser.add_argument("--final-timeout", type=float, default=10.0)
    parser.add_argument("--max-life", type=float, default=600.0, help="exit (3) if not killed by then")
    parser.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    args = parser.parse_args(argv)
    if args.loop == "uvloop":
        sagaloop.run(amain(args))
    else:
        asyncio.run(amain(args))


if __name__ == "__main__":
    main()
