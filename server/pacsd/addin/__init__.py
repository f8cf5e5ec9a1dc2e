"""pacsd's public add-in API. Add-ins import this package and nothing else from pacsd.

A minimal add-in::

    from pacsd.addin import Addin, EchoRequest, Status, dimse

    class Verification(Addin):
        name = "verification"

        @dimse.c_echo()
        def on_echo(self, req: EchoRequest) -> int:
            return Status.SUCCESS

See docs/addins.md for the whole guide.
"""

from pacsd.addin import dimse, sop
from pacsd.addin.base import Addin
from pacsd.addin.commands import command
from pacsd.addin.context import AddinContext
from pacsd.addin.dimse import HandlerSpec, Service
from pacsd.addin.hooks import Hook, Reject, hook
from pacsd.addin.messages import DimseMessage
from pacsd.addin.requests import (
    AssociationInfo,
    EchoRequest,
    FindRequest,
    GetRequest,
    MoveRequest,
    NRequest,
    StoreRequest,
    UserIdentity,
)
from pacsd.addin.settings import AddinSettings
from pacsd.addin.status import DimseFailure, Status

__all__ = [
    "Addin",
    "AddinContext",
    "AddinSettings",
    "AssociationInfo",
    "DimseFailure",
    "DimseMessage",
    "EchoRequest",
    "FindRequest",
    "GetRequest",
    "HandlerSpec",
    "Hook",
    "MoveRequest",
    "NRequest",
    "Reject",
    "Service",
    "Status",
    "StoreRequest",
    "UserIdentity",
    "command",
    "dimse",
    "hook",
    "sop",
]
