"""DIMSE status codes a handler returns (PS3.7 Annex C)."""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    """The statuses pacsd itself uses; any other 16-bit code may be returned as an int."""

    SUCCESS = 0x0000
    CANCEL = 0xFE00
    PENDING = 0xFF00
    #: Generic failure when an add-in raised or timed out (PS3.7 C.4.1.1.3 "Processing failure").
    PROCESSING_FAILURE = 0x0110
    #: No add-in handles this SOP class on this association.
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    #: The peer is not allowed to request this operation.
    REFUSED_NOT_AUTHORIZED = 0x0124
