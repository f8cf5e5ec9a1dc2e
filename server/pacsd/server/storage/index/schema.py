"""The instance index: one table per query level, the same DDL for SQLite and PostgreSQL.

Columns hold the attributes C-FIND matches on (PS3.4 C.6 required and common optional
keys); ``attrs`` keeps the remaining level attributes as DICOM JSON so a response can
return them without opening files. Dates are stored as DICOM text (YYYYMMDD), which
orders correctly for range matching. ``*_lc`` columns are lower-cased copies for
case-insensitive person-name matching. Counts and ModalitiesInStudy are derived at
query time.

Migrations are applied in order, each in its own transaction, recorded in
``index_migrations``. Never edit a released migration; append a new one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IndexMigration:
    version: int
    description: str
    #: Statements with ``{pk}`` for the auto-increment primary key type.
    statements: tuple[str, ...]


INDEX_MIGRATIONS: tuple[IndexMigration, ...] = (
    IndexMigration(
        1,
        "patients, studies, series, instances",
        (
            """CREATE TABLE patients (
                id {pk},
                patient_id TEXT NOT NULL,
                patient_name TEXT NOT NULL DEFAULT '',
                patient_name_lc TEXT NOT NULL DEFAULT '',
                birth_date TEXT NOT NULL DEFAULT '',
                sex TEXT NOT NULL DEFAULT '',
                attrs TEXT NOT NULL DEFAULT '{{}}',
                UNIQUE (patient_id)
            )""",
            """CREATE TABLE studies (
                id {pk},
                patient_fk INTEGER NOT NULL REFERENCES patients(id) ON DELETE CASCADE,
                study_uid TEXT NOT NULL UNIQUE,
                study_date TEXT NOT NULL DEFAULT '',
                study_time TEXT NOT NULL DEFAULT '',
                accession_number TEXT NOT NULL DEFAULT '',
                study_id TEXT NOT NULL DEFAULT '',
                study_description TEXT NOT NULL DEFAULT '',
                referring_physician TEXT NOT NULL DEFAULT '',
                referring_physician_lc TEXT NOT NULL DEFAULT '',
                attrs TEXT NOT NULL DEFAULT '{{}}'
            )""",
            """CREATE TABLE series (
                id {pk},
                study_fk INTEGER NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
                series_uid TEXT NOT NULL UNIQUE,
                modality TEXT NOT NULL DEFAULT '',
                series_number TEXT NOT NULL DEFAULT '',
                series_description TEXT NOT NULL DEFAULT '',
                series_date TEXT NOT NULL DEFAULT '',
                body_part TEXT NOT NULL DEFAULT '',
                attrs TEXT NOT NULL DEFAULT '{{}}'
            )""",
            """CREATE TABLE instances (
                id {pk},
                series_fk INTEGER NOT NULL REFERENCES series(id) ON DELETE CASCADE,
                sop_instance_uid TEXT NOT NULL UNIQUE,
                sop_class_uid TEXT NOT NULL,
                instance_number TEXT NOT NULL DEFAULT '',
                transfer_syntax TEXT NOT NULL,
                path TEXT NOT NULL,
                size BIGINT NOT NULL,
                stored_at TEXT NOT NULL,
                attrs TEXT NOT NULL DEFAULT '{{}}'
            )""",
            "CREATE INDEX patients_name_lc ON patients (patient_name_lc)",
            "CREATE INDEX studies_patient ON studies (patient_fk)",
            "CREATE INDEX studies_date ON studies (study_date)",
            "CREATE INDEX studies_accession ON studies (accession_number)",
            "CREATE INDEX series_study ON series (study_fk)",
            "CREATE INDEX series_modality ON series (modality)",
            "CREATE INDEX instances_series ON instances (series_fk)",
        ),
    ),
)

INDEX_MIGRATIONS += (
    IndexMigration(
        2,
        "instances.node: which pacsd node holds the file (shared PostgreSQL index)",
        (
            "ALTER TABLE instances ADD COLUMN node TEXT NOT NULL DEFAULT ''",
            "CREATE INDEX instances_node ON instances (node)",
        ),
    ),
)

INDEX_MIGRATIONS += (
    IndexMigration(
        3,
        "index_generation: moves when a parent row changes or rows are deleted (SQLite "
        "writers keep the parent rows they know until then)",
        (
            "CREATE TABLE index_generation "
            "(id INTEGER PRIMARY KEY CHECK (id = 0), n BIGINT NOT NULL)",
            "INSERT INTO index_generation (id, n) VALUES (0, 0)",
        ),
    ),
)

LATEST_INDEX_VERSION = INDEX_MIGRATIONS[-1].version

PK = {
    "sqlite": "INTEGER PRIMARY KEY",
    "postgresql": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
}
