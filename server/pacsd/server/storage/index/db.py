"""Connections to the index database: SQLite (embedded default) or PostgreSQL.

SQL is written once with ``?`` placeholders and run on either engine; PostgreSQL gets
them rewritten to ``%s``. Values are always bound parameters, never spliced into text.

SQLite runs in WAL mode with ``synchronous=FULL``: a committed transaction survives a
crash or power loss, which is what lets a C-STORE be answered only after commit. Once the
store journal (storage/journal.py) is running the archive switches it to
``synchronous=NORMAL``: a commit then waits for no device, the journal's record of the
instance stands in for it, and a checkpoint calls ``flush``. Writes
go through one connection under a lock (SQLite has one writer anyway); reads use one
connection per thread, which WAL lets run beside the writer, and which is closed when
its thread ends.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pacsd.server.storage.index.schema import INDEX_MIGRATIONS, LATEST_INDEX_VERSION, PK


class IndexUnavailable(Exception):
    """The index cannot be opened, migrated or written; the message is for operators."""


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Conn:
    """A connection in use, with placeholder translation for the dialect."""

    def __init__(self, raw: Any, dialect: str) -> None:
        self.raw = raw
        self.dialect = dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self.dialect == "postgresql":
            sql = sql.replace("?", "%s")
        return self.raw.execute(sql, tuple(params))

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.execute(sql, params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(self.execute(sql, params).fetchall())


#: (table, key) -> (the values last written, the row's ID): see ``IndexDB.known_parents``.
KnownParents = dict[tuple[str, str], tuple[tuple[Any, ...], Any]]


class IndexDB:
    """Opened with :func:`open_index_db`; use ``write()`` and ``read()`` contexts."""

    dialect: str

    #: The patient, study and series rows this process wrote, as they are in the
    #: database, so that an instance of a known series skips its parents' upserts
    #: (six of the eight statements per C-STORE). None where the engine cannot tell
    #: that another connection changed them (PostgreSQL). Valid only inside
    #: ``write(keeps_parents=True)``, which empties it whenever it may be stale.
    known_parents: KnownParents | None = None

    @contextmanager
    def write(self, keeps_parents: bool = False) -> Iterator[Conn]:  # pragma: no cover
        """A transaction. Only a writer that adds rows and records them in
        ``known_parents`` passes ``keeps_parents``: any other write may delete or
        change a parent, and empties it."""
        raise NotImplementedError
        yield

    def parents_changed(self, conn: Conn) -> None:
        """Inside ``write(keeps_parents=True)``: a patient, study or series row was
        inserted or changed, so what other processes know of parent rows may be stale
        (a no-op where nothing is kept)."""

    @contextmanager
    def read(self) -> Iterator[Conn]:  # pragma: no cover - abstract
        raise NotImplementedError
        yield

    def close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def flush(self) -> None:
        """Make every committed transaction durable (a no-op where each commit already
        is; see ``SqliteIndexDB``)."""

    def set_synchronous(self, mode: str) -> None:
        """SQLite's ``synchronous`` for commits from now on (PostgreSQL: ignored; every
        commit is durable there, and PostgreSQL may be on another machine)."""

    def migrate(self) -> int:
        """Apply pending migrations; returns the schema version in force."""
        with self.write() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS index_migrations ("
                "version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
        current = self.version()
        if current > LATEST_INDEX_VERSION:
            raise IndexUnavailable(
                f"index schema version {current} is newer than this pacsd supports "
                f"({LATEST_INDEX_VERSION}); upgrade pacsd"
            )
        for migration in INDEX_MIGRATIONS:
            if migration.version <= current:
                continue
            with self.write() as conn:
                for statement in migration.statements:
                    conn.execute(statement.format(pk=PK[self.dialect]))
                conn.execute(
                    "INSERT INTO index_migrations (version, description, applied_at) "
                    "VALUES (?, ?, ?)",
                    (migration.version, migration.description, datetime.now(UTC).isoformat()),
                )
        return self.version()

    def version(self) -> int:
        with self.read() as conn:
            row = conn.one("SELECT COALESCE(MAX(version), 0) FROM index_migrations")
        return int(row[0])


def _close_quietly(conn: sqlite3.Connection) -> None:
    with suppress(sqlite3.Error):
        conn.close()


class _ThreadReader:
    """One thread's read connection, closed when that thread lets go of it.

    The only lasting reference is the thread's slot in ``SqliteIndexDB._local``, which
    CPython drops when the thread ends; the finalizer then closes the connection. So a
    connection lives exactly as long as its thread, however many threads come and go
    (one per association, gRPC workers), with nothing to prune and nothing to scan. It
    cannot be closed while in use: the thread that is reading still holds its slot, and
    ``read()`` holds the reader for the length of the ``with`` block besides. This
    holder exists because ``sqlite3.Connection`` cannot be weakly referenced, so neither
    a ``WeakSet`` nor ``weakref.finalize`` can watch it directly; the finalizer refers
    to the connection only, never to the holder or the database, so it keeps neither
    alive.
    """

    __slots__ = ("__weakref__", "close", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        #: Closes the connection once: on ``SqliteIndexDB.close()`` or at collection.
        self.close = weakref.finalize(self, _close_quietly, conn)
        # Not at interpreter exit: a daemon thread may still be reading then, and the
        # process ending releases the descriptors anyway.
        self.close.atexit = False


class SqliteIndexDB(IndexDB):
    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        #: FULL until the store journal takes over durability (``set_synchronous``).
        self.synchronous = "FULL"
        self._flush_fds: dict[Path, int] = {}
        self._write_lock = threading.Lock()
        self.known_parents: KnownParents = {}
        #: The index generation ``known_parents`` is valid for (None: not read yet).
        self._generation_known: int | None = None
        self._has_generation = False
        self._local = threading.local()
        # The live readers, for close(); weak, so an exited thread's reader is collected
        # (and its connection closed) instead of being kept here for ever. A WeakSet is
        # safe to snapshot while the collector removes entries from other threads.
        self._readers: weakref.WeakSet[_ThreadReader] = weakref.WeakSet()
        self._readers_lock = threading.Lock()
        try:
            self._writer = self._connect()
            self._writer.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as exc:
            raise IndexUnavailable(f"cannot open index {path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA cache_size=-65536")
        except BaseException:
            _close_quietly(conn)
            raise
        return conn

    @contextmanager
    def write(self, keeps_parents: bool = False) -> Iterator[Conn]:
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            known = self.known_parents
            # The generation moves whenever any connection (another worker, a pacsctl
            # delete) deletes rows or writes a parent row: what this one knew may be
            # gone or old then. Instances other workers add leave it, and what this one
            # knows, alone (SQLite's data_version moved with every commit: two workers
            # storing at once forgot their parents at nearly every C-STORE).
            generation = self._generation(conn)
            if not keeps_parents:
                known.clear()
                if generation is not None:
                    self._bump(conn)
            elif generation is None or generation != self._generation_known or len(known) > 50_000:
                known.clear()
                self._generation_known = generation
            try:
                yield Conn(conn, self.dialect)
            except BaseException:
                known.clear()  # it may hold rows this rollback takes back
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except BaseException:
                known.clear()
                raise

    def parents_changed(self, conn: Conn) -> None:
        if self._has_generation:
            self._generation_known = self._bump(self._writer)

    def _generation(self, conn: sqlite3.Connection) -> int | None:
        """The index generation, or None before the migration that adds it."""
        if not self._has_generation:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'index_generation'"
            ).fetchone()
            if found is None:
                return None
            self._has_generation = True  # (a table no migration removes)
        return int(conn.execute("SELECT n FROM index_generation WHERE id = 0").fetchone()[0])

    @staticmethod
    def _bump(conn: sqlite3.Connection) -> int:
        row = conn.execute("UPDATE index_generation SET n = n + 1 WHERE id = 0 RETURNING n")
        return int(row.fetchone()[0])

    @contextmanager
    def read(self) -> Iterator[Conn]:
        reader: _ThreadReader | None = getattr(self._local, "reader", None)
        if reader is None:
            reader = _ThreadReader(self._connect())
            with self._readers_lock:
                self._readers.add(reader)
            self._local.reader = reader
        yield Conn(reader.conn, self.dialect)

    def set_synchronous(self, mode: str) -> None:
        if mode not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous={mode!r}")
        with self._write_lock:
            self.synchronous = mode
            self._writer.execute(f"PRAGMA synchronous={mode}")
            self._open_flush_fds()

    def _open_flush_fds(self) -> None:
        """Descriptors kept for ``flush``: an fsync reports a writeback error only to
        descriptors opened before it happened, so they are opened once, up front."""
        for path in (Path(f"{self.path}-wal"), self.path):
            if path not in self._flush_fds:
                with suppress(FileNotFoundError):
                    self._flush_fds[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def flush(self) -> None:
        """fsync the write-ahead log: under ``synchronous=NORMAL`` commits only reach
        it through the page cache (SQLite syncs it itself before each checkpoint, and
        the database file after). Any process's descriptor will do: it is one file (the
        writer connection, open all along, keeps SQLite from removing the WAL)."""
        with self._write_lock:
            self._open_flush_fds()
            for fd in self._flush_fds.values():
                os.fsync(fd)

    def close(self) -> None:
        """Close the writer and every live thread's reader (their threads, if they read
        again, get ``sqlite3.ProgrammingError``: the index is shut)."""
        with self._readers_lock:
            readers = list(self._readers)
        for reader in readers:
            reader.close()
        _close_quietly(self._writer)
        for fd in self._flush_fds.values():
            os.close(fd)
        self._flush_fds.clear()


class PostgresIndexDB(IndexDB):
    """Reads and writes borrow from one bounded pool and give the connection back when
    their ``with`` block ends, so no connection belongs to a thread and none outlives
    one: at most ``max_connections`` exist however many threads come and go."""

    dialect = "postgresql"

    def __init__(self, url: str, max_connections: int = 16) -> None:
        try:
            from psycopg_pool import ConnectionPool
        except ImportError as exc:  # pragma: no cover - dependency is declared
            raise IndexUnavailable("PostgreSQL index needs psycopg and psycopg-pool") from exc
        self.url = url
        try:
            self._pool = ConnectionPool(
                url, min_size=1, max_size=max_connections, open=True, timeout=30
            )
            self._pool.wait(timeout=15)
        except Exception as exc:
            raise IndexUnavailable(f"cannot connect to the PostgreSQL index: {exc}") from exc

    @contextmanager
    def write(self, keeps_parents: bool = False) -> Iterator[Conn]:
        with self._pool.connection() as raw, raw.transaction():
            yield Conn(raw, self.dialect)

    @contextmanager
    def read(self) -> Iterator[Conn]:
        with self._pool.connection() as raw:
            raw.autocommit = True
            try:
                yield Conn(raw, self.dialect)
            finally:
                raw.autocommit = False

    def close(self) -> None:
        self._pool.close()


def open_index_db(index_url: str, data_dir: Path) -> IndexDB:
    """``index_url``: empty for ``DATA_DIR/index.db``, ``sqlite:///path`` or ``postgresql://``."""
    if index_url.startswith(("postgresql://", "postgres://")):
        db: IndexDB = PostgresIndexDB(index_url)
    elif index_url.startswith("sqlite:///"):
        db = SqliteIndexDB(Path(index_url.removeprefix("sqlite:///")))
    elif not index_url:
        db = SqliteIndexDB(data_dir / "index.db")
    else:
        raise IndexUnavailable(f"index_url {index_url!r}: use postgresql://... or sqlite:///path")
    try:
        db.migrate()
    except IndexUnavailable:
        db.close()
        raise
    except Exception as exc:
        db.close()
        raise IndexUnavailable(f"cannot migrate the index: {exc}") from exc
    return db
