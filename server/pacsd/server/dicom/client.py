"""The default DICOM client (base service ``dicom_client``): pacsd's outgoing requests.

Every request opens its own association to a peer looked up in the AE registry, proposes
only the contexts it needs and releases it afterwards, so calls from any number of
threads (gRPC, add-ins, C-MOVE handlers) never share protocol state.

Two defects of pynetdicom 3.0.4 as a requestor are fixed here, for pacsd's own
associations only (no global patching):

* **Nagle.** pynetdicom never sets ``TCP_NODELAY``. A C-STORE-RQ is sent as a command
  PDU followed by a data PDU; with Nagle on, the second waits for the ACK of the first,
  which the peer delays (~40 ms on Linux), so each message stalls. ``_NoDelaySocket``
  sets the option on every socket this client creates.

* **Lost responses** (pynetdicom issues #435 and #875). Each association runs a
  reactor thread that polls the DIMSE queue for incoming *requests*. Before sending, a
  ``send_*`` method "pauses" it: it clears ``_reactor_checkpoint`` and waits until the
  reactor sets ``_is_paused``. But the reactor sets ``_is_paused = True`` *before*
  waiting on the checkpoint and ``False`` after it; if it passes an open checkpoint and
  loses the CPU right there, the sender sees the stale ``True``, sends its request, and
  the reactor then wakes up and takes the response off the queue as if it were a
  request ("Received unexpected C-STORE service message"). The sender waits out the
  DIMSE timeout and aborts. Measured here with a pynetdicom client storing small
  instances to DCMTK's storescp: about 1 response in 4,000 is lost. ``_GuardedDIMSE``
  closes the window: the reactor polls with ``block=False`` and the senders with
  ``block=True``, so a non-blocking poll while the checkpoint is cleared comes from a
  reactor that raced past it, and gets nothing. If the checkpoint is cleared after that
  test, the sender is still waiting for ``_is_paused`` (which the reactor set to False
  before testing) and cannot have sent its request yet, so no response can be stolen.

The lost-response guard depends on pynetdicom internals; it is applied only when the
installed version has the code it was written against (``reactor_guard_active``), and
``tests/integration/test_dicom_client.py`` reproduces the loss without it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pynetdicom
from pacsd.addin import sop
from pacsd.addin.services import (
    AETitleEntry,
    AETitles,
    DicomClientError,
    EchoResult,
    FindResponse,
    MoveResult,
    NEventReportResult,
    StoreResult,
)
from pacsd.addin.stored_dataset import StoredDataset
from pacsd.server.aetitles import normalize_ae_title
from pacsd.server.dicom import send_path, stored_send
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, _config, build_context, build_role
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.presentation import PresentationContext
from pynetdicom.status import code_to_category
from pynetdicom.transport import AddressInformation, AssociationSocket

log = logging.getLogger("pacsd.core.dicom.client")

# pynetdicom's per-PDU/per-message log handlers cost 7-13 % of throughput (same setting
# as the listener; repeated so a process that only sends is not slower).
_config.LOG_HANDLER_LEVEL = "none"
stored_send.install()

_UNCOMPRESSED: tuple[str, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_PENDING = (0xFF00, 0xFF01)
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+")

# PS3.4 Annex C and K information models, by pynetdicom's one-letter names.
_FIND_MODELS: dict[str, str] = {
    "P": "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root Query/Retrieve - FIND
    "S": "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root Query/Retrieve - FIND
    "W": "1.2.840.10008.5.1.4.31",  # Modality Worklist - FIND
}
_MOVE_MODELS: dict[str, str] = {
    "P": "1.2.840.10008.5.1.4.1.2.1.2",  # Patient Root Query/Retrieve - MOVE
    "S": "1.2.840.10008.5.1.4.1.2.2.2",  # Study Root Query/Retrieve - MOVE
}


# -- the two pynetdicom fixes ------------------------------------------------------------


@functools.cache
def reactor_guard_active() -> bool:
    """Whether ``_GuardedDIMSE`` is installed on this client's associations.

    The guard relies on how pynetdicom 3.0's reactor and ``send_*`` methods hand over
    the DIMSE queue. Any other version gets plain pynetdicom behaviour and a warning,
    instead of a fix that may no longer fit; the reproduction test then says whether
    the race is still there.
    """
    try:
        major, minor = (int(p) for p in pynetdicom.__version__.split(".")[:2])
        reactor = inspect.getsource(Association._run_reactor)
        sender = inspect.getsource(Association.send_c_store)
    except (OSError, TypeError, ValueError):
        active = False
    else:
        active = (
            (major, minor) == (3, 0)
            and "self.dimse.get_msg(block=False)" in reactor
            and "self._reactor_checkpoint.wait()" in reactor
            and "self._reactor_checkpoint.clear()" in sender
            and "self.dimse.get_msg(block=True)" in sender
        )
    if not active:
        log.warning(
            "pynetdicom %s is not the version pacsd's lost-response guard was written "
            "for; outgoing requests run without it (see pacsd.server.dicom.client)",
            pynetdicom.__version__,
        )
    return active


class _ClientDIMSE(DIMSEServiceProvider):
    """DIMSE provider of pacsd's requestor associations: a stored file goes out from
    the sending thread, written from the file (``send_path``), not as one queued
    P-DATA object per fragment for the upper layer's thread.

    A C-MOVE of 256 MiB to storescp (16 KiB PDUs) cost the engine 1.3 s of CPU and
    2.1 s that way. Written directly, the sender also waits whenever the peer reads
    slower than the file is read (a blocking ``send``), so nothing piles up in memory.
    Only messages carrying a file take this path: the others, and any message outside
    the data-transfer states or on TLS, keep pynetdicom's.
    """

    def send_msg(self, primitive: Any, context_id: int) -> None:
        if getattr(primitive, "_dataset_path", None) is not None and send_path.send_message(
            self, primitive, context_id
        ):
            return
        super().send_msg(primitive, context_id)


class _GuardedDIMSE(_ClientDIMSE):
    """DIMSE provider whose queue the reactor cannot drain during a request.

    See the module docstring for the race. Only the reactor thread calls ``get_msg``
    with ``block=False``; every ``send_*`` method calls it with ``block=True`` after
    clearing the checkpoint.
    """

    def get_msg(self, block: bool = False) -> Any:
        if not block and not self.assoc._reactor_checkpoint.is_set():
            return None, None
        return super().get_msg(block=block)


class _TrackedSocket(socket.socket):
    """A TCP socket that remembers why ``connect`` failed.

    pynetdicom swallows the OSError and only logs it; the caller deserves the reason
    ("connection refused" vs "timed out") in its result.
    """

    connect_error: OSError | None = None

    def connect(self, address: Any) -> None:
        try:
            super().connect(address)
        except OSError as exc:
            self.connect_error = exc
            raise


class _NoDelaySocket(AssociationSocket):
    """pynetdicom's requestor socket, plus TCP_NODELAY and the connect error."""

    raw: _TrackedSocket | None = None

    def _create_socket(self, address: AddressInformation) -> socket.socket:
        # Same as AssociationSocket._create_socket, plus TCP_NODELAY.
        family = socket.AF_INET if address.is_ipv4 else socket.AF_INET6
        sock = _TrackedSocket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.assoc.network_timeout is not None:
            sock.settimeout(self.assoc.network_timeout)
        sock.bind(address.as_tuple)
        self._is_connected = False
        self.raw = sock
        return sock


class ClientAE(AE):
    """An AE whose requestor associations get both fixes, and stored files sent from
    the file (``_ClientDIMSE``).

    ``AE._create_socket`` is the one hook pynetdicom calls with the new association
    before it starts any thread, so the DIMSE provider can still be swapped safely.
    Acceptor sockets are unaffected (they never come through here).
    """

    guard_lost_responses = True

    def _create_socket(
        self,
        assoc: Association,
        address: AddressInformation,
        tls_args: Any,
    ) -> AssociationSocket:
        if self.guard_lost_responses and reactor_guard_active():
            assoc.dimse = _GuardedDIMSE(assoc)
        else:
            assoc.dimse = _ClientDIMSE(assoc)
        sock = _NoDelaySocket(assoc, address=address)
        sock.tls_args = tls_args
        return sock


# -- the client ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Timeouts:
    connection: float
    acse: float
    dimse: float
    network: float


class AssociationFailed(DicomClientError):
    """No association could be established; the message says why."""


class PynetdicomClient:
    """``DicomClient`` on pynetdicom, resolving peers through ``aetitles``.

    ``aetitles`` is consulted on every call, so registry changes (and a registry
    replaced by an add-in, when given ``CurrentAETitles``) apply to the next request.
    """

    def __init__(
        self,
        aetitles: AETitles,
        calling_ae_title: str,
        *,
        connection_timeout: float = 10.0,
        acse_timeout: float = 30.0,
        dimse_timeout: float = 30.0,
        network_timeout: float = 60.0,
        max_pdu_size: int = 131072,
        guard_lost_responses: bool = True,
    ) -> None:
        self._aetitles = aetitles
        self.calling_ae_title = normalize_ae_title(calling_ae_title, "calling_ae_title")
        self._timeouts = _Timeouts(connection_timeout, acse_timeout, dimse_timeout, network_timeout)
        self.max_pdu_size = max_pdu_size
        #: Off only in the test that shows what the guard prevents.
        self.guard_lost_responses = guard_lost_responses

    def configure(
        self,
        *,
        acse_timeout: float,
        dimse_timeout: float,
        network_timeout: float,
        max_pdu_size: int,
    ) -> None:
        """New limits for the next association (settings changed at runtime)."""
        self._timeouts = _Timeouts(
            self._timeouts.connection, acse_timeout, dimse_timeout, network_timeout
        )
        self.max_pdu_size = max_pdu_size

    # -- DicomClient ---------------------------------------------------------------

    def echo(self, ae_title: str, *, timeout: float | None = None) -> EchoResult:
        entry = self._aetitles.get(ae_title)
        start = time.perf_counter()
        try:
            with self.association(entry, [build_context(sop.VERIFICATION)], timeout) as assoc:
                status = assoc.send_c_echo()
                elapsed = _ms(start)  # to the response, not counting the release
                code, error = self._status(assoc, status, "C-ECHO", timeout)
        except AssociationFailed as exc:
            return EchoResult(False, None, str(exc), _ms(start))
        return EchoResult(code == 0x0000, code, error or _status_error(code, 0x0000), elapsed)

    def store(
        self,
        ae_title: str,
        dataset: Dataset | str | os.PathLike[str],
        *,
        timeout: float | None = None,
    ) -> StoreResult:
        entry = self._aetitles.get(ae_title)
        item = _StoreItem.of(dataset)
        start = time.perf_counter()
        try:
            with self.association(entry, item.contexts(), timeout) as assoc:
                status = assoc.send_c_store(item.dataset)
                elapsed = _ms(start)
                code, error = self._status(assoc, status, "C-STORE", timeout)
        except AssociationFailed as exc:
            return StoreResult(False, None, str(exc), item.sop_instance_uid, _ms(start))
        ok = code is not None and _category(code) in ("Success", "Warning")
        if code is not None and not ok:
            error = _status_error(code, 0x0000)
        return StoreResult(ok, code, error, item.sop_instance_uid, elapsed)

    def find(
        self,
        ae_title: str,
        query: Dataset,
        query_model: str = "S",
        *,
        timeout: float | None = None,
    ) -> Iterator[FindResponse]:
        entry = self._aetitles.get(ae_title)
        model = _model(query_model, _FIND_MODELS, "C-FIND")
        if not isinstance(query, Dataset):
            raise TypeError("query must be a pydicom Dataset")
        # Resolve and validate now; the association opens on the first next().
        return self._find(entry, query, model, timeout)

    def _find(
        self, entry: AETitleEntry, query: Dataset, model: str, timeout: float | None
    ) -> Iterator[FindResponse]:
        with self.association(entry, _contexts(model), timeout) as assoc:
            for status, identifier in assoc.send_c_find(query, model):
                code, error = self._status(assoc, status, "C-FIND", timeout)
                if code is None:
                    raise DicomClientError(error)
                if code in _PENDING:
                    yield FindResponse(code, identifier)
                    continue
                yield FindResponse(code, None)
                return

    def move(
        self,
        ae_title: str,
        destination_ae: str,
        query: Dataset,
        query_model: str = "S",
        *,
        timeout: float | None = None,
    ) -> MoveResult:
        entry = self._aetitles.get(ae_title)
        model = _model(query_model, _MOVE_MODELS, "C-MOVE")
        destination = normalize_ae_title(destination_ae, "destination_ae")
        if not isinstance(query, Dataset):
            raise TypeError("query must be a pydicom Dataset")
        pending = 0
        try:
            with self.association(entry, _contexts(model), timeout) as assoc:
                for status, _identifier in assoc.send_c_move(query, destination, model):
                    code, error = self._status(assoc, status, "C-MOVE", timeout)
                    if code is None:
                        return MoveResult(False, None, error, pending_responses=pending)
                    if code in _PENDING:
                        pending += 1
                        continue
                    return MoveResult(
                        success=code == 0x0000,
                        status=code,
                        error=_status_error(code, 0x0000),
                        completed=int(status.get("NumberOfCompletedSuboperations", 0) or 0),
                        failed=int(status.get("NumberOfFailedSuboperations", 0) or 0),
                        warning=int(status.get("NumberOfWarningSuboperations", 0) or 0),
                        pending_responses=pending,
                    )
        except AssociationFailed as exc:
            return MoveResult(False, None, str(exc))
        return MoveResult(
            False, None, "the peer sent no final C-MOVE response", pending_responses=pending
        )

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
        entry = self._aetitles.get(ae_title)
        sop_class = _uid(sop_class_uid, "sop_class_uid")
        sop_instance = _uid(sop_instance_uid, "sop_instance_uid")
        if not 0 <= int(event_type_id) <= 0xFFFF:
            raise ValueError("event_type_id must be between 0 and 65535")
        # The sender of an N-EVENT-REPORT is the SCP of its SOP class (e.g. Storage
        # Commitment, PS3.4 J.3.3): propose that role; peers that ignore role
        # selection still accept the context with the default roles.
        role = build_role(sop_class, scu_role=False, scp_role=True)
        try:
            with self.association(entry, _contexts(sop_class), timeout, [role]) as assoc:
                status, reply = assoc.send_n_event_report(
                    event_info, int(event_type_id), sop_class, sop_instance
                )
                code, error = self._status(assoc, status, "N-EVENT-REPORT", timeout)
        except AssociationFailed as exc:
            return NEventReportResult(False, None, str(exc))
        ok = code is not None and _category(code) in ("Success", "Warning")
        if code is not None and not ok:
            error = _status_error(code, 0x0000)
        return NEventReportResult(ok, code, error, reply if ok else None)

    # -- associations ------------------------------------------------------------------

    def _ae(self, timeout: float | None) -> ClientAE:
        # One AE per request: pynetdicom copies its timeouts into each Association, and
        # a request's own timeout must not leak into a concurrent one.
        t = self._timeouts
        ae = ClientAE(ae_title=self.calling_ae_title)
        ae.guard_lost_responses = self.guard_lost_responses
        ae.connection_timeout = timeout or t.connection
        ae.acse_timeout = timeout or t.acse
        ae.dimse_timeout = timeout or t.dimse
        ae.network_timeout = max(timeout or 0, t.network)
        return ae

    @contextlib.contextmanager
    def association(
        self,
        entry: AETitleEntry,
        contexts: list[PresentationContext],
        timeout: float | None = None,
        ext_neg: list[Any] | None = None,
    ) -> Iterator[Association]:
        """An established association to ``entry``, released on exit (aborted when the
        block raises or the association is no longer usable).

        Raises ``AssociationFailed`` with the reason when the peer cannot be reached,
        rejects the association or accepts none of ``contexts``.
        """
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive")
        ae = self._ae(timeout)
        start = time.monotonic()
        try:
            assoc = ae.associate(
                entry.host,
                entry.port,
                contexts=contexts,
                ae_title=entry.ae_title,
                max_pdu=self.max_pdu_size,
                ext_neg=ext_neg,
            )
        except socket.gaierror as exc:
            # pynetdicom resolves the host itself, before it creates any socket.
            raise AssociationFailed(
                f"cannot resolve host {entry.host!r} of {entry.ae_title}: {exc.strerror or exc}"
            ) from exc
        if not assoc.is_established:
            elapsed = time.monotonic() - start
            raise AssociationFailed(_why_not_established(assoc, entry, ae, elapsed))
        try:
            yield assoc
        except BaseException:
            assoc.abort()
            raise
        else:
            if assoc.is_established:
                assoc.release()
            if not (assoc.is_released or assoc.is_aborted):
                assoc.abort()
        finally:
            # The reactor thread ends with the association; wait for it briefly so
            # sockets and threads do not pile up under a burst of requests.
            assoc.join(timeout=5)

    def _status(
        self, assoc: Association, status: Dataset, what: str, timeout: float | None
    ) -> tuple[int | None, str]:
        """The response's status code, or None and why there was none."""
        code = status.get("Status") if status is not None else None
        if code is not None:
            return int(code), ""
        if assoc.is_aborted:
            return None, f"the association was aborted before the {what} response"
        wait = timeout or self._timeouts.dimse
        return None, f"no {what} response within {wait:g} s"


class _StoreItem:
    """What one C-STORE sends: a dataset, or a file (a ``StoredDataset``: sent as
    stored when the peer accepted its syntax, see stored_send.py)."""

    def __init__(
        self, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: UID, dataset: Dataset
    ) -> None:
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid
        self.transfer_syntax = transfer_syntax
        self.dataset = dataset

    @classmethod
    def of(cls, value: Dataset | str | os.PathLike[str]) -> _StoreItem:
        if isinstance(value, Dataset):
            for keyword in ("SOPClassUID", "SOPInstanceUID"):
                if not value.get(keyword):
                    raise ValueError(f"the dataset to store has no {keyword}")
            meta = getattr(value, "file_meta", None)
            syntax = meta.get("TransferSyntaxUID") if meta is not None else None
            if syntax is None:
                # A dataset built in memory: pynetdicom needs a transfer syntax to pick a
                # context; send it as Explicit VR Little Endian, the DICOM default.
                value = Dataset(value)
                value.file_meta = FileMetaDataset()
                value.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
                syntax = ExplicitVRLittleEndian
            return cls(str(value.SOPClassUID), str(value.SOPInstanceUID), UID(syntax), value)
        stored = StoredDataset.open(value)  # OSError, or ValueError without usable meta
        meta = stored.file_meta
        return cls(
            str(meta.MediaStorageSOPClassUID),
            str(meta.MediaStorageSOPInstanceUID),
            UID(meta.TransferSyntaxUID),
            stored,
        )

    def contexts(self) -> list[PresentationContext]:
        # The instance's own syntax gets a context of its own, so a peer that prefers
        # another one (storescp prefers explicit VR) can still accept it and the data
        # goes out as it is. Uncompressed data can also be re-encoded: a second context
        # offers the default syntaxes for peers that take nothing else.
        contexts = [build_context(self.sop_class_uid, [self.transfer_syntax])]
        if not self.transfer_syntax.is_compressed and not self.transfer_syntax.is_deflated:
            others = [ts for ts in _UNCOMPRESSED if ts != self.transfer_syntax]
            contexts.append(build_context(self.sop_class_uid, others))
        return contexts


# -- helpers ---------------------------------------------------------------------------


def _contexts(sop_class: str) -> list[PresentationContext]:
    return [build_context(sop_class, list(_UNCOMPRESSED))]


def _model(value: str, models: dict[str, str], what: str) -> str:
    if value in models:
        return models[value]
    if _is_uid(value):
        return value
    raise ValueError(
        f"query_model for {what} must be one of {', '.join(models)} or a SOP Class UID, "
        f"not {value!r}"
    )


def _uid(value: str, field: str) -> str:
    if not _is_uid(value):
        raise ValueError(f"{field} is not a valid UID: {value!r}")
    return value


def _is_uid(value: object) -> bool:
    # PS3.5 9.1; checked here rather than with pydicom, which warns on invalid values.
    return isinstance(value, str) and len(value) <= 64 and bool(_UID.fullmatch(value))


def _category(code: int) -> str:
    return str(code_to_category(code))


def _status_error(code: int | None, success: int) -> str:
    if code is None or code == success:
        return ""
    return f"peer answered with status 0x{code:04X} ({_category(code).lower()})"


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


def _why_not_established(assoc: Association, entry: AETitleEntry, ae: AE, elapsed: float) -> str:
    where = f"{entry.ae_title} at {entry.host}:{entry.port}"
    sock = assoc.dul.socket
    raw = getattr(sock, "raw", None)
    error = getattr(raw, "connect_error", None)
    if error is not None:
        reason = error.strerror or str(error) or type(error).__name__
        if isinstance(error, TimeoutError):
            reason = f"timed out after {ae.connection_timeout:g} s"
        return f"cannot connect to {where}: {reason}"
    rsp = assoc.acceptor.primitive
    if assoc.is_rejected and rsp is not None:
        return (
            f"{where} rejected the association: {rsp.result_str}, "
            f"source {rsp.source_str}, reason {rsp.reason_str}"
        )
    if rsp is not None and getattr(rsp, "result", None) == 0x00:
        return f"{where} accepted none of the proposed presentation contexts"
    if ae.acse_timeout is not None and elapsed >= ae.acse_timeout:
        return f"{where} did not answer the association request within {ae.acse_timeout:g} s"
    return f"{where} closed or aborted the connection during association negotiation"
