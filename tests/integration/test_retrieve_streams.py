"""C-GET and C-MOVE send a stored instance from its file, without holding it in memory.

The query/retrieve add-in yields ``StoredDataset``s (file meta only); pacsd sends the
file's bytes a PDU at a time when the peer accepted the stored transfer syntax, and
decodes the file only when the peer needs another one. Here a 64 MiB multi-frame is
stored, then fetched with DCMTK's getscu and moved to DCMTK's storescp: each copy is
bit-identical, and the engine's peak resident set (``VmHWM``, reset before each
retrieve) grows by less than a quarter of the instance. Decoding it, as pacsd did
before, grew it by about three times the instance. A pynetdicom C-GET that offers only
Implicit VR Little Endian gets the instance converted, with the same values.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pacsd.addin.testing import RunningServer, start_server
from pacsd.client import Client
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelGet,
)

from tests.conftest import dcmtk, dcmtk_env
from tests.integration.dicom_peers import storescp
from tests.integration.test_query_retrieve import _run, dataset_bytes

CT = "1.2.840.10008.5.1.4.1.1.2"
FRAME = 512 * 512 * 2
FRAMES = 128  # 64 MiB of pixels
PATIENT = "STREAMED"


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_big(tmp_path_factory.mktemp("big") / "big.dcm")


def write_big(path: Path) -> Path:
    """A 64 MiB multi-frame CT of patient ``PATIENT``, Explicit VR Little Endian."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = generate_uid()
    ds.PatientID, ds.PatientName = PATIENT, "Streamed^Retrieve"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "CT"
    ds.Rows = ds.Columns = 512
    ds.NumberOfFrames = FRAMES
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(range(256)) * (FRAME * FRAMES // 256)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, big: Path) -> Iterator[RunningServer]:
    # One engine process: the one whose memory is read.
    srv = start_server(tmp_path_factory.mktemp("streams"), server_settings={"workers": 1})
    try:
        sent = _run(
            [dcmtk("storescu"), "-aec", srv.ae_title, "127.0.0.1", str(srv.dicom_port), str(big)],
            timeout=120,
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        yield srv
    finally:
        srv.stop()


def reset_peak(pid: int) -> int:
    """Start ``VmHWM`` again from the current resident set (proc(5), clear_refs "5"),
    so that what an earlier test peaked at does not hide this one's peak."""
    with open(f"/proc/{pid}/clear_refs", "w") as clear:
        clear.write("5")
    return peak_kib(pid)


def peak_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def grows_less_than_a_quarter(before: int, after: int) -> None:
    limit = FRAME * FRAMES // 4 // 1024
    assert after - before < limit, f"peak RSS grew by {after - before} KiB (limit {limit})"


def test_getscu_gets_the_file_as_stored_without_loading_it(
    server: RunningServer, big: Path, tmp_path: Path
) -> None:
    before = reset_peak(server.proc.pid)
    out = tmp_path / "get"
    out.mkdir()
    got = _run(
        [
            dcmtk("getscu"),
            "-aec",
            server.ae_title,
            "-od",
            str(out),
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            f"PatientID={PATIENT}",
            "127.0.0.1",
            str(server.dicom_port),
        ],
        timeout=120,
    )
    assert got.returncode == 0, got.stdout + got.stderr
    (received,) = out.iterdir()
    assert dataset_bytes(received) == dataset_bytes(big)
    grows_less_than_a_quarter(before, peak_kib(server.proc.pid))


def test_movescu_moves_the_file_as_stored_without_loading_it(
    server: RunningServer, big: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The destination stops reading for a while mid-transfer (SIGSTOP): what pacsd
    # reads from the file meanwhile must wait, not pile up in memory. storescp writes
    # as it receives (--bit-preserving), with DCMTK's socket buffers cut to 32 KiB so
    # that the transfer lasts long enough to be caught half-way.
    monkeypatch.setenv("TCP_BUFFER_LENGTH", "32768")
    with storescp(tmp_path, "--bit-preserving") as scp:
        destination = f"DEST{scp.port}"
        with Client(server.endpoint) as client:
            client.aetitles.create(destination, "127.0.0.1", scp.port)
        before = reset_peak(server.proc.pid)
        mover = subprocess.Popen(
            [
                dcmtk("movescu"),
                "-aec",
                server.ae_title,
                "-aem",
                destination,
                "-k",
                "QueryRetrieveLevel=PATIENT",
                "-k",
                f"PatientID={PATIENT}",
                "127.0.0.1",
                str(server.dicom_port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dcmtk_env(),
            text=True,
        )
        try:
            partial = _growing_file(scp.output_dir)
            os.kill(scp.proc.pid, signal.SIGSTOP)
            try:
                time.sleep(1.5)
                paused_at = partial.stat().st_size
            finally:
                os.kill(scp.proc.pid, signal.SIGCONT)
            output, _ = mover.communicate(timeout=120)
        finally:
            mover.kill()
            mover.wait()
        assert mover.returncode == 0, output
        assert paused_at < big.stat().st_size, "the destination was not paused mid-transfer"
        received = scp.file_for(str(dcmread(big, stop_before_pixels=True).SOPInstanceUID))
        assert dataset_bytes(received) == dataset_bytes(big)
        grows_less_than_a_quarter(before, peak_kib(server.proc.pid))


def _growing_file(folder: Path, timeout: float = 30) -> Path:
    """The first file in ``folder`` with bytes in it (storescp receiving)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in folder.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_size > 0:
                    return path
        time.sleep(0.002)
    raise AssertionError(f"nothing arrived in {folder} within {timeout}s")


def c_get(
    server: RunningServer,
    patient_id: str,
    syntax: str,
    handlers: list[Any],
    max_pdu: int = 16382,
) -> list[tuple[Dataset, Dataset | None]]:
    """A pynetdicom C-GET of patient ``patient_id`` (PATIENT level) that takes CT
    instances in ``syntax`` only; its responses (status, identifier)."""
    ae = AE(ae_title="GETSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CT, [syntax])
    assoc = ae.associate(
        "127.0.0.1",
        server.dicom_port,
        ae_title=server.ae_title,
        max_pdu=max_pdu,
        ext_neg=[build_role(CT, scp_role=True)],
        evt_handlers=handlers,
    )
    assert assoc.is_established
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "PATIENT"
        query.PatientID = patient_id
        return list(assoc.send_c_get(query, PatientRootQueryRetrieveInformationModelGet))
    finally:
        assoc.release()


def test_a_peer_that_takes_only_implicit_vr_gets_it_converted(
    server: RunningServer, big: Path
) -> None:
    received: list[Dataset] = []

    def on_store(event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received.append(ds)
        return 0x0000

    responses = c_get(server, PATIENT, ImplicitVRLittleEndian, [(evt.EVT_C_STORE, on_store)])
    assert responses[-1][0].Status == 0x0000
    (ds,) = received
    assert ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    original = dcmread(big)
    assert ds.SOPInstanceUID == original.SOPInstanceUID
    assert ds.PixelData == original.PixelData


@pytest.fixture(scope="module")
def small(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~2 kB instance of patient PDUSIZES, stored in ``server``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CT, generate_uid()
    ds.PatientID, ds.PatientName = "PDUSIZES", "Pdu^Sizes"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "CT"
    ds.Rows = ds.Columns = 32
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(range(256)) * 8
    path = tmp_path_factory.mktemp("small") / "small.dcm"
    ds.save_as(path, enforce_file_format=True)
    sent = _run(
        [dcmtk("storescu"), "-aec", server.ae_title, "127.0.0.1", str(server.dicom_port), str(path)]
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    return path


@pytest.mark.parametrize(
    "fit", ["exactly-one", "one-byte-over", "exactly-two", "many", "unlimited"]
)
def test_the_stored_file_goes_in_pdus_the_peer_can_take(
    server: RunningServer, small: Path, fit: str
) -> None:
    """pacsd writes a stored data set's PDUs itself (``send_path.send_file``): each
    within the peer's maximum PDU length, the last fragment flagged, the bytes as
    stored, whatever the length's relation to the maximum."""
    data = dataset_bytes(small)
    size = len(data)
    max_pdu = {
        "exactly-one": size + 6,
        "one-byte-over": size + 5,
        "exactly-two": size // 2 + 6,
        "many": 512,
        "unlimited": 0,
    }[fit]
    received: list[bytes] = []
    lengths: list[int] = []

    def on_store(event: evt.Event) -> int:
        received.append(event.request.DataSet.getvalue())
        return 0x0000

    def on_pdu(event: evt.Event) -> None:
        if isinstance(event.pdu, P_DATA_TF):
            lengths.append(event.pdu.pdu_length)

    handlers = [(evt.EVT_C_STORE, on_store), (evt.EVT_PDU_RECV, on_pdu)]
    responses = c_get(server, "PDUSIZES", ExplicitVRLittleEndian, handlers, max_pdu=max_pdu)
    assert responses[-1][0].Status == 0x0000
    assert received == [data]
    if max_pdu:
        assert max(lengths) <= max_pdu
    expected = {"exactly-one": 1, "one-byte-over": 2, "exactly-two": 2}.get(fit)
    if expected is not None:  # the data set's own PDUs, beside the command and responses
        assert len(lengths) - _non_data_pdus(len(responses)) == expected, lengths


def _non_data_pdus(responses: int) -> int:
    """P-DATA-TF PDUs of a one-instance C-GET that carry no data set fragment: the
    C-STORE-RQ's command, then each C-GET-RSP (the pending one carries no identifier)."""
    return 1 + responses
