"""``DimseMessage``: the view of one DIMSE message that hooks see.

Fields are read and written by their DICOM keyword (``Status``, ``ErrorComment``,
``AffectedSOPInstanceUID``...). In ``before_send`` the message is about to be encoded,
and ``set`` changes what the peer receives; elsewhere it is read-only.

In ``message_received`` and ``message_sent`` the message's dataset, if it carries one,
can be read too (``has_dataset``, ``write_dataset``, ``encoded_dataset``, ``dataset``).
Nothing is read or decoded unless a hook asks: a received C-STORE's data is on disk
already and stays there. It is only readable *during* the hook call: afterwards a
received dataset is moved into the archive (or removed) and a sent one is gone.
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pydicom.dataset import Dataset


class DatasetSource(Protocol):
    """Where the server reads a message's encoded dataset from (engine-specific)."""

    def size(self) -> int: ...

    def open(self) -> IO[bytes]: ...


class DimseMessage:
    __slots__ = (
        "_dataset_source",
        "_primitive",
        "_writable",
        "direction",
        "is_response",
        "service",
        "transfer_syntax",
    )

    def __init__(
        self,
        primitive: Any,
        *,
        service: str,
        direction: str,
        writable: bool,
        dataset: DatasetSource | None = None,
        transfer_syntax: str = "",
    ) -> None:
        self._primitive = primitive
        self._writable = writable
        self._dataset_source = dataset
        #: "received" or "sent".
        self.direction = direction
        #: "C-ECHO", "C-STORE", ... (C-CANCEL for cancel requests).
        self.service = service
        self.is_response = getattr(primitive, "MessageIDBeingRespondedTo", None) is not None
        #: Transfer syntax UID of the presentation context the message travels on
        #: ("" where the server does not say, e.g. in ``before_send``).
        self.transfer_syntax = transfer_syntax

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

    def fields(self) -> dict[str, Any]:
        """Every command field the message carries, by DICOM keyword, in tag order
        (``CommandGroupLength`` and the like included), for logging whole messages."""
        primitive = self._primitive
        elements = getattr(primitive, "elements", None)
        if callable(elements):  # a decoded command set (pydicom Dataset)
            return {e.keyword: e.value for e in primitive if e.keyword}
        from pydicom.datadict import tag_for_keyword

        found = []
        for name in dir(primitive):
            if name.startswith("_") or not name[0].isupper():
                continue
            tag = tag_for_keyword(name)
            value = getattr(primitive, name, None)
            if tag is not None and value is not None and not callable(value):
                found.append((tag, name, value))
        return {name: value for _, name, value in sorted(found)}

    def set(self, keyword: str, value: Any) -> None:
        """Change a field of an outgoing message (``before_send`` only)."""
        if not self._writable:
            raise PermissionError("only before_send hooks may change a message")
        if not hasattr(self._primitive, keyword):
            raise AttributeError(f"{self.service} messages have no field {keyword!r}")
        setattr(self._primitive, keyword, value)

    # -- the dataset (message_received / message_sent) ---------------------------------

    @property
    def has_dataset(self) -> bool:
        """True when a dataset follows the command set and the hook may read it."""
        source = self._dataset_source
        return source is not None and source.size() > 0

    @property
    def dataset_size(self) -> int:
        """Length of the encoded dataset in bytes (0 without one)."""
        source = self._dataset_source
        return source.size() if source is not None else 0

    def write_dataset(self, fh: IO[bytes]) -> int:
        """Copy the dataset, encoded as on the wire (no File Meta), to ``fh`` without
        holding it in memory; returns the number of bytes written (0 without one)."""
        source = self._dataset_source
        if source is None or source.size() == 0:
            return 0
        total = 0
        with source.open() as data:
            while chunk := data.read(1024 * 1024):
                fh.write(chunk)
                total += len(chunk)
        return total

    def encoded_dataset(self) -> bytes | None:
        """The dataset as encoded on the wire (no File Meta), or None without one.
        Reads it whole into memory; ``write_dataset`` streams it instead."""
        source = self._dataset_source
        if source is None or source.size() == 0:
            return None
        with source.open() as data:
            return data.read()

    @property
    def dataset(self) -> Dataset | None:
        """The dataset decoded with pydicom (in ``transfer_syntax``), or None."""
        raw = self.encoded_dataset()
        if raw is None:
            return None
        from io import BytesIO

        from pydicom.filereader import read_dataset
        from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

        syntax = UID(self.transfer_syntax or "1.2.840.10008.1.2")
        if syntax == DeflatedExplicitVRLittleEndian:
            import zlib

            raw = zlib.decompress(raw, -zlib.MAX_WBITS)
        return read_dataset(BytesIO(raw), syntax.is_implicit_VR, syntax.is_little_endian)

    def __repr__(self) -> str:
        kind = "RSP" if self.is_response else "RQ"
        return f"<DimseMessage {self.direction} {self.service}-{kind} id={self.message_id}>"
