"""Bad input, one table: every public call, the bad value, the error, and nothing lost.

README ("Bad input loses nothing"): a bad call raises a ``SagaloopError`` subclass naming
the bad value and leaves every other instance and all committed data as they were.
API.md: durations that are not milliseconds, ``"500ms" "30s" "5m" "24h" "7d"`` or a
``timedelta`` raise ``ValueError`` naming the value; usage errors the contract calls
``ValueError`` are ``InvalidArgumentError`` (both a ``SagaloopError`` and a ``ValueError``);
a value that cannot be stored is ``NotSerializableError`` (also a ``TypeError``).

Each row of ``ROWS`` is: the call, the expected exception class, and the words its message
must contain (the bad value, or for a wrong type the parameter and the type). Around each
row a *sentinel* checks that nothing was lost: one run completed before the bad call (its
result and history must be unchanged), one waits for a signal during it (it must still be
running, then complete when signalled, having received nothing else), a fresh run
completes after it, no refused call leaves an instance behind, and the refused
definition tag ``bad-def`` stays undefined. A row calling ``ctx`` runs inside a workflow
that catches the error and goes on: its run must complete with nothing rolled back.

This complements ``test_bad_input.py`` (which has: unknown product/tag, the bad-duration
list on ``execute(timeout=)``, a few on ``result`` / ``define`` / step options, unstorable
step and workflow outputs, a set in ``input`` / ``context``, duplicate ids and step tags,
``define`` basics, unknown engine settings, a closed engine). Overlap: it also checks in
passing that ``status`` / ``history`` of an unknown id raise ``WorkflowNotFoundError``,
rows here too. A row the engine fails gets ``defect=`` (an ``xfail(strict=True)`` with the defect in the reason); none has one today.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import pytest

import sagaloop
from sagaloop import (
    DefinitionNotFoundError,
    InvalidArgumentError,
    InvalidDurationError,
    NotSerializableError,
    QueryNotFoundError,
    SagaloopError,
    StepNotFoundError,
    StorageError,
    UpdateNotFoundError,
    UsageError,
    WorkflowEndedError,
    WorkflowNotFoundError,
)

P, E = "shop", "prd"
DONE, LIVE, FRESH, SUBJECT = "sentinel-done", "sentinel-live", "sentinel-fresh", "subject"
LONG_ID = "x" * 600  # LMDB keys are at most 511 bytes


class Widget:
    """An object msgpack cannot store."""


async def noop(ctx):
    return None


async def opened(engine: sagaloop.Engine) -> None:
    await engine.open()
    await engine.close()


@dataclass(frozen=True)
class Row:
    id: str
    call: Callable[[Any], Any]  # api rows get the harness, ctx rows the workflow's ctx
    error: type[BaseException]
    names: tuple[str, ...]      # each must appear in the message
    in_ctx: bool = False
    defect: str | None = None


def api(id: str, call, error, *names: str, defect: str | None = None) -> Row:
    return Row(id, call, error, names, defect=defect)


def ctx(id: str, call, error, *names: str, defect: str | None = None) -> Row:
    return Row(id, call, error, names, in_ctx=True, defect=defect)


def wf_calls_on(target: str, bad: Any) -> list[tuple[str, Callable]]:
    """Every call that takes a workflow id, aimed at ``bad`` (``target`` names it in the row id)."""
    return [
        (f"status-{target}", lambda h: h.wf.status(product=P, env=E, workflow_id=bad)),
        (f"result-{target}", lambda h: h.wf.result(product=P, env=E, workflow_id=bad)),
        (f"history-{target}", lambda h: h.wf.history(product=P, env=E, workflow_id=bad)),
        (f"step_detail-{target}", lambda h: h.wf.step_detail(product=P, env=E, workflow_id=bad, step_tag="first")),
        (f"query-{target}", lambda h: h.wf.query(product=P, env=E, workflow_id=bad, query="peek")),
        (f"signal-{target}", lambda h: h.wf.signal(product=P, env=E, workflow_id=bad, signal="go", payload={})),
        (f"update-{target}", lambda h: h.wf.update(product=P, env=E, workflow_id=bad, update="bump", args=1)),
        (f"cancel-{target}", lambda h: h.wf.cancel(product=P, env=E, workflow_id=bad, reason="r")),
    ]


def define_bad(**kw):
    """``define`` of tag ``bad-def`` with one bad argument."""
    args = {"product": P, "tag": "bad-def", "handler": noop, **kw}
    return lambda h: h.wf.define(**args)


def execute_bad(**kw):
    args = {"product": P, "env": E, "tag": "sentinel", "input": {"n": 9}, **kw}
    return lambda h: h.wf.execute(**args)


def setting(**kw):
    return lambda h: sagaloop.Engine(h.tmp / "never-opened", **kw)


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def step_with(*args, **kw):
    return lambda c: c.step("bad", lambda: "ran", *args, **kw)


NAN, INF = math.nan, math.inf

ROWS: list[Row] = [
    # -- Engine(...) settings ---------------------------------------------------------------------
    api("engine-path-int", lambda h: sagaloop.Engine(123), TypeError, "int"),
    api("engine-path-list", lambda h: sagaloop.Engine(["db"]), TypeError, "list"),
    api("engine-path-empty", lambda h: opened(sagaloop.Engine("")), SagaloopError, "''"),
    api("engine-path-is-a-file", lambda h: opened(sagaloop.Engine(h.tmp / "a-file")), StorageError, "a-file"),
    api("engine-durability-None", setting(durability=None), InvalidArgumentError, "durability", "None"),
    *[api(f"engine-max_active_runs-{v!r}", setting(max_active_runs=v), InvalidArgumentError, "max_active_runs", repr(v))
      for v in (0, -1, "lots", 1.5, True)],
    api("engine-clock-str", setting(clock="tick"), InvalidArgumentError, "clock", "'tick'"),

    # -- define ---------------------------------------------------------------------------------
    api("define-product-int", define_bad(product=123), InvalidArgumentError, "product", "123"),
    api("define-tag-list", lambda h: h.wf.define(product=P, tag=["x"], handler=noop), InvalidArgumentError, "['x']"),
    api("define-options-str", define_bad(options="fast"), InvalidArgumentError, "options", "'fast'"),
    api("define-strategy-None", define_bad(options={"rollback_strategy": None}), InvalidArgumentError,
        "rollback_strategy", "None"),
    *[api(f"define-timeout-{v!r}", define_bad(options={"timeout": v}), InvalidDurationError, repr(v))
      for v in (NAN, INF, True)],
    api("define-retry_delay-parsecs", define_bad(options={"retry_delay": "5 parsecs"}), InvalidDurationError,
        "retry_delay", "'5 parsecs'"),
    api("define-retries-negative", define_bad(options={"retries": -1}), InvalidArgumentError, "retries", "-1"),
    api("define-queries-str", define_bad(queries="abc"), InvalidArgumentError, "queries"),
    api("define-query-not-callable", define_bad(queries={"q": "nope"}), InvalidArgumentError, "'q'"),
    api("define-updates-str", define_bad(updates="abc"), InvalidArgumentError, "updates"),
    api("define-update-not-callable", define_bad(updates={"u": 5}), InvalidArgumentError, "'u'"),
    api("define-validator-not-callable", define_bad(updates={"u": {"handler": noop, "validator": 3}}),
        InvalidArgumentError, "'u'", "validator"),

    # -- execute --------------------------------------------------------------------------------
    *[api(f"execute-env-{v!r}", execute_bad(env=v), InvalidArgumentError, "env", repr(v)) for v in ("", None, 5)],
    api("execute-product-int", execute_bad(product=5), InvalidArgumentError, "product", "5"),
    api("execute-tag-None", execute_bad(tag=None), DefinitionNotFoundError, "None"),
    *[api(f"execute-workflow_id-{v!r}", execute_bad(workflow_id=v), InvalidArgumentError, "workflow_id", repr(v))
      for v in (5, "a\x00b")],
    api("execute-workflow_id-600-bytes", execute_bad(workflow_id=LONG_ID), InvalidArgumentError, "workflow_id", "503"),
    *[api(f"execute-idempotency_key-{v!r}", execute_bad(idempotency_key=v), InvalidArgumentError,
          "idempotency_key", repr(v)) for v in (5, "")],
    api("execute-idempotency_key-600-bytes", execute_bad(idempotency_key=LONG_ID), InvalidArgumentError,
        "idempotency", "511"),
    api("execute-input-object", execute_bad(input={"w": Widget()}), NotSerializableError, "Widget", "input"),
    api("execute-context-object", execute_bad(context={"w": Widget()}), NotSerializableError, "Widget", "context"),
    api("execute-input-int-beyond-64-bits", execute_bad(input={"n": 2 ** 70}), NotSerializableError, "int", "64-bit"),
    api("execute-input-nested-too-deeply", execute_bad(input=nested(5000)), NotSerializableError,
        "nested too deeply"),

    # -- result: bad timeouts on a live run (test_bad_input has 'soon', -1, [1]) ------------------
    *[api(f"result-timeout-{v!r}", lambda h, v=v: h.wf.result(product=P, env=E, workflow_id=LIVE, timeout=v),
          InvalidDurationError, repr(v)) for v in (NAN, INF, True, "5 parsecs")],

    # -- every call taking a workflow id: unknown, wrong type, empty --------------------------------
    *[api(name, call, WorkflowNotFoundError, "'nope'") for name, call in wf_calls_on("unknown-id", "nope")],
    *[api(name, call, InvalidArgumentError, "workflow_id", "int") for name, call in wf_calls_on("int-id", 123)],
    *[api(name, call, InvalidArgumentError, "workflow_id") for name, call in wf_calls_on("empty-id", "")],
    api("status-other-product", lambda h: h.wf.status(product="other-shop", env=E, workflow_id=DONE),
        WorkflowNotFoundError, "'other-shop'"),
    api("status-product-None", lambda h: h.wf.status(product=None, env=E, workflow_id=DONE), UsageError, "None"),
    api("signal-other-env", lambda h: h.wf.signal(product=P, env="stg", workflow_id=LIVE, signal="go",
                                                  payload={"leak": True}), WorkflowNotFoundError, "'stg'"),

    # -- query, signal, update, cancel, step_detail, list ---------------------------------------------
    api("query-unknown-live", lambda h: h.wf.query(product=P, env=E, workflow_id=LIVE, query="nope"),
        QueryNotFoundError, "'nope'"),
    api("query-unknown-ended", lambda h: h.wf.query(product=P, env=E, workflow_id=DONE, query="nope"),
        QueryNotFoundError, "'nope'"),
    api("query-None", lambda h: h.wf.query(product=P, env=E, workflow_id=LIVE, query=None), UsageError, "None"),
    *[api(f"signal-name-{v!r}", lambda h, v=v: h.wf.signal(product=P, env=E, workflow_id=LIVE, signal=v),
          InvalidArgumentError, "signal", repr(v)) for v in ("", None)],
    api("signal-payload-list", lambda h: h.wf.signal(product=P, env=E, workflow_id=LIVE, signal="go", payload=[1]),
        InvalidArgumentError, "payload", "list"),
    api("signal-payload-set", lambda h: h.wf.signal(product=P, env=E, workflow_id=LIVE, signal="go",
                                                    payload={"s": {1, 2}}), NotSerializableError, "set"),
    api("signal-payload-object", lambda h: h.wf.signal(product=P, env=E, workflow_id=LIVE, signal="go",
                                                       payload={"w": Widget()}), NotSerializableError, "Widget"),
    api("signal-ended", lambda h: h.wf.signal(product=P, env=E, workflow_id=DONE, signal="go"),
        WorkflowEndedError, repr(DONE)),
    api("update-unknown", lambda h: h.wf.update(product=P, env=E, workflow_id=LIVE, update="nope"),
        UpdateNotFoundError, "'nope'"),
    api("update-name-empty", lambda h: h.wf.update(product=P, env=E, workflow_id=LIVE, update=""),
        InvalidArgumentError, "update", "''"),
    api("update-id-empty", lambda h: h.wf.update(product=P, env=E, workflow_id=LIVE, update="bump", args=1,
                                                 update_id=""), InvalidArgumentError, "update_id", "''"),
    api("update-args-set", lambda h: h.wf.update(product=P, env=E, workflow_id=LIVE, update="bump", args={1, 2}),
        NotSerializableError, "set"),
    api("update-ended", lambda h: h.wf.update(product=P, env=E, workflow_id=DONE, update="bump", args=1),
        WorkflowEndedError, repr(DONE)),
    api("cancel-reason-set", lambda h: h.wf.cancel(product=P, env=E, workflow_id=LIVE, reason={1, 2}),
        InvalidArgumentError, "reason", "{1, 2}"),
    api("cancel-reason-int", lambda h: h.wf.cancel(product=P, env=E, workflow_id=LIVE, reason=5),
        InvalidArgumentError, "reason", "5"),
    api("step_detail-unknown-step", lambda h: h.wf.step_detail(product=P, env=E, workflow_id=DONE, step_tag="zzz"),
        StepNotFoundError, "'zzz'"),
    api("step_detail-step-None", lambda h: h.wf.step_detail(product=P, env=E, workflow_id=DONE, step_tag=None),
        UsageError, "None"),
    *[api(f"list-limit-{v!r}", lambda h, v=v: h.wf.list(product=P, env=E, limit=v), InvalidArgumentError,
          "limit", repr(v)) for v in (0, -1, "10", True, None)],
    api("list-status-unknown", lambda h: h.wf.list(product=P, env=E, status="bogus"), InvalidArgumentError,
        "'bogus'"),
    api("list-product-None", lambda h: h.wf.list(product=None, env=E), InvalidArgumentError, "product", "None"),

    # -- durations, directly -----------------------------------------------------------------------
    api("parse_duration-negative-timedelta", lambda h: sagaloop.parse_duration(timedelta(seconds=-1)),
        InvalidDurationError, "timedelta"),
    api("parse_duration-minus-inf", lambda h: sagaloop.parse_duration(-INF), InvalidDurationError, "-inf"),
    api("parse_duration-int-beyond-float", lambda h: sagaloop.parse_duration(2 ** 1100), InvalidDurationError,
        "duration"),

    # -- ctx.step ---------------------------------------------------------------------------------
    *[ctx(f"step-tag-{v!r}", lambda c, v=v: c.step(v, lambda: 1), InvalidArgumentError, "tag", repr(v))
      for v in ("", 5, None)],
    ctx("step-handler-int", lambda c: c.step("bad", 5), InvalidArgumentError, "handler", "5"),
    ctx("step-rollback-str", lambda c: c.step("bad", lambda: 1, "x"), InvalidArgumentError, "rollback", "'x'"),
    ctx("step-options-str", step_with(None, "fast"), InvalidArgumentError, "options", "'fast'"),
    ctx("step-option-unknown", step_with(None, {"retires": 3}), InvalidArgumentError, "retires"),
    *[ctx(f"step-retries-{v!r}", step_with(retries=v), InvalidArgumentError, "retries", repr(v))
      for v in (-1, "3", True)],
    ctx("step-critical-str", step_with(critical="no"), InvalidArgumentError, "critical", "'no'"),
    ctx("step-allow_fail-str", step_with(allow_fail="no"), InvalidArgumentError, "allow_fail", "'no'"),
    *[ctx(f"step-timeout-{v!r}", step_with(timeout=v), InvalidDurationError, "timeout", repr(v))
      for v in (NAN, INF, True)],
    ctx("step-rollback_options-str", step_with(None, rollback_options="x"), InvalidArgumentError,
        "rollback_options", "'x'"),
    ctx("step-rollback_options-unknown", step_with(None, rollback_options={"retry": 3}), InvalidArgumentError,
        "'retry'"),
    ctx("step-rollback_options-timeout-negative", step_with(None, rollback_options={"timeout": -5}),
        InvalidDurationError, "timeout", "-5"),
    ctx("step-rollback_options-retry_delay-nan", step_with(None, rollback_options={"retry_delay": NAN}),
        InvalidDurationError, "retry_delay", "nan"),
    ctx("step-rollback_options-retries-negative", step_with(None, rollback_options={"retries": -2}),
        InvalidArgumentError, "retries", "-2"),
    ctx("step-retry-str", step_with(retry="x"), InvalidArgumentError, "retry", "'x'"),
    ctx("step-retry-max_attempts-0", step_with(retry={"max_attempts": 0}), InvalidArgumentError, "max_attempts", "0"),
    ctx("step-retry-backoff-nan", step_with(retry={"backoff": NAN}), InvalidArgumentError, "backoff", "nan"),
    ctx("step-retry-max_delay-parsecs", step_with(retry={"max_delay": "5 parsecs"}), InvalidDurationError,
        "max_delay", "'5 parsecs'"),
    ctx("step-retry-initial_delay-negative", step_with(retry={"initial_delay": -1}), InvalidDurationError,
        "initial_delay", "-1"),
    ctx("step-retry-non_retryable-str", step_with(retry={"non_retryable": ["x"]}), InvalidArgumentError,
        "non_retryable", "'x'"),
    ctx("step-retry-non_retryable-int", step_with(retry={"non_retryable": 5}), InvalidArgumentError,
        "non_retryable", "5"),
    ctx("step-retry-unknown-key", step_with(retry={"attempts": 2}), InvalidArgumentError, "'attempts'"),
    ctx("step-retry-and-retries", step_with(retry={}, retries=2), InvalidArgumentError, "retry", "retries"),

    # -- ctx.checkpoint ---------------------------------------------------------------------------
    *[ctx(f"checkpoint-name-{v!r}", lambda c, v=v: c.checkpoint(v), InvalidArgumentError, "checkpoint", repr(v))
      for v in ("", None, 5)],
    ctx("checkpoint-data-set", lambda c: c.checkpoint("cp", {"s": {1, 2}}), NotSerializableError, "set"),
    ctx("checkpoint-data-object", lambda c: c.checkpoint("cp", Widget()), NotSerializableError, "Widget"),

    # -- ctx.wait_for_signal ----------------------------------------------------------------------
    *[ctx(f"wait_for_signal-names-{v!r}", lambda c, v=v: c.wait_for_signal(v), InvalidArgumentError,
          "wait_for_signal", repr(v)) for v in ("", [], [1])],
    *[ctx(f"wait_for_signal-names-{v!r}", lambda c, v=v: c.wait_for_signal(v), InvalidArgumentError,
          "wait_for_signal", repr(v)) for v in (None, 5)],
    *[ctx(f"wait_for_signal-timeout-{v!r}", lambda c, v=v: c.wait_for_signal("go", timeout=v), InvalidDurationError,
          "timeout", repr(v)) for v in (-1, NAN, INF, True, "5 parsecs")],

    # -- ctx.sleep ----------------------------------------------------------------------------------
    *[ctx(f"sleep-{v!r}", lambda c, v=v: c.sleep(v), InvalidDurationError, "sleep", repr(v))
      for v in (-1, NAN, INF, None, True, "5 parsecs")],
    ctx("sleep-int-beyond-float", lambda c: c.sleep(2 ** 1100), InvalidDurationError, "sleep"),

    # -- ctx.workflow (child workflows) ---------------------------------------------------------------
    *[ctx(f"workflow-child_id-{v!r}", lambda c, v=v: c.workflow(v, "child", {}), InvalidArgumentError,
          "child workflow id", repr(v)) for v in ("", 5)],
    ctx("workflow-tag-unknown", lambda c: c.workflow("c1", "nochild", {}), DefinitionNotFoundError, "'nochild'"),
    ctx("workflow-parent_close_policy", lambda c: c.workflow("c1", "child", {}, parent_close_policy="kill"),
        InvalidArgumentError, "parent_close_policy", "'kill'"),
    ctx("workflow-retries-negative", lambda c: c.workflow("c1", "child", {}, retries=-1), InvalidArgumentError,
        "retries", "-1"),
    *[ctx(f"workflow-timeout-{v!r}", lambda c, v=v: c.workflow("c1", "child", {}, timeout=v), InvalidDurationError,
          "timeout", repr(v)) for v in (NAN, "5 parsecs")],
    ctx("workflow-input-set", lambda c: c.workflow("c1", "child", {"s": {1, 2}}), NotSerializableError, "set"),
    ctx("workflow-input-object", lambda c: c.workflow("c1", "child", Widget()), NotSerializableError, "Widget"),
    ctx("workflow-options-str", lambda c: c.workflow("c1", "child", {}, "x"), InvalidArgumentError, "options", "'x'"),

    # -- ctx.trigger_rollback -------------------------------------------------------------------------
    ctx("trigger_rollback-reason-set", lambda c: c.trigger_rollback({1, 2}), InvalidArgumentError, "reason", "{1, 2}"),
    ctx("trigger_rollback-reason-object", lambda c: c.trigger_rollback(Widget()), InvalidArgumentError, "Widget"),
]


# -- the harness -------------------------------------------------------------------------------------


class Harness:
    """An open engine with the sentinel runs; ``check`` proves that a bad call lost nothing."""

    def __init__(self, engine: sagaloop.Engine, tmp: Path) -> None:
        self.engine, self.wf, self.tmp = engine, engine.workflows, tmp
        self.undone: list = []  # compensations that ran in the subject (a refused call rolls nothing back)

    async def start(self) -> None:
        async def sentinel(c):
            first = await c.step("first", lambda: {"n": c.input["n"]})
            if not c.input.get("wait"):
                return {"first": first}
            got = await c.wait_for_signal("go")
            return {"first": first, "got": got, "state": dict(c.state)}

        async def child(c):
            return await c.step("only", lambda: "child ran")

        self.wf.define(product=P, tag="sentinel", handler=sentinel,
                       queries={"peek": lambda c: dict(c.state)},
                       updates={"bump": lambda c, args: c.state.update(bumped=args)})
        self.wf.define(product=P, tag="child", handler=child)
        self.done = await self.wf.execute(product=P, env=E, tag="sentinel", input={"n": 1}, workflow_id=DONE)
        assert self.done.status == "completed" and self.done.output == {"first": {"n": 1}}
        self.done_history = await self.history(DONE)
        live = await self.wf.execute(product=P, env=E, tag="sentinel", input={"n": 2, "wait": True}, workflow_id=LIVE)
        assert live.status == "running"  # blocked in wait_for_signal

    async def history(self, workflow_id: str) -> list:
        return (await self.wf.history(product=P, env=E, workflow_id=workflow_id)).events

    async def bad_ctx_call(self, call) -> BaseException | None:
        """Run ``call(ctx)`` inside a workflow that catches its error and goes on; return the error."""
        caught: list[BaseException] = []

        async def subject(c):
            await c.step("before", lambda: "kept", lambda out: self.undone.append(out))
            try:
                await call(c)
            except Exception as exc:
                caught.append(exc)
            await c.step("after", lambda: "went on")
            return "went on"

        self.wf.define(product=P, tag="subject", handler=subject)
        res = await asyncio.wait_for(
            self.wf.execute(product=P, env=E, tag="subject", input={}, workflow_id=SUBJECT), timeout=10)
        assert caught, "the bad ctx call was accepted"
        assert res.status == "completed", res
        assert res.output == "went on" and res.completed_steps == ["before", "after"]
        assert self.undone == []
        return caught[0]

    async def check(self, created: dict[str, str]) -> None:
        """The live run still waits and completes with what it is sent; the rest is as it was."""
        wf = self.wf
        status = await wf.status(product=P, env=E, workflow_id=LIVE)
        assert status.status == "running" and status.completed_steps == ["first"], status
        await wf.signal(product=P, env=E, workflow_id=LIVE, signal="go", payload={"k": "v"})
        live = await wf.result(product=P, env=E, workflow_id=LIVE, timeout="5s")
        assert live.status == "completed", live
        assert live.output == {"first": {"n": 2}, "got": {"k": "v", "_signal": "go"}, "state": {}}
        assert await wf.result(product=P, env=E, workflow_id=DONE) == self.done
        assert await self.history(DONE) == self.done_history
        fresh = await wf.execute(product=P, env=E, tag="sentinel", input={"n": 3}, workflow_id=FRESH)
        assert fresh.status == "completed" and fresh.output == {"first": {"n": 3}}
        listed = {s.workflow_id: s.status for s in await wf.list(product=P, env=E)}
        assert listed == {DONE: "completed", LIVE: "completed", FRESH: "completed", **created}
        with pytest.raises(DefinitionNotFoundError):  # a refused definition is not half-registered
            await wf.execute(product=P, env=E, tag="bad-def", input={})


def assert_refused(err: BaseException, row: Row) -> None:
    assert isinstance(err, row.error), f"expected {row.error.__name__}, got {type(err).__name__}: {err}"
    assert isinstance(err, (SagaloopError, ValueError, TypeError)), repr(err)
    if isinstance(err, SagaloopError):
        assert err.code not in ("", "sagaloop_error"), err.code
    for word in row.names:
        assert word in str(err), f"{str(err)!r} does not name {word!r}"


def param(row: Row):
    marks = [pytest.mark.xfail(strict=True, reason=f"engine defect: {row.defect}")] if row.defect else []
    return pytest.param(row, id=row.id, marks=marks)


def test_row_ids_are_unique():
    ids = [row.id for row in ROWS]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize("row", [param(row) for row in ROWS])
async def test_bad_input(tmp_path, monkeypatch, row: Row):
    monkeypatch.chdir(tmp_path)  # Engine("") must not touch the working directory of the run
    (tmp_path / "a-file").write_text("not a directory")
    async with sagaloop.Engine(tmp_path / "db", durability="fast") as engine:
        h = Harness(engine, tmp_path)
        await h.start()
        if row.in_ctx:
            err = await h.bad_ctx_call(row.call)
        else:
            with pytest.raises(Exception) as info:
                value = row.call(h)
                if inspect.isawaitable(value):
                    await asyncio.wait_for(value, timeout=5)
            err = info.value
        assert_refused(err, row)
        await h.check({SUBJECT: "completed"} if row.in_ctx else {})


# -- huge values --------------------------------------------------------------------------------------

BLOB = "0123456789abcdef" * (10 * 1024 * 1024 // 16)  # 10 MB; no size limit is documented
WHERE = ["execute-input", "step-output", "checkpoint-data", "signal-payload", "update-args"]


@pytest.mark.parametrize("where", WHERE)
async def test_ten_megabyte_values_round_trip(tmp_path, where):
    """No limit is documented, so a 10 MB value must work and read back equal, also after a restart."""
    big = {"blob": BLOB}
    data = tmp_path / "db"

    async def huge(c):
        out = await c.step("make", lambda: big if where == "step-output" else "small")
        if where == "checkpoint-data":
            await c.checkpoint("cp", big)
        got = await c.wait_for_signal("go") if where in ("signal-payload", "update-args") else None
        return {"input": c.input, "step": out, "checkpoint": c.checkpoint_data, "got": got, "state": dict(c.state)}

    def stored(output: dict, status: sagaloop.WorkflowStatus, step: sagaloop.StepDetail) -> tuple:
        """The value as the run's output has it, and as the read that shows it has it."""
        if where == "execute-input":
            return output["input"], output["input"]
        if where == "step-output":
            return output["step"], step.output
        if where == "checkpoint-data":
            return output["checkpoint"], status.checkpoint_data
        if where == "signal-payload":
            got = {k: v for k, v in output["got"].items() if k != "_signal"}
            return got, got
        return output["state"]["blob"], status.state["blob"]  # update-args

    async def reads(wf) -> tuple:
        res = await wf.result(product=P, env=E, workflow_id="huge", timeout="20s")
        assert res.status == "completed", res
        status = await wf.status(product=P, env=E, workflow_id="huge")
        step = await wf.step_detail(product=P, env=E, workflow_id="huge", step_tag="make")
        return stored(res.output, status, step)

    async with sagaloop.Engine(data, durability="fast") as engine:
        h = Harness(engine, tmp_path)
        await h.start()
        wf = engine.workflows
        wf.define(product=P, tag="huge", handler=huge,
                  updates={"keep": lambda c, args: c.state.update(blob=args)})
        await wf.execute(product=P, env=E, tag="huge", workflow_id="huge",
                         input=big if where == "execute-input" else {})
        if where == "update-args":
            await wf.update(product=P, env=E, workflow_id="huge", update="keep", args=big)
        if where in ("signal-payload", "update-args"):
            await wf.signal(product=P, env=E, workflow_id="huge", signal="go",
                            payload=big if where == "signal-payload" else {})
        assert await reads(wf) == (big, big)
        await h.check({"huge": "completed"})
    async with sagaloop.Engine(data, durability="fast") as engine:  # read back from disk
        assert await reads(engine.workflows) == (big, big)
