"""A small actor kernel on asyncio: one task and one mailbox per actor.

This package owns actors, their mailboxes, supervision and shutdown. It must
never import from the rest of sagaloop nor know about workflows: it could be
published on its own.

    mailbox.py    the closable single-consumer FIFO
    ref.py        ActorRef (tell/ask/stop/wait) and ActorDeadError
    actor.py      the Actor base class and its hooks
    lifecycle.py  the body of each actor's task
    system.py     ActorSystem: spawn, registry, shutdown
"""

from .actor import Actor
from .mailbox import Mailbox, MailboxClosed
from .ref import ActorDeadError, ActorRef
from .system import ActorSystem

__all__ = ["Actor", "ActorDeadError", "ActorRef", "ActorSystem", "Mailbox", "MailboxClosed"]
