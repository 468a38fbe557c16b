"""Retry policies: how many attempts a step gets and how long to wait between them.

Pure code (no clock, no I/O) so the delays can be checked with hypothesis.
``retry={"max_attempts": 5, "initial_delay": 100, "backoff": 2.0, "max_delay": "10s",
"jitter": True, "non_retryable": [ValueError]}``; ``retries`` / ``retry_delay``
are the fixed-delay shorthand (``retries + 1`` attempts, no backoff, no jitter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ...errors import InvalidArgumentError
from .durations import parse_duration

JITTER_BAND = (0.8, 1.2)  # each jittered wait is drawn from 80-120 % of its nominal value
_KEYS = {"max_attempts", "initial_delay", "backoff", "max_delay", "jitter", "non_retryable"}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    initial_delay_ms: float = 1000.0
    backoff: float = 2.0
    max_delay_ms: float = 60_000.0
    jitter: bool = True
    non_retryable: tuple[type[BaseException], ...] = ()

    def nominal_delay_ms(self, failed_attempts: int) -> float:
        """The wait after the ``failed_attempts``-th failure (1-based), before jitter."""
        exponent = max(0, failed_attempts - 1)
        if self.initial_delay_ms == 0 or self.max_delay_ms == 0:
            return 0.0
        try:
            grown = self.initial_delay_ms * self.backoff ** exponent
        except OverflowError:  # backoff ** exponent alone is too big for a float: compare in log space
            log_grown = math.log(self.initial_delay_ms) + exponent * math.log(self.backoff)
            grown = math.inf if log_grown >= math.log(self.max_delay_ms) else math.exp(log_grown)
        return min(grown, self.max_delay_ms)

    def delay_ms(self, failed_attempts: int, random: Callable[[], float]) -> float:
        """The wait to use: the nominal one, scaled into the jitter band when jitter is on."""
        nominal = self.nominal_delay_ms(failed_attempts)
        if not self.jitter:
            return nominal
        low, high = JITTER_BAND
        return nominal * (low + (high - low) * random())

    def retries_after(self, failed_attempts: int, error: BaseException) -> bool:
        return failed_attempts < self.max_attempts and not isinstance(error, self.non_retryable)


NO_RETRY = RetryPolicy(max_attempts=1, initial_delay_ms=0.0, backoff=1.0, max_delay_ms=0.0, jitter=False)


def fixed_delay(retries: int, retry_delay_ms: float) -> RetryPolicy:
    """The ``retries`` / ``retry_delay`` shorthand."""
    if retries == 0:
        return NO_RETRY
    return RetryPolicy(max_attempts=retries + 1, initial_delay_ms=retry_delay_ms, backoff=1.0,
                       max_delay_ms=retry_delay_ms, jitter=False)


def parse_retry_policy(spec: Mapping[str, Any], *, what: str) -> RetryPolicy:
    """Build a policy from the ``retry={...}`` option.

    Raises:
        InvalidArgumentError: an unknown key or a bad value, naming ``what``.
    """
    if not isinstance(spec, Mapping):
        raise InvalidArgumentError(f"retry of {what} must be a dict, got {spec!r}")
    unknown = set(spec) - _KEYS
    if unknown:
        raise InvalidArgumentError(f"unknown retry key(s) {sorted(unknown)} for {what}; known: {sorted(_KEYS)}")
    attempts = spec.get("max_attempts", 3)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise InvalidArgumentError(f"max_attempts of {what} must be an int >= 1, got {attempts!r}")
    backoff = spec.get("backoff", 2.0)
    if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or not math.isfinite(backoff) or backoff < 1:
        raise InvalidArgumentError(f"backoff of {what} must be a finite number >= 1, got {backoff!r}")
    non_retryable = spec.get("non_retryable", ())
    if isinstance(non_retryable, type):
        non_retryable = (non_retryable,)
    if not isinstance(non_retryable, (list, tuple)):
        raise InvalidArgumentError(f"non_retryable of {what} must be a list of exception classes, "
                                   f"got {non_retryable!r}")
    non_retryable = tuple(non_retryable)
    if not all(isinstance(c, type) and issubclass(c, BaseException) for c in non_retryable):
        raise InvalidArgumentError(f"non_retryable of {what} must be exception classes, got {non_retryable!r}")
    initial = parse_duration(spec.get("initial_delay", 1000), name=f"initial_delay of {what}")
    max_delay = parse_duration(spec.get("max_delay", 60_000), name=f"max_delay of {what}")
    return RetryPolicy(max_attempts=attempts, initial_delay_ms=initial, backoff=float(backoff),
                       max_delay_ms=max(max_delay, 0.0), jitter=bool(spec.get("jitter", True)),
                       non_retryable=non_retryable)
