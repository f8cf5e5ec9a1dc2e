"""The C-FIND matching compiler and retrieve selection, on SQLite and on PostgreSQL.

Every behavioural test runs against a real index on both engines (``index_url`` from
``tests.pg``), so the two dialects cannot drift apart: GLOB vs LIKE, escaping, case
folding, ranges and ordering must give the same answers.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pacsd.addin.storage import QueryModel
from pacsd.server.storage import query
from pacsd.server.storage.attributes import record_from_dataset
from pacsd.server.storage.index.db import open_index_db
from pacsd.server.storage.index.repository import Index
from pacsd.server.storage.query import QueryError
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.dsutils import decode, encode

from tests.pg import index_url  # noqa: F401  (fixture)

PATIENT = QueryModel.PATIENT_ROOT
STUDY = QueryModel.STUDY_ROOT
ROOT = "1.2.826.0.1.3680043.10.543"
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


def uid(*parts: int) -> str:
    return ".".join([ROOT, *(str(p) for p in parts)])


# -- the corpus -------------------------------------------------------------------------
#
# patient      name              study (date time)               series: modality x instances
# PAT001       DOE^JOHN          1: 20240115 101500 "CT HEAD"    1: CT x2, 2: MR x1
#                                2: 20240210 0830   "CT CHEST"   3: CT x1
# PAT002       Doe^Jane          3: 20231231 235959 "MR KNEE"    4: MR x1
# PAT003       DOEHRING^KARL     4: 20240101 000000 "ct head"    5: CT x1
# PAT_1%       PERCENT^PAT       5: 20240131 120000.5            6: OT x1
# PATX1Z       UNDERSCORE^PAT    6: 20240201 1300               7: OT x1
# PAT[1]       BRACKET[1]^ANN    7: (no date)                    8: OT x1
# PATUTF8      MÜLLER^HANS       8: 20240120                     9: MR x1
# PATLATIN1    GÓMEZ^JOSÉ        9: 20240120                     10: MR x1

STUDIES: list[dict[str, Any]] = [
    dict(pid="PAT001", name="DOE^JOHN", study=1, date="20240115", time="101500",
         acc="ACC001", desc="CT HEAD", ref="Smith^Anna", series=[(1, "CT", 2), (2, "MR", 1)]),
    dict(pid="PAT001", name="DOE^JOHN", study=2, date="20240210", time="0830",
         acc="ACC002", desc="CT CHEST", ref="SMITH^BOB", series=[(3, "CT", 1)]),
    dict(pid="PAT002", name="Doe^Jane", study=3, date="20231231", time="235959",
         acc="ACC003", desc="MR KNEE", series=[(4, "MR", 1)]),
    dict(pid="PAT003", name="DOEHRING^KARL", study=4, date="20240101", time="000000",
         acc="ACC004", desc="ct head", series=[(5, "CT", 1)]),
    dict(pid="PAT_1%", name="PERCENT^PAT", study=5, date="20240131", time="120000.5",
         acc="A_1%", desc="", series=[(6, "OT", 1)]),
    dict(pid="PATX1Z", name="UNDERSCORE^PAT", study=6, date="20240201", time="1300",
         acc="AX1Z", desc="", series=[(7, "OT", 1)]),
    dict(pid="PAT[1]", name="BRACKET[1]^ANN", study=7, date="", time="",
         acc="", desc="", series=[(8, "OT", 1)]),
    dict(pid="PATUTF8", name="MÜLLER^HANS", study=8, date="20240120", time="",
         acc="", desc="", series=[(9, "MR", 1)]),
    dict(pid="PATLATIN1", name="GÓMEZ^JOSÉ", study=9, date="20240120", time="",
         acc="", desc="", series=[(10, "MR", 1)]),
]  # fmt: skip


def corpus() -> Iterator[Dataset]:
    n = 0
    for s in STUDIES:
        for series, modality, count in s["series"]:
            for k in range(count):
                n += 1
                ds = Dataset()
                ds.SpecificCharacterSet = "ISO_IR 192"
                ds.PatientID = s["pid"]
                ds.PatientName = s["name"]
                ds.PatientBirthDate = "19700101"
                ds.PatientSex = "M"
                ds.StudyInstanceUID = uid(s["study"])
                ds.StudyDate = s["date"]
                ds.StudyTime = s["time"]
                ds.AccessionNumber = s["acc"]
                ds.StudyDescription = s["desc"]
                ds.ReferringPhysicianName = s.get("ref", "")
                ds.StudyID = f"S{s['study']}"
                ds.InstitutionName = "General Hospital" if s["study"] == 1 else "Clinic"
                ds.PatientAge = "054Y"
                ds.SeriesInstanceUID = uid(s["study"], series)
                ds.Modality = modality
                ds.SeriesNumber = series
                ds.SeriesDescription = f"{modality} series {series}"
                ds.SOPClassUID = MR if modality == "MR" else CT
                ds.SOPInstanceUID = uid(s["study"], series, k + 1)
                ds.InstanceNumber = k + 1
                ds.ImageType = ["ORIGINAL", "PRIMARY"] if k == 0 else ["DERIVED", "SECONDARY"]
                yield ds


@pytest.fixture
def index(index_url: str, tmp_path: Path) -> Iterator[Index]:  # noqa: F811
    db = open_index_db(index_url, tmp_path)
    idx = Index(db)
    records = []
    for ds in corpus():
        record = record_from_dataset(ds, ExplicitVRLittleEndian)
        record.path = f"/archive/{ds.SOPInstanceUID}.dcm"
        record.size = 1000
        records.append(record)
    idx.add(records)
    yield idx
    db.close()


def identifier(level: str, **keys: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def find(index: Index, model: QueryModel, level: str, **keys: Any) -> list[Dataset]:
    return list(query.find(index, model, identifier(level, **keys), limit=0))


def column(results: list[Dataset], keyword: str) -> list[Any]:
    return [r.get(keyword) for r in results]


def studies(index: Index, **keys: Any) -> set[str]:
    """Study numbers (the last UID component) a Study Root STUDY query matches."""
    rows = find(index, STUDY, "STUDY", **{"StudyInstanceUID": "", **keys})
    return {str(r.StudyInstanceUID).rsplit(".", 1)[1] for r in rows}


def patients(index: Index, **keys: Any) -> set[str]:
    rows = find(index, PATIENT, "PATIENT", **{"PatientID": "", **keys})
    return {str(r.PatientID) for r in rows}


# -- pure functions ----------------------------------------------------------------------


def test_like_pattern_escapes_percent_underscore_and_the_escape_char() -> None:
    assert query.like_pattern("A_1%") == "A!_1!%"
    assert query.like_pattern("X!Y") == "X!!Y"
    assert query.like_pattern("DOE*^J?N") == "DOE%^J_N"


def test_glob_pattern_makes_brackets_literal() -> None:
    assert query.glob_pattern("BRACKET[1]*") == "BRACKET[[]1]*"
    assert query.glob_pattern("A_1%?") == "A_1%?"


def test_wildcard_regex_treats_everything_but_star_and_question_mark_literally() -> None:
    rx = query.wildcard_regex("A.1%[x]*?")
    assert rx.fullmatch("A.1%[x]ZZ9")
    assert not rx.fullmatch("AB1%[x]ZZ9")
    assert not rx.fullmatch("A.1%[x]")


# -- wildcards and case -----------------------------------------------------------------


def test_star_wildcard_and_case_insensitive_person_names(index: Index) -> None:
    assert patients(index, PatientName="DOE*") == {"PAT001", "PAT002", "PAT003"}
    assert patients(index, PatientName="doe^j*") == {"PAT001", "PAT002"}
    assert patients(index, PatientName="DOE^JANE") == {"PAT002"}  # stored as Doe^Jane
    assert patients(index, PatientName="*PAT") == {"PAT_1%", "PATX1Z"}


def test_question_mark_matches_exactly_one_character(index: Index) -> None:
    assert patients(index, PatientName="DO?^J*") == {"PAT001", "PAT002"}
    assert patients(index, PatientName="DOE^JAN?") == {"PAT002"}
    assert patients(index, PatientName="DOE^JA?") == set()


def test_percent_and_underscore_are_literal_not_sql_wildcards(index: Index) -> None:
    assert patients(index, PatientID="PAT_1%") == {"PAT_1%"}
    assert patients(index, PatientID="PAT_1*") == {"PAT_1%"}
    assert patients(index, PatientID="PAT?1*") == {"PAT_1%", "PATX1Z", "PAT[1]"}
    assert studies(index, AccessionNumber="A_1%") == {"5"}
    assert studies(index, AccessionNumber="A_*") == {"5"}


def test_brackets_are_literal(index: Index) -> None:
    assert patients(index, PatientID="PAT[1]") == {"PAT[1]"}
    assert patients(index, PatientID="PAT[1*") == {"PAT[1]"}
    assert patients(index, PatientName="BRACKET[1]*") == {"PAT[1]"}
    assert patients(index, PatientName="BRACKET1*") == set()


def test_text_keys_are_case_sensitive_on_both_engines(index: Index) -> None:
    assert studies(index, StudyDescription="CT*") == {"1", "2"}
    assert studies(index, StudyDescription="ct*") == {"4"}
    assert studies(index, StudyDescription="CT HEAD") == {"1"}


def test_non_ascii_names_fold_case_and_match_queries_in_other_charsets(index: Index) -> None:
    assert patients(index, PatientName="müller*") == {"PATUTF8"}
    # The query travels in ISO_IR 100 (Latin-1), as a peer would send it.
    ds = identifier("PATIENT", PatientID="", PatientName="gómez*")
    ds.SpecificCharacterSet = "ISO_IR 100"
    wire = encode(ds, False, True)
    assert wire is not None and "gómez".encode("latin-1") in wire
    received = decode(io.BytesIO(wire), False, True)
    results = list(query.find(index, PATIENT, received, limit=0))
    assert [str(r.PatientName) for r in results] == ["GÓMEZ^JOSÉ"]
    assert results[0].SpecificCharacterSet == "ISO_IR 192"
    ascii_only = find(index, PATIENT, "PATIENT", PatientID="PAT001", PatientName="")
    assert "SpecificCharacterSet" not in ascii_only[0]


# -- ranges -----------------------------------------------------------------------------


def test_date_ranges_are_inclusive_and_skip_empty_dates(index: Index) -> None:
    assert studies(index, StudyDate="20240101-20240131") == {"1", "4", "5", "8", "9"}
    assert studies(index, StudyDate="-20240101") == {"3", "4"}
    assert studies(index, StudyDate="20240201-") == {"2", "6"}
    assert studies(index, StudyDate="20240115") == {"1"}
    assert studies(index, StudyDate="20240116-20240119") == set()


def test_time_ranges_compare_whole_seconds_and_cover_short_bounds(index: Index) -> None:
    # 0830 is 08:30:00; an upper bound of "12" covers all of 12:xx:xx.
    assert studies(index, StudyTime="0800-0900") == {"2"}
    assert studies(index, StudyTime="1000-12") == {"1", "5"}
    assert studies(index, StudyTime="-000000") == {"4"}
    assert studies(index, StudyTime="1300-") == {"3", "6"}


def test_malformed_values_answer_unable_to_process(index: Index) -> None:
    for bad in ({"StudyDate": "2024-01-01"}, {"StudyDate": "-"}, {"StudyTime": "25x"}):
        with pytest.raises(QueryError) as err:
            find(index, STUDY, "STUDY", **bad)
        assert err.value.status == 0xC000


# -- UIDs, universal matching, return keys ---------------------------------------------


def test_uid_list_matching(index: Index) -> None:
    assert studies(index, StudyInstanceUID=[uid(1), uid(3), uid(99)]) == {"1", "3"}
    assert studies(index, StudyInstanceUID=uid(2)) == {"2"}
    with pytest.raises(QueryError) as err:
        studies(index, StudyInstanceUID=f"{ROOT}.1*")
    assert err.value.status == 0xC000


def test_universal_matching_returns_the_attribute_with_its_value(index: Index) -> None:
    rows = find(index, STUDY, "STUDY", StudyInstanceUID=uid(1), StudyDate="", PatientName="")
    assert len(rows) == 1
    (row,) = rows
    assert row.StudyDate == "20240115"
    assert str(row.PatientName) == "DOE^JOHN"
    # Exactly the requested keys, plus the level and its unique key.
    assert {e.keyword for e in row} == {
        "QueryRetrieveLevel",
        "StudyInstanceUID",
        "StudyDate",
        "PatientName",
    }
    assert studies(index, StudyDate="") == {str(n) for n in range(1, 10)}
    assert studies(index, PatientName="*") == {str(n) for n in range(1, 10)}


def test_unknown_and_lower_level_keys_come_back_empty(index: Index) -> None:
    (row,) = find(index, STUDY, "STUDY", StudyInstanceUID=uid(1), Modality="CT", OperatorsName="X")
    assert "Modality" in row and row.Modality in (None, "")
    assert "OperatorsName" in row and row.OperatorsName in (None, "")
    # ... and do not restrict the match (universal matching for unsupported keys).
    assert studies(index, Modality="XX", OperatorsName="nobody") == {str(n) for n in range(1, 10)}


def test_indexed_keys_without_columns_are_returned_and_matched(index: Index) -> None:
    assert studies(index, InstitutionName="General*") == {"1"}
    assert studies(index, InstitutionName="general*") == set()  # LO: case-sensitive
    assert studies(index, PatientAge="054Y") == {str(n) for n in range(1, 10)}
    rows = find(
        index,
        STUDY,
        "IMAGE",
        StudyInstanceUID=uid(1),
        SeriesInstanceUID=uid(1, 1),
        SOPInstanceUID="",
        ImageType="DERIVED",
    )
    assert column(rows, "SOPInstanceUID") == [uid(1, 1, 2)]
    assert list(rows[0].ImageType) == ["DERIVED", "SECONDARY"]


def test_computed_counts_and_modalities(index: Index) -> None:
    (pat,) = find(
        index,
        PATIENT,
        "PATIENT",
        PatientID="PAT001",
        NumberOfPatientRelatedStudies="",
        NumberOfPatientRelatedSeries="",
        NumberOfPatientRelatedInstances="",
    )
    assert (
        pat.NumberOfPatientRelatedStudies,
        pat.NumberOfPatientRelatedSeries,
        pat.NumberOfPatientRelatedInstances,
    ) == (2, 3, 4)
    (st,) = find(
        index,
        STUDY,
        "STUDY",
        StudyInstanceUID=uid(1),
        NumberOfStudyRelatedSeries="",
        NumberOfStudyRelatedInstances="",
        ModalitiesInStudy="",
    )
    assert (st.NumberOfStudyRelatedSeries, st.NumberOfStudyRelatedInstances) == (2, 3)
    assert list(st.ModalitiesInStudy) == ["CT", "MR"]
    series = find(
        index,
        STUDY,
        "SERIES",
        StudyInstanceUID=uid(1),
        SeriesInstanceUID="",
        NumberOfSeriesRelatedInstances="",
    )
    assert column(series, "NumberOfSeriesRelatedInstances") == [2, 1]


def test_modalities_in_study_is_matchable(index: Index) -> None:
    assert studies(index, ModalitiesInStudy="MR") == {"1", "3", "8", "9"}
    assert studies(index, ModalitiesInStudy=["OT", "CT"]) == {"1", "2", "4", "5", "6", "7"}


def test_series_level_matches_modality_within_the_study(index: Index) -> None:
    rows = find(
        index, STUDY, "SERIES", StudyInstanceUID=uid(1), SeriesInstanceUID="", Modality="CT"
    )
    assert column(rows, "SeriesInstanceUID") == [uid(1, 1)]
    assert column(rows, "StudyInstanceUID") == [uid(1)]
    assert column(rows, "Modality") == ["CT"]


def test_integer_strings_match_as_numbers(index: Index) -> None:
    extra = next(corpus())
    extra.SOPInstanceUID = uid(1, 1, 9)
    extra.InstanceNumber = "009"  # IS keeps the text as sent
    record = record_from_dataset(extra, ExplicitVRLittleEndian)
    record.path, record.size = "/archive/extra.dcm", 1
    index.add([record])

    def numbers(value: str) -> list[str]:
        rows = find(
            index,
            STUDY,
            "IMAGE",
            StudyInstanceUID=uid(1),
            SeriesInstanceUID=uid(1, 1),
            SOPInstanceUID="",
            InstanceNumber=value,
        )
        return column(rows, "SOPInstanceUID")

    assert numbers("9") == [uid(1, 1, 9)]
    assert numbers("09") == [uid(1, 1, 9)]
    assert numbers("02") == [uid(1, 1, 2)]
    assert numbers("0") == []
    rows = find(index, STUDY, "SERIES", StudyInstanceUID=uid(1), SeriesNumber="002")
    assert column(rows, "SeriesInstanceUID") == [uid(1, 2)]


def test_patient_root_returns_the_unique_keys_of_every_level(index: Index) -> None:
    rows = find(
        index,
        PATIENT,
        "IMAGE",
        PatientID="PAT001",
        StudyInstanceUID=uid(1),
        SeriesInstanceUID=uid(1, 1),
        InstanceNumber="2",
    )
    assert len(rows) == 1
    row = rows[0]
    assert (row.PatientID, row.StudyInstanceUID, row.SeriesInstanceUID, row.SOPInstanceUID) == (
        "PAT001",
        uid(1),
        uid(1, 1),
        uid(1, 1, 2),
    )
    assert row.QueryRetrieveLevel == "IMAGE"


# -- hierarchy and levels ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "level", "keys"),
    [
        (STUDY, "PATIENT", {}),  # no patient level in Study Root
        (STUDY, "FRAME", {}),
        (STUDY, "", {}),
        (STUDY, "SERIES", {}),  # StudyInstanceUID missing
        (STUDY, "SERIES", {"StudyInstanceUID": ""}),  # universal is not a single value
        (STUDY, "IMAGE", {"StudyInstanceUID": uid(1)}),  # SeriesInstanceUID missing
        (STUDY, "SERIES", {"StudyInstanceUID": [uid(1), uid(2)]}),  # a list
        (PATIENT, "STUDY", {"PatientID": "PAT*"}),  # a wildcard
        (PATIENT, "STUDY", {"StudyInstanceUID": uid(1)}),  # PatientID missing
    ],
)
def test_invalid_identifiers_answer_a900(
    index: Index, model: QueryModel, level: str, keys: dict[str, Any]
) -> None:
    with pytest.raises(QueryError) as err:
        query.find(index, model, identifier(level, **keys), limit=0)
    assert err.value.status == 0xA900


def test_missing_level_answers_a900(index: Index) -> None:
    ds = Dataset()
    ds.PatientID = ""
    with pytest.raises(QueryError) as err:
        query.find(index, PATIENT, ds, limit=0)
    assert err.value.status == 0xA900


# -- order, limit, cancel ---------------------------------------------------------------


def test_order_is_arrival_order_across_batches(
    index: Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = [uid(s["study"]) for s in STUDIES]
    assert column(find(index, STUDY, "STUDY", StudyInstanceUID=""), "StudyInstanceUID") == expected
    monkeypatch.setattr(query, "BATCH", 2)  # keyset pagination across several reads
    assert column(find(index, STUDY, "STUDY", StudyInstanceUID=""), "StudyInstanceUID") == expected
    # A Python-side filter (InstitutionName lives in attrs) across batches, too.
    rows = find(index, STUDY, "STUDY", StudyInstanceUID="", InstitutionName="Clinic")
    assert column(rows, "StudyInstanceUID") == expected[1:]


def test_limit_and_cancel(index: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(query, "BATCH", 3)
    ds = identifier("STUDY", StudyInstanceUID="")
    assert len(list(query.find(index, STUDY, ds, limit=4))) == 4
    assert len(list(query.find(index, STUDY, ds, limit=0))) == 9
    calls = {"n": 0}

    def cancelled() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    got = list(query.find(index, STUDY, ds, limit=0, cancelled=cancelled))
    assert 0 < len(got) < 9


# -- retrieve ---------------------------------------------------------------------------


def test_match_instances_by_level_and_uid_lists(index: Index) -> None:
    def sops(model: QueryModel, level: str, **keys: Any) -> list[str]:
        found = query.match_instances(index, model, identifier(level, **keys))
        return [i.sop_instance_uid for i in found]

    assert sops(STUDY, "STUDY", StudyInstanceUID=uid(1)) == [
        uid(1, 1, 1),
        uid(1, 1, 2),
        uid(1, 2, 1),
    ]
    assert sops(STUDY, "STUDY", StudyInstanceUID=[uid(2), uid(3)]) == [uid(2, 3, 1), uid(3, 4, 1)]
    assert sops(STUDY, "SERIES", StudyInstanceUID=uid(1), SeriesInstanceUID=uid(1, 2)) == [
        uid(1, 2, 1)
    ]
    # Upper-level keys restrict when given, and are not required.
    assert sops(STUDY, "SERIES", SeriesInstanceUID=uid(1, 2)) == [uid(1, 2, 1)]
    assert sops(STUDY, "SERIES", StudyInstanceUID=uid(2), SeriesInstanceUID=uid(1, 2)) == []
    assert sops(STUDY, "IMAGE", SOPInstanceUID=[uid(1, 1, 2), uid(9, 10, 1)]) == [
        uid(1, 1, 2),
        uid(9, 10, 1),
    ]
    assert sops(PATIENT, "PATIENT", PatientID="PAT_1%") == [uid(5, 6, 1)]
    assert len(sops(PATIENT, "PATIENT", PatientID="PAT001")) == 4
    found = query.match_instances(index, STUDY, identifier("IMAGE", SOPInstanceUID=uid(1, 1, 1)))
    assert found[0].path == f"/archive/{uid(1, 1, 1)}.dcm"
    assert (found[0].study_uid, found[0].series_uid) == (uid(1), uid(1, 1))


@pytest.mark.parametrize(
    ("model", "level", "keys", "status"),
    [
        (STUDY, "STUDY", {}, 0xA900),
        (STUDY, "STUDY", {"StudyInstanceUID": ""}, 0xA900),
        (STUDY, "PATIENT", {"PatientID": "PAT001"}, 0xA900),
        (PATIENT, "PATIENT", {"PatientID": "PAT*"}, 0xA900),
        (STUDY, "STUDY", {"StudyInstanceUID": "1.2.*"}, 0xC000),
    ],
)
def test_invalid_retrieve_identifiers(
    index: Index, model: QueryModel, level: str, keys: dict[str, Any], status: int
) -> None:
    with pytest.raises(QueryError) as err:
        query.match_instances(index, model, identifier(level, **keys))
    assert err.value.status == status


def test_every_indexed_attribute_round_trips(index: Index) -> None:
    """Each attribute the index keeps (column or attrs) comes back with its value."""
    source = next(corpus())
    keys = {e.keyword: "" for e in source if e.keyword != "SpecificCharacterSet"}
    keys.update(
        PatientID=source.PatientID,
        StudyInstanceUID=source.StudyInstanceUID,
        SeriesInstanceUID=source.SeriesInstanceUID,
        SOPInstanceUID=source.SOPInstanceUID,
    )
    (row,) = find(index, PATIENT, "IMAGE", **keys)
    for keyword in keys:
        assert row[keyword].value == source[keyword].value, keyword
