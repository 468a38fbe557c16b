"""The public facade: the engine, its ``workflows`` calls, and ``run``."""

from .engine import Engine
from .run import run
from .workflows import Workflows

__all__ = ["Engine", "Workflows", "run"]
