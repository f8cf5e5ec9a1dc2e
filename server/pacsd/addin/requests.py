"""What a handler receives: plain data about the association and the message.

These types stand between add-ins and pynetdicom, so an add-in never imports the DICOM
stack and keeps working if the engine underneath changes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AssociationInfo:
    """The association a message arrived on."""

    #: Server-unique ID, the same one the logs and the control plane show.
    id: str
    calling_ae: str
    called_ae: str
    peer_host: str
    peer_port: int


@dataclass(frozen=True, slots=True)
class EchoRequest:
    """A C-ECHO-RQ."""

    association: AssociationInfo
    message_id: int
    sop_class_uid: str
