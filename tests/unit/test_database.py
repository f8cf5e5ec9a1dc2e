"""The server database is created, migrated once, and refuses a newer schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from pacsd.server.storage.database import DB_FILENAME, DatabaseError, ServerDatabase
from pacsd.server.storage.migrations import LATEST_VERSION


def test_new_database_is_at_latest_version_and_has_an_identity(tmp_path: Path) -> None:
    db = ServerDatabase.open(tmp_path)
    try:
        assert db.schema_version() == LATEST_VERSION
        server_id = db.meta("server_id")
        assert server_id
    finally:
        db.close()
    # Reopening applies nothing twice and keeps the identity.
    db = ServerDatabase.open(tmp_path)
    try:
        assert db.meta("server_id") == server_id
        rows = db._conn.execute("SELECT version FROM schema_migrations").fetchall()
        assert [r[0] for r in rows] == list(range(1, LATEST_VERSION + 1))
        assert db._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    ServerDatabase.open(tmp_path).close()
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    conn.execute(
        "INSERT INTO schema_migrations (version, description, applied_at) VALUES (999, 'x', 'y')"
    )
    conn.commit()
    conn.close()
    with pytest.raises(DatabaseError, match="newer than this pacsd supports"):
        ServerDatabase.open(tmp_path)
