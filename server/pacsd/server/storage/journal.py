"""The store journal: one device flush makes a C-STORE durable, instead of three.

Without it every instance waits for three flushes in a row: the file's fsync, its
folder's fsync after the rename, and the index commit's (SQLite ``synchronous=FULL``).
On this project's machines those are ~0.8 ms of a ~1.5 ms small C-STORE, while an
``fdatasync`` of a write into a file whose blocks already exist costs ~0.1 ms (no
metadata to write: bench/README.md, sixth round). So each engine process appends a
record for every stored instance to its own preallocated journal file and flushes that:

- an instance small enough to be held whole in memory (the spool's ``head``) is
  journalled with its bytes, and the record is on the device *before* the file is
  renamed into place (without an fsync) and its index row committed (without one: the
  index runs ``synchronous=NORMAL``);
- a larger one is written durably as before (fsync, rename, folder fsync), and only
  then gets a record without bytes, which stands in for the index commit's flush.

**Checkpoints** make records unnecessary: open a new *epoch* in the shared epoch file,
flush the data file system (``syncfs``) and the index, then mark the old epoch synced.
Every record names the epoch current when it was written. The C-STORE writes its record,
then renames the file and commits the row, then looks at the epoch again: if it moved,
a checkpoint's flush may have come too early for them, and the C-STORE flushes its own
file and the index (``epoch_moved``; rare). Otherwise the flush that follows
the opening of the next epoch covers them. So once epoch *e* is marked synced, no record
of epoch *e* or older, in any process, is needed, and each process reuses its ring from
its first record of a newer epoch. A process checkpoints when half its ring is used (on
a helper thread), when it runs out of room, when it closes, and the archive takes one after
a delete (so that a replay never brings a deleted instance back) and after a C-STORE
that failed past its record (so that a replay does not store what the peer was told
had failed). A flush that fails is never trusted again: the kernel reports a writeback
error once, so no epoch is marked synced after it, and the process's stores answer
0xA700 until a restart.

**Replay** (startup, before any worker runs and before the index is reconciled): the
records of every journal no live process holds, newer than the synced epoch, are
applied in order (epoch, then ``CLOCK_MONOTONIC``): the last record of a UID wins; with
bytes it rewrites the file durably, and either way the UID is indexed again (its row
may have been lost, or be the row of an older version). Writing the record before the
rename also means that a file torn by the crash under its final name is rewritten
whole. A replay that cannot write a file stops the startup and keeps the journals.
Only the operating system crashing (or power loss) can lose what the journal protects:
a process that dies leaves its files and rows in the page cache, so a worker that finds
a dead worker's journal only checkpoints and removes it.

The layout is deliberately plain. A journal file: a 4 KiB header holding two slots
(written alternately, so a torn write leaves the other) with the ring's start; then
records, each ``magic, seq, epoch, time, uid length, data length, crc32`` + UID + data,
8-byte aligned. They are written with ``O_DIRECT`` where the file system allows
(``block_writer.py``), so the ``fdatasync`` has only the device's cache to flush; the
ring keeps a block free for the zeros a direct write adds after its record. Sequence
numbers are consecutive, so a record left from the ring's previous lap, or one torn by
a crash, ends the replay.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pacsd.server.storage.blobs import fsync_dir
from pacsd.server.storage.block_writer import ALIGN, SLACK, BlockWriter

log = logging.getLogger("pacsd.core.storage")

SUFFIX = ".journal"
#: Default size of one process's journal (the ``store_journal_mb`` setting).
DEFAULT_SIZE = 8 * 1024 * 1024
HEADER_SIZE = 4096
_SLOT_SIZE = 512
_SLOT = struct.Struct("<8sQQQI")  # magic, counter, start position, start seq, crc
_SLOT_MAGIC = b"PACSDJH1"
_REC = struct.Struct("<4sQQQHII")  # magic, seq, epoch, time (ns), uid len, data len, crc
_REC_MAGIC = b"PJR1"
_WRAP_MAGIC = b"PJRW"  # "the next record is at the ring's start"
_U64 = struct.Struct("<Q")
_ZEROS = bytes(1024 * 1024)


class JournalError(OSError):
    """The journal cannot take this record (larger than half the ring, closed, or
    failed), or no checkpoint can be trusted any more."""


class JournalReplayFailed(Exception):
    """Startup could not apply a crashed process's journal (kept for the next try)."""


@dataclass(frozen=True)
class Record:
    seq: int
    epoch: int
    #: ``CLOCK_MONOTONIC`` when written: every unsynced record is of the current boot
    #: (a replay retires the previous boot's before any new record is written).
    time_ns: int
    sop_instance_uid: str
    #: The instance file's bytes; empty when the file was made durable before the record.
    data: bytes


def syncfs(fd: int) -> None:
    """Flush every dirty page and inode of the file system holding the open ``fd``.

    One call instead of an fsync per file and folder written since the last checkpoint.
    It reports writeback errors (Linux 5.8+), which a plain ``sync`` does not, but only
    those since ``fd`` was opened: the caller keeps one descriptor for its lifetime.
    """
    if _LIBC is None:  # pragma: no cover - glibc always has it
        os.sync()
    elif _LIBC.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"syncfs: {os.strerror(err)}")


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syncfs.argtypes = [ctypes.c_int]
        return libc
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return None


_LIBC = _libc()


class Epochs:
    """The epoch file shared by every process of one data folder: two counters, the
    epoch records are written in now and the newest epoch known to be flushed."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        #: Epochs this process opened (checkpoints of any cause; metrics).
        self.advances = 0
        #: A flush failed: the kernel reports a writeback error once, so a later flush
        #: that succeeds proves nothing about the pages lost; no epoch is marked synced
        #: again by this process (its stores answer 0xA700 until a restart).
        self.failed: OSError | None = None
        path = folder / "epoch"
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if os.fstat(self._fd).st_size < 2 * _U64.size:
                os.pwrite(self._fd, _U64.pack(1) + _U64.pack(0), 0)
                os.fsync(self._fd)
                fsync_dir(folder)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def current(self) -> int:
        """The epoch a record written now belongs to (one 8-byte read, no lock)."""
        return int(_U64.unpack(os.pread(self._fd, _U64.size, 0))[0])

    def synced_through(self) -> int:
        return int(_U64.unpack(os.pread(self._fd, _U64.size, _U64.size))[0])

    def advance(self, flush: Callable[[], None]) -> int:
        """Open a new epoch, run ``flush``, then mark the previous epoch synced.

        Serialised between processes by a lock on the file. Returns the synced epoch.
        """
        if self.failed is not None:
            raise JournalError(0, f"an earlier flush failed ({self.failed}); restart pacsd")
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            epoch = self.current()
            os.pwrite(self._fd, _U64.pack(epoch + 1), 0)
            try:
                flush()  # covers every record of ``epoch`` or older: written before the line above
                os.pwrite(self._fd, _U64.pack(epoch), _U64.size)
                os.fdatasync(self._fd)
                self.advances += 1
            except OSError as exc:
                self.failed = exc
                log.error(
                    "store journal checkpoint failed: %s; stores are refused until restart", exc
                )
                raise
            return epoch
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def _aligned(n: int) -> int:
    return (n + 7) & ~7


def _encode(seq: int, epoch: int, uid: bytes, data: bytes | memoryview) -> bytearray:
    when = time.monotonic_ns()  # one clock for every process of this boot; never steps
    head = _REC.pack(_REC_MAGIC, seq, epoch, when, len(uid), len(data), 0)
    crc = zlib.crc32(data, zlib.crc32(uid, zlib.crc32(head)))
    out = bytearray(_aligned(_REC.size + len(uid) + len(data)))
    _REC.pack_into(out, 0, _REC_MAGIC, seq, epoch, when, len(uid), len(data), crc)
    out[_REC.size : _REC.size + len(uid)] = uid
    out[_REC.size + len(uid) : _REC.size + len(uid) + len(data)] = data
    return out


def _wrap_marker(seq: int) -> bytes:
    head = _REC.pack(_WRAP_MAGIC, seq, 0, 0, 0, 0, 0)
    return _REC.pack(_WRAP_MAGIC, seq, 0, 0, 0, 0, zlib.crc32(head))


def _slot(counter: int, start: int, seq: int) -> bytes:
    body = _SLOT.pack(_SLOT_MAGIC, counter, start, seq, 0)
    return _SLOT.pack(_SLOT_MAGIC, counter, start, seq, zlib.crc32(body))


class StoreJournal:
    """This process's journal: ``append`` a record and return once it is on the device."""

    def __init__(
        self,
        folder: Path,
        epochs: Epochs,
        flush: Callable[[], None],
        size: int = DEFAULT_SIZE,
    ) -> None:
        self.folder = folder
        self._epochs = epochs
        self._flush = flush
        # Whole blocks, so that a direct write of the last one stays inside the file.
        self._size = max(-(-size // ALIGN) * ALIGN, HEADER_SIZE + 256 * 1024)
        self._capacity = self._size - HEADER_SIZE
        name = f"{os.getpid()}-{os.urandom(4).hex()}"
        # Made under another name and renamed once locked: a process looking for dead
        # processes' journals never sees one that is not locked yet.
        making = folder / f"{name}.new"
        self.path = folder / f"{name}{SUFFIX}"
        fd = os.open(making, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Every block written once, now: a later fdatasync then has no metadata to
            # write (writing into unallocated or unwritten blocks would have some).
            for offset in range(0, self._size, len(_ZEROS)):
                os.pwrite(fd, _ZEROS[: self._size - offset], offset)
            os.pwrite(fd, _slot(1, HEADER_SIZE, 1), _SLOT_SIZE)  # slot of counter 1
            os.fsync(fd)
            os.rename(making, self.path)
            fsync_dir(folder)
        except BaseException:
            os.close(fd)
            making.unlink(missing_ok=True)
            raise
        self._fd = fd
        self._writer = BlockWriter(self.path, fd)
        #: Free ring space a write may cover past its record (a direct write's zeros).
        self._slack = SLACK if self._writer.direct else 0
        self._counter = 1
        #: Guards the ring: where the next record goes, and what is still needed.
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        self._pos = HEADER_SIZE  # where the next record is written
        self._seq = 1  # its sequence number
        self._end = 0  # bytes appended since the file was made (wrap skips included)
        self._start = 0  # where, in the same count, the records still needed begin
        self._synced = 0  # how far an fdatasync has covered
        #: Where each epoch's records begin: (epoch, count, position, seq).
        self._marks: deque[tuple[int, int, int, int]] = deque()
        self._checkpointing = False
        self._background_thread: threading.Thread | None = None
        self._closed = False
        self._broken = False
        #: Records written and checkpoints taken (metrics and tests).
        self.records = 0
        self.checkpoints = 0

    # -- writing ----------------------------------------------------------------------

    def append(self, sop_instance_uid: str, data: bytes | memoryview = b"") -> int:
        """Write one record, wait until it is on the device, and return its epoch.

        Records of concurrent callers share one ``fdatasync`` when they meet. Raises
        ``JournalError`` for a record larger than half the ring, OSError if the device
        fails (the caller then makes the file durable itself, or fails the C-STORE).
        """
        uid = sop_instance_uid.encode("ascii")
        length = _aligned(_REC.size + len(uid) + len(data))
        if length > self._capacity // 2:
            raise JournalError(0, f"record of {length} bytes does not fit the journal")
        while True:
            with self._lock:
                if self._closed or self._broken:
                    raise JournalError(0, "the journal is closed or failed")
                wrap = self._pos + length > self._size  # also when exactly at the end
                skip = self._size - self._pos if wrap else 0
                if self._end - self._start + skip + length + self._slack <= self._capacity:
                    epoch, end = self._write(uid, data, wrap)
                    half_full = self._end - self._start > self._capacity // 2
                    break
            self.checkpoint()  # full: make the records written so far unnecessary
        self._sync(end)
        if half_full:
            self._checkpoint_soon()
        return epoch

    @property
    def used(self) -> int:
        """Bytes of the ring still holding needed records (metrics)."""
        with self._lock:
            return self._end - self._start

    @property
    def usable(self) -> bool:
        """Neither closed nor failed (metrics: a failed journal is bypassed)."""
        return not (self._closed or self._broken)

    def epoch_moved(self, epoch: int) -> bool:
        """Whether a checkpoint opened a newer epoch since a record of ``epoch`` was
        written: its flush may then have run before the caller renamed the file and
        committed the row the record stands for, so the caller flushes them itself."""
        return self._epochs.current() != epoch

    def _write(self, uid: bytes, data: bytes | memoryview, wrap: bool) -> tuple[int, int]:
        """Under ``_lock``: the pwrite comes before the next caller's, so an fdatasync
        that covers a record covers every record before it."""
        if wrap:
            skip = self._size - self._pos
            if skip >= _REC.size:
                self._writer.write(_wrap_marker(self._seq), self._pos)
                self._seq += 1
            self._end += skip
            self._pos = HEADER_SIZE
            self._writer.reset()
        epoch = self._epochs.current()
        if not self._marks or self._marks[-1][0] != epoch:
            self._marks.append((epoch, self._end, self._pos, self._seq))
        record = _encode(self._seq, epoch, uid, data)
        self._writer.write(record, self._pos)
        self._pos += len(record)
        self._end += len(record)
        self._seq += 1
        self.records += 1
        return epoch, self._end

    def _sync(self, end: int) -> None:
        with self._sync_lock:
            if self._synced >= end:
                return  # another caller's fdatasync covered this record
            if self._broken:
                raise JournalError(0, "the journal failed an earlier flush")
            with self._lock:
                target = self._end
            try:
                os.fdatasync(self._fd)
            except OSError:
                # After a failed flush the kernel may report the next one clean with the
                # data lost: this journal proves nothing any more (the archive then
                # flushes every instance itself).
                self._broken = True
                log.error("store journal %s failed a flush; no longer used", self.path.name)
                raise
            self._synced = target

    # -- checkpoints -----------------------------------------------------------------

    def checkpoint(self, *, closing: bool = False) -> None:
        """Flush the data and index (every process's records up to now become
        unnecessary), then move this ring's start past its own."""
        with self._checkpoint_lock:
            if self._fd < 0 or (self._closed and not closing):
                raise JournalError(0, "the journal is closed")
            synced = self._epochs.advance(self._flush)
            self.checkpoints += 1
            with self._lock:
                while self._marks and self._marks[0][0] <= synced:
                    self._marks.popleft()
                if self._marks:
                    _, start, position, seq = self._marks[0]
                else:
                    start, position, seq = self._end, self._pos, self._seq
            # The new start is on the device before any byte before it is reused.
            counter = self._counter + 1
            try:
                os.pwrite(self._fd, _slot(counter, position, seq), (counter % 2) * _SLOT_SIZE)
                os.fdatasync(self._fd)
            except OSError:
                self._broken = True
                raise
            self._counter = counter
            with self._lock:
                self._start = max(self._start, start)

    def _checkpoint_soon(self) -> None:
        with self._lock:
            if self._checkpointing or self._closed:
                return
            self._checkpointing = True
            self._background_thread = threading.Thread(
                target=self._background, name="pacsd-journal", daemon=True
            )
        self._background_thread.start()

    def _background(self) -> None:
        try:
            self.checkpoint()
        except Exception as exc:  # the next append that needs room tries again
            if not self._closed:
                log.error("journal checkpoint failed: %s", exc)
        finally:
            with self._lock:
                self._checkpointing = False

    def close(self) -> None:
        """Checkpoint and remove the file; if the checkpoint fails the file stays, and
        the next startup replays it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True  # no more records, no more background checkpoints
            background = self._background_thread
        if background is not None:
            background.join()
        try:
            self.checkpoint(closing=True)
        except OSError as exc:
            log.error("journal %s kept for the next startup: %s", self.path.name, exc)
        else:
            self.path.unlink(missing_ok=True)
        with self._checkpoint_lock:
            fd, self._fd = self._fd, -1
            self._writer.close()
        os.close(fd)


# -- after a crash ----------------------------------------------------------------------


def abandoned(folder: Path) -> Iterator[tuple[Path, int]]:
    """Journals no live process holds, each yielded open and locked (the caller closes)."""
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # removed by another process meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        yield path, fd
    for leftover in folder.glob("*.new"):  # a journal whose making was interrupted
        if not _alive(leftover.name.split("-")[0]):  # (locked only once made: ask the pid)
            leftover.unlink(missing_ok=True)


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def read_records(fd: int, newer_than: int) -> list[Record]:
    """The records of one journal, in order, of an epoch newer than ``newer_than``."""
    size = os.fstat(fd).st_size
    if size <= HEADER_SIZE:
        return []
    best: tuple[int, int, int] | None = None
    for slot in (0, _SLOT_SIZE):
        raw = os.pread(fd, _SLOT.size, slot)
        if len(raw) < _SLOT.size:
            continue
        magic, counter, start, seq, crc = _SLOT.unpack(raw)
        if magic != _SLOT_MAGIC or zlib.crc32(_SLOT.pack(magic, counter, start, seq, 0)) != crc:
            continue
        if best is None or counter > best[0]:
            best = (counter, start, seq)
    if best is None:
        log.error("journal with no readable header skipped")
        return []
    _, position, seq = best
    records: list[Record] = []
    travelled = 0
    capacity = size - HEADER_SIZE
    while travelled <= capacity:
        if size - position < _REC.size:  # no room for a marker: the writer wrapped here
            travelled += size - position
            position = HEADER_SIZE
            continue
        raw = os.pread(fd, _REC.size, position)
        magic, rseq, epoch, when, ulen, dlen, crc = _REC.unpack(raw)
        if rseq != seq:
            break  # the end, or a record of the ring's previous lap
        if magic == _WRAP_MAGIC:
            if zlib.crc32(_REC.pack(magic, rseq, 0, 0, 0, 0, 0)) != crc:
                break
            travelled += size - position
            position = HEADER_SIZE
            seq += 1
            continue
        length = _aligned(_REC.size + ulen + dlen)
        if magic != _REC_MAGIC or position + length > size:
            break
        body = os.pread(fd, ulen + dlen, position + _REC.size)
        head = _REC.pack(magic, rseq, epoch, when, ulen, dlen, 0)
        if len(body) != ulen + dlen or zlib.crc32(body, zlib.crc32(head)) != crc:
            break  # torn by a crash: never acknowledged
        if epoch > newer_than:
            uid = body[:ulen].decode("ascii", "replace")
            records.append(Record(rseq, epoch, when, uid, body[ulen:]))
        position += length
        travelled += length
        seq += 1
    return records


def latest_per_instance(records: list[Record]) -> dict[str, Record]:
    """The last record of each SOP instance, across journals (by time, then seq)."""
    latest: dict[str, Record] = {}
    for record in sorted(records, key=lambda r: (r.epoch, r.time_ns, r.seq)):
        latest[record.sop_instance_uid] = record
    return latest
