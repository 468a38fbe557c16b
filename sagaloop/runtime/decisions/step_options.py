"""Step options: parsed once per ``ctx.step`` call, validated with clear errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ...errors import InvalidArgumentError
from .durations import parse_duration, parse_optional_duration
from .retry import NO_RETRY, RetryPolicy, fixed_delay, parse_retry_policy


@dataclass(frozen=True, slots=True)
class CompensationOptions:
    """``rollback_options``: how a step's compensation is retried and bounded."""

    retry: RetryPolicy = NO_RETRY
    timeout_ms: float | None = None


@dataclass(frozen=True, slots=True)
class StepOptions:
    allow_fail: bool = False
    retry: RetryPolicy = NO_RETRY
    timeout_ms: float | None = None
    critical: bool = False
    compensation: CompensationOptions = CompensationOptions()


DEFAULT_STEP_OPTIONS = StepOptions()
_NAMES = ("allow_fail", "retries", "retry_delay", "retry", "timeout", "critical", "rollback_options")
_ROLLBACK_NAMES = ("retries", "retry_delay", "timeout")


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
    what = f"step {tag!r}"
    if "retry" in merged:
        if "retries" in merged or "retry_delay" in merged:
            raise InvalidArgumentError(f"step {tag!r}: give either retry={{...}} or retries/retry_delay, not both")
        retry = parse_retry_policy(merged["retry"], what=what)
    else:
        retry = _shorthand(merged, what)
    return StepOptions(
        allow_fail=_flag(merged, "allow_fail", what),
        retry=retry,
        timeout_ms=parse_optional_duration(merged.get("timeout"), name=f"timeout of {what}"),
        critical=_flag(merged, "critical", what),
        compensation=_compensation(merged.get("rollback_options"), tag),
    )


def _flag(options: Mapping[str, Any], name: str, what: str) -> bool:
    value = options.get(name, False)
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{name} of {what} must be True or False, got {value!r}")
    return value


def _shorthand(options: Mapping[str, Any], what: str) -> RetryPolicy:
    retries = options.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidArgumentError(f"retries of {what} must be a non-negative int, got {retries!r}")
    delay = parse_duration(options.get("retry_delay", 1000), name=f"retry_delay of {what}")
    return fixed_delay(retries, delay)


def _compensation(spec: Any, tag: str) -> CompensationOptions:
    if spec is None:
        return CompensationOptions()
    if not isinstance(spec, Mapping):
        raise InvalidArgumentError(f"rollback_options of step {tag!r} must be a dict, got {spec!r}")
    unknown = set(spec) - set(_ROLLBACK_NAMES)
    if unknown:
        raise InvalidArgumentError(f"unknown rollback option(s) {sorted(unknown)} for step {tag!r}; "
                                   f"known: {list(_ROLLBACK_NAMES)}")
    what = f"the compensation of step {tag!r}"
    return CompensationOptions(
        retry=_shorthand({"retry_delay": 0, **spec}, what),
        timeout_ms=parse_optional_duration(spec.get("timeout"), name=f"timeout of {what}"))
