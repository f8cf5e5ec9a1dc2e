"""``StoredDataset``: the file meta of a stored file, and the file as it was opened.

What a retrieve sends is read from the file again several times (pynetdicom reads the
meta for the data set's offset, then the data set). A store of the same instance may
rename a new version over the name meanwhile, with another transfer syntax or a file
meta of another length: every read goes to the file that was opened.
"""

from __future__ import annotations

import gc
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
    _write(path, "SECOND", ImplicitVRLittleEndian, "A-MUCH-LONGER-AE")
    assert split_dataset(path)[1] != first_offset  # the name now holds another layout
    assert stored.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert split_dataset(Path(stored.source))[1] == first_offset
    assert dcmread(stored.source).PatientID == "FIRST"
    assert stored.load().PatientID == "FIRST"
    assert stored.path == path


def test_the_file_closes_with_the_object_or_at_close(tmp_path: Path) -> None:
    path = _write(tmp_path / "instance.dcm", "ONE", ExplicitVRLittleEndian, "A")
    before = len(os.listdir("/proc/self/fd"))
    stored = StoredDataset.open(path)
    assert len(os.listdir("/proc/self/fd")) == before + 1
    stored.close()
    assert len(os.listdir("/proc/self/fd")) == before
    stored = StoredDataset.open(path)
    del stored
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_file_without_usable_meta_is_refused_and_not_left_open(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 16)
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(ValueError):
        StoredDataset.open(junk)
    with pytest.raises(FileNotFoundError):
        StoredDataset.open(tmp_path / "missing.dcm")
    assert len(os.listdir("/proc/self/fd")) == before
