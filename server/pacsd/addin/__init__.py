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
from pacsd.addin.services import (
    AETitleConflict,
    AETitleEntry,
    AETitles,
    CertificateError,
    CertificateInfo,
    DicomClient,
    DicomClientError,
    EchoResult,
    FindResponse,
    InvalidAETitleEntry,
    MoveResult,
    NEventReportResult,
    Permission,
    Security,
    StoreResult,
    UnknownAETitle,
)
from pacsd.addin.settings import AddinSettings
from pacsd.addin.status import DimseFailure, Status
from pacsd.addin.storage import OnDuplicate, QueryModel, Storage, StoredInstanceInfo, StoreOutcome
from pacsd.addin.stored_dataset import StoredDataset

__all__ = [
    "AETitleConflict",
    "AETitleEntry",
    "AETitles",
    "Addin",
    "AddinContext",
    "AddinSettings",
    "AssociationInfo",
    "CertificateError",
    "CertificateInfo",
    "DicomClient",
    "DicomClientError",
    "DimseFailure",
    "DimseMessage",
    "EchoRequest",
    "EchoResult",
    "FindRequest",
    "FindResponse",
    "GetRequest",
    "HandlerSpec",
    "Hook",
    "InvalidAETitleEntry",
    "MoveRequest",
    "MoveResult",
    "NEventReportResult",
    "NRequest",
    "OnDuplicate",
    "Permission",
    "QueryModel",
    "Reject",
    "Security",
    "Service",
    "Status",
    "Storage",
    "StoreOutcome",
    "StoreRequest",
    "StoreResult",
    "StoredDataset",
    "StoredInstanceInfo",
    "UnknownAETitle",
    "UserIdentity",
    "command",
    "dimse",
    "hook",
    "sop",
]
