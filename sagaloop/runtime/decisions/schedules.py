"""Dispatch schedules, pure: a job's schedule and options checked, and its ticks computed.

A schedule is ``{"start_at": ms}`` (runs once) or ``{"cron": "m h dom mon dow", "timezone": "Area/City"}``
(runs on every tick, evaluated in that IANA zone; croniter iterates, zoneinfo gives the zone). Ticks
are epoch milliseconds. Nothing here reads a clock: ``now_ms`` is always given.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from ...errors import InvalidArgumentError
from ..vocabulary import Record
from .durations import parse_optional_duration

OVERLAPS = ("skip", "buffer_one", "allow")
CATCH_UPS = ("one", "none", "all")
JOB_OPTIONS = ("retries", "timeout", "overlap", "catch_up")
MAX_CATCH_UP = 10_000  # catch_up "all" fires at most this many missed ticks (the latest ones)


def _zone(name: Any) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"schedule timezone must be an IANA zone name such as 'Europe/London', got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidArgumentError(f"schedule timezone {name!r} is not a known IANA time zone") from None


def _check_cron(expr: Any) -> str:
    if not isinstance(expr, str) or len(expr.split()) != 5 or not croniter.is_valid(expr):
        raise InvalidArgumentError(f"schedule cron {expr!r} is not a valid 5-field cron expression "
                                   f"(minute hour day-of-month month day-of-week, e.g. '0 9 * * 1-5')")
    return " ".join(expr.split())


def _epoch_ms(value: Any) -> int:
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidArgumentError(f"schedule start_at {value!r} is a naive datetime; give it a tzinfo "
                                       f"(e.g. datetime.now(timezone.utc))")
        return int(value.timestamp() * 1000)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
        raise InvalidArgumentError(f"schedule start_at must be epoch milliseconds or an aware datetime, got {value!r}")
    return int(value)


def parse_schedule(schedule: Any, now_ms: int) -> Record:
    """The schedule as stored: ``{"start_at": ms}`` or ``{"cron": expr, "timezone": zone}``."""
    if not isinstance(schedule, Mapping):
        raise InvalidArgumentError(f"schedule must be a dict with 'start_at' or 'cron', got {schedule!r}")
    unknown = sorted(set(schedule) - {"start_at", "cron", "timezone"}, key=str)
    if unknown:
        raise InvalidArgumentError(f"unknown schedule field {unknown[0]!r}; known: start_at, cron, timezone")
    if ("start_at" in schedule) == ("cron" in schedule):
        raise InvalidArgumentError(f"schedule needs exactly one of 'start_at' and 'cron', got {dict(schedule)!r}")
    if "start_at" in schedule:
        if "timezone" in schedule:
            raise InvalidArgumentError("schedule timezone goes with 'cron', not with 'start_at' "
                                       "(give start_at as an aware datetime)")
        start_at = _epoch_ms(schedule["start_at"])
        if start_at < now_ms:
            raise InvalidArgumentError(f"schedule start_at {schedule['start_at']!r} is in the past "
                                       f"({now_ms - start_at} ms ago)")
        return {"start_at": start_at}
    expr = _check_cron(schedule["cron"])
    timezone = schedule.get("timezone", "UTC")
    _zone(timezone)
    return {"cron": expr, "timezone": timezone}


def parse_job_options(options: Any) -> Record:
    """``{"retries": int, "timeout": ms | None, "overlap": ..., "catch_up": ...}`` with the defaults."""
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise InvalidArgumentError(f"options must be a dict, got {options!r}")
    unknown = sorted(set(options) - set(JOB_OPTIONS), key=str)
    if unknown:
        raise InvalidArgumentError(f"unknown dispatch option {unknown[0]!r}; known: {', '.join(JOB_OPTIONS)}")
    retries = options.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidArgumentError(f"option retries must be an int >= 0, got {retries!r}")
    timeout = parse_optional_duration(options.get("timeout"), name="timeout")
    overlap = options.get("overlap", "skip")
    if overlap not in OVERLAPS:
        raise InvalidArgumentError(f"option overlap must be one of {', '.join(OVERLAPS)}, got {overlap!r}")
    catch_up = options.get("catch_up", "one")
    if catch_up not in CATCH_UPS:
        raise InvalidArgumentError(f"option catch_up must be one of {', '.join(CATCH_UPS)}, got {catch_up!r}")
    return {"retries": retries, "timeout": timeout, "overlap": overlap, "catch_up": catch_up}


def next_tick(schedule: Record, after_ms: int) -> int | None:
    """The first tick strictly after ``after_ms``, or None (a ``start_at`` job has one tick)."""
    if "start_at" in schedule:
        start: int = schedule["start_at"]
        return start if start > after_ms else None
    zone = _zone(schedule["timezone"])
    base = _dt.datetime.fromtimestamp(after_ms / 1000, tz=zone)
    tick = croniter(schedule["cron"], base).get_next(_dt.datetime)
    ms = int(tick.timestamp() * 1000)
    while ms <= after_ms:  # croniter works to the second; never the same tick again
        tick = croniter(schedule["cron"], tick).get_next(_dt.datetime)
        ms = int(tick.timestamp() * 1000)
    return ms


def missed_ticks(schedule: Record, first_ms: int, now_ms: int, catch_up: str) -> list[int]:
    """The ticks to fire at start for a job whose next tick ``first_ms`` came due (``<= now_ms``) while no
    engine ran: none, the latest one, or each in order (at most ``MAX_CATCH_UP``, the latest)."""
    if catch_up == "none":
        return []
    if catch_up == "one" and "cron" in schedule:  # the latest tick at or before now, without walking to it
        zone = _zone(schedule["timezone"])
        base = _dt.datetime.fromtimestamp((now_ms + 1) / 1000, tz=zone)
        latest = int(croniter(schedule["cron"], base).get_prev(_dt.datetime).timestamp() * 1000)
        after = next_tick(schedule, latest)
        if first_ms <= latest <= now_ms and after is not None and after > now_ms:  # checked: else walk
            return [latest]
    ticks = [first_ms]
    if "cron" in schedule:
        while True:
            tick = next_tick(schedule, ticks[-1])
            if tick is None or tick > now_ms:
                break
            if catch_up == "one":
                ticks[-1] = tick
            else:
                ticks.append(tick)
                if len(ticks) > MAX_CATCH_UP:
                    del ticks[0]
    return ticks[-1:] if catch_up == "one" else ticks
