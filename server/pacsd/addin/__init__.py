"""pacsd's public add-in API. Add-ins import this package and nothing else from pacsd.

A minimal add-in::

    from pacsd.addin import Addin, EchoRequest, Status, dimse

    class Verification(Addin):
        name = "verification"

        @dimse.c_echo()
        def on_echo(self, req: EchoRequest) -> int:
            return Status.SUCCESS
"""

from pacsd.addin import dimse, sop
from pacsd.addin.base import Addin
from pacsd.addin.context import AddinContext
from pacsd.addin.dimse import HandlerSpec, Service
from pacsd.addin.requests import AssociationInfo, EchoRequest
from pacsd.addin.status import Status

__all__ = [
    "Addin",
    "AddinContext",
    "AssociationInfo",
    "EchoRequest",
    "HandlerSpec",
    "Service",
    "Status",
    "dimse",
    "sop",
]
