"""The SIGKILL soak as tests: the worker killed at seeded random moments and restarted, then every check.

* ``test_sigkill_soak_fast``: 20 cycles on a fixed seed, in the default run
  (20-30 s on 2 cores; ``SAGALOOP_SOAK_SEED`` picks another seed).
* ``test_soak_checks_catch_planted_violations``: the checks, given that same
  run with one violation planted at a time, report each one (a check that
  cannot fail proves nothing).
* ``test_sigkill_soak_long``: ``SAGALOOP_SOAK_CYCLES`` cycles (500+ is the
  intended size), marked ``soak``; skipped unless that variable is set.

All of them are marked ``slow`` (real processes, real time): in the default
run, left out by ``-m "not slow"``.

``SAGALOOP_SOAK_DURABILITY=durable`` runs them on ``durable``. The same run
from the command line: ``python -m tests.soak.driver --cycles N --seed S``.
See ``driver.py`` for the cycle and ``soak_checks.py`` for what is checked.
"""

from __future__ import annotations

import copy
import os
import signal
import sys
from pathlib import Path
from typing import Callable

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the soak's own modules, whatever the import mode

from driver import Report, Settings, format_report, run_soak  # noqa: E402
from soak_checks import check  # noqa: E402

pytestmark = [pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL"),
              pytest.mark.slow]  # slow: real processes, SIGKILLed (the planted checks use the fast soak too)

FAST_CYCLES = 20
DEFAULT_SEED = 20250101


def _settings(cycles: int) -> Settings:
    return Settings(cycles=cycles, seed=int(os.environ.get("SAGALOOP_SOAK_SEED", DEFAULT_SEED)),
                    durability=os.environ.get("SAGALOOP_SOAK_DURABILITY", "fast"))


def _soak(settings: Settings, workdir: Path) -> Report:
    report = run_soak(settings, workdir, log=lambda line: print(line, flush=True))
    print(format_report(report))
    return report


def _assert_clean(report: Report) -> None:
    assert report.ok, "\n" + format_report(report)
    # The run really exercised what it checks (a checker that saw nothing would pass too).
    f, s = report.figures, report.settings
    assert report.kills == s.cycles
    assert f.workflows >= s.per_cycle * s.cycles
    assert f.steps and f.signals and f.updates and f.cancels and f.rollbacks and f.compensations and f.children
    assert f.spanned and f.steps_rerun


@pytest.fixture(scope="module")
def fast_soak(tmp_path_factory: pytest.TempPathFactory) -> Report:
    return _soak(_settings(FAST_CYCLES), tmp_path_factory.mktemp("soak"))


def test_sigkill_soak_fast(fast_soak: Report) -> None:
    _assert_clean(fast_soak)


# -- the checks catch what they are for -----------------------------------------------------------------


def _first(inputs: dict, ev: str, where: Callable[[dict], bool] = lambda e: True) -> dict:
    """The first event ``ev`` (matching ``where``) of a workflow the checks found nothing wrong with."""
    found = [e for e in inputs["events"] if e["ev"] == ev and e.get("wf") not in inputs["flagged"] and where(e)]
    if not found:
        pytest.skip(f"the run has no {ev!r} event to plant a violation on")
    return found[0]


def _append(events: list[dict], event: dict) -> None:
    events.append({**event, "n": len(events)})


def _rerun_acked_step(inputs: dict) -> str:
    ack = _first(inputs, "step_acked", lambda e: e["wf"] in inputs["specs"])
    _append(inputs["events"], {"ev": "step_ran", "life": ack["life"], "wf": ack["wf"], "step": ack["step"],
                               "token": "planted"})
    return ack["wf"]


def _compensate_twice(inputs: dict) -> str:
    ran = _first(inputs, "comp_ran", lambda e: e["wf"] in inputs["specs"])
    events = inputs["events"]
    events.insert(ran["n"] + 1, dict(ran))
    for n, e in enumerate(events):
        e["n"] = n
    return ran["wf"]


def _swap_two_signals(inputs: dict) -> str:
    got = _first(inputs, "signal_got", lambda e: e["k"] == 1 and e["seq"] == 1)
    for e in inputs["events"]:
        if e["ev"] == "signal_got" and e["wf"] == got["wf"] and e["k"] in (0, 1):
            e["seq"] = 1 - e["k"]
    return got["wf"]


def _lose_an_update(inputs: dict) -> str:
    acked = _first(inputs, "update_acked")
    inputs["records"][acked["wf"]]["state"]["updates"].remove(acked["uid"])
    return acked["wf"]


def _duplicate_step_completed(inputs: dict) -> str:
    ack = _first(inputs, "step_acked", lambda e: e["wf"] in inputs["specs"])
    history = inputs["records"][ack["wf"]]["history"]
    done = next(e for e in history if e["type"] == "step_completed" and e["data"]["step"] == ack["step"])
    history.insert(history.index(done) + 1, dict(done))
    return ack["wf"]


def _leave_running(inputs: dict) -> str:
    wf = next(wf for wf in inputs["specs"] if wf not in inputs["flagged"])
    inputs["records"][wf]["result"]["status"] = "running"
    return wf


@pytest.mark.parametrize("plant, expected_check", [
    (_rerun_acked_step, "step_rerun_after_ack"),
    (_compensate_twice, "comp_twice"),
    (_swap_two_signals, "signal_order"),
    (_lose_an_update, "update_state"),
    (_duplicate_step_completed, "history_duplicate"),
    (_leave_running, "not_ended"),
])
def test_soak_checks_catch_planted_violations(fast_soak: Report, plant, expected_check) -> None:
    if not fast_soak.inputs:
        pytest.skip("the soak run did not get as far as the checks")
    before = {(v.check, v.workflow) for v in fast_soak.violations}
    inputs = copy.deepcopy(fast_soak.inputs)
    inputs["flagged"] = {v.workflow for v in fast_soak.violations}
    wf = plant(inputs)
    del inputs["flagged"]
    violations, _ = check(**inputs)
    found = {(v.check, v.workflow) for v in violations} - before
    assert (expected_check, wf) in found, f"planted {expected_check} on {wf}, the checks found {sorted(found)}"


# -- the long one ----------------------------------------------------------------------------------------


@pytest.mark.soak
@pytest.mark.skipif("SAGALOOP_SOAK_CYCLES" not in os.environ, reason="set SAGALOOP_SOAK_CYCLES=N (e.g. 500) to run")
def test_sigkill_soak_long(tmp_path: Path) -> None:
    _assert_clean(_soak(_settings(int(os.environ["SAGALOOP_SOAK_CYCLES"])), tmp_path))
