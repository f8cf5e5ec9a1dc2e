"""``StoredDataset``: the file meta of a stored file, and the file as it was opened.

What a retrieve sends is read from the file again several times (pynetdicom reads the
meta for the data set's offset, then the data set). A store of the same instance may
rename a new version over the name meanwhile, with another transfer syntax or a file
meta of another length: every read goes to the file that was opened.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pacsd.addin import StoredDataset
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dsutils import split_dataset

from tests.integration.dicom_peers import small_instance


def _write(path: Path, name: str, syntax: str, source_ae: str) -> Path:
    ds = small_instance(name)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.SourceApplicationEntityTitle = source_ae
    tmp = path.with_suffix(".new")
    ds.save_as(tmp, enforce_file_format=True)
    os.rename(tmp, path)  # as the blob store puts a version in place
    return path


def test_reads_go_to_the_file_that_was_opened_not_to_its_name(tmp_path: Path) -> None:
    path = _write(tmp_path / "instance.dcm", "FIRST", ExplicitVRLittleEndian, "A")
    first_offset = split_dataset(path)[1]
    stored = StoredDataset.open(path)
    assert stored.path == path
    assert stored.SOPInstanceUID == dcmread(path).SOPInstanceUID
    with stored.opened() as (source, meta):
        _write(path, "SECOND", ImplicitVRLittleEndian, "A-MUCH-LONGER-AE")
        assert split_dataset(path)[1] != first_offset  # the name holds another layout
        assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert split_dataset(Path(source))[1] == first_offset
        assert dcmread(source).PatientID == "FIRST"
    with stored.opened() as (source, meta):  # opened again: the version there now
        assert meta.TransferSyntaxUID == ImplicitVRLittleEndian
        assert dcmread(source).PatientID == "SECOND"


def test_nothing_stays_open_between_open_and_the_send(tmp_path: Path) -> None:
    """Retrieves pull 64 results ahead: a descriptor each would soon reach the limit."""
    path = _write(tmp_path / "instance.dcm", "ONE", ExplicitVRLittleEndian, "A")
    before = len(os.listdir("/proc/self/fd"))
    stored = [StoredDataset.open(path) for _ in range(100)]
    assert len(os.listdir("/proc/self/fd")) == before
    with stored[0].opened():
        assert len(os.listdir("/proc/self/fd")) == before + 1
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_file_without_usable_meta_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 16)
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(ValueError):
        StoredDataset.open(junk)
    with pytest.raises(FileNotFoundError):
        StoredDataset.open(tmp_path / "missing.dcm")
    assert len(os.listdir("/proc/self/fd")) == before
