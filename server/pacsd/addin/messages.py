"""``DimseMessage``: the view of one DIMSE message that hooks see.

Fields are read and written by their DICOM keyword (``Status``, ``ErrorComment``,
``AffectedSOPInstanceUID``...). In ``before_send`` the message is about to be encoded,
and ``set`` changes what the peer receives; elsewhere it is read-only.
"""

from __future__ import annotations

from typing import Any


class DimseMessage:
    __slots__ = ("_primitive", "_writable", "direction", "is_response", "service")

    def __init__(self, primitive: Any, *, service: str, direction: str, writable: bool) -> None:
        self._primitive = primitive
        self._writable = writable
        #: "received" or "sent".
        self.direction = direction
        #: "C-ECHO", "C-STORE", ... (C-CANCEL for cancel requests).
        self.service = service
        self.is_response = getattr(primitive, "MessageIDBeingRespondedTo", None) is not None

    @property
    def message_id(self) -> int | None:
        mid = self.get("MessageIDBeingRespondedTo") if self.is_response else self.get("MessageID")
        return None if mid is None else int(mid)

    @property
    def status(self) -> int | None:
        value = self.get("Status")
        return None if value is None else int(value)

    def get(self, keyword: str) -> Any:
        """The field's value, or None when this message does not carry it."""
        return getattr(self._primitive, keyword, None)

    def set(self, keyword: str, value: Any) -> None:
        """Change a field of an outgoing message (``before_send`` only)."""
        if not self._writable:
            raise PermissionError("only before_send hooks may change a message")
        if not hasattr(self._primitive, keyword):
            raise AttributeError(f"{self.service} messages have no field {keyword!r}")
        setattr(self._primitive, keyword, value)

    def __repr__(self) -> str:
        kind = "RSP" if self.is_response else "RQ"
        return f"<DimseMessage {self.direction} {self.service}-{kind} id={self.message_id}>"
