"""Who is making the current control-plane call, for whoever needs to say so.

The auth interceptor sets it before the call runs and the audit interceptor (which it
wraps) reads it, in the same worker thread; a ContextVar keeps concurrent calls apart
without threading the value through every servicer.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from pacsd.server.control.roles import Role


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a token's name or a client certificate's CN.

    Holds nothing secret, so it may be logged as is.
    """

    name: str
    role: Role
    #: "token" or "certificate".
    via: str

    def __str__(self) -> str:
        return f"{self.via}:{self.name}"


CURRENT: ContextVar[Principal | None] = ContextVar("pacsd_control_principal", default=None)


def current() -> Principal | None:
    """The caller of the call running in this thread; None without authentication."""
    return CURRENT.get()
