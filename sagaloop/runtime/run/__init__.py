"""One execution's journaled state and its journaled calls: ``Run``.

``Run`` is the core (``core.py``: every field, declared once, and the
replay every journaled call starts with) and the parts built on it, each
on the one before it, so each part may use the ones below and a type
checker follows them all:

    core -> updates -> steps -> waits -> children -> compensation -> ending

``entries`` holds the two shapes of a step entry, ``inbox`` the signals in
memory, ``trampoline`` the hand-started step coroutine, ``control`` what a
run tells its actor and needs from its engine.
"""

from __future__ import annotations

from .ending import Ending


class Run(Ending):
    """The journaled state and journaled calls of one execution."""

    __slots__ = ()


__all__ = ["Run"]
