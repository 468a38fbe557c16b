"""What a new execution starts with: its id, its idempotency scope, its first record."""

from __future__ import annotations

import os
import random
import time
from typing import Any

from ...errors import InvalidArgumentError
from ..decisions.definitions import Definition, require_name
from ..vocabulary import Record

MAX_SCOPE_BYTES = 511  # an idempotency scope is a store key (LMDB's key limit)

# Seeded from os.urandom, and again in a forked child. Not os.urandom per id: that is a
# syscall, which measured 9% of W1's time on this VM.
_id_bits = random.Random()
os.register_at_fork(after_in_child=_id_bits.seed)


def new_workflow_id() -> str:
    # Time-ordered, so ids sort roughly by start; 64 random bits make collisions negligible.
    return f"wf-{time.time_ns():x}-{_id_bits.getrandbits(64):016x}"


def idempotency_scope(product: str, env: str, tag: str, key: str) -> str:
    """The store key of an idempotency key: unique per product, env and workflow; refused if too long."""
    require_name(key, "idempotency_key")
    scope = f"{product}\x1f{env}\x1f{tag}\x1f{key}"
    size = len(scope.encode(errors="replace"))
    if size > MAX_SCOPE_BYTES:
        raise InvalidArgumentError(
            f"idempotency_key {key[:40]!r}... is too long: with product, env and tag it takes {size} bytes "
            f"in UTF-8; at most {MAX_SCOPE_BYTES} are allowed")
    return scope


def first_record(definition: Definition, env: str, workflow_id: str, input: Any, timeout_ms: float | None,
                 now: int, extra: Record) -> Record:
    """The instance record a new execution is journaled with (history seq 0, ``workflow_started``)."""
    return {"workflow_id": workflow_id, "product": definition.product, "env": env, "tag": definition.tag,
            "status": "running", "input": input, "created_at": now, "updated_at": now,
            "timeout": timeout_ms, "deadline": None if timeout_ms is None else now + timeout_ms, **extra}
