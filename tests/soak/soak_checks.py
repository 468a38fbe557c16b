"""The soak's checks: the side log (what really happened) against the contract and the engine's records.

``check(events, killed, specs, records, listed)`` returns every violation
found, as ``Violation(check, workflow, shape, detail)``, and the figures of
what was checked. Inputs:

* ``events``: the side log (``soak_sidelog.read_side_log``), in file order;
* ``killed``: the lives the driver SIGKILLed (every life but the final one);
* ``specs``: the spec of every top-level workflow the worker started;
* ``records``: what the engine says after the last worker exited, per
  workflow id (top level and children): ``result`` (``WorkflowResult.to_dict``),
  ``state`` (``status().state``), ``history`` (``[{type, timestamp, data}]``),
  ``steps`` (tag -> ``StepDetail.to_dict`` or None);
* ``listed``: every instance ``list()`` shows, id -> type (``original``, ``child``).

What the contract promises (``/shared/API.md``, README "Guarantees"), as checked here:

* a step is recorded exactly once: once ``ctx.step`` returned (``step_acked``),
  its handler never runs again, and every later replay gets the recorded output;
  a step runs again only across a kill (at-least-once), never twice in one life
  unless it has a retry policy;
* compensations always finish: the family's compensations run in the order the
  strategy gives (``soak_plan.expect``), each once, except that the one in
  flight at a kill may run again in the next life (never twice in one life,
  never after the next one started); each one's last run reached its end;
* a signal ``signal()`` accepted is delivered exactly once, in acceptance order;
  an instance never waits while an accepted signal sits unconsumed;
* updates acknowledged are applied once, in order, and survive kills; a query
  after an acknowledged update sees it;
* the history has one start, one end (last), no duplicate step events, one
  ``step_rolled_back`` per compensation, the signals accepted, in order, and
  non-decreasing timestamps;
* every started workflow (and child) reaches an end;
* the engine logs no warning or error of its own, and every engine call the
  worker makes returns (within 10 s) with an answer the contract allows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from soak_plan import END_STATUSES, Expected, child_specs, expect, label

RETRYING_OPS = ("retry_step",)


@dataclass(frozen=True)
class Violation:
    check: str
    workflow: str
    shape: str    # the spec's label: kind/strategy[/policy][/where it blocks]
    detail: str

    @property
    def kind(self) -> str:
        """The workflow kind (``signals``, ``fail``, ``child of parent-cancel``, ...), to group violations."""
        return self.shape.split("/")[0]

    def __str__(self) -> str:
        return f"[{self.check}] {self.workflow} ({self.shape}): {self.detail}"


@dataclass
class Figures:
    """What the checks covered."""

    workflows: int = 0
    children: int = 0
    steps: int = 0
    signals: int = 0
    updates: int = 0
    cancels: int = 0
    rollbacks: int = 0
    compensations: int = 0
    spanned: int = 0          # workflows (and children) with side effects in more than one life
    steps_rerun: int = 0      # steps whose handler ran again after a kill (at-least-once seen)
    comps_rerun: int = 0      # compensations that ran again after a kill
    sends_in_doubt: int = 0   # signal/update/cancel calls a kill interrupted, resolved by the next life
    statuses: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class _Index:
    """The side log grouped by event and workflow."""

    def __init__(self, events: list[dict]) -> None:
        self.by: dict[tuple[str, str | None], list[dict]] = defaultdict(list)
        for e in events:
            self.by[(e["ev"], e.get("wf"))].append(e)

    def __call__(self, ev: str, wf: str | None) -> list[dict]:
        return self.by.get((ev, wf), [])


class Checker:
    """Runs every check over one soak run; ``violations`` and ``figures`` hold the outcome."""

    def __init__(self, events: list[dict], killed: set[int], specs: dict[str, dict], records: dict[str, dict],
                 listed: dict[str, str]) -> None:
        self.events, self.killed, self.specs, self.records, self.listed = events, killed, specs, records, listed
        self.ix = _Index(events)
        self.violations: list[Violation] = []
        self.figures = Figures()
        self._shape: dict[str, str] = {}

    def fail(self, check: str, wf: str, detail: str) -> None:
        self.violations.append(Violation(check, wf, self._shape.get(wf, "?"), detail))

    # -- the whole run ------------------------------------------------------------------------------------

    def run(self) -> list[Violation]:
        for wf, spec in self.specs.items():
            self._shape[wf] = label(spec)
            for kid in child_specs(spec):
                self._shape[kid["wf"]] = f"child of {label(spec)} ({label(kid)})"
        for (ev, wf), found in self.ix.by.items():
            for e in found:
                if ev == "call_error":
                    self.fail("call_error", wf or "-", f"life {e['life']}: {e['what']}: {e['error']}")
                elif ev == "engine_log":
                    self.fail("engine_log", wf or "-", f"life {e['life']}: the engine logged {e['level']} "
                                                       f"{e['message']!r} ({e['error']})")
                elif ev == "starter_stalled":
                    self.fail("starter_stalled", "-", f"life {e['life']}: no workflow ended for a while with every "
                                                      f"slot taken; {e['left']} were never started")
        self._instances()
        self._recovery_figures()
        for wf, spec in self.specs.items():
            self._family(wf, spec)
        return self.violations

    def _recovery_figures(self) -> None:
        """How much recovery the run exercised (figures only; the checks are elsewhere)."""
        lives: dict[str, set[int]] = defaultdict(set)
        step_lives: dict[tuple[str, str], set[int]] = defaultdict(set)
        for e in self.events:
            if e.get("wf"):
                lives[e["wf"]].add(e["life"])
            if e["ev"] == "step_ran":
                step_lives[(e["wf"], e["step"])].add(e["life"])
        self.figures.spanned = sum(1 for found in lives.values() if len(found) > 1)
        self.figures.steps_rerun = sum(1 for found in step_lives.values() if len(found) > 1)
        for sent, answered in (("signal_sending", ("signal_accepted", "signal_refused")),
                               ("update_sending", ("update_acked", "update_refused")),
                               ("cancel_sent", ("cancel_done",))):
            for (ev, wf), found in list(self.ix.by.items()):
                if ev != sent:
                    continue
                for e in found:
                    key = e.get("seq", e.get("uid"))
                    replied = any(r["life"] == e["life"] and r.get("seq", r.get("uid")) == key
                                  for name in answered for r in self.ix(name, wf))
                    self.figures.sends_in_doubt += not replied and e["life"] in self.killed

    def _instances(self) -> None:
        """The engine holds exactly the started workflows and their children, no more."""
        top = {wf for wf, kind in self.listed.items() if kind != "child"}
        kids = {wf for wf, kind in self.listed.items() if kind == "child"}
        expected_kids = {k["wf"] for spec in self.specs.values() for k in child_specs(spec)}
        for wf in sorted(top - set(self.specs)):
            self.fail("instances", wf, "the engine holds a top-level workflow the worker never logged as started")
        for wf in sorted(set(self.specs) - top):
            self.fail("instances", wf, "started (the worker logged it) but the engine has no such instance")
        for wf in sorted(kids - expected_kids):
            self.fail("instances", wf, "the engine holds a child workflow no started parent asked for")
        for wf in sorted(expected_kids - kids):
            self.fail("instances", wf, "the parent asked for this child but the engine has no such instance")

    # -- one top-level workflow and its child ---------------------------------------------------------------

    def _ending(self, wf: str, spec: dict) -> tuple[str, bool]:
        """How this family must have ended: (``expect`` ending, whether the child completed inside the parent)."""
        if spec["kind"] == "cancel":
            return "cancel", False
        if spec["kind"] != "parent-cancel":
            return "natural", False
        # Whether the parent's cancel came after its child completed: the parent's record says (the
        # handler may not have seen ctx.workflow return if the cancel hit the commit of its end;
        # _child_step_agrees checks the other direction).
        record = self.records.get(wf) or {}
        kid = child_specs(spec)[0]["wf"]
        detail = (record.get("steps") or {}).get(kid)
        child_done = detail is not None and detail["status"] in ("completed", "rolled_back")
        result = record.get("result") or {}
        if spec["policy"] == "terminate" and result.get("status") != "cancelled" \
                and (result.get("error") or {}).get("code") == "child_failed" and self._cancel_in_doubt(wf):
            # The close cancelled the child, then the kill came before the parent's end was durable:
            # the parent, run again, found its child cancelled and failed at the child step.
            return "child_failed", False
        return "cancel", child_done

    def _cancel_in_doubt(self, wf: str) -> bool:
        """A ``cancel()`` of ``wf`` was in flight when a life was killed."""
        sent = {e["life"] for e in self.ix("cancel_sent", wf)}
        done = {e["life"] for e in self.ix("cancel_done", wf)}
        return any(life in self.killed for life in sent - done)

    def _family(self, wf: str, spec: dict) -> None:
        ending, child_done = self._ending(wf, spec)
        exp = expect(spec, ending, child_completed=child_done)
        self.figures.workflows += 1
        members: list[tuple[str, dict, Expected]] = [(wf, spec, exp)]
        for kid in child_specs(spec):
            kid_exp = exp.children.get(kid["wf"])
            if kid_exp is None:
                self.fail("internal", wf, f"no expectation for child {kid['wf']} (ending {ending})")
                continue
            members.append((kid["wf"], kid, kid_exp))
            self.figures.children += 1
        if spec["kind"] == "parent-cancel":
            self._child_step_agrees(wf, spec, child_done)
            kid = child_specs(spec)[0]["wf"]
            if spec["policy"] == "abandon" and self.ix("cancel_requested_seen", kid):
                self.fail("close_policy", kid, "an abandoned child saw ctx.cancel_requested become true")
        if exp.comps or exp.status != "completed":
            self.figures.rollbacks += 1
        self.figures.compensations += len(exp.comps)
        self.figures.cancels += len(self.ix("cancel_done", wf))
        for member, member_spec, member_exp in members:
            self._end(member, member_exp)
            self._steps(member, member_spec)
            self._history(member, member_spec, member_exp)
        self._compensations(wf, [m for m, _, _ in members], exp)
        if spec["signals"]:
            self._signals(wf, spec)
        if spec["updates"]:
            self._updates(wf, spec)

    def _child_step_agrees(self, wf: str, spec: dict, child_done: bool) -> None:
        """A ``ctx.workflow`` the handler saw return is recorded as a completed step of the parent."""
        kid = child_specs(spec)[0]["wf"]
        if self.ix("child_acked", wf) and not child_done:
            detail = (self.records.get(wf) or {}).get("steps", {}).get(kid)
            self.fail("child_step", wf, f"the handler saw ctx.workflow({kid!r}) return, but its step is recorded "
                                        f"as {detail and detail['status']!r}")

    # -- the end ------------------------------------------------------------------------------------------

    def _end(self, wf: str, exp: Expected) -> None:
        rec = self.records.get(wf)
        if rec is None:
            return  # reported by _instances
        result = rec["result"]
        status = result["status"]
        self.figures.statuses[status] += 1
        if status not in END_STATUSES:
            self.fail("not_ended", wf, f"still {status!r} after the final worker: {self._why_running(wf, rec)}")
            return
        if status != exp.status:
            self.fail("end_status", wf, f"ended {status!r}, expected {exp.status!r} "
                                        f"(error {result.get('error')}, rollback {result.get('rollback_result')})")
            return
        rb = result.get("rollback_result")
        rolled = rb["rolled_back_steps"] if rb else []
        if rolled != exp.rolled_back_steps:
            self.fail("rollback_result", wf, f"rolled_back_steps {rolled}, expected {exp.rolled_back_steps}")
        if rb and exp.trigger and rb.get("trigger") != exp.trigger:
            self.fail("rollback_result", wf, f"trigger {rb.get('trigger')!r}, expected {exp.trigger!r}")
        if rb and not rb["success"]:
            self.fail("rollback_result", wf, f"a compensation failed: {rb['failed_steps']}")
        code = (result.get("error") or {}).get("code")
        if code != exp.error_code:
            self.fail("end_status", wf, f"error code {code!r}, expected {exp.error_code!r} ({result.get('error')})")
        if exp.failed_step is not None and result.get("failed_step") != exp.failed_step:
            self.fail("end_status", wf, f"failed_step {result.get('failed_step')!r}, expected {exp.failed_step!r}")
        ended = self.ix("ended", wf)
        if ended and ended[-1]["status"] != status:
            self.fail("result_mismatch", wf, f"result() said {ended[-1]['status']!r}, the record says {status!r}")

    def _why_running(self, wf: str, rec: dict) -> str:
        accepted = [e["seq"] for e in self.ix("signal_accepted", wf)]
        got = sorted({e["seq"] for e in self.ix("signal_got", wf)})
        waits = [e["type"] for e in rec["history"]][-3:]
        return f"signals accepted {accepted}, consumed {got}; last history events {waits}"

    # -- steps --------------------------------------------------------------------------------------------

    def _steps(self, wf: str, spec: dict) -> None:
        retrying = {op["tag"] for op in spec["ops"] if op["op"] in RETRYING_OPS}
        tags = {e["step"] for e in self.ix("step_ran", wf)} | {e["step"] for e in self.ix("step_acked", wf)}
        details = (self.records.get(wf) or {}).get("steps", {})
        for tag in sorted(tags):
            runs = [e for e in self.ix("step_ran", wf) if e["step"] == tag]
            acks = [e for e in self.ix("step_acked", wf) if e["step"] == tag]
            if tag not in retrying:
                lives = [e["life"] for e in runs]
                if len(set(lives)) != len(lives):
                    self.fail("step_rerun", wf, f"step {tag!r} ran {len(runs)} times in lives {lives}: twice in "
                                                f"one life, with no retry policy")
            for earlier, later in zip(runs, runs[1:]):
                if earlier["life"] != later["life"] and earlier["life"] not in self.killed:
                    self.fail("step_rerun", wf, f"step {tag!r} ran again in life {later['life']} although life "
                                                f"{earlier['life']} was not killed")
            if not acks:
                continue
            self.figures.steps += 1
            first_ack = acks[0]["n"]
            after = [e for e in runs if e["n"] > first_ack]
            if after:
                self.fail("step_rerun_after_ack", wf, f"step {tag!r} was acknowledged (life {acks[0]['life']}) and "
                                                      f"its handler ran again in life(s) {[e['life'] for e in after]}")
            tokens = {e["token"] for e in acks}
            if len(tokens) != 1:
                self.fail("step_output", wf, f"step {tag!r} returned different outputs: {sorted(tokens)}")
            last_run = [e for e in runs if e["n"] < first_ack][-1:]
            if last_run and acks[0]["token"] != last_run[0]["token"]:
                self.fail("step_output", wf, f"step {tag!r} returned the output of run {acks[0]['token']}, not of "
                                             f"its last run {last_run[0]['token']} (life {last_run[0]['life']})")
            detail = details.get(tag)
            if detail is None:
                self.fail("step_record", wf, f"acknowledged step {tag!r} has no step_detail")
                continue
            out = detail.get("output") or {}
            if detail["status"] not in ("completed", "rolled_back") or out.get("token") != acks[0]["token"]:
                self.fail("step_record", wf, f"acknowledged step {tag!r} (token {acks[0]['token']}) is recorded "
                                             f"{detail['status']!r} with output {detail.get('output')}")
            if not 1 <= detail["attempts"] <= len(runs):
                self.fail("step_record", wf, f"step {tag!r}: {detail['attempts']} attempts recorded, "
                                             f"{len(runs)} runs of its handler seen")

    # -- compensations ------------------------------------------------------------------------------------

    def _compensations(self, wf: str, members: list[str], exp: Expected) -> None:
        ran = [e for m in members for e in self.ix("comp_ran", m)]
        ran.sort(key=lambda e: e["n"])
        collapsed: list[dict] = []
        for e in ran:
            prev = collapsed[-1] if collapsed else None
            if prev is not None and (prev["wf"], prev["step"]) == (e["wf"], e["step"]):
                if prev["life"] == e["life"]:
                    self.fail("comp_twice", wf, f"compensation {e['wf']}:{e['step']} ran twice in life {e['life']}")
                elif prev["life"] not in self.killed:
                    self.fail("comp_twice", wf, f"compensation {e['wf']}:{e['step']} ran again in life {e['life']} "
                                                f"although life {prev['life']} was not killed")
                collapsed[-1] = e  # at-least-once across a kill: it was in flight
                self.figures.comps_rerun += 1
                continue
            collapsed.append(e)
        seen = [(e["wf"], e["step"]) for e in collapsed]
        if seen != exp.comps:
            self.fail("comp_order", wf, f"compensations ran as {_fmt(seen)}, expected {_fmt(exp.comps)} "
                                        f"(each once, in this order)")
        last_runs = {(e["wf"], e["step"]): e for e in ran}
        for key, e in last_runs.items():  # each one's last run reached its end
            done = [d for d in self.ix("comp_done", e["wf"]) if d["step"] == e["step"] and d["n"] > e["n"]
                    and d["life"] == e["life"]]
            if not done:
                self.fail("comp_unfinished", wf, f"compensation {key[0]}:{key[1]} never finished (last run in life "
                                                 f"{e['life']})")
        for e in ran:
            key = (e["wf"], e["step"])
            if key not in exp.comp_args:
                continue
            want = None
            if exp.comp_args[key] == "output":
                acks = [a for a in self.ix("step_acked", e["wf"]) if a["step"] == e["step"]]
                want = acks[0]["token"] if acks else "<the recorded output>"
            if e["arg"] != want:
                self.fail("comp_arg", wf, f"compensation {key[0]}:{key[1]} got {e['arg']!r}, expected {want!r}")
        # The step records say the same: rolled back exactly the compensated steps (and compensated children).
        expected_done = set(exp.comps) | {(wf, kid) for kid in members[1:] if kid in exp.rolled_back_steps}
        for member in members:
            for tag, detail in ((self.records.get(member) or {}).get("steps") or {}).items():
                if detail is None:
                    continue
                recorded = detail.get("rollback_status") == "completed"
                if (member, tag) in expected_done and not recorded:
                    self.fail("comp_record", wf, f"{member}:{tag} was compensated but its step_detail says "
                                                 f"rollback_status {detail.get('rollback_status')!r}")
                if recorded and (member, tag) not in expected_done:
                    self.fail("comp_record", wf, f"{member}:{tag} is recorded as rolled back but should not be")
        for e in self.ix("rollback_returned", wf):
            if e["rolled"] != exp.rolled_back_steps:
                self.fail("rollback_result", wf, f"trigger_rollback returned {e['rolled']}, expected "
                                                 f"{exp.rolled_back_steps}")

    # -- signals ------------------------------------------------------------------------------------------

    def _signals(self, wf: str, spec: dict) -> None:
        accepted = [e["seq"] for e in self.ix("signal_accepted", wf)]
        self.figures.signals += len(accepted)
        if len(set(accepted)) != len(accepted):
            self.fail("signal_accept", wf, f"signal seqs accepted more than once: {accepted}")
        at: dict[int, set[int]] = defaultdict(set)
        for e in self.ix("signal_got", wf):
            at[e["k"]].add(e["seq"])
        for k, seqs in sorted(at.items()):
            if len(seqs) > 1:
                self.fail("signal_delivery", wf, f"wait #{k} returned different signals on replay: {sorted(seqs)}")
        delivered = [min(at[k]) for k in sorted(at)]
        dupes = sorted({s for s in delivered if delivered.count(s) > 1})
        if dupes:
            self.fail("signal_twice", wf, f"signal(s) {dupes} delivered to more than one wait: {delivered}")
        phantom = sorted(set(delivered) - set(accepted))
        if phantom:
            self.fail("signal_phantom", wf, f"delivered signal(s) {phantom} that signal() never accepted")
        if delivered != accepted[:len(delivered)]:
            self.fail("signal_order", wf, f"waits got signals {delivered}, accepted in order {accepted}")
        result = (self.records.get(wf) or {}).get("result") or {}
        if result.get("status") == "completed" and len(delivered) < len(accepted):
            self.fail("signal_lost", wf, f"completed having consumed {delivered} of the accepted {accepted}")
        for e in self.ix("stuck_seen", wf):
            self.fail("signal_stuck", wf, f"life {e['life']}: waited for a signal {e['for_s']} s while accepted "
                                          f"signal(s) {e['pending']} stayed unconsumed (consumed {e['got']})")
        history = (self.records.get(wf) or {}).get("history") or []
        received = [(e["data"].get("payload") or {}).get("seq") for e in history if e["type"] == "signal_received"]
        if received != accepted:
            self.fail("history_signals", wf, f"history has signal_received {received}, accepted {accepted}")

    # -- updates and queries ------------------------------------------------------------------------------

    def _updates(self, wf: str, spec: dict) -> None:
        acked = self.ix("update_acked", wf)
        refused = {e["uid"] for e in self.ix("update_refused", wf)}
        self.figures.updates += len(acked)
        state = ((self.records.get(wf) or {}).get("state") or {}).get("updates", [])
        if len(set(state)) != len(state):
            self.fail("update_twice", wf, f"an update was applied twice: state {state}")
        order = [e["uid"] for e in acked]
        if [u for u in state if u in set(order)] != order or set(state) - set(order):
            self.fail("update_state", wf, f"state has updates {state}, acknowledged in order {order}")
        for e in acked:
            if e["uid"] in state and e["reply"] != state.index(e["uid"]) + 1:
                self.fail("update_reply", wf, f"update {e['uid']} replied {e['reply']}, but is number "
                                              f"{state.index(e['uid']) + 1} in the state")
        if refused & set(state):
            self.fail("update_state", wf, f"refused update(s) {sorted(refused & set(state))} are in the state")
        for q in self.ix("query", wf):
            before = [e["uid"] for e in acked if e["n"] < q["n"] and e["life"] == q["life"]]
            if q["updates"] != state[:len(q["updates"])] or not set(before) <= set(q["updates"]):
                self.fail("query", wf, f"life {q['life']}: query saw {q['updates']} after acknowledged {before}; "
                                       f"final state {state}")

    # -- history ------------------------------------------------------------------------------------------

    def _history(self, wf: str, spec: dict, exp: Expected) -> None:
        rec = self.records.get(wf)
        if rec is None:
            return
        events = rec["history"]
        types = [e["type"] for e in events]
        ends = [t for t in types if t in {f"workflow_{s}" for s in END_STATUSES}]
        if not types or types[0] != "workflow_started" or types.count("workflow_started") != 1:
            self.fail("history_shape", wf, f"does not start with one workflow_started: {types[:3]}")
        if rec["result"]["status"] in END_STATUSES and (ends != [f"workflow_{rec['result']['status']}"]
                                                        or types[-1] != ends[-1]):
            self.fail("history_shape", wf, f"end events {ends} (last event {types[-1]!r}) for a "
                                           f"{rec['result']['status']!r} run")
        stamps = [e["timestamp"] for e in events]
        back = [(events[i - 1]["type"], events[i]["type"]) for i in range(1, len(stamps)) if stamps[i] < stamps[i - 1]]
        if back:
            self.fail("history_order", wf, f"timestamps go back between {back[:3]}")
        per_step: dict[tuple[str, str], int] = defaultdict(int)
        for e in events:
            if e["type"] in ("step_started", "step_completed", "step_failed", "step_skipped", "step_rolled_back"):
                per_step[(e["type"], e["data"]["step"])] += 1
        dupes = sorted(f"{t}:{s} x{n}" for (t, s), n in per_step.items() if n > 1)
        if dupes:
            self.fail("history_duplicate", wf, f"duplicate events {dupes}")
        outputs = {e["data"]["step"]: e["data"].get("output") for e in events if e["type"] == "step_completed"}
        first_acks = {}
        for ack in self.ix("step_acked", wf):
            first_acks.setdefault(ack["step"], ack)
        for tag, ack in first_acks.items():
            if tag not in outputs:
                self.fail("history_gap", wf, f"acknowledged step {tag!r} has no step_completed event")
            elif (outputs[tag] or {}).get("token") != ack["token"]:
                self.fail("history_output", wf, f"step_completed of {tag!r} shows {outputs[tag]}, "
                                                f"acknowledged {ack['token']}")
        rolled = sorted(s for (t, s), n in per_step.items() if t == "step_rolled_back")
        if rec["result"]["status"] in END_STATUSES and rolled != sorted(exp.rolled_back_steps):
            self.fail("history_rollback", wf, f"step_rolled_back for {rolled}, expected "
                                              f"{sorted(exp.rolled_back_steps)}")


def _fmt(comps: list[tuple[str, str]]) -> str:
    return "[" + ", ".join(f"{w}:{s}" for w, s in comps) + "]"


def check(events: list[dict], killed: set[int], specs: dict[str, dict], records: dict[str, dict],
          listed: dict[str, str]) -> tuple[list[Violation], Figures]:
    """Every violation of the run, and the figures of what was checked."""
    checker = Checker(events, killed, specs, records, listed)
    checker.run()
    return checker.violations, checker.figures
