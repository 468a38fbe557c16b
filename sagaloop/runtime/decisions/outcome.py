"""Error records and merged rollback results: pure decisions on plain data."""

from __future__ import annotations

from typing import Any, Sequence

from ..vocabulary import Record


def error_dict(exc: BaseException, *, step: str | None = None, default_code: str = "step_failed") -> Record:
    code = getattr(exc, "code", None)
    if not isinstance(code, str):
        code = default_code
    message = str(exc) or type(exc).__name__
    return {"message": message, "step": step, "code": code, "type": type(exc).__name__}


def merge_rollbacks(results: Sequence[Record]) -> Record | None:
    if not results:
        return None
    if len(results) == 1:
        return results[0]
    rolled: list[str] = []
    for r in results:
        rolled.extend(t for t in r["rolled_back_steps"] if t not in rolled)
    failed = [f for r in results for f in r["failed_steps"]]
    last = results[-1]
    return {"success": not failed, "rolled_back_steps": rolled, "failed_steps": failed,
            "reason": last["reason"], "trigger": last["trigger"]}
