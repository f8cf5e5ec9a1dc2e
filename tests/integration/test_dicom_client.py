"""pacsd's DICOM client against real peers: DCMTK storescp and pynetdicom SCPs.

Covers every operation of the ``DicomClient`` protocol, TCP_NODELAY on the client's
sockets, and pynetdicom 3.0.4's lost-response race (issues #435/#875): reproduced with
the guard off, absent with it on.
"""

from __future__ import annotations

import logging
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pacsd.addin.services import (
    AETitleEntry,
    DicomClient,
    DicomClientError,
    UnknownAETitle,
)
from pacsd.server.aetitles import SqliteAETitles
from pacsd.server.dicom import stored_send
from pacsd.server.dicom.client import PynetdicomClient, reactor_guard_active
from pacsd.server.storage.database import ServerDatabase
from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config, build_context, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from tests.integration.dicom_peers import (
    SECONDARY_CAPTURE,
    StoreSCP,
    free_port,
    small_instance,
    storescp,
)

# -- fixtures ------------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[SqliteAETitles]:
    db = ServerDatabase.open(tmp_path)
    yield SqliteAETitles(db)
    db.close()


@pytest.fixture
def client(registry: SqliteAETitles) -> PynetdicomClient:
    return PynetdicomClient(registry, "PACSD", dimse_timeout=10, acse_timeout=10)


@pytest.fixture
def store_scp(tmp_path: Path, registry: SqliteAETitles) -> Iterator[StoreSCP]:
    with storescp(tmp_path) as scp:
        registry.create(AETitleEntry("STORESCP", "127.0.0.1", scp.port, "DCMTK storescp"))
        yield scp


class PynetdicomSCP:
    """A pynetdicom SCP inside the test process, recording what it received."""

    def __init__(self, ae: AE, handlers: list[Any], port: int | None = None) -> None:
        self.port = port or free_port()
        self.received: list[Any] = []
        server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        assert server is not None
        self.server = server

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def start_scp() -> Iterator[Callable[..., PynetdicomSCP]]:
    started: list[PynetdicomSCP] = []

    def start(ae: AE, handlers: list[Any]) -> PynetdicomSCP:
        scp = PynetdicomSCP(ae, handlers)
        started.append(scp)
        return scp

    yield start
    for scp in started:
        scp.close()


# -- C-ECHO and C-STORE to DCMTK -----------------------------------------------------


def test_client_implements_the_public_protocol(client: PynetdicomClient) -> None:
    assert isinstance(client, DicomClient)


def test_echo_storescp(client: PynetdicomClient, store_scp: StoreSCP) -> None:
    result = client.echo("STORESCP")
    assert result.success, result.error
    assert result.status == 0x0000
    assert result.error == ""
    assert 0 < result.round_trip_ms < 5000


def test_store_dataset_arrives(client: PynetdicomClient, store_scp: StoreSCP) -> None:
    ds = small_instance("STORE-1")
    result = client.store("STORESCP", ds)
    assert result.success, result.error
    assert (result.status, result.sop_instance_uid) == (0x0000, ds.SOPInstanceUID)
    stored = dcmread(store_scp.file_for(ds.SOPInstanceUID))
    assert stored.PatientID == "STORE-1"
    assert stored.SOPInstanceUID == ds.SOPInstanceUID


def test_store_dataset_without_file_meta(client: PynetdicomClient, store_scp: StoreSCP) -> None:
    ds = small_instance("NO-META")
    del ds.file_meta
    result = client.store("STORESCP", ds)
    assert result.success, result.error
    assert dcmread(store_scp.file_for(ds.SOPInstanceUID)).PatientID == "NO-META"
    assert not hasattr(ds, "file_meta")  # the caller's dataset is left as it was


def test_store_file_is_sent_as_stored(
    client: PynetdicomClient, store_scp: StoreSCP, tmp_path: Path
) -> None:
    ds = small_instance("FROM-FILE")
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    path = tmp_path / "instance.dcm"
    ds.save_as(path, enforce_file_format=True)
    result = client.store("STORESCP", str(path))
    assert result.success, result.error
    assert result.sop_instance_uid == ds.SOPInstanceUID
    stored = dcmread(store_scp.file_for(ds.SOPInstanceUID))
    assert stored.PatientID == "FROM-FILE"
    assert stored.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian


def test_a_stored_file_is_converted_for_a_peer_that_takes_only_another_syntax(
    client: PynetdicomClient, registry: SqliteAETitles, tmp_path: Path
) -> None:
    ds = small_instance("CONVERTED")  # Explicit VR Little Endian
    path = tmp_path / "explicit.dcm"
    ds.save_as(path, enforce_file_format=True)
    with storescp(tmp_path, "+xi") as scp:  # accepts Implicit VR Little Endian only
        registry.create(AETitleEntry("IMPLICIT", "127.0.0.1", scp.port))
        result = client.store("IMPLICIT", str(path))
        assert result.success, result.error
        stored = dcmread(scp.file_for(ds.SOPInstanceUID))
    assert stored.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert stored.PatientID == "CONVERTED"


@pytest.mark.parametrize("chunked", [False, True], ids=["switch-off", "switch-on"])
def test_pynetdicom_s_own_switch_still_decides_for_a_path(tmp_path: Path, chunked: bool) -> None:
    """pacsd sends stored files chunked (stored_send.py) without touching pynetdicom's
    ``STORE_SEND_CHUNKED_DATASET``: a path given to pynetdicom itself is decoded and
    converted with the switch off, and with it on is sent only as it is (pynetdicom
    refuses a peer that takes only another syntax)."""
    stored_send.install()
    ds = small_instance("PLAIN-PATH")
    path = tmp_path / "explicit.dcm"
    ds.save_as(path, enforce_file_format=True)
    before = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = chunked
    try:
        with storescp(tmp_path, "+xi") as scp:  # accepts Implicit VR Little Endian only
            ae = AE(ae_title="ADDIN")
            ae.add_requested_context(
                SECONDARY_CAPTURE, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
            )
            assoc = ae.associate("127.0.0.1", scp.port, ae_title=scp.ae_title)
            assert assoc.is_established
            try:
                if chunked:
                    with pytest.raises(ValueError, match="No presentation context"):
                        assoc.send_c_store(str(path))
                    return
                status = assoc.send_c_store(str(path))
            finally:
                assoc.release()
            assert status.Status == 0x0000
            stored = dcmread(scp.file_for(ds.SOPInstanceUID))
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = before
    assert stored.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert stored.PatientID == "PLAIN-PATH"


def test_store_refuses_a_dataset_without_uids(
    client: PynetdicomClient, store_scp: StoreSCP
) -> None:
    ds = small_instance()
    del ds.SOPInstanceUID
    with pytest.raises(ValueError, match="SOPInstanceUID"):
        client.store("STORESCP", ds)


def test_unknown_ae_title_raises_before_any_traffic(client: PynetdicomClient) -> None:
    with pytest.raises(UnknownAETitle):
        client.echo("NOBODY")
    with pytest.raises(UnknownAETitle):
        client.store("NOBODY", small_instance())
    with pytest.raises(UnknownAETitle):
        client.find("NOBODY", Dataset())


def test_echo_to_closed_port_reports_why(
    client: PynetdicomClient, registry: SqliteAETitles
) -> None:
    registry.create(AETitleEntry("CLOSED", "127.0.0.1", free_port()))
    result = client.echo("CLOSED")
    assert not result.success
    assert result.status is None
    assert "cannot connect to CLOSED at 127.0.0.1" in result.error
    assert "refused" in result.error.lower()
    store = client.store("CLOSED", small_instance())
    assert not store.success and "refused" in store.error.lower()


def test_unresolvable_host_is_reported(client: PynetdicomClient, registry: SqliteAETitles) -> None:
    registry.create(AETitleEntry("NOWHERE", "nonexistent.invalid", 104))  # RFC 2606
    result = client.echo("NOWHERE")
    assert not result.success
    assert "cannot resolve host 'nonexistent.invalid' of NOWHERE" in result.error


def test_rejected_association_is_reported(
    client: PynetdicomClient, registry: SqliteAETitles, start_scp: Callable[..., PynetdicomSCP]
) -> None:
    ae = AE("REALNAME")
    ae.require_called_aet = True
    ae.add_supported_context("1.2.840.10008.1.1")
    scp = start_scp(ae, [])
    registry.create(AETitleEntry("WRONGNAME", "127.0.0.1", scp.port))
    result = client.echo("WRONGNAME")
    assert not result.success
    assert "rejected the association" in result.error
    assert "Called AE title not recognised" in result.error


def test_peer_without_the_context_is_reported(
    client: PynetdicomClient, registry: SqliteAETitles, start_scp: Callable[..., PynetdicomSCP]
) -> None:
    ae = AE("STOREONLY")
    ae.add_supported_context(SECONDARY_CAPTURE)
    scp = start_scp(ae, [])
    registry.create(AETitleEntry("STOREONLY", "127.0.0.1", scp.port))
    result = client.echo("STOREONLY")
    assert not result.success
    assert "accepted none of the proposed presentation contexts" in result.error


def test_store_failure_status_is_reported(
    client: PynetdicomClient, registry: SqliteAETitles, start_scp: Callable[..., PynetdicomSCP]
) -> None:
    ae = AE("FULL")
    ae.add_supported_context(SECONDARY_CAPTURE, [ExplicitVRLittleEndian])
    scp = start_scp(ae, [(evt.EVT_C_STORE, lambda event: 0xA700)])  # out of resources
    registry.create(AETitleEntry("FULL", "127.0.0.1", scp.port))
    result = client.store("FULL", small_instance())
    assert not result.success
    assert result.status == 0xA700
    assert "0xA700" in result.error


# -- C-FIND, C-MOVE, N-EVENT-REPORT against pynetdicom SCPs ---------------------------


def test_find_yields_every_match_then_the_final_status(
    client: PynetdicomClient, registry: SqliteAETitles, start_scp: Callable[..., PynetdicomSCP]
) -> None:
    seen: list[tuple[str, str, str]] = []

    def on_find(event: Any) -> Iterator[tuple[int, Dataset | None]]:
        query = event.identifier
        model = str(event.request.AffectedSOPClassUID)
        seen.append((model, query.QueryRetrieveLevel, str(query.PatientID)))
        for n in range(3):
            match = Dataset()
            match.QueryRetrieveLevel = "STUDY"
            match.PatientID = query.PatientID
            match.StudyInstanceUID = f"1.2.3.{n}"
            yield 0xFF00, match

    ae = AE("QRSCP")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(PatientRootQueryRetrieveInformationModelFind)
    scp = start_scp(ae, [(evt.EVT_C_FIND, on_find)])
    registry.create(AETitleEntry("QRSCP", "127.0.0.1", scp.port))

    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = "PAT42"
    query.StudyInstanceUID = ""
    responses = list(client.find("QRSCP", query))
    assert [r.status for r in responses] == [0xFF00, 0xFF00, 0xFF00, 0x0000]
    matches = [r.identifier for r in responses[:3] if r.identifier is not None]
    assert [m.StudyInstanceUID for m in matches] == ["1.2.3.0", "1.2.3.1", "1.2.3.2"]
    assert all(m.PatientID == "PAT42" for m in matches)
    assert responses[-1].identifier is None

    assert [r.status for r in client.find("QRSCP", query, "P")][-1] == 0x0000
    assert seen == [
        (StudyRootQueryRetrieveInformationModelFind, "STUDY", "PAT42"),
        (PatientRootQueryRetrieveInformationModelFind, "STUDY", "PAT42"),
    ]


def test_find_raises_when_the_peer_is_unreachable(
    client: PynetdicomClient, registry: SqliteAETitles
) -> None:
    registry.create(AETitleEntry("CLOSED", "127.0.0.1", free_port()))
    responses = client.find("CLOSED", Dataset())  # nothing sent yet
    with pytest.raises(DicomClientError, match="refused"):
        next(responses)


def test_find_rejects_an_unknown_query_model(
    client: PynetdicomClient, registry: SqliteAETitles
) -> None:
    registry.create(AETitleEntry("ANY", "127.0.0.1", 104))
    with pytest.raises(ValueError, match="query_model"):
        client.find("ANY", Dataset(), "X")


def test_move_drives_sub_operations_to_the_destination(
    client: PynetdicomClient,
    registry: SqliteAETitles,
    store_scp: StoreSCP,
    start_scp: Callable[..., PynetdicomSCP],
) -> None:
    instances = [small_instance("MOVE-ME") for _ in range(3)]
    requests: list[str] = []

    def on_move(event: Any) -> Iterator[Any]:
        requests.append(str(event.move_destination).strip())
        if str(event.move_destination).strip() != "STORESCP":
            yield None, None  # unknown destination
            return
        yield "127.0.0.1", store_scp.port
        yield len(instances)
        for ds in instances:
            yield 0xFF00, ds

    ae = AE("QRSCP")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelMove)
    ae.add_requested_context(SECONDARY_CAPTURE, [ExplicitVRLittleEndian])
    scp = start_scp(ae, [(evt.EVT_C_MOVE, on_move)])
    registry.create(AETitleEntry("QRSCP", "127.0.0.1", scp.port))

    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = instances[0].StudyInstanceUID
    result = client.move("QRSCP", "STORESCP", query)
    assert result.success, result.error
    assert (result.status, result.completed, result.failed, result.warning) == (0, 3, 0, 0)
    assert result.pending_responses >= 1
    for ds in instances:
        assert dcmread(store_scp.file_for(ds.SOPInstanceUID)).PatientID == "MOVE-ME"

    unknown = client.move("QRSCP", "ELSEWHERE", query)
    assert not unknown.success
    assert unknown.status == 0xA801  # move destination unknown
    assert requests == ["STORESCP", "ELSEWHERE"]


def test_n_event_report_reaches_the_peer(
    client: PynetdicomClient, registry: SqliteAETitles, start_scp: Callable[..., PynetdicomSCP]
) -> None:
    reports: list[tuple[int, str, str]] = []

    def on_report(event: Any) -> tuple[int, Dataset | None]:
        info = event.event_information
        instance = str(event.request.AffectedSOPInstanceUID)
        reports.append((event.event_type, instance, str(info.TransactionUID)))
        return 0x0000, None

    ae = AE("COMMITSCU")
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    scp = start_scp(ae, [(evt.EVT_N_EVENT_REPORT, on_report)])
    registry.create(AETitleEntry("COMMITSCU", "127.0.0.1", scp.port))

    transaction = generate_uid()
    info = Dataset()
    info.TransactionUID = transaction
    info.ReferencedSOPSequence = []
    result = client.n_event_report(
        "COMMITSCU",
        StorageCommitmentPushModel,
        "1.2.840.10008.1.20.1.1",  # the well-known Storage Commitment instance
        1,  # storage commitment request successful
        info,
    )
    assert result.success, result.error
    assert result.status == 0x0000
    assert reports == [(1, "1.2.840.10008.1.20.1.1", transaction)]


# -- TCP_NODELAY -------------------------------------------------------------------------


def test_client_sockets_have_tcp_nodelay(client: PynetdicomClient, store_scp: StoreSCP) -> None:
    entry = AETitleEntry("STORESCP", "127.0.0.1", store_scp.port)
    contexts = [build_context(SECONDARY_CAPTURE, [ExplicitVRLittleEndian])]
    with client.association(entry, contexts) as assoc:
        assert assoc.dul.socket is not None
        sock = assoc.dul.socket.socket
        assert sock is not None
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        # The effect: a C-STORE (command PDU + data PDU) no longer waits for the peer's
        # delayed ACK (~40 ms each with Nagle on; ~3 ms here without).
        times = []
        for _ in range(15):
            start = time.perf_counter()
            status = assoc.send_c_store(small_instance())
            times.append(time.perf_counter() - start)
            assert status.Status == 0x0000
    assert statistics.median(times) < 0.020, f"median C-STORE {statistics.median(times):.3f}s"


# -- the lost C-STORE response (pynetdicom #435 / #875) ----------------------------------


def test_lost_response_guard_is_active_for_the_installed_pynetdicom() -> None:
    assert reactor_guard_active()


class _PreemptedReactor(threading.Event):
    """The association's reactor checkpoint, with the reactor "losing the CPU" right after
    passing it (while ``_is_paused`` is still True): the first preemption point of the
    race. Only the reactor thread is delayed."""

    def __init__(self, assoc: Any, stall: float) -> None:
        super().__init__()
        self.set()
        self._assoc = assoc
        self._stall = stall

    def wait(self, timeout: float | None = None) -> bool:
        passed = super().wait(timeout)
        if passed and threading.current_thread() is self._assoc:
            time.sleep(self._stall)
        return passed


def _widen_race_window(assoc: Any, stall: float = 0.02) -> None:
    """Make pynetdicom's natural interleaving (~1 lost response in 4,000 stores here)
    happen on most stores: the reactor stalls after passing its checkpoint, and the
    sender stalls after sending (the second preemption point), so the response is queued
    while the reactor is about to poll and before the sender waits for it."""
    assoc._reactor_checkpoint = _PreemptedReactor(assoc, stall)
    send = assoc.dimse.send_msg

    def send_then_stall(primitive: Any, context_id: int) -> None:
        send(primitive, context_id)
        time.sleep(stall * 2)

    assoc.dimse.send_msg = send_then_stall


def _stores_with_widened_window(
    registry: SqliteAETitles, port: int, guard: bool, count: int
) -> tuple[int, int]:
    """(stores answered, stores whose response was lost), stopping at the first loss."""
    client = PynetdicomClient(registry, "PACSD", dimse_timeout=1.5, guard_lost_responses=guard)
    entry = AETitleEntry("STORESCP", "127.0.0.1", port)
    contexts = [build_context(SECONDARY_CAPTURE, [ExplicitVRLittleEndian])]
    answered = lost = 0
    with client.association(entry, contexts) as assoc:
        _widen_race_window(assoc)
        for _ in range(count):
            status = assoc.send_c_store(small_instance())
            if "Status" not in status:
                lost += 1
                break
            assert status.Status == 0x0000
            answered += 1
    return answered, lost


def test_lost_response_reproduces_without_the_guard(
    registry: SqliteAETitles, store_scp: StoreSCP, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pynetdicom"):
        answered, lost = _stores_with_widened_window(registry, store_scp.port, False, 12)
    assert lost == 1, f"no response lost in {answered} stores: the race did not reproduce"
    # The reactor took the C-STORE-RSP for a request: exactly the reported symptom.
    assert "Received unexpected C-STORE service message" in caplog.text


def test_guard_keeps_every_response_in_the_same_conditions(
    registry: SqliteAETitles, store_scp: StoreSCP, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pynetdicom"):
        answered, lost = _stores_with_widened_window(registry, store_scp.port, True, 12)
    assert (answered, lost) == (12, 0)
    assert "unexpected" not in caplog.text


def test_many_fast_stores_lose_no_response(
    client: PynetdicomClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Natural conditions: three associations storing small instances back to back."""
    with storescp(tmp_path, ignore=True) as scp:
        entry = AETitleEntry("STORESCP", "127.0.0.1", scp.port)
        contexts = [build_context(SECONDARY_CAPTURE, [ExplicitVRLittleEndian])]
        results: list[int] = []
        lock = threading.Lock()

        def sender() -> None:
            with client.association(entry, contexts) as assoc:
                for _ in range(400):
                    status = assoc.send_c_store(small_instance())
                    with lock:
                        results.append(int(status.get("Status", -1)))

        with caplog.at_level(logging.WARNING, logger="pynetdicom"):
            threads = [threading.Thread(target=sender) for _ in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=90)
    assert len(results) == 1200
    assert results.count(0x0000) == 1200, f"{1200 - results.count(0)} responses lost"
    assert "unexpected" not in caplog.text
