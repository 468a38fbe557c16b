"""Retry policies: the ``retry={...}`` step option beside the ``retries`` / ``retry_delay`` shorthand.

API.md, "Beyond the product document" / "Retry policies":

* ``retry={"max_attempts", "initial_delay", "backoff", "max_delay", "jitter", "non_retryable"}``
  with defaults 3, 1000 ms, 2.0, 60 s, jitter on (each wait in 80-120 % of its nominal value);
* ``step_detail(...).attempts`` counts every attempt;
* a retry wait is a durable timer: after a restart the attempt count and the remaining wait continue.

The waits are checked with the engine's VirtualClock (exact gaps, no wall time)
and, for the durable timer, with a real child process killed by SIGKILL in the
middle of a wait (``tests/upgrade_app/retry_worker.py``).
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from processes import TESTS_DIR, WAIT_S, Child, load_module

import sagaloop
from sagaloop.runtime.decisions.retry import JITTER_BAND, RetryPolicy, parse_retry_policy
from sagaloop.runtime.decisions.step_options import parse_step_options
from sagaloop.testing import VirtualClock, fail_step

RETRY_WORKER = TESTS_DIR / "upgrade_app" / "retry_worker.py"

P, E = "retry", "test"


class Boom(RuntimeError):
    pass


class Fatal(ValueError):
    pass


class VeryFatal(Fatal):
    pass


def recording_step(clock: VirtualClock, times: list, failures: int, error: type[BaseException] = Boom, value="ok"):
    """A handler that records the clock at each attempt and fails its first ``failures`` attempts."""
    def handler():
        times.append(clock.now_ms())
        if len(times) <= failures:
            raise error(f"attempt {len(times)} failed")
        return value
    return handler


def gaps(times: list) -> list:
    return [b - a for a, b in zip(times, times[1:])]


async def run_to_end(engine, clock: VirtualClock, tag: str, span="1h", workflow_id=None) -> sagaloop.WorkflowResult:
    """Start without waiting (retry waits follow the virtual clock), advance it, return the end."""
    started = await engine.workflows.execute(product=P, env=E, tag=tag, input={}, wait=False,
                                             workflow_id=workflow_id)
    await clock.advance(span)
    result = await engine.workflows.result(product=P, env=E, workflow_id=started.workflow_id, timeout=5000)
    assert result.status != "running", f"{tag} still running after advancing the clock {span}"
    return result


async def attempts_of(engine, workflow_id: str, step: str) -> int:
    return (await engine.workflows.step_detail(product=P, env=E, workflow_id=workflow_id, step_tag=step)).attempts


async def event_types(engine, workflow_id: str) -> list:
    return [e.type for e in (await engine.workflows.history(product=P, env=E, workflow_id=workflow_id)).events]


# -- the policy itself: defaults, parsing, property tests ------------------------------------------


def test_defaults_are_the_documented_ones():
    policy = parse_retry_policy({}, what="step 's'")
    assert policy.max_attempts == 3
    assert policy.initial_delay_ms == 1000
    assert policy.backoff == 2.0
    assert policy.max_delay_ms == 60_000
    assert policy.jitter is True
    assert policy.non_retryable == ()
    assert JITTER_BAND == (0.8, 1.2)
    # The dataclass defaults agree with the parser's.
    assert RetryPolicy() == policy


def test_string_and_timedelta_durations_in_the_policy():
    from datetime import timedelta
    policy = parse_retry_policy({"initial_delay": "250ms", "max_delay": timedelta(seconds=10)}, what="step 's'")
    assert policy.initial_delay_ms == 250
    assert policy.max_delay_ms == 10_000


def test_shorthand_is_fixed_delay_without_jitter():
    opts = parse_step_options("s", {"retries": 2, "retry_delay": "150ms"}, {})
    assert opts.retry.max_attempts == 3
    assert opts.retry.jitter is False
    assert [opts.retry.delay_ms(n, lambda: 0.99) for n in (1, 2, 3)] == [150, 150, 150]


@pytest.mark.parametrize("options, named", [
    ({"retry": {"max_attempts": 0}}, "0"),
    ({"retry": {"max_attempts": 2.5}}, "2.5"),
    ({"retry": {"max_attempts": True}}, "True"),
    ({"retry": {"backoff": 0.5}}, "0.5"),
    ({"retry": {"backoff": float("nan")}}, "nan"),
    ({"retry": {"initial_delay": "soon"}}, "'soon'"),
    ({"retry": {"initial_delay": -5}}, "-5"),
    ({"retry": {"max_delay": "forever"}}, "'forever'"),
    ({"retry": {"non_retryable": ["ValueError"]}}, "'ValueError'"),
    ({"retry": {"attempts": 3}}, "'attempts'"),
    ({"retry": 3}, "3"),
])
def test_bad_retry_values_name_themselves(options, named):
    with pytest.raises(sagaloop.InvalidArgumentError) as info:
        parse_step_options("charge", options, {})
    message = str(info.value)
    assert named in message, message
    assert "charge" in message, message  # and the step they belong to
    assert info.value.code in ("invalid_argument", "invalid_duration")


def test_retry_and_retries_together_is_invalid():
    for extra in ({"retries": 2}, {"retry_delay": 100}):
        with pytest.raises(sagaloop.InvalidArgumentError, match="retries"):
            parse_step_options("charge", {"retry": {"max_attempts": 2}, **extra}, {})
    # also when one comes as a keyword and the other in the options dict
    with pytest.raises(sagaloop.InvalidArgumentError):
        parse_step_options("charge", {"retry": {"max_attempts": 2}}, {"retries": 1})


policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 50),
    initial_delay_ms=st.floats(0, 1e7, allow_nan=False, allow_infinity=False),
    backoff=st.floats(1, 50, allow_nan=False, allow_infinity=False),
    max_delay_ms=st.floats(0, 1e8, allow_nan=False, allow_infinity=False),
    jitter=st.booleans(),
)
attempt_numbers = st.integers(1, 3000)


def expected_nominal(policy: RetryPolicy, n: int) -> float:
    """min(initial * backoff**(n-1), max_delay), computed independently (0 stays 0; no overflow)."""
    if policy.initial_delay_ms == 0 or policy.max_delay_ms == 0:
        return 0.0
    # Compare in log space first, so a huge backoff**(n-1) never has to be computed.
    log_grown = math.log(policy.initial_delay_ms) + (n - 1) * math.log(policy.backoff)
    if log_grown > math.log(policy.max_delay_ms) + 1e-9:
        return policy.max_delay_ms
    try:
        return min(policy.initial_delay_ms * policy.backoff ** (n - 1), policy.max_delay_ms)
    except OverflowError:  # a tiny initial delay times a huge power: the product still fits
        return min(math.exp(log_grown), policy.max_delay_ms)


@settings(max_examples=400, deadline=None)
@given(policies, attempt_numbers)
def test_nominal_delay_is_capped_exponential(policy, n):
    nominal = policy.nominal_delay_ms(n)
    plain = RetryPolicy(max_attempts=policy.max_attempts, initial_delay_ms=policy.initial_delay_ms,
                        backoff=policy.backoff, max_delay_ms=policy.max_delay_ms, jitter=False)
    assert math.isclose(nominal, expected_nominal(policy, n), rel_tol=1e-9, abs_tol=1e-9), (nominal, policy, n)
    assert 0 <= nominal <= policy.max_delay_ms
    # Without jitter the delay used is exactly the nominal one, whatever the random source says.
    assert plain.delay_ms(n, lambda: 0.731) == plain.nominal_delay_ms(n) == nominal


@settings(max_examples=400, deadline=None)
@given(policies, attempt_numbers, st.floats(0, 1, exclude_max=True, allow_nan=False))
def test_jittered_delay_stays_in_the_band(policy, n, r):
    jittered = RetryPolicy(max_attempts=policy.max_attempts, initial_delay_ms=policy.initial_delay_ms,
                           backoff=policy.backoff, max_delay_ms=policy.max_delay_ms, jitter=True)
    nominal = jittered.nominal_delay_ms(n)
    delay = jittered.delay_ms(n, lambda: r)
    eps = 1e-9 * max(1.0, nominal)
    assert 0.8 * nominal - eps <= delay <= 1.2 * nominal + eps, (delay, nominal, r)
    assert delay >= 0


@settings(max_examples=300, deadline=None)
@given(policies, st.integers(1, 200))
def test_delays_never_shrink_without_jitter(policy, upto):
    plain = RetryPolicy(max_attempts=policy.max_attempts, initial_delay_ms=policy.initial_delay_ms,
                        backoff=policy.backoff, max_delay_ms=policy.max_delay_ms, jitter=False)
    delays = [plain.delay_ms(n, lambda: 0.5) for n in range(1, upto + 2)]
    assert all(a <= b for a, b in zip(delays, delays[1:])), delays


@settings(max_examples=200, deadline=None)
@given(policies, st.integers(1, 60))
def test_attempts_stop_at_max_attempts(policy, failed):
    assert policy.retries_after(failed, Boom("x")) == (failed < policy.max_attempts)
    fatal = RetryPolicy(max_attempts=policy.max_attempts, non_retryable=(Fatal,))
    assert fatal.retries_after(failed, VeryFatal("x")) is False


# -- in a running engine, on the virtual clock --------------------------------------------------------


async def test_waits_between_attempts_follow_the_policy_exactly_without_jitter(tmp_path):
    clock = VirtualClock(start_ms=1_000_000)
    times: list = []
    async with sagaloop.Engine(tmp_path / "db", durability="fast", clock=clock) as engine:
        @engine.workflows.define(product=P, tag="exp")
        async def exp(ctx):
            return await ctx.step("call", recording_step(clock, times, failures=4),
                                  retry={"max_attempts": 5, "initial_delay": 100, "backoff": 2.0,
                                         "max_delay": 300, "jitter": False})

        result = await run_to_end(engine, clock, "exp")
        assert result.status == "completed", result
        assert result.output == "ok"
        assert len(times) == 5
        assert gaps(times) == [100, 200, 300, 300]  # 100, 200, 400 capped at 300, 800 capped at 300
        assert await attempts_of(engine, result.workflow_id, "call") == 5
        events = await event_types(engine, result.workflow_id)
        assert events.count("step_retrying") == 4


async def test_a_step_that_keeps_failing_stops_after_max_attempts(tmp_path):
    clock = VirtualClock(start_ms=1_000_000)
    times: list = []
    async with sagaloop.Engine(tmp_path / "db", durability="fast", clock=clock) as engine:
        @engine.workflows.define(product=P, tag="never")
        async def never(ctx):
            return await ctx.step("call", recording_step(clock, times, failures=99), None,
                                  {"retry": {"max_attempts": 4, "initial_delay": "1s", "backoff": 3,
                                             "jitter": False}})

        result = await run_to_end(engine, clock, "never", span="1d")
        assert result.status == "failed", result
        assert result.failed_step == "call"
        assert "attempt 4 failed" in result.error.message  # the last attempt's error
        assert gaps(times) == [1000, 3000, 9000]
        detail = await engine.workflows.step_detail(product=P, env=E, workflow_id=result.workflow_id,
                                                    step_tag="call")
        assert detail.attempts == 4
        assert detail.status == "failed"


async def test_jittered_waits_stay_within_80_to_120_percent(tmp_path):
    clock = VirtualClock(start_ms=1_000_000)
    times: list = []
    async with sagaloop.Engine(tmp_path / "db", durability="fast", clock=clock) as engine:
        @engine.workflows.define(product=P, tag="jit")
        async def jit(ctx):
            return await ctx.step("call", recording_step(clock, times, failures=5),
                                  retry={"max_attempts": 6, "initial_delay": 1000, "backoff": 2, "jitter": True,
                                         "max_delay": "5s"})

        result = await run_to_end(engine, clock, "jit")
        assert result.status == "completed"
        nominal = [1000, 2000, 4000, 5000, 5000]
        measured = gaps(times)
        assert len(measured) == 5
        for got, nom in zip(measured, nominal):
            # +-1: the clock reports whole milliseconds
            assert 0.8 * nom - 1 <= got <= 1.2 * nom + 1, (measured, nominal)
        assert await attempts_of(engine, result.workflow_id, "call") == 6


async def test_empty_retry_dict_uses_the_defaults(tmp_path):
    clock = VirtualClock(start_ms=1_000_000)
    times: list = []
    async with sagaloop.Engine(tmp_path / "db", durability="fast", clock=clock) as engine:
        @engine.workflows.define(product=P, tag="dflt")
        async def dflt(ctx):
            return await ctx.step("call", recording_step(clock, times, failures=10), retry={})

        result = await run_to_end(engine, clock, "dflt")
        assert result.status == "failed"
        assert len(times) == 3  # max_attempts 3
        first, second = gaps(times)
        assert 800 - 1 <= first <= 1200 + 1      # 1000 ms +-20 %
        assert 1600 - 1 <= second <= 2400 + 1    # backoff 2.0
        assert await attempts_of(engine, result.workflow_id, "call") == 3


async def test_shorthand_still_waits_a_fixed_delay(tmp_path):
    clock = VirtualClock(start_ms=1_000_000)
    times: list = []
    async with sagaloop.Engine(tmp_path / "db", durability="fast", clock=clock) as engine:
        @engine.workflows.define(product=P, tag="short")
        async def short(ctx):
            return await ctx.step("call", recording_step(clock, times, failures=2), retries=2, retry_delay=150)

        result = await run_to_end(engine, clock, "short")
        assert result.status == "completed"
        assert gaps(times) == [150, 150]
        assert await attempts_of(engine, result.workflow_id, "call") == 3


async def test_no_retry_option_means_one_attempt(tmp_path):
    clock = VirtualClock(start_ms=1_000_000)
    times: list = []
    async with sagaloop.Engine(tmp_path / "db", durability="fast", clock=clock) as engine:
        @engine.workflows.define(product=P, tag="once")
        async def once(ctx):
            return await ctx.step("call", recording_step(clock, times, failures=1))

        result = await run_to_end(engine, clock, "once")
        assert result.status == "failed"
        assert len(times) == 1
        assert await attempts_of(engine, result.workflow_id, "call") == 1


async def test_non_retryable_errors_stop_at_the_first_attempt(tmp_path):
    clock = VirtualClock(start_ms=1_000_000)
    fatal_times: list = []
    sub_times: list = []
    other_times: list = []
    policy = {"max_attempts": 5, "initial_delay": 10, "jitter": False, "non_retryable": [Fatal]}
    async with sagaloop.Engine(tmp_path / "db", durability="fast", clock=clock) as engine:
        @engine.workflows.define(product=P, tag="fatal")
        async def fatal(ctx):
            return await ctx.step("call", recording_step(clock, fatal_times, 99, Fatal), retry=policy)

        @engine.workflows.define(product=P, tag="subclass")
        async def subclass(ctx):
            return await ctx.step("call", recording_step(clock, sub_times, 99, VeryFatal), retry=policy)

        @engine.workflows.define(product=P, tag="other")
        async def other(ctx):
            return await ctx.step("call", recording_step(clock, other_times, 2, Boom), retry=policy)

        r1 = await run_to_end(engine, clock, "fatal")
        assert r1.status == "failed"
        assert len(fatal_times) == 1
        assert await attempts_of(engine, r1.workflow_id, "call") == 1
        assert "step_retrying" not in await event_types(engine, r1.workflow_id)

        r2 = await run_to_end(engine, clock, "subclass")
        assert r2.status == "failed"
        assert len(sub_times) == 1  # a subclass of a non-retryable class is non-retryable too
        assert await attempts_of(engine, r2.workflow_id, "call") == 1

        r3 = await run_to_end(engine, clock, "other")
        assert r3.status == "completed"  # other errors are still retried
        assert len(other_times) == 3
        assert await attempts_of(engine, r3.workflow_id, "call") == 3


async def test_fail_step_injections_count_as_attempts(tmp_path):
    clock = VirtualClock(start_ms=1_000_000)
    calls: list = []
    async with sagaloop.Engine(tmp_path / "db", durability="fast", clock=clock) as engine:
        @engine.workflows.define(product=P, tag="inj")
        async def inj(ctx):
            return await ctx.step("call", recording_step(clock, calls, 0),
                                  retry={"max_attempts": 4, "initial_delay": 50, "backoff": 1, "jitter": False})

        with fail_step(engine, "call", times=2):
            result = await run_to_end(engine, clock, "inj")
        assert result.status == "completed"
        assert len(calls) == 1  # the handler itself ran only on the third attempt
        assert await attempts_of(engine, result.workflow_id, "call") == 3


async def test_retry_and_retries_in_one_step_fail_the_run_with_invalid_argument(tmp_path):
    ran = []
    async with sagaloop.Engine(tmp_path / "db", durability="fast") as engine:
        @engine.workflows.define(product=P, tag="both")
        async def both(ctx):
            return await ctx.step("charge", lambda: ran.append(1), retry={"max_attempts": 2}, retries=3)

        result = await engine.workflows.execute(product=P, env=E, tag="both", input={})
        assert result.status == "failed"
        assert result.error.code == "invalid_argument"
        assert "charge" in result.error.message and "retries" in result.error.message
        assert ran == []


async def test_a_bad_policy_value_fails_the_run_naming_the_value(tmp_path):
    async with sagaloop.Engine(tmp_path / "db", durability="fast") as engine:
        @engine.workflows.define(product=P, tag="bad")
        async def bad(ctx):
            return await ctx.step("charge", lambda: 1, retry={"max_attempts": 5, "backoff": 0.25})

        result = await engine.workflows.execute(product=P, env=E, tag="bad", input={})
        assert result.status == "failed"
        assert result.error.code == "invalid_argument"
        assert "backoff" in result.error.message and "0.25" in result.error.message


# -- the wait between attempts is a durable timer: SIGKILL in the middle of it -------------------------


RETRY_WAIT_S = 3.0   # the wait after the second failure (see retry_worker.py)
KILL_AFTER_S = 1.0   # killed this far into that wait
EARLY = 0.05         # ms truncation and loop timer resolution


@pytest.mark.slow  # real processes, SIGKILLed
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
async def test_retry_wait_survives_sigkill_with_its_attempt_count_and_remaining_time(tmp_path):
    worker = load_module(RETRY_WORKER, "sagaloop_tests_retry_worker")
    datadir, sidefile = tmp_path / "data", tmp_path / "attempts.log"
    workflow_id = "retry-crash-1"
    child = Child(tmp_path, RETRY_WORKER, "start", datadir, sidefile, workflow_id)
    try:
        await asyncio.to_thread(child.wait_for, "FAILED 2")
        attempts = worker.read_attempts(sidefile)
        assert [a["n"] for a in attempts] == [1, 2]
        second_failed_at = attempts[1]["t"]
        # SIGKILL 1 s into the 3 s wait that follows the second failure.
        await asyncio.sleep(max(0.0, second_failed_at + KILL_AFTER_S - time.time()))
        child.sigkill()  # asserts it was still running, and died of the SIGKILL
        killed_at = time.time()
        assert killed_at < second_failed_at + RETRY_WAIT_S - 1.0, "killed too late to test the remaining wait"
    finally:
        child.cleanup()
    assert len(worker.read_attempts(sidefile)) == 2  # nothing ran while it was dead

    reopened_at = time.time()
    async with sagaloop.Engine(datadir) as engine:
        worker.define(engine, sidefile)
        result = await engine.workflows.result(product=worker.PRODUCT, env=worker.ENV, workflow_id=workflow_id,
                                               timeout=WAIT_S * 1000)
        assert result.status == "completed", result
        detail = await engine.workflows.step_detail(product=worker.PRODUCT, env=worker.ENV,
                                                    workflow_id=workflow_id, step_tag="flaky")
        assert detail.attempts == 3
        events = [e.type for e in (await engine.workflows.history(
            product=worker.PRODUCT, env=worker.ENV, workflow_id=workflow_id)).events]
    attempts = worker.read_attempts(sidefile)
    assert [a["n"] for a in attempts] == [1, 2, 3], attempts
    first_pid = attempts[0]["pid"]
    assert attempts[1]["pid"] == first_pid and first_pid != os.getpid()
    assert attempts[2]["pid"] == os.getpid()  # the third attempt ran here, after the restart
    third_at = attempts[2]["t"]
    deadline = second_failed_at + RETRY_WAIT_S
    assert third_at >= deadline - EARLY, f"third attempt {deadline - third_at:.3f} s before the original deadline"
    # Not a full new wait after the restart: that would end at reopened_at + 3 s.
    assert third_at < reopened_at + RETRY_WAIT_S - 0.5, (
        f"third attempt {third_at - reopened_at:.3f} s after the restart: the wait started again")
    assert result.output == {"attempt": 3}
    assert events.count("step_retrying") == 2
