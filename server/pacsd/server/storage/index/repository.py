"""The index's operations: add instances (in batches), look up, count, list, delete.

Everything runs on an ``IndexDB`` (SQLite or PostgreSQL) with bound parameters. Parents
(patient, study, series) are upserted with each instance, latest values winning, and
removed when their last child goes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pacsd.server.storage.attributes import InstanceRecord, dumps
from pacsd.server.storage.index.db import Conn, IndexDB, KnownParents


@dataclass(frozen=True, slots=True)
class StoredInstance:
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    path: str
    size: int
    study_uid: str
    series_uid: str


@dataclass(frozen=True, slots=True)
class Counts:
    patients: int
    studies: int
    series: int
    instances: int
    bytes: int


@dataclass(frozen=True, slots=True)
class StudySummary:
    study_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    study_description: str
    accession_number: str
    modalities: tuple[str, ...]
    series: int
    instances: int
    bytes: int


_INSTANCE_COLUMNS = (
    "i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax, i.path, i.size, "
    "st.study_uid, se.series_uid"
)
_INSTANCE_JOIN = (
    "FROM instances i JOIN series se ON se.id = i.series_fk JOIN studies st ON st.id = se.study_fk"
)


def _stored(row: Sequence[Any]) -> StoredInstance:
    return StoredInstance(
        str(row[0]), str(row[1]), str(row[2]), str(row[3]), int(row[4]), str(row[5]), str(row[6])
    )


@dataclass(frozen=True)
class _ParentTable:
    """A patient, study or series table: upserted with each instance, latest values
    winning, but written only when a value changed.

    Most instances of a study repeat its patient, study and series values. Updating
    those rows anyway rewrote their pages and index entries in every commit (ten WAL
    pages per instance instead of four, SQLite). ``DO UPDATE ... WHERE`` skips
    the unchanged row (PostgreSQL still locks it); ``RETURNING`` then gives nothing,
    and the row's ID is read instead.
    """

    table: str
    key: str
    columns: tuple[str, ...]

    @property
    def upsert(self) -> str:
        names = ", ".join((self.key, *self.columns))
        marks = ", ".join("?" * (len(self.columns) + 1))
        sets = ", ".join(f"{c} = excluded.{c}" for c in self.columns)
        changed = " OR ".join(
            f"{self.table}.{c} IS DISTINCT FROM excluded.{c}" for c in self.columns
        )
        return (
            f"INSERT INTO {self.table} ({names}) VALUES ({marks}) "
            f"ON CONFLICT ({self.key}) DO UPDATE SET {sets} WHERE {changed} RETURNING id"
        )

    @property
    def find(self) -> str:
        return f"SELECT id FROM {self.table} WHERE {self.key} = ?"


_PATIENT = _ParentTable(
    "patients", "patient_id", ("patient_name", "patient_name_lc", "birth_date", "sex", "attrs")
)
_STUDY = _ParentTable(
    "studies",
    "study_uid",
    (
        "patient_fk",
        "study_date",
        "study_time",
        "accession_number",
        "study_id",
        "study_description",
        "referring_physician",
        "referring_physician_lc",
        "attrs",
    ),
)
_SERIES = _ParentTable(
    "series",
    "series_uid",
    (
        "study_fk",
        "modality",
        "series_number",
        "series_description",
        "series_date",
        "body_part",
        "attrs",
    ),
)
_SQL = {t: (t.upsert, t.find) for t in (_PATIENT, _STUDY, _SERIES)}


def _parent(
    conn: Conn,
    known: KnownParents | None,
    table: _ParentTable,
    key: str,
    values: tuple[Any, ...],
    changed: Callable[[Conn], None] | None = None,
) -> Any:
    """The parent row's ID, inserting it or updating what changed (nothing to do when
    ``known`` says the row already holds ``values``).

    ``values`` ends with the row's extra attributes as a dict, turned into JSON only when
    the row is written: an instance of a known series then encodes none of them.
    """
    if known is not None:
        hit = known.get((table.table, key))
        if hit is not None and hit[0] == values:
            return hit[1]
    upsert, find = _SQL[table]
    row = conn.one(upsert, (key, *values[:-1], dumps(values[-1])))
    if row is None:  # present and unchanged
        row = conn.one(find, (key,))
    elif changed is not None:  # inserted or updated: other writers must look again
        changed(conn)
    if known is not None:
        known[(table.table, key)] = (values, row[0])
    return row[0]


class Index:
    def __init__(self, db: IndexDB) -> None:
        self.db = db

    @property
    def dialect(self) -> str:
        return self.db.dialect

    # -- writing --------------------------------------------------------------------

    def add(self, records: Sequence[InstanceRecord]) -> None:
        """Insert or replace instances, all in one transaction (one commit, one fsync)."""
        with self.db.write(keeps_parents=True) as conn:
            known = self.db.known_parents
            for record in records:
                self._upsert(conn, known, record)

    def _upsert(self, conn: Conn, known: KnownParents | None, r: InstanceRecord) -> None:
        changed = self.db.parents_changed
        patient_fk = _parent(
            conn,
            known,
            _PATIENT,
            r.patient_id,
            (r.patient_name, r.patient_name.lower(), r.birth_date, r.sex, r.patient_attrs),
            changed,
        )
        study_fk = _parent(
            conn,
            known,
            _STUDY,
            r.study_uid,
            (
                patient_fk,
                r.study_date,
                r.study_time,
                r.accession_number,
                r.study_id,
                r.study_description,
                r.referring_physician,
                r.referring_physician.lower(),
                r.study_attrs,
            ),
            changed,
        )
        series_fk = _parent(
            conn,
            known,
            _SERIES,
            r.series_uid,
            (
                study_fk,
                r.modality,
                r.series_number,
                r.series_description,
                r.series_date,
                r.body_part,
                r.series_attrs,
            ),
            changed,
        )
        conn.execute(
            """INSERT INTO instances (series_fk, sop_instance_uid, sop_class_uid,
                   instance_number, transfer_syntax, path, size, stored_at, attrs, node)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (sop_instance_uid) DO UPDATE SET
                   series_fk = excluded.series_fk, sop_class_uid = excluded.sop_class_uid,
                   instance_number = excluded.instance_number,
                   transfer_syntax = excluded.transfer_syntax, path = excluded.path,
                   size = excluded.size, stored_at = excluded.stored_at, attrs = excluded.attrs,
                   node = excluded.node""",
            (
                series_fk,
                r.sop_instance_uid,
                r.sop_class_uid,
                r.instance_number,
                r.transfer_syntax,
                r.path,
                r.size,
                datetime.now(UTC).isoformat(timespec="milliseconds"),
                dumps(r.instance_attrs),
                r.node,
            ),
        )

    # -- reading --------------------------------------------------------------------

    def instance(self, sop_instance_uid: str) -> StoredInstance | None:
        with self.db.read() as conn:
            row = conn.one(
                f"SELECT {_INSTANCE_COLUMNS} {_INSTANCE_JOIN} WHERE i.sop_instance_uid = ?",
                (sop_instance_uid,),
            )
        return None if row is None else _stored(row)

    def instances_of(self, level: str, uid: str) -> list[StoredInstance]:
        """Instances of a study, series or single instance, in series and number order."""
        column = {
            "study": "st.study_uid",
            "series": "se.series_uid",
            "instance": "i.sop_instance_uid",
        }[level]
        with self.db.read() as conn:
            rows = conn.all(
                f"SELECT {_INSTANCE_COLUMNS} {_INSTANCE_JOIN} WHERE {column} = ? "
                "ORDER BY se.id, i.id",
                (uid,),
            )
        return [_stored(r) for r in rows]

    def all_paths(self, node: str = "") -> dict[str, str]:
        """SOP Instance UID -> path of the instances whose file ``node`` holds (and those
        of no recorded node), for reconciling the index with that node's files."""
        with self.db.read() as conn:
            rows = conn.all(
                "SELECT sop_instance_uid, path FROM instances WHERE node = ? OR node = ''",
                (node,),
            )
        return {str(uid): str(path) for uid, path in rows}

    def counts(self) -> Counts:
        with self.db.read() as conn:
            row = conn.one(
                "SELECT (SELECT COUNT(*) FROM patients), (SELECT COUNT(*) FROM studies), "
                "(SELECT COUNT(*) FROM series), (SELECT COUNT(*) FROM instances), "
                "(SELECT COALESCE(SUM(size), 0) FROM instances)"
            )
        return Counts(*(int(v) for v in row))

    def studies(
        self,
        patient_id: str = "",
        date_from: str = "",
        date_to: str = "",
        modality: str = "",
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[StudySummary], int]:
        """A page of studies (newest first) matching the filters, and the total count."""
        where, params = ["1 = 1"], []
        if patient_id:
            where.append("p.patient_id = ?")
            params.append(patient_id)
        if date_from:
            where.append("st.study_date >= ?")
            params.append(date_from)
        if date_to:
            where.append("st.study_date <= ?")
            params.append(date_to)
        if modality:
            where.append(
                "EXISTS (SELECT 1 FROM series m WHERE m.study_fk = st.id AND m.modality = ?)"
            )
            params.append(modality)
        clause = " AND ".join(where)
        base = f"FROM studies st JOIN patients p ON p.id = st.patient_fk WHERE {clause}"
        with self.db.read() as conn:
            (total,) = conn.one(f"SELECT COUNT(*) {base}", params)
            rows = conn.all(
                f"""SELECT st.id, st.study_uid, p.patient_id, p.patient_name, st.study_date,
                        st.study_description, st.accession_number
                    {base} ORDER BY st.study_date DESC, st.id DESC LIMIT ? OFFSET ?""",
                [*params, limit, offset],
            )
            result = []
            for row in rows:
                stats = conn.one(
                    "SELECT COUNT(DISTINCT se.id), COUNT(i.id), COALESCE(SUM(i.size), 0) "
                    "FROM series se LEFT JOIN instances i ON i.series_fk = se.id "
                    "WHERE se.study_fk = ?",
                    (row[0],),
                )
                modalities = conn.all(
                    "SELECT DISTINCT modality FROM series WHERE study_fk = ? ORDER BY modality",
                    (row[0],),
                )
                result.append(
                    StudySummary(
                        str(row[1]),
                        str(row[2]),
                        str(row[3]),
                        str(row[4]),
                        str(row[5]),
                        str(row[6]),
                        tuple(str(m[0]) for m in modalities if m[0]),
                        int(stats[0]),
                        int(stats[1]),
                        int(stats[2]),
                    )
                )
        return result, int(total)

    # -- deleting -------------------------------------------------------------------

    def remove(self, level: str, uid: str) -> list[StoredInstance]:
        """Delete a study, series or instance (and emptied parents); returns what went."""
        doomed = self.instances_of(level, uid)
        if doomed:
            self.remove_instances([d.sop_instance_uid for d in doomed])
        return doomed

    def remove_instances(self, sop_instance_uids: Sequence[str]) -> None:
        """Delete instances and the series, studies and patients they leave empty."""
        with self.db.write() as conn:
            series_fks: set[int] = set()
            for uid in sop_instance_uids:
                row = conn.one(
                    "DELETE FROM instances WHERE sop_instance_uid = ? RETURNING series_fk", (uid,)
                )
                if row is not None:
                    series_fks.add(int(row[0]))
            study_fks = self._drop_empty(
                conn, "series", "study_fk", series_fks, "instances", "series_fk"
            )
            patient_fks = self._drop_empty(
                conn, "studies", "patient_fk", study_fks, "series", "study_fk"
            )
            self._drop_empty(conn, "patients", "", patient_fks, "studies", "patient_fk")

    @staticmethod
    def _drop_empty(
        conn: Conn, table: str, parent_col: str, ids: set[int], child: str, child_fk: str
    ) -> set[int]:
        """Delete rows of ``table`` among ``ids`` with no ``child`` rows; their parents."""
        parents: set[int] = set()
        for row_id in ids:
            if conn.one(f"SELECT 1 FROM {child} WHERE {child_fk} = ? LIMIT 1", (row_id,)):
                continue
            if not parent_col:
                conn.execute(f"DELETE FROM {table} WHERE id = ?", (row_id,))
                continue
            row = conn.one(f"DELETE FROM {table} WHERE id = ? RETURNING {parent_col}", (row_id,))
            if row is not None:
                parents.add(int(row[0]))
        return parents
