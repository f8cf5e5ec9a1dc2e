"""C-FIND matches built as raw elements (``query._Answers``) against the pydicom path.

The fast path must send exactly the bytes the element-by-element pydicom path sends,
for every transfer syntax a C-FIND may use, and still hand add-ins a ``Dataset`` that
reads and changes like one. The reference is the same query run with the fast path
declined for every row, so both go through the real index on both engines.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pacsd.addin.storage import QueryModel
from pacsd.server.dicom.dimse_encode import encode_identifier
from pacsd.server.storage import query
from pacsd.server.storage.attributes import record_from_dataset
from pacsd.server.storage.index.db import open_index_db
from pacsd.server.storage.index.repository import Index
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.dsutils import encode

from tests.pg import index_url  # noqa: F401  (fixture)
from tests.unit.test_query import CT, PATIENT, STUDY, corpus, uid

#: Values the fast path must decline or write exactly as pydicom does.
TRICKY: list[dict[str, Any]] = [
    dict(pid="TRICKY1", name="ODD^NAME=", desc=" leading space", number="01", acc="A\\B"),
    dict(pid="TRICKY2", name="EVEN^NAMES", desc="trailing space ", number="7", acc="ODD"),
    dict(pid="TRICKY3", name="ÅSTRÖM^KARIN", desc="Fußball", number="+3", acc=""),
    dict(pid="TRICKY4", name="A^B^^^", desc="tab\there", number="123", acc="X"),
    dict(pid="TRICKY5", name="", desc="", number="", acc="ODD"),
]


def tricky() -> Iterator[Dataset]:
    for n, t in enumerate(TRICKY, start=100):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientID = t["pid"]
        ds.PatientName = t["name"]
        ds.StudyInstanceUID = uid(n, 17)  # odd lengths: padded with NUL
        ds.StudyDate = "20240301"
        ds.AccessionNumber = t["acc"]
        ds.StudyDescription = t["desc"]
        ds.SeriesInstanceUID = uid(n, 17, 1)
        ds.Modality = "CT"
        ds.SeriesNumber = t["number"] or None
        ds.SOPClassUID = CT
        ds.SOPInstanceUID = uid(n, 17, 1, 1)
        ds.InstanceNumber = t["number"] or None
        yield ds


@pytest.fixture
def index(index_url: str, tmp_path: Path) -> Iterator[Index]:  # noqa: F811
    db = open_index_db(index_url, tmp_path)
    idx = Index(db)
    records = []
    for ds in [*corpus(), *tricky()]:
        record = record_from_dataset(ds, ExplicitVRLittleEndian)
        record.path = f"/archive/{ds.SOPInstanceUID}.dcm"
        record.size = 1000
        records.append(record)
    idx.add(records)
    # Values indexing would have normalised, as another writer (or an older pacsd) may
    # have left them: the fast path must decline them.
    with db.write() as conn:
        conn.execute(
            "UPDATE patients SET patient_name = ? WHERE patient_id = ?", ["ODD^NAME=", "TRICKY1"]
        )
        conn.execute(
            "UPDATE studies SET study_description = ?, accession_number = ? WHERE study_uid = ?",
            [" leading space", "A\\B", uid(100, 17)],
        )
        conn.execute(
            "UPDATE studies SET study_description = ? WHERE study_uid = ?",
            ["trailing ", uid(101, 17)],
        )
    yield idx
    db.close()


def request(level: str, *keywords: str, **values: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword in keywords:
        setattr(ds, keyword, "")
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


QUERIES: list[tuple[QueryModel, Dataset]] = [
    (
        STUDY,
        request(
            "STUDY",
            "PatientName",
            "PatientID",
            "StudyDate",
            "StudyTime",
            "AccessionNumber",
            "StudyDescription",
            "ReferringPhysicianName",
            "ModalitiesInStudy",
            "NumberOfStudyRelatedSeries",
            "NumberOfStudyRelatedInstances",
            "InstanceAvailability",
        ),
    ),
    # Keys kept in attrs, a sequence, an unknown private tag, a lower-level key.
    (STUDY, request("STUDY", "InstitutionName", "PatientAge", "SOPInstanceUID", "Modality")),
    (PATIENT, request("PATIENT", "PatientName", "NumberOfPatientRelatedInstances")),
    (STUDY, request("STUDY", "StudyDate", "RequestAttributesSequence")),
    *(
        (
            STUDY,
            request(
                "IMAGE",
                "InstanceNumber",
                "SOPClassUID",
                "ImageType",
                "SeriesNumber",
                StudyInstanceUID=uid(n, 17),
                SeriesInstanceUID=uid(n, 17, 1),
            ),
        )
        for n in range(100, 100 + len(TRICKY))
    ),
    (STUDY, request("SERIES", "SeriesNumber", "Modality", StudyInstanceUID=uid(104, 17))),
]


def _with_private(ds: Dataset) -> Dataset:
    ds.add_new(0x00091010, "LO", "")
    ds.add_new(0x00091011, "UN", b"")
    return ds


def run(index: Index, model: QueryModel, identifier: Dataset) -> list[Dataset]:
    return list(query.find(index, model, identifier))


def reference_run(index: Index, model: QueryModel, identifier: Dataset) -> list[Dataset]:
    original = query._Answers.build
    query._Answers.build = lambda self, row: None  # type: ignore[method-assign]
    try:
        return run(index, model, identifier)
    finally:
        query._Answers.build = original  # type: ignore[method-assign]


@pytest.mark.parametrize("case", range(len(QUERIES) + 1))
def test_fast_matches_encode_to_the_same_bytes(index: Index, case: int) -> None:
    if case == len(QUERIES):
        model, identifier = STUDY, _with_private(request("STUDY", "PatientID"))
    else:
        model, identifier = QUERIES[case]
    fast = run(index, model, identifier)
    slow = reference_run(index, model, identifier)
    assert len(fast) == len(slow) > 0
    syntaxes = ((True, False), (False, False), (False, True))
    for got, want in zip(fast, slow, strict=True):
        raw = all(type(e) is RawDataElement for e in got._dict.values())
        expected = [encode(want, implicit, True, deflated) for implicit, deflated in syntaxes]
        assert all(expected), "the reference must encode"
        # pacsd's encoder first: pydicom's writer converts raw elements as it goes.
        mine = [encode_identifier(got, implicit, True, deflated) for implicit, deflated in syntaxes]
        if raw:  # all of it from the fast path: pacsd's encoder takes it
            assert mine == expected
        else:
            assert all(m is None or m == e for m, e in zip(mine, expected, strict=True))
        assert [encode(got, i, True, d) for i, d in syntaxes] == expected


def test_plain_rows_take_the_fast_path_and_its_encoder(index: Index) -> None:
    model, identifier = QUERIES[0]
    for match in run(index, model, identifier):
        raw = [e for e in match._dict.values() if type(e) is RawDataElement]
        patient = str(match.PatientID)
        if patient in ("PATUTF8", "PATLATIN1", "TRICKY3"):
            assert not raw  # non-ASCII names: built by pydicom
        elif patient in ("PAT001", "PAT002", "PAT003", "PATX1Z", "PAT[1]"):
            assert len(raw) == len(match._dict), match
            assert encode_identifier(match, True, True) is not None


def test_rows_the_fast_path_declines_are_still_answered(index: Index) -> None:
    identifier = request("STUDY", "PatientName", "StudyDescription", PatientID="TRICKY*")
    results = run(index, STUDY, identifier)
    # Which matches are all raw elements, before reading any (reading converts them).
    fast = [all(type(e) is RawDataElement for e in r._dict.values()) for r in results]
    by_id = {str(r.PatientID): (r, f) for r, f in zip(results, fast, strict=True)}
    # A name with a group separator, leading or trailing spaces, non-ASCII text, a tab:
    # built by pydicom; a row of plain or empty values: raw.
    assert [f for _r, f in by_id.values()] == [False, False, False, False, True]
    assert str(by_id["TRICKY1"][0].PatientName) == "ODD^NAME"  # pydicom drops the "="
    assert str(by_id["TRICKY1"][0].StudyDescription) == " leading space"
    assert str(by_id["TRICKY3"][0].StudyDescription) == "Fußball"
    assert by_id["TRICKY3"][0].SpecificCharacterSet == "ISO_IR 192"
    assert "SpecificCharacterSet" not in by_id["TRICKY2"][0]


def test_fast_match_reads_and_changes_like_a_dataset(index: Index) -> None:
    model, identifier = QUERIES[0]
    fast = run(index, model, identifier)
    slow = reference_run(index, model, identifier)
    for got, want in zip(fast, slow, strict=True):
        assert [e.tag for e in got] == [e.tag for e in want]
        for elem in want:
            assert elem.keyword in got
            assert got[elem.tag].VR == elem.VR
            # As pydicom reads them from a file: an empty value may be "" rather than None.
            expected = "" if elem.value is None else str(elem.value)
            assert str(got[elem.tag].value or "") == expected, elem.keyword
    match = fast[0]
    assert match.QueryRetrieveLevel == "STUDY"
    assert match.PatientName.family_name == "DOE"
    match.RetrieveAETitle = "PACSD"
    match.PatientID = "CHANGED"
    match.private_block(0x0009, "PACSD TEST", create=True).add_new(0x01, "LO", "x")
    other = fast[1]  # built by the same plan: shares nothing with the one changed
    assert other.PatientID != "CHANGED" and "RetrieveAETitle" not in other
    assert other._private_blocks == {} and 0x00090010 not in other
    again = Dataset()
    again.update(match)
    assert again.PatientID == "CHANGED" and again.RetrieveAETitle == "PACSD"
    assert encode_identifier(match, True, True) == encode(again, True, True)
