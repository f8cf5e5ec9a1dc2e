"""The blob store: instance files under ``DATA_DIR/blobs``, written atomically.

A file reaches its final name only by ``rename`` after ``fsync``, and the directory is
fsynced after the rename, so after a crash a final name always holds a complete
instance. Paths derive from the (validated) SOP Instance UID, spread over 4096
folders by a hash so that no folder grows huge.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from pacsd.server.storage.uids import require_uid

log = logging.getLogger("pacsd.core.storage")

#: The bucket folders: the first three hex digits of the SHA-1 of the UID.
BUCKETS = tuple(f"{n:03x}" for n in range(4096))


class BlobStore:
    def __init__(self, data_dir: Path) -> None:
        self.root = (data_dir / "blobs").resolve()
        self.tmp = (data_dir / "tmp").resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        #: Bucket folders known to exist with a durable entry in the root (they are
        #: never removed while the store is open).
        self._buckets: set[str] = set()

    def prepare_buckets(self, chunk: int = 256) -> int:
        """Create every missing bucket folder ahead of need; returns how many were made.

        On a young store nearly every instance lands in a bucket that does not exist
        yet, and ``commit`` then pays a ``mkdir`` and an fsync of the root on the
        peer's time (~0.3 ms each time here). Run once at startup, off the serving
        threads (``open_archive``): the folders already listed become known after one
        fsync of the root makes their entries durable, the missing ones are made in
        chunks, each chunk known once the root's fsync after it returns. ``commit``
        still creates a bucket it needs before this got to it.
        """
        listed = {entry.name for entry in os.scandir(self.root) if entry.is_dir()}
        fsync_dir(self.root)
        self._buckets.update(listed)
        missing = [name for name in BUCKETS if name not in listed]
        for start in range(0, len(missing), chunk):
            names = missing[start : start + chunk]
            for name in names:
                os.makedirs(self.root / name, exist_ok=True)
            fsync_dir(self.root)
            self._buckets.update(names)
        return len(missing)

    def path_for(self, sop_instance_uid: str) -> Path:
        uid = require_uid(sop_instance_uid, "SOP Instance UID")
        bucket = hashlib.sha1(uid.encode(), usedforsecurity=False).hexdigest()[:3]
        path = self.root / bucket / f"{uid}.dcm"
        # Belt and braces: a validated UID cannot escape, but never write outside root.
        if path.parent.parent != self.root:
            raise ValueError(f"refusing path outside the blob store: {path}")
        return path

    def commit(self, tmp_path: Path, sop_instance_uid: str, fd: int | None = None) -> Path:
        """Make a complete temporary file durable under its final name (replacing any).

        ``fd``: a descriptor of the file the caller still holds open, fsynced instead
        of opening the file again.

        A new bucket folder is created before the file's fsync and the root fsynced
        after it: the file's fsync commits the file system's journal with the new
        folder in it (ext4), so the root's fsync finds nothing left to write, where
        creating the folder after the fsync cost a second journal commit per instance
        on a young store (most instances land in a new bucket until the 4096 exist).
        """
        final = self.path_for(sop_instance_uid)
        bucket = final.parent
        new_bucket = bucket.name not in self._buckets
        if new_bucket:
            bucket.mkdir(exist_ok=True)
        if fd is not None:
            os.fsync(fd)
        else:
            _fsync_file(tmp_path)
        if new_bucket:
            fsync_dir(self.root)
            self._buckets.add(bucket.name)
        os.rename(tmp_path, final)
        fsync_dir(bucket)
        return final

    def place(self, tmp_path: Path, sop_instance_uid: str) -> Path:
        """Rename a complete temporary file to its final name, with no fsync.

        Only for a file whose bytes the store journal holds (journal.py): a crash of the
        operating system before the next checkpoint may lose the file or its name, and
        the replay then writes it again from the journal.
        """
        final = self.path_for(sop_instance_uid)
        if final.parent.name not in self._buckets:
            final.parent.mkdir(exist_ok=True)
        os.rename(tmp_path, final)
        return final

    def sync(self, path: Path) -> None:
        """Make a file placed by ``place`` durable (fsync it, then its folder)."""
        _fsync_file(path)
        fsync_dir(path.parent)
        if path.parent.name not in self._buckets:  # made by ``place``, not yet durable
            fsync_dir(self.root)

    def write_temp(self, data: bytes) -> Path:
        """Write bytes to a new temporary file (for datasets that arrived in memory)."""
        path = self.tmp / f"w-{os.getpid()}-{os.urandom(6).hex()}.part"
        try:
            with path.open("wb") as fh:
                fh.write(data)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path

    def delete(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            return
        fsync_dir(path.parent)

    def files(self) -> Iterator[Path]:
        """Every instance file, for reconciliation and rebuilds (``scandir``: a prepared
        store has 4096 folders, mostly empty on a young one)."""
        buckets = sorted(entry.path for entry in os.scandir(self.root) if entry.is_dir())
        for bucket in buckets:
            names = sorted(
                entry.name for entry in os.scandir(bucket) if entry.name.endswith(".dcm")
            )
            yield from (Path(bucket, name) for name in names)

    def clean_tmp(self) -> int:
        """Remove leftovers of transfers that never completed; returns how many."""
        removed = 0
        for leftover in self.tmp.glob("*.part"):
            try:
                leftover.unlink()
                removed += 1
            except OSError as exc:
                log.warning("cannot remove %s: %s", leftover, exc)
        return removed


def fsync_dir(path: Path) -> None:
    """fsync a folder, so that the names just made or removed in it are durable."""
    _fsync_file(path, os.O_DIRECTORY)


def _fsync_file(path: Path, flags: int = 0) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
