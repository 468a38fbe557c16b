"""Actions, fallbacks and notifications: the outside-world calls a step makes.

``engine.actions.register(app, event, handler)`` then, inside a step,
``await ctx.action.run(app=, event=, input=)``; ``engine.fallbacks.define(name,
providers)`` then ``await ctx.fallback.execute(fallback=, input=)`` tries the
providers in order; ``engine.notifications.register("email", sender)`` then
``await ctx.notification.email(...)``. These calls are not journaled
themselves: make them inside ``ctx.step`` so their result is.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable, Mapping, Sequence

from ...errors import ActionNotFoundError, FallbackFailedError, InvalidArgumentError
from ..clock import Clock
from ..decisions.durations import parse_optional_duration


async def _call(fn: Callable[..., Any], *args: Any, timeout_ms: float | None = None, **kwargs: Any) -> Any:
    async def once() -> Any:
        value = fn(*args, **kwargs)
        return await value if inspect.isawaitable(value) else value

    if timeout_ms is None:
        return await once()
    async with asyncio.timeout(timeout_ms / 1000.0):
        return await once()


class Actions:
    """Handlers for ``(app, event)`` pairs."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock  # retry waits follow the engine's clock
        self._handlers: dict[tuple[str, str], Callable[..., Any]] = {}

    def register(self, app: str, event: str, handler: Callable[[Any], Any]) -> None:
        if not callable(handler):
            raise InvalidArgumentError(f"the handler of action {app}/{event} must be callable, got {handler!r}")
        self._handlers[(app, event)] = handler

    async def run(self, *, app: str, event: str, input: Any = None, retries: int = 0, timeout: Any = None,
                  retry_delay: Any = 0) -> Any:
        """Call the action's handler with ``input``; retry up to ``retries`` times on failure."""
        handler = self._handlers.get((app, event))
        if handler is None:
            raise ActionNotFoundError(f"no action registered for app {app!r}, event {event!r}")
        timeout_ms = parse_optional_duration(timeout, name="action timeout")
        delay_ms = parse_optional_duration(retry_delay, name="action retry_delay") or 0
        for attempt in range(retries + 1):
            try:
                return await _call(handler, input, timeout_ms=timeout_ms)
            except Exception:
                if attempt == retries:
                    raise
                await self._clock.sleep(delay_ms)


class Fallbacks:
    """Named provider chains: the first provider that succeeds wins."""

    def __init__(self, actions: Actions) -> None:
        self._actions = actions
        self._chains: dict[str, list[Any]] = {}

    def define(self, name: str, providers: Sequence[Any]) -> None:
        """``providers``: callables ``fn(input)`` or ``{"app": ..., "event": ...}`` actions, in order."""
        chain = list(providers)
        if not chain or not all(callable(p) or isinstance(p, Mapping) for p in chain):
            raise InvalidArgumentError(f"fallback {name!r} needs a list of callables or {{app, event}} dicts")
        self._chains[name] = chain

    async def execute(self, *, fallback: str, input: Any = None, timeout: Any = None) -> Any:
        chain = self._chains.get(fallback)
        if chain is None:
            raise ActionNotFoundError(f"no fallback named {fallback!r} is defined")
        timeout_ms = parse_optional_duration(timeout, name="fallback timeout")
        errors = []
        for provider in chain:
            try:
                if callable(provider):
                    return await _call(provider, input, timeout_ms=timeout_ms)
                return await self._actions.run(app=provider["app"], event=provider["event"], input=input,
                                               timeout=timeout)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
        raise FallbackFailedError(f"every provider of fallback {fallback!r} failed: {'; '.join(errors)}")


class Notifications:
    """Senders by channel; ``notifications.email(**message)`` calls the ``email`` sender."""

    def __init__(self) -> None:
        self._senders: dict[str, Callable[..., Any]] = {}

    def register(self, channel: str, sender: Callable[..., Any]) -> None:
        if not callable(sender):
            raise InvalidArgumentError(f"the sender of channel {channel!r} must be callable")
        self._senders[channel] = sender

    async def send(self, channel: str, **message: Any) -> Any:
        sender = self._senders.get(channel)
        if sender is None:
            raise ActionNotFoundError(f"no notification sender registered for channel {channel!r}")
        return await _call(sender, **message)

    def __getattr__(self, channel: str) -> Callable[..., Any]:
        if channel.startswith("_"):
            raise AttributeError(channel)

        async def send(**message: Any) -> Any:
            return await self.send(channel, **message)

        return send
