"""SQLite index read connections live as long as the thread that reads through them.

Every association (pynetdicom) and every gRPC worker that reads the index gets its own
read connection; a server runs for months and starts threads all the time, so a
connection that outlived its thread would be a slow leak of descriptors (index.db, -wal,
-shm) and up to 64 MiB of page cache each. These tests count the process's descriptors on
the index files, which is what an operator would see in ``/proc/<pid>/fd``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pacsd.server.storage.index.db import SqliteIndexDB


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SqliteIndexDB]:
    index = SqliteIndexDB(tmp_path / "index.db")
    index.migrate()
    try:
        yield index
    finally:
        index.close()


def _index_fds(db: SqliteIndexDB, suffix: str = "") -> int:
    """Descriptors this process holds on index.db (and -wal, -shm), or on one of them."""
    prefix = str(db.path.resolve())
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed between listdir and readlink (the listdir's own fd)
            continue
        if target.startswith(prefix) and target.endswith(suffix):
            count += 1
    return count


def _read_once(db: SqliteIndexDB) -> None:
    with db.read() as conn:
        assert conn.one("SELECT COUNT(*) FROM index_migrations")[0] >= 1


def _wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Thread teardown (and with it the thread-local) may finish just after join() on
    some Python versions; poll for the outcome instead of sleeping a fixed time."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


CONCURRENT = 5


def test_short_lived_reader_threads_leave_no_connections_behind(db: SqliteIndexDB) -> None:
    _read_once(db)  # this thread's own read connection is part of the baseline
    baseline, baseline_wal = _index_fds(db), _index_fds(db, "-wal")
    assert baseline_wal == 2  # the writer and this thread's reader: one -wal each
    for _ in range(50 // CONCURRENT):  # 50 threads, like associations coming and going
        threads = [threading.Thread(target=_read_once, args=(db,)) for _ in range(CONCURRENT)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    # Every open connection holds its own -wal descriptor, so that count is exact. On
    # index.db itself SQLite defers closing a descriptor while another connection holds
    # a POSIX lock on the file (closing it would drop that lock) and reuses it for the
    # next open, so up to one per concurrent reader may linger; 50 leaked connections
    # would be 100 descriptors.
    assert _wait_until(lambda: _index_fds(db, "-wal") == baseline_wal), (
        f"{_index_fds(db, '-wal')} -wal descriptors after 50 reader threads exited, "
        f"{baseline_wal} before"
    )
    assert _index_fds(db) <= baseline + CONCURRENT
    assert len(db._readers) == 1
    _read_once(db)  # the surviving thread still reads through its own connection
    db.close()
    assert _index_fds(db) == 0


def test_close_closes_the_connections_of_live_threads(db: SqliteIndexDB) -> None:
    started = threading.Barrier(4)
    release = threading.Event()

    def reader() -> None:
        _read_once(db)
        started.wait()
        release.wait()

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        started.wait()
        assert _index_fds(db) >= 4  # the writer and the three readers at least
        db.close()
        assert _index_fds(db) == 0
    finally:
        release.set()
        for t in threads:
            t.join()


def test_a_live_threads_connection_survives_other_threads_exiting(db: SqliteIndexDB) -> None:
    """Reclaiming the connections of exited threads never touches one still in use."""
    inside = threading.Event()
    others_done = threading.Event()
    result: list[tuple[int, int] | BaseException] = []

    def long_reader() -> None:
        try:
            with db.read() as conn:
                first = conn.one("SELECT COUNT(*) FROM index_migrations")[0]
                inside.set()
                assert others_done.wait(10)
                # The same connection, mid-use, after 20 other readers came and went.
                second = conn.one("SELECT COUNT(*) FROM index_migrations")[0]
            _read_once(db)
            result.append((first, second))
        except BaseException as exc:  # reported by the main thread
            result.append(exc)

    keeper = threading.Thread(target=long_reader)
    keeper.start()
    try:
        assert inside.wait(10)
        for _ in range(20):
            t = threading.Thread(target=_read_once, args=(db,))
            t.start()
            t.join()
        others_done.set()
    finally:
        others_done.set()
        keeper.join()
    assert len(result) == 1
    outcome = result[0]
    assert not isinstance(outcome, BaseException), outcome
    first, second = outcome
    assert first == second >= 1
