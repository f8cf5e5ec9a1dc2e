"""Appending to a preallocated file with ``O_DIRECT``: the store journal's writes.

A small C-STORE waits for its journal record to reach the device. Written through the
page cache, that is a ``pwrite`` (a copy into the page cache) and an ``fdatasync`` that
finds the dirty page, writes it back, waits, then flushes the device's cache. Written
direct, the ``pwrite`` itself hands the device the bytes and waits for them, and the
``fdatasync`` that follows has only the cache flush left to ask for. Alone (400 records
of 10 kB into a preallocated file): 115-145 µs and ~55 µs of CPU per record through the
page cache, 80-90 µs and ~25 µs direct (``O_DSYNC``); in the server (strace, small
instances): 257 µs against 232 µs for the write and the flush (bench/README.md, ninth
round). The flush is still what makes the record durable: a direct write is in the
device's cache when it returns, not on its medium.

Direct I/O writes whole aligned blocks from an aligned buffer, and records are packed
(8-byte aligned). So the block a record starts in is written again with the bytes the
file already holds before the record (the *tail*, mirrored here since the last write)
and zeros after its end. Rewriting those bytes with the same values cannot harm the
record they belong to, even if the write is torn, and the zeros land on free ring space
only: the caller reserves a block more than the record needs (``SLACK``).

File systems that refuse ``O_DIRECT`` (tmpfs) get plain ``pwrite``s, as before.
"""

from __future__ import annotations

import mmap
import os

#: Block alignment of direct writes (covers 512-byte and 4 KiB logical blocks).
ALIGN = 4096
#: Room a write may take past the end of the bytes it appends (the zeros to the block's
#: end); the caller keeps it free.
SLACK = ALIGN

_O_DIRECT: int = getattr(os, "O_DIRECT", 0)


class BlockWriter:
    """Writes appended bytes at increasing positions of one file (``reset`` restarts at
    an aligned position, e.g. when a ring wraps). Not thread-safe: the caller's lock
    orders writes, which also keeps two writes of one block from racing."""

    def __init__(self, path: str | os.PathLike[str], fd: int, direct: bool = True) -> None:
        #: The buffered descriptor: plain writes, and where direct I/O is refused.
        self._fd = fd
        self._direct = -1
        if direct and _O_DIRECT:
            try:
                self._direct = os.open(path, os.O_WRONLY | os.O_CLOEXEC | _O_DIRECT)
            except OSError:  # refused (tmpfs): plain writes
                self._direct = -1
        self._stage = mmap.mmap(-1, 128 * 1024) if self._direct >= 0 else None
        #: The bytes between the last aligned position and where the next write goes.
        self._tail = b""

    @property
    def direct(self) -> bool:
        return self._direct >= 0

    def reset(self) -> None:
        """The next write starts at a multiple of ``ALIGN`` (nothing before it kept)."""
        self._tail = b""

    def write(self, data: bytes | bytearray | memoryview, position: int) -> None:
        """Write ``data`` at ``position``, which must be where the last write ended (or
        an aligned position after ``reset``). Raises OSError, short writes included."""
        if self._direct < 0:
            written = os.pwrite(self._fd, data, position)
            if written != len(data):  # pragma: no cover - a regular file writes whole
                raise OSError(0, f"short write ({written} of {len(data)} bytes)")
            return
        tail = self._tail
        start = position - len(tail)
        if start % ALIGN:
            raise ValueError(f"position {position} does not follow the last write")
        total = len(tail) + len(data)
        length = -(-total // ALIGN) * ALIGN
        stage = self._stage
        assert stage is not None
        if length > len(stage):
            stage.close()
            stage = self._stage = mmap.mmap(-1, length)
        stage[: len(tail)] = tail
        stage[len(tail) : total] = data
        stage[total:length] = bytes(length - total)
        with memoryview(stage) as view:
            written = os.pwrite(self._direct, view[:length], start)
        if written != length:
            raise OSError(0, f"short direct write ({written} of {length} bytes)")
        kept = total % ALIGN
        self._tail = stage[total - kept : total]

    def close(self) -> None:
        if self._direct >= 0:
            os.close(self._direct)
            self._direct = -1
        if self._stage is not None:
            self._stage.close()
            self._stage = None
