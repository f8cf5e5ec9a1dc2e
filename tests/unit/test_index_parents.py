"""Patient, study and series rows: latest values win, unchanged rows are not rewritten.

Every instance upserts its parents. Rewriting an unchanged row cost every C-STORE's
commit six extra WAL pages (SQLite); the index now writes a parent only when one of its
values changed. Checked on both engines: SQLite counts the rows a statement changed,
PostgreSQL gives each new row version a new ``xmin``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pacsd.server.storage.attributes import InstanceRecord
from pacsd.server.storage.index.db import open_index_db
from pacsd.server.storage.index.repository import Index

from tests.pg import index_url  # noqa: F401  (fixture)

ROOT = "1.2.826.0.1.3680043.10.543.77"


def record(n: int, **changes: Any) -> InstanceRecord:
    base = InstanceRecord(
        patient_id="PAT1",
        patient_name="DOE^JOHN",
        birth_date="19700101",
        sex="M",
        study_uid=f"{ROOT}.1",
        study_date="20240115",
        study_time="101500",
        accession_number="ACC1",
        study_id="1",
        study_description="CT HEAD",
        referring_physician="SMITH^ANNA",
        series_uid=f"{ROOT}.1.1",
        modality="CT",
        series_number="1",
        series_description="AXIAL",
        series_date="20240115",
        body_part="HEAD",
        sop_instance_uid=f"{ROOT}.1.1.{n}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        instance_number=str(n),
        transfer_syntax="1.2.840.10008.1.2.1",
        path=f"/data/{n}.dcm",
        size=1000,
        series_attrs={"00180050": {"vr": "DS", "Value": [1.0]}},
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture
def index(index_url: str, tmp_path: Path) -> Iterator[Index]:  # noqa: F811
    db = open_index_db(index_url, tmp_path)
    db.migrate()
    try:
        yield Index(db)
    finally:
        db.close()


def versions(index: Index) -> dict[str, Any]:
    """Something that changes whenever a parent row is written."""
    with index.db.read() as conn:
        if index.dialect == "postgresql":
            return {
                table: conn.all(f"SELECT id, xmin::text FROM {table} ORDER BY id")
                for table in ("patients", "studies", "series")
            }
    raw = index.db._writer  # type: ignore[attr-defined]
    return {"sqlite_total_changes": raw.total_changes}


def parents(index: Index) -> list[Any]:
    with index.db.read() as conn:
        return conn.all(
            "SELECT p.patient_name, p.sex, st.study_description, st.patient_fk, "
            "se.modality, se.attrs, se.study_fk "
            "FROM series se JOIN studies st ON st.id = se.study_fk "
            "JOIN patients p ON p.id = st.patient_fk ORDER BY se.id"
        )


def test_an_instance_with_unchanged_parents_writes_only_itself(index: Index) -> None:
    index.add([record(1)])
    before = versions(index)
    index.add([record(2)])
    after = versions(index)
    if index.dialect == "postgresql":
        assert after == before
    else:
        assert after["sqlite_total_changes"] == before["sqlite_total_changes"] + 1
    assert index.counts().instances == 2
    assert index.counts().series == 1


def test_changed_values_still_win(index: Index) -> None:
    index.add([record(1)])
    index.add([record(2, patient_name="DOE^J", series_description="CORONAL")])
    index.add([record(3, patient_name="DOE^J", modality="MR", series_attrs={})])
    rows = parents(index)
    assert len(rows) == 1
    name, sex, description, _, modality, attrs, _ = rows[0]
    assert (name, sex, description, modality, attrs) == ("DOE^J", "M", "CT HEAD", "MR", "{}")
    assert index.counts().patients == 1


def test_a_study_that_moves_to_another_patient_follows(index: Index) -> None:
    index.add([record(1)])
    index.add([record(2, patient_id="PAT2", patient_name="ROE^RICHARD")])
    with index.db.read() as conn:
        (owner,) = conn.one(
            "SELECT p.patient_id FROM studies st JOIN patients p ON p.id = st.patient_fk"
        )
    assert owner == "PAT2"
