"""Add-ins found in ``addin_paths`` folders at startup, through pacsd.addin.testing."""

from __future__ import annotations

from pathlib import Path

from pacsd.addin.testing import DicomTestClient, RunningServer
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parents[2]


def test_addin_from_a_folder_with_settings_and_required(pacsd_server, dicom_client) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = pacsd_server(
        addins=[ROOT / "docs" / "examples" / "example_store.py"],
        settings={"example_store": {"max_bytes": 1000}},
        server_settings={"required_addins": ["example_store"]},
        disable=["verification", "storage", "query_retrieve"],
    )
    client: DicomTestClient = dicom_client(server)
    assert client.echo() == -1  # verification disabled: C-ECHO not offered
    small = Dataset()
    small.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    small.SOPInstanceUID = generate_uid()
    small.file_meta = Dataset()
    small.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    assert client.store(small) == 0x0000
    big = Dataset()
    big.update(small)
    big.SOPInstanceUID = generate_uid()
    big.PatientComments = "x" * 2000
    big.file_meta = small.file_meta
    assert client.store(big) == 0xA700  # DimseFailure from the add-in's max_bytes setting
    assert "example_store 1.0.0 loaded from path:" in server.log()


def test_required_addin_with_invalid_settings_fails_startup(pacsd_server) -> None:  # type: ignore[no-untyped-def]
    import pytest

    with pytest.raises(RuntimeError, match="max_bytes"):
        pacsd_server(
            addins=[ROOT / "docs" / "examples" / "example_store.py"],
            settings={"example_store": {"max_bytes": "lots"}},
            server_settings={"required_addins": ["example_store"]},
        )
