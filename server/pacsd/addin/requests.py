"""What a handler receives: plain data about the association and the message.

These types stand between add-ins and pynetdicom, so an add-in never imports the DICOM
engine and keeps working if the engine underneath changes. Datasets are pydicom
``Dataset`` objects, decoded only when first asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pacsd.addin.services import ALL_PERMISSIONS, Permission

if TYPE_CHECKING:
    from pacsd.addin.services import AETitleEntry
    from pydicom.dataset import Dataset


@dataclass(frozen=True, slots=True)
class UserIdentity:
    """User Identity Negotiation (PS3.7 D.3.3.7) as the peer sent it."""

    #: 1 username, 2 username and passcode, 3 Kerberos, 4 SAML, 5 JWT.
    type: int
    primary: str
    has_secondary: bool


@dataclass(frozen=True, slots=True)
class AssociationInfo:
    """The association a message arrived on."""

    #: Server-unique ID, the same one the logs and the control plane show.
    id: str
    calling_ae: str
    called_ae: str
    peer_host: str
    peer_port: int
    user_identity: UserIdentity | None = None
    #: Subject of the peer's TLS client certificate, "" without TLS or certificate.
    tls_peer_subject: str = ""
    #: What the access policy lets this peer do (the AE registry's entry for the calling
    #: AE title, or ``unknown_ae_permissions``); dispatch refuses the rest with 0x0124.
    permissions: frozenset[Permission] = ALL_PERMISSIONS


class _Lazy:
    """A dataset decoded once, on first access, from the engine's event."""

    __slots__ = ("_decode", "_value")

    def __init__(self, decode: Callable[[], Any]) -> None:
        self._decode = decode
        self._value: Any = None

    def get(self) -> Any:
        if self._decode is not None:
            self._value = self._decode()
            self._decode = None  # type: ignore[assignment]
        return self._value


@dataclass(frozen=True, slots=True)
class _Request:
    association: AssociationInfo
    message_id: int
    sop_class_uid: str
    transfer_syntax: str
    _dataset: _Lazy = field(repr=False, compare=False)
    _cancelled: Callable[[], bool] = field(repr=False, compare=False)

    @property
    def dataset(self) -> Dataset | None:
        """The request's dataset (identifier, attribute list...), decoded on first access."""
        value: Dataset | None = self._dataset.get()
        return value

    def is_cancelled(self) -> bool:
        """True once the peer sent C-CANCEL for this request (FIND, GET, MOVE)."""
        return self._cancelled()


@dataclass(frozen=True, slots=True)
class EchoRequest(_Request):
    """A C-ECHO-RQ."""


@dataclass(frozen=True, slots=True)
class StoreRequest(_Request):
    """A C-STORE-RQ. ``dataset`` decodes it; ``encoded`` gives the bytes as received."""

    sop_instance_uid: str = ""
    move_originator_ae: str = ""
    move_originator_message_id: int | None = None
    _encoded: Callable[[], bytes] = field(default=lambda: b"", repr=False, compare=False)
    _file_meta: Callable[[], Any] = field(default=lambda: None, repr=False, compare=False)
    #: Where the engine spooled the dataset, when it receives to a file.
    dataset_path: Path | None = None
    #: The engine's open spool file behind ``dataset_path`` (``spool.SpoolFile``): the
    #: archive parses the header from the bytes it still holds and fsyncs its
    #: descriptor, instead of opening the file twice more. Not part of the add-in API.
    _spooled: Any = field(default=None, repr=False, compare=False)

    def encoded(self) -> bytes:
        """The dataset exactly as received, in ``transfer_syntax``, without file meta."""
        return self._encoded()

    def file_meta(self) -> Dataset:
        """File Meta Information (PS3.10) for writing the instance as a DICOM file."""
        meta: Dataset = self._file_meta()
        return meta


@dataclass(frozen=True, slots=True)
class FindRequest(_Request):
    """A C-FIND-RQ; ``dataset`` is the identifier (query)."""

    #: "PATIENT", "STUDY", "SERIES", "IMAGE"... from QueryRetrieveLevel, "" if absent.
    level: str = ""


@dataclass(frozen=True, slots=True)
class GetRequest(_Request):
    """A C-GET-RQ; ``dataset`` is the identifier."""

    level: str = ""


@dataclass(frozen=True, slots=True)
class MoveRequest(_Request):
    """A C-MOVE-RQ; ``destination`` is the registered AE the instances go to."""

    level: str = ""
    destination_ae: str = ""
    destination: AETitleEntry | None = None


@dataclass(frozen=True, slots=True)
class NRequest(_Request):
    """A DIMSE-N request (N-ACTION, N-CREATE, N-SET, N-GET, N-EVENT-REPORT, N-DELETE)."""

    service: str = ""
    sop_instance_uid: str = ""
    #: N-ACTION's Action Type ID, N-EVENT-REPORT's Event Type ID.
    type_id: int | None = None
    #: N-GET's Attribute Identifier List (tags as ints).
    attribute_identifiers: tuple[int, ...] = ()
