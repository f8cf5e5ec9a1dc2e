"""Base services an add-in reaches through its context: the AE registry and the DICOM client.

Add-ins type against the Protocols here, never against the server's classes. The server
ships default implementations (a SQLite registry, a pynetdicom client) and an add-in may
replace either one (``Addin.provides``), so what is written here is all an add-in may
rely on. pydicom's ``Dataset`` is part of the contract because add-ins build and read
DICOM data with pydicom anyway; pynetdicom is not, and never appears here.

Error conventions:

- an AE title missing from the registry is ``UnknownAETitle`` (a ``KeyError``);
- invalid input is ``InvalidAETitleEntry`` (a ``ValueError`` naming the field);
- ``DicomClient`` operations that produce one result report a failing peer *in* that
  result (``success=False`` and ``error``), because for a forwarder or a C-MOVE an
  unreachable peer is an outcome to record, not a bug; ``find``, which streams, raises
  ``DicomClientError`` instead, since an iterator has nowhere else to say it.
"""

from __future__ import annotations

import builtins
import os
import ssl
from dataclasses import dataclass
from datetime import datetime
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pydicom.dataset import Dataset

__all__ = [
    "ALL_PERMISSIONS",
    "UNSET",
    "AETitleConflict",
    "AETitleEntry",
    "AETitles",
    "CertificateError",
    "CertificateInfo",
    "DicomClient",
    "DicomClientError",
    "EchoResult",
    "FindResponse",
    "InvalidAETitleEntry",
    "MoveResult",
    "NEventReportResult",
    "Permission",
    "Security",
    "StoreResult",
    "UnknownAETitle",
    "Unset",
]


# -- AE registry ---------------------------------------------------------------------


class Unset(Enum):
    """An argument not given, where None already means something (``permissions=None``
    is "every permission")."""

    UNSET = "unset"


UNSET: Final = Unset.UNSET


class Permission(StrEnum):
    """What a peer may ask of this server over DICOM (checked per request at dispatch).

    Kept in the registry per AE title, so an operator can let a modality store without
    letting it query, or a viewer query without letting it overwrite what is archived.
    """

    ECHO = "echo"
    STORE = "store"
    FIND = "find"
    MOVE = "move"
    GET = "get"
    #: N-ACTION, N-CREATE, N-SET, N-GET, N-EVENT-REPORT, N-DELETE.
    N_SERVICES = "n-services"
    #: Replace an instance already stored (a C-STORE of a known SOP Instance UID).
    OVERWRITE = "overwrite"
    #: N-DELETE (together with ``n-services``).
    DELETE = "delete"


#: Every permission: what an entry without a permission list grants.
ALL_PERMISSIONS: frozenset[Permission] = frozenset(Permission)


@dataclass(frozen=True, slots=True)
class AETitleEntry:
    """A known DICOM peer: where to reach the application entity named ``ae_title``,
    and what it may do when it calls this server."""

    #: 1-16 characters; the registry's key (stored without surrounding spaces).
    ae_title: str
    #: Hostname or IP address.
    host: str
    #: TCP port, 1-65535.
    port: int
    #: Free text for people.
    description: str = ""
    #: Where associations calling as this AE title may come from: exact IP addresses,
    #: networks in CIDR form (``10.1.0.0/16``) or host names (resolved when checked).
    #: Empty: from any address.
    allowed_addresses: tuple[str, ...] = ()
    #: What this peer may ask for; None: everything.
    permissions: frozenset[Permission] | None = None

    def granted(self) -> frozenset[Permission]:
        """The permissions in force for this peer (all of them when none are listed)."""
        return ALL_PERMISSIONS if self.permissions is None else self.permissions


class UnknownAETitle(KeyError):
    """No entry by that AE title. A ``KeyError`` so ``except KeyError`` code keeps working."""

    def __init__(self, ae_title: str) -> None:
        super().__init__(ae_title)
        self.ae_title = ae_title

    def __str__(self) -> str:
        # KeyError's own str() is the repr of its argument, which reads badly in messages.
        return f"no AE title {self.ae_title!r} in the registry"


class AETitleConflict(Exception):
    """``create`` of an AE title that already exists with different values.

    Creating an identical entry again is not a conflict (it reports ``changed=False``),
    so scripts and configuration tools can re-apply their desired state safely.
    """

    def __init__(self, existing: AETitleEntry, requested: AETitleEntry) -> None:
        super().__init__(
            f"AE title {existing.ae_title!r} already exists as "
            f"{existing.host}:{existing.port}; update it instead"
        )
        self.existing = existing
        self.requested = requested


class InvalidAETitleEntry(ValueError):
    """An AE title, host, port, description, address or permission the registry refuses.

    ``field`` names the offending field ("ae_title", "host", "port", "description",
    "allowed_addresses", "permissions") so
    a caller (the control plane, a CLI) can point at it without parsing the message.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@runtime_checkable
class AETitles(Protocol):
    """The registry of known peers. Implementations must be safe to call from any thread."""

    def list(self) -> builtins.list[AETitleEntry]:
        """Every entry, sorted by AE title."""
        ...

    def get(self, ae_title: str) -> AETitleEntry:
        """The entry for ``ae_title``; raises ``UnknownAETitle``."""
        ...

    def create(self, entry: AETitleEntry) -> bool:
        """Add ``entry``; False if an identical one existed. Raises ``AETitleConflict``
        when it exists with other values, ``InvalidAETitleEntry`` on invalid input."""
        ...

    def update(
        self,
        ae_title: str,
        host: str | None = None,
        port: int | None = None,
        description: str | None = None,
        allowed_addresses: tuple[str, ...] | None = None,
        permissions: frozenset[Permission] | Unset | None = UNSET,
    ) -> tuple[AETitleEntry, bool]:
        """Change the fields given (None, or ``UNSET`` for ``permissions`` whose None
        means "all", leaves one as it is); returns the entry now stored and whether
        anything changed. Raises ``UnknownAETitle``."""
        ...

    def delete(self, ae_title: str) -> bool:
        """Remove ``ae_title``; False when it did not exist."""
        ...


# -- DICOM client ----------------------------------------------------------------------


class DicomClientError(Exception):
    """``find`` could not be carried out: peer unreachable, association refused, aborted
    or silent past the timeout. The message says which."""


@dataclass(frozen=True, slots=True)
class EchoResult:
    #: True when the peer answered C-ECHO with status 0x0000.
    success: bool
    #: DIMSE status of the C-ECHO-RSP; None when no response came back.
    status: int | None
    #: What went wrong (unreachable, rejected, timed out), "" on success.
    error: str
    #: From the connection attempt to the response (or the failure).
    round_trip_ms: float


@dataclass(frozen=True, slots=True)
class StoreResult:
    #: True when the peer stored the instance (status success or warning).
    success: bool
    status: int | None
    error: str
    sop_instance_uid: str
    round_trip_ms: float


class FindResponse(NamedTuple):
    """One C-FIND-RSP: pending responses carry an identifier, the final one does not."""

    status: int
    identifier: Dataset | None


@dataclass(frozen=True, slots=True)
class MoveResult:
    #: True when the final status is 0x0000 (every sub-operation completed).
    success: bool
    #: Final C-MOVE-RSP status; None when no final response came back.
    status: int | None
    error: str
    completed: int = 0
    failed: int = 0
    warning: int = 0
    #: Number of pending C-MOVE-RSPs received before the final one.
    pending_responses: int = 0


@dataclass(frozen=True, slots=True)
class NEventReportResult:
    #: True when the peer answered with a success or warning status.
    success: bool
    status: int | None
    error: str
    #: The Event Reply dataset, when the peer sent one.
    event_reply: Dataset | None = None


@runtime_checkable
class DicomClient(Protocol):
    """Outgoing DICOM requests to peers registered in the AE registry.

    Every call opens its own association (so calls from many threads never share one),
    proposes only the presentation contexts it needs, and releases it afterwards. An
    AE title missing from the registry raises ``UnknownAETitle`` before any traffic.
    ``timeout`` (seconds) bounds each network step (connect, association, each
    response); None uses the server's defaults.

    ``query_model`` is "P" (patient root), "S" (study root), "W" (modality worklist,
    C-FIND only) or the SOP Class UID of the information model.
    """

    def echo(self, ae_title: str, *, timeout: float | None = None) -> EchoResult: ...

    def store(
        self,
        ae_title: str,
        dataset: Dataset | str | os.PathLike[str],
        *,
        timeout: float | None = None,
    ) -> StoreResult:
        """Send one instance: a pydicom Dataset, or the path of a DICOM file (sent as
        stored, without decoding it, when the peer accepts its transfer syntax)."""
        ...

    def find(
        self,
        ae_title: str,
        query: Dataset,
        query_model: str = "S",
        *,
        timeout: float | None = None,
    ) -> Iterator[FindResponse]:
        """Yield every C-FIND-RSP, the final one last. Stopping early aborts the
        association. Raises ``DicomClientError`` when the query cannot be carried out."""
        ...

    def move(
        self,
        ae_title: str,
        destination_ae: str,
        query: Dataset,
        query_model: str = "S",
        *,
        timeout: float | None = None,
    ) -> MoveResult:
        """Ask the peer to send what ``query`` matches to ``destination_ae`` (an AE title
        the *peer* knows); returns the final status and sub-operation counts."""
        ...

    def n_event_report(
        self,
        ae_title: str,
        sop_class_uid: str,
        sop_instance_uid: str,
        event_type_id: int,
        event_info: Dataset | None = None,
        *,
        timeout: float | None = None,
    ) -> NEventReportResult:
        """Send an N-EVENT-REPORT (e.g. a Storage Commitment result) to the peer."""
        ...


# -- Security (DICOM TLS) --------------------------------------------------------------


class CertificateError(ValueError):
    """A certificate, private key or CA bundle that cannot be used: missing, unreadable,
    not PEM, key not matching the certificate. The message names the file, never its
    contents (a key must not reach a log)."""


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """One certificate in force, as an operator checks it after a rotation."""

    #: "server" (the listener's own chain, leaf first) or "ca" (trusted for clients).
    role: str
    #: The file it was read from.
    path: str
    subject: str
    issuer: str
    #: Validity, timezone-aware UTC.
    not_before: datetime
    not_after: datetime
    #: SHA-256 of the DER encoding as ``openssl x509 -fingerprint -sha256`` prints it
    #: ("AB:12:..."), so it compares with what ``pacsctl certs issue`` reported.
    sha256: str
    #: Serial number, lowercase hex.
    serial: str


@runtime_checkable
class Security(Protocol):
    """The DICOM TLS listener's configuration (base service "security").

    The server asks ``tls_endpoint`` whenever the service appears, disappears or its
    provider's settings change, and opens, moves or closes the TLS port to match. It
    calls ``server_context`` for every connection, so a context swapped by ``reload``
    serves the next association without the port being re-bound.
    """

    def tls_endpoint(self) -> tuple[str, int] | None:
        """(host, port) of the TLS listener; "" as host means the server's dicom_host.
        None: no TLS listener (nothing configured)."""
        ...

    def server_context(self) -> ssl.SSLContext:
        """The context in force (server side, TLS 1.2 or newer)."""
        ...

    def reload(self) -> builtins.list[CertificateInfo]:
        """Read the certificate, key and CA files again and put them in force. On
        ``CertificateError`` the previous context keeps serving."""
        ...

    def certificates(self) -> builtins.list[CertificateInfo]:
        """The certificates in force (server chain, then CA bundle)."""
        ...
