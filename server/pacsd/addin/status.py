"""DIMSE status codes a handler returns (PS3.7 Annex C), and the exception that sends one."""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    """The statuses pacsd itself uses; any other 16-bit code may be returned as an int."""

    SUCCESS = 0x0000
    CANCEL = 0xFE00
    PENDING = 0xFF00
    #: Generic failure when an add-in raised or timed out (PS3.7 C.4.1.1.3 "Processing failure").
    PROCESSING_FAILURE = 0x0110
    #: No add-in handles this SOP class on this association (any more).
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    #: The peer is not allowed to request this operation.
    REFUSED_NOT_AUTHORIZED = 0x0124
    #: C-STORE: out of resources.
    OUT_OF_RESOURCES = 0xA700
    #: C-MOVE: move destination unknown.
    MOVE_DESTINATION_UNKNOWN = 0xA801
    #: C-FIND/GET/MOVE: identifier does not match SOP class.
    IDENTIFIER_DOES_NOT_MATCH = 0xA900
    #: C-FIND/GET/MOVE: unable to process.
    UNABLE_TO_PROCESS = 0xC000


class DimseFailure(Exception):
    """Raise from a handler to answer with ``status`` (and an optional error comment)."""

    def __init__(self, status: int, comment: str = "") -> None:
        super().__init__(comment or f"status 0x{status:04X}")
        self.status = int(status)
        self.comment = comment
