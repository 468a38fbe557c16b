"""The public facade: the engine, its ``workflows`` calls, and ``run``."""

from .engine import Engine
from .event_loop import run
from .workflows import Workflows

__all__ = ["Engine", "Workflows", "run"]
