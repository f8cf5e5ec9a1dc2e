"""The server's own SQLite database (``DATA_DIR/pacsd.db``): settings state, AE titles.

Opened once at startup, migrated to the latest schema before anything else runs. A
database written by a newer pacsd is refused rather than silently misread.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pacsd.server.storage.migrations import LATEST_VERSION, MIGRATIONS

DB_FILENAME = "pacsd.db"


class DatabaseError(Exception):
    """The database cannot be opened or migrated; the message is meant for the operator."""


class ServerDatabase:
    """A thread-safe handle on the server database (one connection, serialised by a lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot open database {path}: {exc}") from exc

    @classmethod
    def open(cls, data_dir: Path) -> ServerDatabase:
        db = cls(data_dir / DB_FILENAME)
        try:
            db.migrate()
        except BaseException:
            db.close()
            raise
        return db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def schema_version(self) -> int:
        with self._lock:
            row = self._conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name='schema_migrations'"
            ).fetchone()
            if row is None:
                return 0
            (version,) = self._conn.execute(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"
            ).fetchone()
            return int(version)

    def migrate(self) -> int:
        """Apply pending migrations; returns the schema version now in force."""
        try:
            with self.transaction() as conn:
                conn.execute(
                    """CREATE TABLE IF NOT EXISTS schema_migrations (
                        version     INTEGER PRIMARY KEY,
                        description TEXT NOT NULL,
                        applied_at  TEXT NOT NULL
                    )"""
                )
            current = self.schema_version()
            if current > LATEST_VERSION:
                raise DatabaseError(
                    f"database {self.path} has schema version {current}, newer than this "
                    f"pacsd supports ({LATEST_VERSION}); upgrade pacsd"
                )
            for migration in MIGRATIONS:
                if migration.version <= current:
                    continue
                with self.transaction() as conn:
                    for statement in migration.statements:
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, description, applied_at) "
                        "VALUES (?, ?, ?)",
                        (migration.version, migration.description, _now()),
                    )
            with self.transaction() as conn:
                conn.execute(
                    "INSERT OR IGNORE INTO server_meta (key, value) VALUES ('server_id', ?)",
                    (str(uuid.uuid4()),),
                )
                conn.execute(
                    "INSERT OR IGNORE INTO server_meta (key, value) VALUES ('created_at', ?)",
                    (_now(),),
                )
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot migrate database {self.path}: {exc}") from exc
        return self.schema_version()

    def meta(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT value FROM server_meta WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
