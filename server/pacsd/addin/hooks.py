"""Observer hooks: many add-ins may watch the same event; each failure is isolated.

Unlike handlers (one owner per message), hooks fan out. Mark a method with ``@hook``;
its name says which event it watches. A hook that raises is logged with its traceback
and counted; the other hooks and the association carry on.

==========================  ===========================================  =================
hook                        arguments                                    may
==========================  ===========================================  =================
``association_requested``   ``(assoc: AssociationInfo)``                 raise ``Reject``
``association_accepted``    ``(assoc)``
``association_rejected``    ``(assoc, reason: str)``
``association_released``    ``(assoc)``
``association_aborted``     ``(assoc)``
``message_received``        ``(assoc, msg: DimseMessage)``
``message_sent``            ``(assoc, msg: DimseMessage)``
``before_send``             ``(assoc, msg: DimseMessage)``               ``msg.set(...)``
``instance_stored``         ``(assoc, event: dict)``
==========================  ===========================================  =================

Hooks run on the association's threads, in order; keep them quick.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

HOOK_ATTR = "__pacsd_hook__"


class Hook(StrEnum):
    ASSOCIATION_REQUESTED = "association_requested"
    ASSOCIATION_ACCEPTED = "association_accepted"
    ASSOCIATION_REJECTED = "association_rejected"
    ASSOCIATION_RELEASED = "association_released"
    ASSOCIATION_ABORTED = "association_aborted"
    MESSAGE_RECEIVED = "message_received"
    MESSAGE_SENT = "message_sent"
    BEFORE_SEND = "before_send"
    INSTANCE_STORED = "instance_stored"


class Reject(Exception):
    """Raise from ``association_requested`` to refuse the association.

    ``reason`` is logged; the peer receives A-ASSOCIATE-RJ with the given result,
    source and diagnostic (PS3.8 9.3.4). The default is permanent, service user,
    no reason given. ``calling_ae_not_recognized()`` and ``called_ae_not_recognized()``
    build the two most common ones.
    """

    def __init__(
        self, reason: str, *, result: int = 0x01, source: int = 0x01, diagnostic: int = 0x01
    ) -> None:
        super().__init__(reason)
        self.reason, self.result, self.source, self.diagnostic = reason, result, source, diagnostic

    @classmethod
    def calling_ae_not_recognized(cls, reason: str) -> Reject:
        return cls(reason, result=0x01, source=0x01, diagnostic=0x03)

    @classmethod
    def called_ae_not_recognized(cls, reason: str) -> Reject:
        return cls(reason, result=0x01, source=0x01, diagnostic=0x07)


def hook(fn: F) -> F:
    """Mark a method as an observer of the event its name names (see ``Hook``)."""
    try:
        Hook(fn.__name__)
    except ValueError:
        names = ", ".join(h.value for h in Hook)
        raise ValueError(
            f"@hook on {fn.__name__!r}: the method name must be one of {names}"
        ) from None
    setattr(fn, HOOK_ATTR, Hook(fn.__name__))
    return fn
