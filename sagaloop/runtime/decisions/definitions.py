"""Workflow definitions: what ``define`` checks and keeps.

A definition lives in code; the registry maps (product, tag) to it. All
validation happens here, at define time, so a bad definition never reaches
a running instance.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ...errors import InvalidArgumentError
from ..vocabulary import STRATEGIES, Strategy
from .durations import parse_optional_duration

_OPTION_NAMES = {"rollback_strategy", "timeout", "retries", "retry_delay"}


@dataclass(frozen=True, slots=True)
class Definition:
    product: str
    tag: str
    handler: Callable[..., Any]
    rollback_strategy: Strategy = "reverse_all"
    timeout_ms: float | None = None
    queries: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    updates: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    validators: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    name: str | None = None
    description: str | None = None


def build_definition(*, product: str, tag: str, handler: Callable[..., Any],
                     options: Mapping[str, Any] | None = None,
                     queries: Mapping[str, Any] | None = None, updates: Mapping[str, Any] | None = None,
                     name: str | None = None, description: str | None = None) -> Definition:
    """Validate everything ``define`` was given and return the definition.

    Raises:
        InvalidArgumentError: a bad product, tag, handler, option or query.
    """
    require_name(product, "product")
    require_name(tag, "tag")
    if not inspect.iscoroutinefunction(handler):
        raise InvalidArgumentError(
            f"the handler of workflow {tag!r} must be an async function (async def), got {handler!r}")
    for what, value in (("options", options), ("queries", queries), ("updates", updates)):
        if value is not None and not isinstance(value, Mapping):
            raise InvalidArgumentError(f"{what} of workflow {tag!r} must be a dict, got {value!r}")
    options = dict(options or {})
    unknown = set(options) - _OPTION_NAMES
    if unknown:
        raise InvalidArgumentError(f"unknown workflow option(s) {sorted(unknown)} for {tag!r}; "
                                   f"known: {sorted(_OPTION_NAMES)}")
    strategy = options.get("rollback_strategy", "reverse_all")
    if strategy not in STRATEGIES:
        raise InvalidArgumentError(f"unknown rollback_strategy {strategy!r} for workflow {tag!r}; "
                                   f"use one of {', '.join(STRATEGIES)}")
    timeout_ms = parse_optional_duration(options.get("timeout"), name=f"timeout of workflow {tag!r}")
    retries = options.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidArgumentError(f"retries of workflow {tag!r} must be a non-negative int, got {retries!r}")
    parse_optional_duration(options.get("retry_delay"), name=f"retry_delay of workflow {tag!r}")
    update_handlers, validators = _normalise_updates(tag, updates)
    return Definition(product=product, tag=tag, handler=handler, rollback_strategy=strategy,
                      timeout_ms=timeout_ms, queries=_normalise_queries(tag, queries),
                      updates=update_handlers, validators=validators, name=name, description=description)


def _normalise_queries(tag: str, queries: Mapping[str, Any] | None) -> dict[str, Callable[..., Any]]:
    """Accept ``{"name": fn}`` and ``{"name": {"handler": fn}}``."""
    result: dict[str, Callable[..., Any]] = {}
    for qname, spec in (queries or {}).items():
        fn = spec.get("handler") if isinstance(spec, Mapping) else spec
        if not callable(fn):
            raise InvalidArgumentError(f"query {qname!r} of workflow {tag!r} has no callable handler")
        result[qname] = fn
    return result


def _normalise_updates(tag: str, updates: Mapping[str, Any] | None) -> tuple[dict[str, Callable[..., Any]], dict[str, Callable[..., Any]]]:
    """Accept ``{"name": fn}`` and ``{"name": {"handler": fn, "validator": vfn}}``."""
    handlers: dict[str, Callable[..., Any]] = {}
    validators: dict[str, Callable[..., Any]] = {}
    for uname, spec in (updates or {}).items():
        fn = spec.get("handler") if isinstance(spec, Mapping) else spec
        validator = spec.get("validator") if isinstance(spec, Mapping) else None
        if not callable(fn) or (validator is not None and not callable(validator)):
            raise InvalidArgumentError(f"update {uname!r} of workflow {tag!r} needs a callable handler "
                                       f"(and, if given, a callable validator)")
        handlers[uname] = fn
        if validator is not None:
            validators[uname] = validator
    return handlers, validators


def require_name(value: object, what: str) -> str:
    """A product, env, tag or id: a non-empty string without NUL."""
    if not isinstance(value, str) or not value or "\x00" in value:
        raise InvalidArgumentError(f"{what} must be a non-empty string without NUL bytes, got {value!r}")
    return value
