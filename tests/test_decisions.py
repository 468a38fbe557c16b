"""The pure decisions not covered elsewhere, tested directly on plain data.

(The rollback planner and the ending status: ``test_compensation_properties.py``; history, the
entry codec, the inbox, the trampoline, durations and retry policies: ``test_pure_parts.py``.)

- ``merge_rollbacks``: the results of a run's rollbacks (manual ones, then the final one) as one.
- ``error_dict``: the error record of an exception.
- ``idempotency_scope``: one key per product, env and workflow, refused when too long for the store.
- the vocabulary: each tuple of words is exactly its ``Literal``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sagaloop.errors import InvalidArgumentError
from sagaloop.runtime import vocabulary
from sagaloop.runtime.decisions.outcome import error_dict, merge_rollbacks
from sagaloop.runtime.front.starts import MAX_SCOPE_BYTES, idempotency_scope

tags = st.sampled_from(["charge", "reserve", "ship", "notify", "bill"])
failures = st.lists(st.fixed_dictionaries({"tag": tags, "error": st.text(max_size=10)}), max_size=3)
results = st.fixed_dictionaries({
    "rolled_back_steps": st.lists(tags, unique=True, max_size=4),
    "failed_steps": failures,
    "reason": st.text(max_size=10),
    "trigger": st.sampled_from(vocabulary.TRIGGERS),
}).map(lambda r: {**r, "success": not r["failed_steps"]})


def test_no_rollback_merges_to_none():
    assert merge_rollbacks([]) is None


@given(results)
def test_one_rollback_is_itself(result):
    assert merge_rollbacks([result]) == result


@given(st.lists(results, min_size=2, max_size=4))
def test_many_rollbacks_merge_in_order_without_repeats(many):
    merged = merge_rollbacks(many)
    assert merged is not None
    seen: list[str] = []
    for r in many:
        seen += [t for t in r["rolled_back_steps"] if t not in seen]
    assert merged["rolled_back_steps"] == seen  # first time each step was rolled back, in that order
    assert merged["failed_steps"] == [f for r in many for f in r["failed_steps"]]
    assert merged["success"] is (not merged["failed_steps"])
    assert (merged["reason"], merged["trigger"]) == (many[-1]["reason"], many[-1]["trigger"])


class Coded(Exception):
    def __init__(self, message: str, code: object) -> None:
        super().__init__(message)
        self.code = code


@given(st.text(max_size=20), st.one_of(st.none(), st.integers(), st.text(min_size=1, max_size=10)),
       st.one_of(st.none(), st.text(min_size=1, max_size=5)))
def test_an_error_record_names_message_code_type_and_step(message, code, step):
    record = error_dict(Coded(message, code), step=step, default_code="fallback")
    assert record == {"message": message or "Coded", "step": step,
                      "code": code if isinstance(code, str) else "fallback", "type": "Coded"}


@given(st.text(min_size=1, max_size=600).filter(lambda k: "\x00" not in k))
def test_an_idempotency_scope_is_unique_per_workflow_and_fits_the_store(key):
    size = len(f"shop\x1fprd\x1forder\x1f{key}".encode(errors="replace"))
    if size > MAX_SCOPE_BYTES:
        with pytest.raises(InvalidArgumentError, match="idempotency_key .* too long"):
            idempotency_scope("shop", "prd", "order", key)
        return
    scope = idempotency_scope("shop", "prd", "order", key)
    assert scope != idempotency_scope("shop", "dev", "order", key)
    assert scope != idempotency_scope("shop", "prd", "refund", key)
    assert scope == idempotency_scope("shop", "prd", "order", key)


@pytest.mark.parametrize("words,literal", [
    (vocabulary.STATUSES, vocabulary.Status), (vocabulary.STRATEGIES, vocabulary.Strategy),
    (vocabulary.TRIGGERS, vocabulary.Trigger), (vocabulary.PARENT_CLOSE_POLICIES, vocabulary.ParentClosePolicy),
])
def test_each_word_list_is_its_literal(words, literal):
    assert words == get_args(literal) and len(set(words)) == len(words)


def test_every_trigger_the_runtime_records_is_a_trigger():
    """Every trigger string in the runtime's code is in the vocabulary (the stale list lacked
    ``parent_rolled_back``, which a child's compensation records)."""
    runtime = Path(vocabulary.__file__).parent
    used = {m for path in runtime.rglob("*.py")
            for m in re.findall(r"""trigger(?:=|: Trigger = |\) == )["']([a-z_]+)["']""", path.read_text())}
    assert {"parent_rolled_back", "manual", "timeout"} <= used  # the pattern finds them
    assert used <= set(vocabulary.TRIGGERS), used - set(vocabulary.TRIGGERS)
