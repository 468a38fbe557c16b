"""Step options: parsed once per ``ctx.step`` call, validated with clear errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import InvalidArgumentError
from .durations import parse_duration, parse_optional_duration


@dataclass(frozen=True, slots=True)
class StepOptions:
    allow_fail: bool = False
    retries: int = 0
    retry_delay_ms: float = 1000.0
    timeout_ms: float | None = None
    critical: bool = False


DEFAULT_STEP_OPTIONS = StepOptions()
_NAMES = ("allow_fail", "retries", "retry_delay", "timeout", "critical")


def parse_step_options(tag: str, options: Mapping[str, Any] | None, extra: Mapping[str, Any]) -> StepOptions:
    """Merge the options dict (the seed's 4th argument) with keyword options.

    Raises:
        InvalidArgumentError: an unknown option or a bad value, naming the step.
    """
    if not options and not extra:
        return DEFAULT_STEP_OPTIONS  # the hot path: a plain ctx.step(tag, fn)
    if options is not None and not isinstance(options, Mapping):
        raise InvalidArgumentError(f"options of step {tag!r} must be a dict, got {options!r}")
    merged = {**(options or {}), **extra}
    unknown = set(merged) - set(_NAMES)
    if unknown:
        raise InvalidArgumentError(f"unknown option(s) {sorted(unknown)} for step {tag!r}; known: {list(_NAMES)}")
    retries = merged.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidArgumentError(f"retries of step {tag!r} must be a non-negative int, got {retries!r}")
    return StepOptions(
        allow_fail=bool(merged.get("allow_fail", False)),
        retries=retries,
        retry_delay_ms=parse_duration(merged.get("retry_delay", 1000), name=f"retry_delay of step {tag!r}"),
        timeout_ms=parse_optional_duration(merged.get("timeout"), name=f"timeout of step {tag!r}"),
        critical=bool(merged.get("critical", False)),
    )
