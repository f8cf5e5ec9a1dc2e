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
)

LATEST_VERSION = MIGRATIONS[-1].version
