"""The raw-header reader gives the index exactly the record pydicom's path gives.

Each case writes a real Part 10 file with pydicom and reads it both ways
(``read_instance(path)`` and ``read_instance(path, fast=False)``); the cases the fast
reader must handle itself are also checked to have done so, and the ones it must leave
to pydicom to have been left.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pacsd.server.storage import fast_header
from pacsd.server.storage.attributes import UnreadableInstance, _fast_record, read_instance
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

ROOT = "1.2.826.0.1.3680043.10.543.77"
CT = "1.2.840.10008.5.1.4.1.1.2"


def _base() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = f"{ROOT}.3.1"
    ds.StudyDate = "20240115"
    ds.SeriesDate = "20240115"
    ds.ContentDate = "20240116"
    ds.StudyTime = "101500.123"
    ds.SeriesTime = "101501"
    ds.AccessionNumber = "ACC1"
    ds.Modality = "CT"
    ds.ReferringPhysicianName = "REF^DOC"
    ds.StudyDescription = "CHEST"
    ds.SeriesDescription = "AXIAL 5mm"
    ds.PatientName = "DOE^JOHN^^DR"
    ds.PatientID = "PID-1"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "M"
    ds.PatientAge = "054Y"
    ds.PatientSize = "1.82"
    ds.PatientWeight = "80"
    ds.BodyPartExamined = "CHEST"
    ds.StudyInstanceUID = f"{ROOT}.1"
    ds.SeriesInstanceUID = f"{ROOT}.2"
    ds.StudyID = "S1"
    ds.SeriesNumber = "4"
    ds.InstanceNumber = "37"
    ds.Rows = 64
    ds.Columns = 72
    ds.NumberOfFrames = "1"
    ds.BitsAllocated = 16
    ds.add_new(0x7FE00010, "OW", b"\x00\x01" * 64 * 72)
    return ds


def _write(tmp_path: Path, ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(str(ds.get("SOPClassUID", CT)))
    meta.MediaStorageSOPInstanceUID = UID(str(ds.get("SOPInstanceUID", f"{ROOT}.9")))
    meta.TransferSyntaxUID = UID(syntax)
    ds.file_meta = meta
    path = tmp_path / "x.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _same(path: Path, fast: bool) -> None:
    slow = read_instance(path, fast=False)
    assert read_instance(path) == slow
    assert (_fast_record(path) is not None) is fast


#: Changes to the base dataset per case: keyword -> value (None: remove it).
Changes = dict[str, Any]

FAST_CASES: dict[str, Changes] = {
    "plain": {},
    "no charset": {"SpecificCharacterSet": None},
    "utf-8 ascii text": {"SpecificCharacterSet": "ISO_IR 192"},
    "empty columns": {"PatientName": "", "StudyDate": ""},
    "missing columns": {"PatientID": None, "Modality": None},
    "multi-valued extra": {"OtherPatientIDs": ["A", "B"]},
    "empty extra": {"PatientAge": ""},
    "integer with sign and zeros": {"InstanceNumber": "+007"},
    "sequence before the tags": {"ReferencedStudySequence": Sequence([Dataset()])},
}


def _apply(ds: Dataset, changes: Changes) -> Dataset:
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize("case", list(FAST_CASES))
def test_fast_cases_match_pydicom(tmp_path: Path, case: str) -> None:
    _same(_write(tmp_path, _apply(_base(), FAST_CASES[case])), fast=True)


def test_implicit_vr_matches_pydicom(tmp_path: Path) -> None:
    _same(_write(tmp_path, _base(), ImplicitVRLittleEndian), fast=True)


def test_encapsulated_syntax_header_is_read_fast(tmp_path: Path) -> None:
    ds = _base()
    del ds[0x7FE00010]
    _same(_write(tmp_path, ds, JPEGBaseline8Bit), fast=True)


SLOW_CASES: dict[str, Changes] = {
    "latin-1 name": {"PatientName": "MÜLLER^JÖRG"},
    "other character set": {"SpecificCharacterSet": "ISO_IR 144"},
    "multi-valued column": {"PatientID": ["P1", "P2"]},
    "decimal in IS column": {"SeriesNumber": "4.0"},
    "name with ideographic group": {"PatientName": "DOE^J=X^Y"},
}


@pytest.mark.parametrize("case", list(SLOW_CASES))
def test_unusual_files_go_to_pydicom_with_the_same_result(tmp_path: Path, case: str) -> None:
    _same(_write(tmp_path, _apply(_base(), SLOW_CASES[case])), fast=False)


def test_header_longer_than_the_first_read_goes_to_pydicom(tmp_path: Path) -> None:
    ds = _base()
    ds.add_new(0x00091010, "OB", bytes(80 * 1024))  # before the indexed patient tags
    _same(_write(tmp_path, ds), fast=False)


@pytest.mark.parametrize("syntax", [ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian])
def test_other_byte_layouts_go_to_pydicom(tmp_path: Path, syntax: str) -> None:
    _same(_write(tmp_path, _base(), syntax), fast=False)


def test_undefined_length_sequence_goes_to_pydicom(tmp_path: Path) -> None:
    ds = _base()
    ds.ReferencedStudySequence = Sequence([Dataset()])
    ds["ReferencedStudySequence"].is_undefined_length = True
    path = _write(tmp_path, ds)
    _same(path, fast=False)


def test_missing_uid_is_refused_like_pydicom(tmp_path: Path) -> None:
    ds = _base()
    del ds.SeriesInstanceUID
    path = _write(tmp_path, ds)
    with pytest.raises(UnreadableInstance, match="Series Instance UID"):
        read_instance(path)
    with pytest.raises(UnreadableInstance, match="Series Instance UID"):
        read_instance(path, fast=False)


def test_not_dicom_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.dcm"
    path.write_bytes(b"\x00" * 300)
    with pytest.raises(UnreadableInstance):
        read_instance(path)


@pytest.mark.parametrize("case", ["plain", "header past the first read"])
def test_the_head_a_caller_holds_is_parsed_instead_of_the_file(
    tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive passes the bytes the engine spooled (``head``) and the size: the
    record is the one read from the file, and the file is not read at all."""
    ds = _base()
    if case == "header past the first read":
        ds.add_new(0x00091010, "OB", b"\x00" * (fast_header.HEAD_BYTES + 10))
    path = _write(tmp_path, ds)
    data = path.read_bytes()
    expected = read_instance(path)

    def no_reads(*_: Any) -> bytes:
        raise AssertionError("the file was read back")

    monkeypatch.setattr(fast_header, "read_head", no_reads)
    if case == "plain":
        assert _fast_record(path, data) is not None
        assert read_instance(path, head=data, size=len(data)) == expected
    else:  # needs pydicom, which reads the file as before
        assert _fast_record(path, data[: fast_header.HEAD_BYTES]) is None
