"""Association lifecycle events and DIMSE message summaries, as the control plane streams them.

The tracker publishes one ``AssocEvent`` per accepted, rejected, released, aborted or
closed association and per DIMSE message, but only while someone watches
(``Broadcaster.active``): with no ``pacsctl assoc watch`` open, a message costs no
summary at all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pacsd.addin import AssociationInfo


class EventType(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    RELEASED = "released"
    ABORTED = "aborted"
    CLOSED = "closed"
    MESSAGE_RECEIVED = "message_received"
    MESSAGE_SENT = "message_sent"


@dataclass(frozen=True, slots=True)
class MessageSummary:
    """A DIMSE message's command set, without its dataset."""

    service: str
    response: bool
    message_id: int
    status: int | None
    sop_class_uid: str
    sop_instance_uid: str
    has_dataset: bool


@dataclass(frozen=True, slots=True)
class AssocEvent:
    time: float
    type: EventType
    assoc_id: str
    calling_ae: str
    called_ae: str
    peer: str
    reason: str = ""
    message: MessageSummary | None = None

    @classmethod
    def of(
        cls,
        type: EventType,
        info: AssociationInfo,
        reason: str = "",
        message: MessageSummary | None = None,
    ) -> AssocEvent:
        return cls(
            time.time(),
            type,
            info.id,
            info.calling_ae,
            info.called_ae,
            f"{info.peer_host}:{info.peer_port}",
            reason,
            message,
        )


@dataclass(frozen=True, slots=True)
class EventFilter:
    assoc_id: str = ""
    ae_title: str = ""
    lifecycle_only: bool = False

    def __call__(self, event: AssocEvent) -> bool:
        return (
            (not self.lifecycle_only or event.message is None)
            and (not self.assoc_id or event.assoc_id == self.assoc_id)
            and (
                not self.ae_title
                or event.calling_ae == self.ae_title
                or event.called_ae == self.ae_title
            )
        )


def message_kind(msg: Any) -> tuple[str, bool]:
    """('C-STORE', is_response) from a pynetdicom DIMSE message's class name."""
    return kind_of(type(msg).__name__)


#: Message class name ("C_FIND_RSP") -> (service, is_response); a few dozen names.
_KINDS: dict[str, tuple[str, bool]] = {}


def kind_of(message_type: str) -> tuple[str, bool]:
    """('C-FIND', True) for "C_FIND_RSP": worked out once per class name, since the
    tracker asks for every message sent and received."""
    kind = _KINDS.get(message_type)
    if kind is None:
        service = message_type.removesuffix("_RSP").removesuffix("_RQ").replace("_", "-")
        kind = _KINDS[message_type] = (service, message_type.endswith("_RSP"))
    return kind


def message_status(msg: Any) -> int | None:
    """The Status of a response message, None for a request."""
    value = msg.command_set.get("Status")
    return None if value is None else int(value)


def summarize(msg: Any) -> MessageSummary:
    """The summary of a pynetdicom DIMSE message (received or about to be sent)."""
    service, response = message_kind(msg)
    cs = msg.command_set
    message_id = cs.get("MessageIDBeingRespondedTo" if response else "MessageID")
    sop_class = cs.get("AffectedSOPClassUID") or cs.get("RequestedSOPClassUID") or ""
    instance = cs.get("AffectedSOPInstanceUID") or cs.get("RequestedSOPInstanceUID") or ""
    return MessageSummary(
        service=service,
        response=response,
        message_id=int(message_id or 0),
        status=message_status(msg) if response else None,
        sop_class_uid=str(sop_class),
        sop_instance_uid=str(instance),
        has_dataset=cs.get("CommandDataSetType", 0x0101) != 0x0101,
    )
