"""pacsd's own send path on the wire: what a real pacsd sends is what pydicom writes.

A pynetdicom SCU records every message it receives (``EVT_DIMSE_RECV``: the command set
and dataset bytes as they arrived). Each command set and C-FIND identifier is decoded
and written again with pydicom; the bytes must be the same, for C-ECHO, C-STORE and
C-FIND responses (pending, success, failure with its Error Comment), in Implicit and
Explicit VR Little Endian, with a UTF-8 person name, odd and even lengths, at a small
maximum PDU length (fragments) and at the default. A C-GET mixes responses pacsd
encodes with C-STORE requests pynetdicom encodes on the same association, in order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pacsd.addin.testing import RunningServer, start_server
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)

ROOT = "1.2.826.0.1.3680043.10.543.88"
NAMES = ["DOE^JOHN", "DOE^JO", "MÜLLER^JÜRGEN", "LEE^A"]


def _instance(n: int, study: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = f"{ROOT}.3.{n}"
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = NAMES[n % len(NAMES)]
    ds.PatientID = f"P{n}" if n % 2 else f"PID{n:03d}"
    ds.StudyInstanceUID = f"{study}.{n}"
    ds.SeriesInstanceUID = f"{study}.{n}.1"
    ds.StudyDate = "20240115"
    ds.AccessionNumber = "A" * (n % 3)
    ds.Modality = "OT"
    ds.InstanceNumber = n
    ds.Rows = ds.Columns = 2
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.SamplesPerPixel = 1
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(4)
    return ds


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = start_server(tmp_path_factory.mktemp("send-path"))
    try:
        yield srv
    finally:
        srv.stop()


class Recorder:
    """Every DIMSE message an SCU receives: (class name, command bytes, dataset bytes)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, bytes]] = []

    def __call__(self, event: Any) -> None:
        msg = event.message
        data = msg.data_set.getvalue() if msg.data_set is not None else b""
        self.messages.append((type(msg).__name__, msg.encoded_command_set.getvalue(), data))


def _associate(
    server: RunningServer, contexts: list[tuple[str, str]], max_pdu: int, **kwargs: Any
) -> tuple[Any, Recorder]:
    ae = AE(ae_title="SENDPATH")
    ae.maximum_pdu_size = max_pdu
    ae.acse_timeout = ae.dimse_timeout = 20
    for abstract, syntax in contexts:
        ae.add_requested_context(abstract, [syntax])
    recorder = Recorder()
    assoc = ae.associate(
        "127.0.0.1",
        server.dicom_port,
        ae_title=server.ae_title,
        evt_handlers=[(evt.EVT_DIMSE_RECV, recorder), *kwargs.pop("evt_handlers", [])],
        **kwargs,
    )
    assert assoc.is_established
    return assoc, recorder


def _same_as_pydicom(encoded: bytes, implicit: bool) -> None:
    from io import BytesIO

    decoded = read_dataset(BytesIO(encoded), implicit, True)
    assert encode(decoded, implicit, True) == encoded


@pytest.fixture(scope="module")
def study(server: RunningServer) -> str:
    """Eight studies of one instance each, stored over one association."""
    study_uid = generate_uid(prefix=f"{ROOT}.1.")[:50]  # a root for 8 studies
    assoc, recorder = _associate(
        server,
        [
            (SecondaryCaptureImageStorage, ExplicitVRLittleEndian),
            (Verification, ImplicitVRLittleEndian),
        ],
        16384,
    )
    try:
        assert assoc.send_c_echo().Status == 0x0000
        for n in range(1, 9):
            assert assoc.send_c_store(_instance(n, study_uid)).Status == 0x0000
    finally:
        assoc.release()
    kinds = [name for name, _, _ in recorder.messages]
    assert kinds == ["C_ECHO_RSP"] + ["C_STORE_RSP"] * 8
    for _, command, _ in recorder.messages:
        _same_as_pydicom(command, True)
    return study_uid


@pytest.mark.parametrize("max_pdu", [0, 300], ids=["unlimited", "300-byte PDUs"])
@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
def test_find_responses_are_what_pydicom_writes(
    server: RunningServer, study: str, syntax: str, max_pdu: int
) -> None:
    assoc, recorder = _associate(
        server, [(StudyRootQueryRetrieveInformationModelFind, syntax)], max_pdu
    )
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        query.PatientName = ""
        query.PatientID = ""
        query.StudyDate = ""
        query.AccessionNumber = ""
        query.NumberOfStudyRelatedInstances = ""
        found = [
            (int(status.Status), ident)
            for status, ident in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind
            )
        ]
        bad = Dataset()
        bad.QueryRetrieveLevel = "NOT A LEVEL"
        failed = [
            int(status.Status)
            for status, _ in assoc.send_c_find(bad, StudyRootQueryRetrieveInformationModelFind)
        ]
    finally:
        assoc.release()
    assert [s for s, _ in found] == [0xFF00] * 8 + [0x0000]
    assert sorted(str(i.PatientName) for _, i in found[:-1]) == sorted(NAMES * 2)
    assert failed == [0xA900]
    implicit = syntax == ImplicitVRLittleEndian
    for name, command, data in recorder.messages:
        assert name == "C_FIND_RSP"
        _same_as_pydicom(command, True)
        if data:
            _same_as_pydicom(data, implicit)
    assert sum(1 for _, _, data in recorder.messages if data) == 8


def test_get_mixes_both_encoders_in_order(server: RunningServer, study: str) -> None:
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae_contexts = [
        (StudyRootQueryRetrieveInformationModelGet, ImplicitVRLittleEndian),
        (SecondaryCaptureImageStorage, ExplicitVRLittleEndian),
    ]
    assoc, recorder = _associate(
        server,
        ae_contexts,
        16384,
        ext_neg=[build_role(SecondaryCaptureImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = [f"{study}.{n}" for n in range(1, 9)]
        statuses = [
            int(status.Status)
            for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
        ]
    finally:
        assoc.release()
    assert statuses[-1] == 0x0000
    assert sorted(received) == sorted(f"{ROOT}.3.{n}" for n in range(1, 9))
    kinds = [name for name, _, _ in recorder.messages]
    # Each C-STORE request (pynetdicom's encoding) arrives before the C-GET response
    # (pacsd's) that counts it.
    assert kinds.count("C_STORE_RQ") == 8 and kinds[-1] == "C_GET_RSP"
    for name, command, _ in recorder.messages:
        _same_as_pydicom(command, True)
        assert name in ("C_STORE_RQ", "C_GET_RSP")
