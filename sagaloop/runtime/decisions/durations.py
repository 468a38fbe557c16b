"""Duration parsing: every duration a user may pass becomes milliseconds.

Accepted: an ``int``/``float`` (milliseconds, as in the product document),
a string ``"500ms" "30s" "5m" "24h" "7d"`` (a number then one unit), or a
``datetime.timedelta``. Anything else raises ``InvalidDurationError`` naming
the value. Pure code: no I/O, no clock.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

from ...errors import InvalidDurationError

_UNIT_MS = {"ms": 1.0, "s": 1_000.0, "m": 60_000.0, "h": 3_600_000.0, "d": 86_400_000.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration(value: object, *, name: str = "duration") -> float:
    """Return ``value`` as milliseconds (a non-negative float).

    Raises:
        InvalidDurationError: ``value`` is not a duration; the message names it.
    """
    if isinstance(value, bool):  # bool is an int, but True ms is surely a mistake
        raise InvalidDurationError(f"{name} must be a duration, got {value!r}")
    if isinstance(value, (int, float)):
        try:
            ms = float(value)
        except OverflowError:
            raise InvalidDurationError(f"{name} must be a finite duration, got {value!r}") from None
    elif isinstance(value, timedelta):
        ms = value.total_seconds() * 1000.0
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match is None:
            raise InvalidDurationError(
                f"{name} {value!r} is not a duration; use milliseconds or a string like "
                f"'500ms', '30s', '5m', '24h', '7d'")
        ms = float(match.group(1)) * _UNIT_MS[match.group(2)]
    else:
        raise InvalidDurationError(f"{name} must be a duration, got {type(value).__name__} {value!r}")
    if math.isnan(ms) or math.isinf(ms) or ms < 0:
        raise InvalidDurationError(f"{name} must be a finite, non-negative duration, got {value!r}")
    return ms


def parse_optional_duration(value: object, *, name: str = "duration") -> float | None:
    """Like ``parse_duration`` but ``None`` stays ``None`` (no limit)."""
    return None if value is None else parse_duration(value, name=name)
