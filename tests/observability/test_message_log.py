"""The message_log add-in: every DIMSE message on record, datasets captured on request."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from pacsd.client import Client
from pacsd.client.errors import InvalidArgument
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from tests import corpus
from tests.conftest import PacsdProcess, run_pacsctl
from tests.observability.common import CALLING, start_with, storescu

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def dataset_bytes(path: Path) -> bytes:
    """A Part 10 file's dataset, as encoded, after its File Meta Information."""
    data = path.read_bytes()
    assert data[128:132] == b"DICM"
    (meta_length,) = struct.unpack("<I", data[140:144])  # (0002,0000) UL value
    return data[144 + meta_length :]


def capture_config(folder: Path, **more: Any) -> str:
    lines = [
        "[addins.message_log.settings]",
        'level = "INFO"',
        "capture = true",
        f'capture_dir = "{folder}"',
        *(f"{k} = {json.dumps(v)}" for k, v in more.items()),
    ]
    return "\n".join(lines) + "\n"


def test_received_c_store_is_logged_and_captured_bit_for_bit(
    start_pacsd: Any, tmp_path: Path
) -> None:
    capture = tmp_path / "capture"
    pacsd = start_with(start_pacsd, tmp_path, capture_config(capture))
    [path] = corpus.series_files(tmp_path / "src", 1)
    out = storescu(pacsd.dicom_port, [path])
    assert out.returncode == 0, out.stderr

    captured = capture / f"{path.stem}.dcm"
    assert captured.is_file(), sorted(capture.iterdir())
    assert dataset_bytes(captured) == dataset_bytes(path)
    meta = dcmread(captured).file_meta
    assert meta.MediaStorageSOPInstanceUID == path.stem
    assert meta.MediaStorageSOPClassUID == corpus.SECONDARY_CAPTURE
    assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert not list(capture.glob("*.part"))

    with Client(pacsd.endpoint) as client:
        records = client.logs.tail(10, sources=["message_log"])
        status = client.addins.invoke("message_log", "status")
    rq = next(r for r in records if "received C-STORE-RQ" in r.message)
    assert f"AffectedSOPInstanceUID={path.stem}" in rq.message
    assert json.loads(rq.extras["dimse_fields"])["AffectedSOPClassUID"] == corpus.SECONDARY_CAPTURE
    assert (rq.calling_ae, rq.called_ae) == (CALLING, "PACSD")
    rsp = next(r for r in records if "sent C-STORE-RSP" in r.message)
    assert "status=0x0000" in rsp.message and rsp.association_id == rq.association_id
    assert status == {
        "level": "INFO",
        "capture": True,
        "files": 1,
        "bytes": captured.stat().st_size,
        "folder": str(capture),
    }


def test_sent_identifiers_are_captured(start_pacsd: Any, tmp_path: Path) -> None:
    capture = tmp_path / "capture"
    pacsd = start_with(start_pacsd, tmp_path, capture_config(capture))
    [path] = corpus.series_files(tmp_path / "src", 1, patient_id="FINDME")
    assert storescu(pacsd.dicom_port, [path]).returncode == 0

    ae = AE(ae_title=CALLING)
    ae.add_requested_context(STUDY_ROOT_FIND, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", pacsd.dicom_port, ae_title="PACSD")
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = "FINDME"
    query.StudyInstanceUID = ""
    try:
        statuses = [int(s.Status) for s, _ in assoc.send_c_find(query, STUDY_ROOT_FIND)]
    finally:
        assoc.release()
    assert statuses == [0xFF00, 0x0000]

    sent = sorted(capture.glob("*-C-FIND-rsp-sent-*.dcm"))
    received = sorted(capture.glob("*-C-FIND-rq-received-*.dcm"))
    assert len(sent) == 1 and len(received) == 1, sorted(capture.iterdir())
    answer = dcmread(sent[0])
    assert answer.PatientID == "FINDME" and answer.QueryRetrieveLevel == "STUDY"
    assert answer.StudyInstanceUID == dcmread(path).StudyInstanceUID
    assert dcmread(received[0]).PatientID == "FINDME"


def test_capture_is_capped_oldest_first(start_pacsd: Any, tmp_path: Path) -> None:
    capture = tmp_path / "capture"
    files = corpus.series_files(tmp_path / "src", 5, pixels=32)
    one = max(f.stat().st_size for f in files) + 200
    pacsd = start_with(
        start_pacsd, tmp_path, capture_config(capture, capture_max_bytes=int(2.5 * one))
    )
    for path in files:  # one association each, so the order is certain
        assert storescu(pacsd.dicom_port, [path]).returncode == 0
    kept = sorted(p.name for p in capture.glob("*.dcm"))
    assert kept == sorted(f"{f.stem}.dcm" for f in files[-2:])
    assert sum(p.stat().st_size for p in capture.glob("*.dcm")) <= 2.5 * one


def test_capture_turned_on_at_runtime(pacsd: PacsdProcess, tmp_path: Path) -> None:
    capture = tmp_path / "later"
    [first, second] = corpus.series_files(tmp_path / "src", 2)
    assert storescu(pacsd.dicom_port, [first]).returncode == 0
    assert not capture.exists()  # capture is off by default

    with Client(pacsd.endpoint) as client:
        with pytest.raises(InvalidArgument) as err:
            client.addins.update_settings("message_log", capture=True)
        assert err.value.reason == "ADDIN_SETTINGS_INVALID"
    out = run_pacsctl(
        pacsd,
        "addin",
        "settings",
        "message_log",
        "--set",
        "capture=true",
        "--set",
        f"capture_dir={capture}",
    )
    assert out.returncode == 0, out.stderr
    assert storescu(pacsd.dicom_port, [second]).returncode == 0
    deadline = time.monotonic() + 2
    while not (capture / f"{second.stem}.dcm").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(p.name for p in capture.iterdir()) == [f"{second.stem}.dcm"]
