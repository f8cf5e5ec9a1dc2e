"""The blob store: instance files under ``DATA_DIR/blobs``, written atomically.

A file reaches its final name only by ``rename`` after ``fsync``, and the directory is
fsynced after the rename, so after a crash a final name always holds a complete
instance. Paths derive from the (validated) SOP Instance UID, spread over 4096
folders by a hash so that no folder grows huge.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        #: Each bucket's path, made once: joining and comparing paths with pathlib was
        #: ~7 % of the Python time of a small C-STORE (py-spy --gil, bench/README.md).
        self._bucket_paths = {name: self.root / name for name in BUCKETS}

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
        return self._locate(sop_instance_uid)[1]

    def _locate(self, sop_instance_uid: str) -> tuple[str, Path]:
        """The bucket's name and the file's path."""
        uid = require_uid(sop_instance_uid, "SOP Instance UID")
        # Belt and braces: a validated UID (digits and dots, no empty component) names
        # no folder, but never write outside the root.
        if "/" in uid or uid.startswith("."):
            raise ValueError(f"refusing path outside the blob store: {uid!r}")
        bucket = hashlib.sha1(uid.encode(), usedforsecurity=False).hexdigest()[:3]
        return bucket, self._bucket_paths[bucket] / f"{uid}.dcm"

    def commit(self, tmp_path: Path, sop_instance_uid: str, fd: int | None = None) -> Placed:
        """Make a complete temporary file durable under its final name (replacing any).

        ``fd``: a descriptor of the file the caller still holds open, fsynced instead
        of opening the file again.

        A new bucket folder is created before the file's fsync and the root fsynced
        after it: the file's fsync commits the file system's journal with the new
        folder in it (ext4), so the root's fsync finds nothing left to write, where
        creating the folder after the fsync cost a second journal commit per instance
        on a young store (most instances land in a new bucket until the 4096 exist).
        """
        name, final = self._locate(sop_instance_uid)
        bucket = self._bucket_paths[name]
        new_bucket = name not in self._buckets
        if new_bucket:
            bucket.mkdir(exist_ok=True)
        if fd is not None:
            os.fsync(fd)
        else:
            _fsync_file(tmp_path)
        if new_bucket:
            fsync_dir(self.root)
            self._buckets.add(name)
        placed = self._move_in(tmp_path, final, fd)
        try:
            fsync_dir(bucket)
        except OSError:
            with suppress(OSError):  # the caller fails: the old version (or none) stays
                self.take_back(placed)
            raise
        return placed

    def place(self, tmp_path: Path, sop_instance_uid: str, fd: int | None = None) -> Placed:
        """Rename a complete temporary file to its final name, with no fsync.

        Only for a file whose bytes the store journal holds (journal.py): a crash of the
        operating system before the next checkpoint may lose the file or its name, and
        the replay then writes it again from the journal. ``fd``: a descriptor of the
        file the caller still holds open (it identifies the file, see ``take_back``).
        """
        name, final = self._locate(sop_instance_uid)
        if name not in self._buckets:
            self._bucket_paths[name].mkdir(exist_ok=True)
        return self._move_in(tmp_path, final, fd)

    def _move_in(self, tmp_path: Path, final: Path, fd: int | None = None) -> Placed:
        """Rename a file to its final name; a version already there keeps a second
        name in ``tmp`` (``Placed.kept``).

        If the store of the new version then fails (its index commit, its flush), the
        file under ``final`` would be the new one while the row, and the success the
        peer was told, are the old one's: ``put_back`` restores it, ``forget`` drops the
        name once the new version stands. A name a crash leaves ends in ``.part`` and
        goes at startup (``clean_tmp``). A new instance costs nothing more: the rename
        is told not to replace (``renameat2``), and only when it finds a file does the
        old one get its second name before the plain rename.
        """
        # The caller's descriptor identifies the file later, if ever needed (``take_back``);
        # without one, its identity is read now, while the temporary name still holds it.
        source: int | tuple[int, int] = fd if fd is not None else _ident(os.stat(tmp_path))
        if _rename_noreplace(tmp_path, final):
            return Placed(final, None, source)
        with self._guard(final):  # not while a failed store takes its own file back
            kept = self._temp_name("prev")
            try:
                os.link(final, kept)
            except FileNotFoundError:  # deleted meanwhile: nothing to keep
                os.rename(tmp_path, final)
                return Placed(final, None, source)
            try:
                os.rename(tmp_path, final)
            except BaseException:
                kept.unlink(missing_ok=True)
                raise
        return Placed(final, kept, source)

    @contextmanager
    def _guard(self, final: Path) -> Iterator[None]:
        """Serialise replacing ``final`` with taking a file back from it, between the
        threads and the processes of this store (``flock`` on the bucket folder, taken
        only when a file is replaced or taken back, never by a new instance)."""
        fd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # (releases the lock)

    def take_back(self, placed: Placed) -> str:
        """Undo ``place``/``commit`` for a store that failed, durably: the version it
        replaced (``kept``) comes back under the final name, or the name goes if there
        was none. Only while that name still holds this store's own file: another store
        of the same instance (another association or worker) may have replaced it since,
        and that version, the one its peer was told was stored, stays.

        Returns ``"back"`` (the kept version is back), ``"removed"`` (there was none:
        nothing is under the name now) or ``"replaced"`` (another store's file is there).

        A store that replaced this one's file and is still running keeps this file as
        *its* previous version. That store may fail too: what it must then bring back
        is the version this one replaced, not this failed one. So the version this store
        kept is handed over under that store's kept name (``rename``), or, if this
        store replaced nothing, that name is removed, and that store's ``take_back``
        then removes the instance.
        """
        with self._guard(placed.final):
            try:
                ours = _ident(os.lstat(placed.final)) == placed.ident()
            except FileNotFoundError:
                ours = False
            if not ours:
                self._hand_over(placed)
                return "replaced"
            if placed.kept is None or not placed.kept.exists():
                placed.final.unlink()
                fsync_dir(placed.final.parent)
                return "removed"
            self.put_back(placed.kept, placed.final)
            return "back"

    def _hand_over(self, placed: Placed) -> None:
        """Give the version ``placed`` kept to the running store that keeps ``placed``'s
        file as its previous version (see ``take_back``; under ``_guard``)."""
        ident = placed.ident()
        successor = None
        for name in self.tmp.glob("prev-*.part"):
            try:
                if name != placed.kept and _ident(os.lstat(name)) == ident:
                    successor = name
                    break
            except FileNotFoundError:
                continue
        if successor is None:  # that store is done (it stands) or there was none
            self.forget(placed.kept)
            return
        if placed.kept is not None:
            try:
                os.rename(placed.kept, successor)
                return
            except FileNotFoundError:  # a failed store before this one took it: none
                pass
        successor.unlink(missing_ok=True)

    def _temp_name(self, kind: str) -> Path:
        """A new name in ``tmp``; ``.part``, so that ``clean_tmp`` removes a leftover."""
        return self.tmp / f"{kind}-{os.getpid()}-{os.urandom(6).hex()}.part"

    def put_back(self, kept: Path, final: Path) -> None:
        """Make the version ``Placed.kept`` kept the one under ``final`` again, durably.

        If the new version never got there, both names are links to the old file and
        ``rename`` does nothing: the kept name is then removed here.
        """
        os.rename(kept, final)
        kept.unlink(missing_ok=True)
        fsync_dir(final.parent)

    def forget(self, kept: Path | None) -> None:
        """Drop the kept name of a version the new one replaced for good (no fsync: if a
        crash keeps the name, startup removes it)."""
        if kept is not None:
            try:
                kept.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove %s: %s", kept, exc)

    def sync(self, path: Path) -> None:
        """Make a file placed by ``place`` durable (fsync it, then its folder)."""
        _fsync_file(path)
        fsync_dir(path.parent)
        if path.parent.name not in self._buckets:  # made by ``place``, not yet durable
            fsync_dir(self.root)

    def write_temp(self, data: bytes) -> Path:
        """Write bytes to a new temporary file (for datasets that arrived in memory)."""
        path = self._temp_name("w")
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


@dataclass(frozen=True)
class Placed:
    """Where ``place``/``commit`` put a file, and the second name of the version it
    replaced (None: there was none)."""

    final: Path
    kept: Path | None
    #: The placed file itself, for ``take_back``: the descriptor the caller still holds
    #: open until the store is over, or (st_dev, st_ino) when it gave none.
    source: int | tuple[int, int]

    def ident(self) -> tuple[int, int]:
        """(st_dev, st_ino) of the placed file."""
        if isinstance(self.source, tuple):
            return self.source
        return _ident(os.fstat(self.source))


def _ident(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _load_renameat2() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # pragma: no cover - glibc has it since 2.28
        return None


_renameat2 = _load_renameat2()


def _rename_noreplace(src: Path, dst: Path) -> bool:
    """Rename ``src`` to ``dst`` unless ``dst`` exists (then False, nothing moved)."""
    global _renameat2
    if _renameat2 is not None:
        old, new = os.fsencode(src), os.fsencode(dst)
        if _renameat2(_AT_FDCWD, old, _AT_FDCWD, new, _RENAME_NOREPLACE) == 0:
            return True
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            return False
        if err not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(err, os.strerror(err), str(src), None, str(dst))
        _renameat2 = None  # this file system cannot: look first from now on
    if os.path.lexists(dst):
        return False
    os.rename(src, dst)
    return True


def fsync_dir(path: Path) -> None:
    """fsync a folder, so that the names just made or removed in it are durable."""
    _fsync_file(path, os.O_DIRECTORY)


def _fsync_file(path: Path, flags: int = 0) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
