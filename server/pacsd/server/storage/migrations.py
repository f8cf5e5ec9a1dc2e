"""Versioned schema of the server database.

Each migration is applied once, in order, inside one transaction together with the
``schema_migrations`` row that records it, so a crash mid-migration leaves the previous
version intact. Later features append migrations here; never edit a released one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "server metadata",
        (
            """
            CREATE TABLE server_meta (
                key   TEXT PRIMARY KEY,
                value TEXT NOT NULL
            )
            """,
        ),
    ),
    Migration(
        2,
        "ae titles",
        (
            # The registry of known DICOM peers (pacsd.server.aetitles). AE titles are
            # stored stripped; the CHECK repeats the port rule so a hand-edited row cannot
            # hand a client an unusable port.
            """
            CREATE TABLE ae_titles (
                ae_title    TEXT PRIMARY KEY,
                host        TEXT NOT NULL,
                port        INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
                description TEXT NOT NULL DEFAULT '',
                created_at  TEXT NOT NULL,
                updated_at  TEXT NOT NULL
            )
            """,
        ),
    ),
    Migration(
        3,
        "ae title access policy",
        (
            # JSON lists (pacsd.server.aetitles): '[]' allows every address; a NULL
            # permission list grants every permission, as entries did before.
            "ALTER TABLE ae_titles ADD COLUMN allowed_addresses TEXT NOT NULL DEFAULT '[]'",
            "ALTER TABLE ae_titles ADD COLUMN permissions TEXT",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version
