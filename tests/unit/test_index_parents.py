"""Patient, study and series rows: latest values win, unchanged rows are not rewritten.

Every instance upserts its parents. Rewriting an unchanged row cost every C-STORE's
commit six extra WAL pages (SQLite); the index now writes a parent only when one of its
values changed. Checked on both engines: SQLite counts the rows a statement changed,
PostgreSQL gives each new row version a new ``xmin``.
"""

from __future__ import annotations

import dataclasses
import sqlite3
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


# -- known parents (SQLite): the upserts an instance of a known series skips --------


def statements(index: Index, action: Any) -> list[str]:
    """The SQL the writer connection ran during ``action()``."""
    ran: list[str] = []
    raw = index.db._writer  # type: ignore[attr-defined]
    raw.set_trace_callback(ran.append)
    try:
        action()
    finally:
        raw.set_trace_callback(None)
    return [_short(s) for s in ran if not s.startswith("PRAGMA")]


def _short(sql: str) -> str:
    words = sql.split()
    if words[0] == "INSERT":
        return f"INSERT {words[2]}"
    if words[0] == "SELECT":
        return f"SELECT {words[words.index('FROM') + 1]}"
    return " ".join(words)


@pytest.fixture
def sqlite_index(tmp_path: Path) -> Iterator[Index]:
    db = open_index_db("", tmp_path)
    try:
        yield Index(db)
    finally:
        db.close()


def test_a_known_series_skips_its_parents_statements(sqlite_index: Index) -> None:
    sqlite_index.add([record(1)])
    ran = statements(sqlite_index, lambda: sqlite_index.add([record(2)]))
    assert ran == KNOWN_SERIES, ran
    # A changed value is written, and only that parent's row; the generation moves.
    ran = statements(sqlite_index, lambda: sqlite_index.add([record(3, series_description="X")]))
    assert ran == [
        "BEGIN IMMEDIATE",
        "SELECT index_generation",
        "INSERT series",
        "UPDATE index_generation SET n = n + 1 WHERE id = 0 RETURNING n",
        "INSERT instances",
        "COMMIT",
    ], ran
    with sqlite_index.db.read() as conn:
        assert conn.all("SELECT series_description FROM series") == [("X",)]


#: What an instance of a series the writer knows costs.
KNOWN_SERIES = ["BEGIN IMMEDIATE", "SELECT index_generation", "INSERT instances", "COMMIT"]


def test_instances_another_connection_adds_leave_the_known_parents_alone(
    sqlite_index: Index, tmp_path: Path
) -> None:
    # Two workers storing the same series at once: each one's instances must not make
    # the other forget the parents (SQLite's data_version, used before, moved with
    # every commit of any connection). Opening an index migrates it, a write that
    # counts as a change: the other worker is open first.
    other = Index(open_index_db("", tmp_path))
    sqlite_index.add([record(1)])
    try:
        other.add([record(5)])  # the same parents, unchanged: only an instance row
        ran = statements(sqlite_index, lambda: sqlite_index.add([record(2)]))
        assert ran == KNOWN_SERIES, ran
        other.add([record(6)])
    finally:
        other.db.close()
    assert sqlite_index.counts().instances == 4 and sqlite_index.counts().series == 1


def test_parents_another_connection_changed_are_written_again(
    sqlite_index: Index, tmp_path: Path
) -> None:
    # The latest values win across workers too: after another worker changed the
    # series, an instance with the values this writer knew writes them back.
    other = Index(open_index_db("", tmp_path))  # (opening is a write: first)
    sqlite_index.add([record(1)])
    try:
        other.add([record(5, series_description="CORONAL")])
    finally:
        other.db.close()
    sqlite_index.add([record(2)])
    with sqlite_index.db.read() as conn:
        assert conn.all("SELECT series_description FROM series") == [("AXIAL",)]


def test_parents_deleted_by_another_connection_are_written_again(
    sqlite_index: Index, tmp_path: Path
) -> None:
    # Another worker (its own connection) removes the whole study, parents included:
    # the rows this connection knew are gone, and the next instance must bring them back
    # rather than point at a series that no longer exists.
    sqlite_index.add([record(1)])
    other = Index(open_index_db("", tmp_path))
    try:
        other.remove("study", f"{ROOT}.1")
        assert other.counts().series == 0
        other.add([record(9, series_uid=f"{ROOT}.1.2")])  # takes the free row IDs
    finally:
        other.db.close()
    sqlite_index.add([record(2)])
    with sqlite_index.db.read() as conn:
        (series,) = conn.one(
            "SELECT se.series_uid FROM instances i JOIN series se ON se.id = i.series_fk "
            "WHERE i.sop_instance_uid = ?",
            (f"{ROOT}.1.1.2",),
        )
    assert series == f"{ROOT}.1.1"
    assert sqlite_index.counts().series == 2


def test_a_delete_by_another_connection_alone_makes_this_one_look_again(
    sqlite_index: Index, tmp_path: Path
) -> None:
    other = Index(open_index_db("", tmp_path))  # (opening is a write: first)
    sqlite_index.add([record(1)])
    try:
        other.remove("study", f"{ROOT}.1")
    finally:
        other.db.close()
    sqlite_index.add([record(2)])  # its series is gone: written again, not pointed at
    assert sqlite_index.counts().series == 1
    assert sqlite_index.instance(f"{ROOT}.1.1.2") is not None


def test_parents_deleted_through_the_same_connection_are_written_again(
    sqlite_index: Index,
) -> None:
    sqlite_index.add([record(1)])
    sqlite_index.remove("study", f"{ROOT}.1")
    sqlite_index.add([record(2)])
    assert sqlite_index.counts().series == 1
    assert sqlite_index.instance(f"{ROOT}.1.1.2") is not None


def test_parents_of_a_rolled_back_batch_are_forgotten(sqlite_index: Index) -> None:
    # The batch inserts new parents, then fails: they are rolled back, and what was
    # learnt about them with it.
    bad = record(2, study_uid=f"{ROOT}.2", series_uid=f"{ROOT}.2.1", sop_class_uid=None)  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError):  # sop_class_uid is NOT NULL
        sqlite_index.add([record(1, study_uid=f"{ROOT}.2", series_uid=f"{ROOT}.2.1"), bad])
    assert sqlite_index.counts().series == 0
    sqlite_index.add([record(3, study_uid=f"{ROOT}.2", series_uid=f"{ROOT}.2.1")])
    assert sqlite_index.counts().series == 1
    assert sqlite_index.instance(f"{ROOT}.1.1.3") is not None
