"""Writing the bulk of a received dataset with ``O_DIRECT``, past the page cache.

Profiling a 0.5 MB C-STORE (``perf record`` of the server, one association) put a
quarter of all the server's CPU time in one kernel function: copying the received
bytes into the page cache (``copy_folio_from_iter_atomic``), plus the writeback that
``sync_file_range`` started page by page. On a virtual machine, freshly allocated page
cache is slow to touch, and the fsync that makes the instance durable then writes those
pages out again. A direct write hands the device the bytes where they are: the staging
buffer here, page-aligned and reused, into which fragments are copied as they arrive
(a memcpy in user space, far cheaper than the page-cache copy).

Direct I/O needs the buffer, the file offset and the length aligned to the device's
block size, so only whole ``ALIGN`` blocks go direct; the head of the file (read back at
once by the header parse, so better kept in the page cache) and the last partial block
are written normally. Durability is unchanged: a direct write is in the device's cache
when it returns, and the fsync in ``BlobStore.commit`` flushes that cache.

File systems that refuse direct I/O (``fcntl`` fails with EINVAL, e.g. some tmpfs) are
remembered per folder and written through the page cache as before.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import threading
from pathlib import Path

log = logging.getLogger("pacsd.core.spool")

#: Bytes at the start of a file written through the page cache: at least what the
#: header parse reads back (``fast_header.HEAD_BYTES``, checked by a test), and a
#: multiple of ``ALIGN`` so the direct part starts aligned. A smaller instance never
#: goes direct.
HEAD = 64 * 1024
#: Block alignment of direct writes (covers 512-byte and 4 KiB logical blocks).
ALIGN = 4096
#: Staged bytes that trigger a direct write, and the staging buffer's size.
FLUSH_AT = 256 * 1024
CAPACITY = 512 * 1024
#: Staging buffers kept for reuse (one per association storing at a time).
KEEP = 16

_O_DIRECT: int = getattr(os, "O_DIRECT", 0)
_free: list[mmap.mmap] = []
_refused: set[Path] = set()
_lock = threading.Lock()


def usable(folder: Path) -> bool:
    """Whether files in ``folder`` may go direct (not refused before)."""
    return _O_DIRECT != 0 and folder not in _refused


def start(fd: int, folder: Path) -> Stage | None:
    """Switch ``fd`` (positioned at a multiple of ``ALIGN``) to direct writes and give
    it a staging buffer; None, remembered for ``folder``, if the file system refuses."""
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | _O_DIRECT)
    except OSError as exc:
        with _lock:
            first = folder not in _refused
            _refused.add(folder)
        if first:
            log.info("no direct I/O in %s (%s): spooling through the page cache", folder, exc)
        return None
    return Stage()


class Stage:
    """A page-aligned buffer collecting fragments until whole blocks can go direct."""

    def __init__(self) -> None:
        try:
            self._map = _free.pop()
        except IndexError:
            self._map = mmap.mmap(-1, CAPACITY)
        self._view: memoryview | None = memoryview(self._map)

    def add(self, fd: int, data: memoryview, staged: int) -> int:
        """Stage ``data`` after the ``staged`` bytes already held, writing whole blocks
        direct once ``FLUSH_AT`` is reached; returns the bytes held now."""
        view = self._view
        assert view is not None
        while data:
            n = min(len(data), CAPACITY - staged)
            view[staged : staged + n] = data[:n]
            staged += n
            data = data[n:]
            if staged >= FLUSH_AT:
                staged = self._write_blocks(fd, staged)
        return staged

    def finish(self, fd: int, staged: int) -> int:
        """Write the whole blocks direct, then the last partial block through the page
        cache (direct I/O cannot write it); returns that partial block's length."""
        staged = self._write_blocks(fd, staged)
        if staged:
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~_O_DIRECT)
            assert self._view is not None
            _write_all(fd, self._view[:staged])
        return staged

    def _write_blocks(self, fd: int, staged: int) -> int:
        view = self._view
        assert view is not None
        blocks = staged - staged % ALIGN
        if blocks:
            _write_all(fd, view[:blocks])
            rest = staged - blocks
            if rest:  # fewer than ALIGN bytes: never overlaps the blocks just written
                view[:rest] = view[blocks:staged]
            return rest
        return staged

    def release(self) -> None:
        """Give the buffer back for the next file (or unmap it when enough are kept)."""
        view, self._view = self._view, None
        if view is None:
            return
        view.release()
        if len(_free) < KEEP:
            _free.append(self._map)
        else:
            self._map.close()


def _write_all(fd: int, view: memoryview) -> None:
    while view:  # a write may be short; a direct one stays block-aligned in practice
        view = view[os.write(fd, view) :]
