"""The messages a workflow actor answers (its mailbox takes them in order)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..vocabulary import Trigger


@dataclass(slots=True, frozen=True)
class Status:
    pass


@dataclass(slots=True, frozen=True)
class Query:
    name: str
    args: Any = None


@dataclass(slots=True, frozen=True)
class Cancel:
    reason: str | None
    trigger: Trigger = "cancel"  # or "parent_closed"


@dataclass(slots=True, frozen=True)
class Update:
    name: str
    args: Any
    update_id: str | None


@dataclass(slots=True, frozen=True)
class RequestCancel:
    """Parent-close policy ``request_cancel``: the handler sees ``ctx.cancel_requested``."""


@dataclass(slots=True, frozen=True)
class Signal:
    name: str
    payload: Any


Message = Status | Query | Cancel | Update | RequestCancel | Signal
