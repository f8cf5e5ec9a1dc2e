"""The archive's use of the store journal when things go wrong, on real files.

An operating-system crash is simulated faithfully enough to matter: every instance
file written after the last completed flush (``Archive.flush``: ``syncfs`` + index)
is lost, and so is the index; then the archive is opened again, which replays the
journals and reconciles. Each test is one way an acknowledged version could be lost or
a failed or deleted one brought back.
"""

from __future__ import annotations

import errno
import io
import os
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pacsd.addin.storage import OnDuplicate, StoreOutcome
from pacsd.server.storage.archive import Archive
from pacsd.server.storage.blobs import BlobStore
from pacsd.server.storage.index.db import open_index_db
from pacsd.server.storage.index.repository import Index
from pacsd.server.storage.journal import (
    Epochs,
    JournalError,
    JournalReplayFailed,
    Record,
    latest_per_instance,
)
from pydicom.dataset import Dataset

from tests import corpus

UID = "1.2.826.0.1.3680043.9.99.1"


class FakeSpool:
    """What the engine's spool hands the archive: the file, its head, its size."""

    def __init__(self, path: Path, data: bytes) -> None:
        path.write_bytes(data)
        self.head = bytearray(data[: 64 * 1024])
        self.size = len(data)
        self._fd = os.open(path, os.O_RDONLY)

    def fileno(self) -> int:
        return self._fd

    def moved(self, final: Path) -> None:
        pass


class Crashable:
    """An archive on ``data`` that remembers when its last flush completed."""

    def __init__(self, data: Path, replay: bool = True, journal: bool = True) -> None:
        self.data = data
        self.archive = Archive(BlobStore(data), Index(open_index_db("", data)))
        #: Each file as the last completed flush left it: what survives the crash.
        self.durable: dict[Path, tuple[int, int, int]] = {}
        flush = self.archive.flush

        def recorded_flush() -> None:
            flush()
            self.durable = {p: _identity(p) for p in self.archive.blobs.files()}

        self.archive.flush = recorded_flush  # type: ignore[method-assign]
        self.archive.open_journal(data / "journal", 1024 * 1024, replay=replay, enable=journal)
        self.archive.reconcile()

    def store(self, ds: Dataset) -> tuple[int, bytes]:
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        data = buf.getvalue()
        tmp = self.archive.blobs.tmp / f"t{time.monotonic_ns()}.part"
        spool = FakeSpool(tmp, data)
        req: Any = types.SimpleNamespace(
            sop_instance_uid=str(ds.SOPInstanceUID), sop_class_uid=str(ds.SOPClassUID)
        )
        try:
            out: StoreOutcome = self.archive._store_file(req, tmp, OnDuplicate.OVERWRITE, spool)
        finally:
            os.close(spool.fileno())
            tmp.unlink(missing_ok=True)
        return out.status, data

    def crash(self) -> None:
        """The OS goes down: unflushed files and the index are lost, locks released."""
        a = self.archive
        if a.journal is not None:
            os.close(a.journal._fd)
        if a._epochs is not None:
            os.close(a._epochs._fd)
        for path in a.blobs.files():
            if self.durable.get(path) != _identity(path):
                path.unlink()
        for name in ("index.db", "index.db-wal", "index.db-shm"):
            (self.data / name).unlink(missing_ok=True)

    def file(self, uid: str = UID) -> bytes | None:
        path = self.archive.blobs.path_for(uid)
        return path.read_bytes() if path.exists() else None


def _identity(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


def _failing(code: int) -> Callable[..., Any]:
    """A stand-in for a disk call that fails with ``code`` (ENOSPC, EIO...)."""

    def fail(*_: object, **__: object) -> Any:
        raise OSError(code, os.strerror(code))

    return fail


def _version(name: str, pixels: int = 32, uid: str = UID) -> Dataset:
    return corpus.instance(sop_uid=uid, patient_name=name, pixels=pixels)


def test_an_acknowledged_small_instance_survives_the_crash(tmp_path: Path) -> None:
    node = Crashable(tmp_path)
    status, data = node.store(_version("ONE"))
    assert status == 0
    node.crash()
    assert Crashable(tmp_path).file() == data  # lost with the crash, back from the journal


def test_a_version_stored_after_the_journal_failed_is_not_rolled_back(tmp_path: Path) -> None:
    node = Crashable(tmp_path)
    assert node.store(_version("OLD"))[0] == 0
    assert node.archive.journal is not None
    node.archive.journal._broken = True  # what a failed fdatasync leaves
    status, newer = node.store(_version("NEWER"))
    assert status == 0
    node.crash()
    assert Crashable(tmp_path).file() == newer, "the old record was replayed over it"


@pytest.mark.parametrize(
    ("failing", "error", "pixels"),
    [("place", errno.ENOSPC, 32), ("commit", errno.EIO, 400)],
    ids=[
        "a small store that failed after its record is not replayed",
        "a failed large overwrite does not cost the acknowledged version",
    ],
)
def test_a_store_that_failed_leaves_the_acknowledged_version_after_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str, error: int, pixels: int
) -> None:
    node = Crashable(tmp_path)
    status, older = node.store(_version("OLD"))
    assert status == 0

    monkeypatch.setattr(node.archive.blobs, failing, _failing(error))
    assert node.store(_version("FAILED", pixels=pixels))[0] == 0xA700
    node.crash()
    assert Crashable(tmp_path).file() == older


def test_a_replay_that_fails_keeps_the_journals_and_stops_the_startup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = Crashable(tmp_path)
    status, data = node.store(_version("ONE"))
    assert status == 0
    node.crash()

    with monkeypatch.context() as patch:
        patch.setattr(BlobStore, "commit", _failing(errno.ENOSPC))
        with pytest.raises(JournalReplayFailed, match="kept"):
            Crashable(tmp_path)
    assert list((tmp_path / "journal").glob("*.journal")), "the journal was thrown away"
    assert Crashable(tmp_path).file() == data  # space again: the next start restores it


def test_a_delete_by_a_process_without_a_journal_is_not_undone(tmp_path: Path) -> None:
    """Another process (here: an archive whose journal could not be made) deletes."""
    node = Crashable(tmp_path)
    assert node.store(_version("DOOMED"))[0] == 0
    other = Crashable(tmp_path, replay=False, journal=False)
    assert other.archive.journal is None and other.archive._epochs is not None
    assert [i.sop_instance_uid for i in other.archive.delete("instance", UID)] == [UID]
    node.crash()
    assert Crashable(tmp_path).file() is None, "the deleted instance came back"


def test_the_newer_epoch_wins_whatever_the_times_say() -> None:
    older = Record(seq=7, epoch=1, time_ns=500, sop_instance_uid=UID, data=b"old")
    newer = Record(seq=1, epoch=2, time_ns=100, sop_instance_uid=UID, data=b"new")
    assert latest_per_instance([newer, older])[UID].data == b"new"


def test_after_a_failed_flush_no_epoch_is_marked_synced_again(tmp_path: Path) -> None:
    epochs = Epochs(tmp_path)

    with pytest.raises(OSError, match="Input/output"):
        epochs.advance(_failing(errno.EIO))
    with pytest.raises(JournalError, match="earlier flush failed"):
        epochs.advance(lambda: None)  # the kernel would now report success: not trusted
    assert epochs.synced_through() == 0


def test_the_journal_reports_itself_unhealthy_once_a_flush_failed(tmp_path: Path) -> None:
    node = Crashable(tmp_path)
    assert node.store(_version("ONE"))[0] == 0
    stats = node.archive.journal_stats()
    assert stats is not None and stats["records"] == 1 and stats["healthy"] == 1
    assert node.archive._epochs is not None
    node.archive._epochs.failed = OSError(errno.EIO, "Input/output error")
    stats = node.archive.journal_stats()
    assert stats is not None and stats["healthy"] == 0
    # ...and means it: the next store cannot be made durable, and says so.
    node.archive.journal._broken = True  # type: ignore[union-attr]
    assert node.store(_version("TWO"))[0] == 0xA700


def test_a_closed_journal_takes_no_checkpoint(tmp_path: Path) -> None:
    node = Crashable(tmp_path)
    journal = node.archive.journal
    assert journal is not None
    node.archive.close()
    with pytest.raises(JournalError, match="closed"):
        journal.checkpoint()


@pytest.mark.parametrize("pixels", [32, 400], ids=["small", "large"])
def test_an_overwrite_whose_index_commit_fails_keeps_the_acknowledged_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pixels: int
) -> None:
    """The new file had already replaced the old one under the same name: deleting it
    lost the version the peer was told was stored, while its row stayed."""
    node = Crashable(tmp_path)
    status, older = node.store(_version("OLD", pixels=pixels))
    assert status == 0

    with monkeypatch.context() as patch:
        patch.setattr(node.archive.committer, "add", _failing(errno.EIO))
        assert node.store(_version("NEWER", pixels=pixels))[0] == 0xA700
    assert node.file() == older, "the acknowledged version's file is gone"
    row = node.archive.instance(UID)
    assert row is not None and row.path.read_bytes() == older
    assert not list(node.archive.blobs.tmp.iterdir()), "the kept version was left in tmp/"
    node.crash()
    assert Crashable(tmp_path).file() == older


@pytest.mark.parametrize("pixels", [32, 400], ids=["small", "large"])
@pytest.mark.parametrize("before", ["new", "overwrite"])
def test_a_failed_store_keeps_the_version_another_worker_stored_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pixels: int, before: str
) -> None:
    """Two workers store the same instance at once, and the first one's index commit
    fails after the second replaced its file: taking the first one's file back (or
    putting back the version it had replaced) deleted or overwrote the version the
    second worker's peer was told was stored."""
    node = Crashable(tmp_path)
    other = Crashable(tmp_path)  # another worker on the same data folder
    if before == "overwrite":
        assert node.store(_version("OLD", pixels=pixels))[0] == 0
    theirs: list[bytes] = []

    def commit_after_the_other_worker_stored(*_: object, **__: object) -> None:
        status, data = other.store(_version("OTHER", pixels=pixels))
        assert status == 0
        theirs.append(data)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(node.archive.committer, "add", commit_after_the_other_worker_stored)
    assert node.store(_version("FIRST", pixels=pixels))[0] == 0xA700
    assert node.file() == theirs[0], "the other worker's acknowledged version is gone"
    row = other.archive.instance(UID)
    assert row is not None and row.path.read_bytes() == theirs[0]
    assert not list(node.archive.blobs.tmp.iterdir()), "a second name was left in tmp/"


@pytest.mark.parametrize("pixels", [32, 400], ids=["small", "large"])
@pytest.mark.parametrize("before", ["new", "overwrite"])
def test_two_overlapping_stores_that_both_fail_leave_what_was_there_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pixels: int, before: str
) -> None:
    """Two workers store the same instance at once; the first one's index commit fails
    while the second is still storing, then the second one's fails too. Both peers are
    told the store failed, so the version from before both (or no instance) must be
    what stays: the second one used to put back the first one's failed version as its
    "previous" one."""
    node = Crashable(tmp_path)
    other = Crashable(tmp_path)  # another worker on the same data folder
    older = node.store(_version("OLD", pixels=pixels))[1] if before == "overwrite" else None
    other_placed, node_failed = threading.Event(), threading.Event()
    statuses: list[int] = []

    def other_commit_fails_after_node(*_: object, **__: object) -> None:
        other_placed.set()
        assert node_failed.wait(10)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(other.archive.committer, "add", other_commit_fails_after_node)
    second = threading.Thread(
        target=lambda: statuses.append(other.store(_version("SECOND", pixels=pixels))[0])
    )

    def node_commit_fails_while_other_stores(*_: object, **__: object) -> None:
        second.start()
        assert other_placed.wait(10)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(node.archive.committer, "add", node_commit_fails_while_other_stores)
    try:
        assert node.store(_version("FIRST", pixels=pixels))[0] == 0xA700
    finally:
        node_failed.set()
        second.join(10)
    assert statuses == [0xA700]
    assert node.file() == older, "the version from before both stores is gone"
    row = node.archive.instance(UID)
    if older is None:
        assert row is None
    else:
        assert row is not None and row.path.read_bytes() == older
    assert not list(node.archive.blobs.tmp.iterdir()), "a second name was left in tmp/"


def test_an_overwrite_that_cannot_be_made_durable_puts_the_stored_version_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint began after the new version's record, and the flush it then needs
    fails: the answer is a failure, so the old version must be what stays, file and row."""
    node = Crashable(tmp_path)
    status, older = node.store(_version("OLD"))
    assert status == 0

    with monkeypatch.context() as patch:
        patch.setattr(node.archive, "_epoch_moved", lambda epoch: True)
        patch.setattr(node.archive.index.db, "flush", _failing(errno.EIO))
        patch.setattr(node.archive, "_retire_records", lambda: None)  # it would flush too
        assert node.store(_version("NEWER"))[0] == 0xA700
    assert node.file() == older
    row = node.archive.instance(UID)
    assert row is not None and row.path.read_bytes() == older
