"""Messages are built for observers only when one observes them; counting never skips one.

A real pacsd (one engine process) answers C-FINDs of three matches while add-ins come and
go as observers: ``choosy_watch`` observes only when told to (``Addin.observes``), ``spy``
always. What each sees, in order, the association's and the server's message counters,
the event stream's summaries and the ``message_log`` add-in following its log level
live are checked against what was sent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pacsd.addin.testing import RunningServer, start_server
from pacsd.admin.v1 import associations_pb2
from pacsd.client import Client
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
)

from tests.observability.common import Reader

TEST_ADDINS = Path(__file__).resolve().parents[1] / "addins"
CALLING = "OBSERVED"
T = associations_pb2.AssociationEventType
PENDING, SUCCESS = 0xFF00, 0x0000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = start_server(
        tmp_path_factory.mktemp("observers"),
        addins=[TEST_ADDINS / "choosy_watch.py", TEST_ADDINS / "spy.py"],
        server_settings={"workers": 1},
    )
    try:
        yield srv
    finally:
        srv.stop()


def _instance(study: str, n: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = f"{study}.3.{n}"
    ds.PatientID = "OBS1"
    ds.PatientName = "OBSERVED^ONE"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = f"{study}.2"
    ds.Modality = "OT"
    ds.InstanceNumber = n
    return ds


@pytest.fixture(scope="module")
def series(server: RunningServer) -> tuple[str, str]:
    """(study, series) UIDs of one series of three stored instances."""
    study = generate_uid(prefix="1.2.826.0.1.3680043.10.543.91.")[:50]
    assoc = _associate(server, (SecondaryCaptureImageStorage, ExplicitVRLittleEndian))
    try:
        for n in (1, 2, 3):
            assert assoc.send_c_store(_instance(study, n)).Status == SUCCESS
    finally:
        assoc.release()
    return study, f"{study}.2"


def _associate(server: RunningServer, *contexts: tuple[str, str]) -> Any:
    ae = AE(ae_title=CALLING)
    ae.acse_timeout = ae.dimse_timeout = 20
    for abstract, syntax in contexts:
        ae.add_requested_context(abstract, [syntax])
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    return assoc


def _find(assoc: Any, series: tuple[str, str], msg_id: int) -> list[int]:
    """Statuses of one IMAGE-level C-FIND for the series (three matches, then success)."""
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID, query.SeriesInstanceUID = series
    query.SOPInstanceUID = ""
    statuses = [
        status.Status
        for status, _ in assoc.send_c_find(
            query, StudyRootQueryRetrieveInformationModelFind, msg_id=msg_id
        )
    ]
    assert statuses == [PENDING, PENDING, PENDING, SUCCESS]
    return statuses


def _find_assoc(server: RunningServer) -> Any:
    return _associate(server, (StudyRootQueryRetrieveInformationModelFind, ExplicitVRLittleEndian))


def _choosy(client: Client, **args: Any) -> list[dict[str, Any]]:
    if args:
        client.addins.invoke("choosy_watch", "set", args)
    events: list[dict[str, Any]] = client.addins.invoke("choosy_watch", "events")["events"]
    return events


def _expected(message_id: int) -> list[dict[str, Any]]:
    """What a hook reads of one C-FIND of three matches, in order."""
    rq = {"direction": "received", "response": False, "status": None, "has_dataset": True}
    pending = {"direction": "sent", "response": True, "status": PENDING, "has_dataset": True}
    final = {"direction": "sent", "response": True, "status": SUCCESS, "has_dataset": False}
    return [
        {"service": "C-FIND", "id": message_id, **kind}
        for kind in (rq, pending, pending, pending, final)
    ]


def test_hooks_see_every_message_they_observe_in_order(
    server: RunningServer, series: tuple[str, str]
) -> None:
    with Client(server.endpoint) as client:
        _choosy(client, watching=False, broken=False)
        assoc = _find_assoc(server)
        try:
            _find(assoc, series, 1)  # message 1: choosy_watch does not observe
            assert _choosy(client) == []
            assert _choosy(client, watching=True) == []
            _find(assoc, series, 2)  # message 2: it does
            assert _choosy(client) == _expected(2)
            failures = client.addins.get("choosy_watch").counters.failures
            assert _choosy(client, broken=True) == []
            _find(assoc, series, 3)  # message 3: observes() raises; the hook still runs
            assert _choosy(client) == _expected(3)
            # Counted once per message asked about (one C-FIND-RQ, four responses).
            assert client.addins.get("choosy_watch").counters.failures == failures + 5
            _choosy(client, watching=False, broken=False)
            _find(assoc, series, 4)  # message 4: no longer observed
            assert _choosy(client) == []
        finally:
            assoc.release()
        time.sleep(0.3)
        spied = [
            (e["event"], e.get("response"), e.get("id"))
            for e in client.addins.invoke("spy", "events")["events"]
            if e["calling"] == CALLING and e["event"] in ("received", "sent")
        ]
    # spy observes always: every message of the four C-FINDs, in order.
    assert spied[-20:] == [
        (kind, response, message_id)
        for message_id in (1, 2, 3, 4)
        for kind, response in [("received", False)] + [("sent", True)] * 4
    ]


def test_counters_and_event_stream_are_exact_whoever_observes(
    server: RunningServer, series: tuple[str, str]
) -> None:
    with Client(server.endpoint) as client:
        _choosy(client, watching=False, broken=False)
        before = client.server.get().counters
        assoc = _find_assoc(server)
        try:
            _find(assoc, series, 1)
            _find(assoc, series, 2)
            [live] = [a for a in client.associations.list() if a.calling_ae == CALLING]
            assert (live.messages_received, live.messages_sent) == (2, 8)
            # A watcher of the event stream gets a summary of each message, in order.
            watch = Reader(client.associations.watch(ae_title=CALLING))
            time.sleep(0.3)
            _find(assoc, series, 3)
            items = watch.wait_for(lambda es: len(es) >= 5, 5)
            watch.stream.cancel()
        finally:
            assoc.release()
        time.sleep(0.3)
        after = client.server.get().counters
    assert after.dimse_messages_received - before.dimse_messages_received == 3
    assert after.dimse_messages_sent - before.dimse_messages_sent == 12
    events = [e for _, e in items][:5]
    assert [e.type for e in events] == [T.ASSOCIATION_EVENT_TYPE_MESSAGE_RECEIVED] + [
        T.ASSOCIATION_EVENT_TYPE_MESSAGE_SENT
    ] * 4
    assert [(e.message.service, e.message.message_id) for e in events] == [("C-FIND", 3)] * 5
    assert [e.message.status for e in events[1:]] == [PENDING, PENDING, PENDING, SUCCESS]
    assert [e.message.has_dataset for e in events] == [True, True, True, True, False]


def test_message_log_follows_its_level_live(server: RunningServer, series: tuple[str, str]) -> None:
    def logged(client: Client) -> list[str]:
        return [r.message for r in client.logs.tail(200, sources=["message_log"])]

    with Client(server.endpoint) as client:
        assert logged(client) == []  # DEBUG by default, and the server logs INFO
        assoc = _find_assoc(server)
        try:
            _find(assoc, series, 1)
            assert logged(client) == []
            client.logs.set_level("DEBUG", "message_log")
            try:
                _find(assoc, series, 2)
            finally:
                client.logs.set_level(None, "message_log")
            _find(assoc, series, 3)  # after: not logged
        finally:
            assoc.release()
        lines = logged(client)
    expected = ["received C-FIND-RQ id=2 dataset="]
    expected += ["sent C-FIND-RSP id=2 status=0xFF00 dataset="] * 3
    expected += ["sent C-FIND-RSP id=2 status=0x0000 AffectedSOPClassUID="]
    assert len(lines) == len(expected), lines
    assert all(line.startswith(start) for line, start in zip(lines, expected, strict=True)), lines
