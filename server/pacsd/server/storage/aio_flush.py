"""Flushes that run while the thread goes on: Linux native AIO ``fsync``/``fdatasync``.

A C-STORE of a large instance waits for three device flushes (its file, its folder, its
journal record), ~0.1-0.2 ms each on this project's machines, and does ~0.3 ms of CPU
work between them (the header parse, dispatch, the index commit) that does not depend
on them. Python cannot overlap the two with a thread: the flushing thread needs the GIL
to start its system call and to report back, and the storing thread holds it while it
works, so the hand-over waits for the next blocking call or the 5 ms switch interval.
The kernel can: ``io_submit`` of an ``IOCB_CMD_FSYNC``/``IOCB_CMD_FDSYNC`` (Linux 4.18+)
queues the flush on a kernel worker and returns at once; ``io_getevents`` (called
through ctypes, which releases the GIL) collects the result later. The flush is the
same ``vfs_fsync`` an ``fsync(2)`` runs, with the same error reporting.

Where native AIO is missing (another architecture, a kernel or sandbox refusing
``io_setup``), every request is carried out synchronously when it is made, so callers
get the same guarantees and only lose the overlap.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import platform
import sys
import threading
from collections.abc import Callable

log = logging.getLogger("pacsd.core.storage")

#: io_setup, io_destroy, io_getevents, io_submit (the kernel's generic table on arm64).
_SYSCALLS = {"x86_64": (206, 207, 208, 209), "aarch64": (0, 1, 4, 2)}
_IOCB_CMD_FSYNC = 2
_IOCB_CMD_FDSYNC = 3
#: Requests one batch may hold (a C-STORE makes at most three).
MAX_BATCH = 4
#: Contexts kept for reuse (one per thread flushing at a time).
_KEEP = 16


class _IOCB(ctypes.Structure):
    # struct iocb (linux/aio_abi.h), little-endian field order
    _fields_ = [
        ("aio_data", ctypes.c_uint64),
        ("aio_key", ctypes.c_uint32),
        ("aio_rw_flags", ctypes.c_int32),
        ("aio_lio_opcode", ctypes.c_uint16),
        ("aio_reqprio", ctypes.c_int16),
        ("aio_fildes", ctypes.c_uint32),
        ("aio_buf", ctypes.c_uint64),
        ("aio_nbytes", ctypes.c_uint64),
        ("aio_offset", ctypes.c_int64),
        ("aio_reserved2", ctypes.c_uint64),
        ("aio_flags", ctypes.c_uint32),
        ("aio_resfd", ctypes.c_uint32),
    ]


class _Event(ctypes.Structure):
    # struct io_event
    _fields_ = [
        ("data", ctypes.c_uint64),
        ("obj", ctypes.c_uint64),
        ("res", ctypes.c_int64),
        ("res2", ctypes.c_int64),
    ]


class _Kernel:
    """The four system calls, or None where this machine has no native AIO."""

    def __init__(self) -> None:
        numbers = _SYSCALLS.get(platform.machine())
        if numbers is None or sys.byteorder != "little":
            raise OSError(errno.ENOSYS, f"no native AIO table for {platform.machine()}")
        self.setup_nr, self.destroy_nr, self.getevents_nr, self.submit_nr = numbers
        libc = ctypes.CDLL(None, use_errno=True)
        self.syscall = libc.syscall
        self.syscall.restype = ctypes.c_long
        self._free: list[int] = []
        self._lock = threading.Lock()
        self.release(self.acquire())  # fails here, once, where io_setup is refused

    def acquire(self) -> int:
        with self._lock:
            if self._free:
                return self._free.pop()
        ctx = ctypes.c_ulong(0)
        if self.syscall(self.setup_nr, MAX_BATCH, ctypes.byref(ctx)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"io_setup: {os.strerror(err)}")
        return ctx.value

    def release(self, ctx: int) -> None:
        """Keep an idle context (every request collected) for the next batch."""
        with self._lock:
            if len(self._free) < _KEEP:
                self._free.append(ctx)
                return
        self.destroy(ctx)

    def destroy(self, ctx: int) -> None:
        self.syscall(self.destroy_nr, ctypes.c_ulong(ctx))

    def submit(self, ctx: int, iocbs: list[_IOCB]) -> None:
        pointers = (ctypes.POINTER(_IOCB) * len(iocbs))(*(ctypes.pointer(cb) for cb in iocbs))
        done = 0
        while done < len(iocbs):
            n = self.syscall(
                self.submit_nr,
                ctypes.c_ulong(ctx),
                ctypes.c_long(len(iocbs) - done),
                ctypes.byref(pointers, done * ctypes.sizeof(ctypes.c_void_p)),
            )
            if n < 0:
                err = ctypes.get_errno()
                if err == errno.EINTR:
                    continue
                raise OSError(err, f"io_submit: {os.strerror(err)}")
            done += n

    def collect(self, ctx: int, count: int) -> dict[int, int]:
        """Wait for ``count`` completions: each request's (``aio_data``) result."""
        events = (_Event * count)()
        got = 0
        while got < count:
            n = self.syscall(
                self.getevents_nr,
                ctypes.c_ulong(ctx),
                ctypes.c_long(count - got),
                ctypes.c_long(count - got),
                ctypes.byref(events, got * ctypes.sizeof(_Event)),
                None,
            )
            if n < 0:
                err = ctypes.get_errno()
                if err == errno.EINTR:
                    continue
                raise OSError(err, f"io_getevents: {os.strerror(err)}")
            got += n
        return {int(event.data): int(event.res) for event in events}


_kernel: _Kernel | None = None
_probed = False
_probe_lock = threading.Lock()


def _native() -> _Kernel | None:
    global _kernel, _probed
    if not _probed:
        with _probe_lock:
            if not _probed:
                if os.environ.get("PACSD_NO_AIO"):
                    _kernel = None
                else:
                    try:
                        _kernel = _Kernel()
                    except (OSError, AttributeError) as exc:
                        log.info("no native AIO (%s): flushes run one after another", exc)
                        _kernel = None
                _probed = True
    return _kernel


def available() -> bool:
    """Whether flushes really overlap here (else they run when requested)."""
    return _native() is not None


Done = Callable[[OSError | None], None]


class Flushes:
    """A batch of flush requests that run in the background until ``wait``.

    Each request may carry ``done``, called by ``wait`` with None or the OSError its
    flush raised, and a ``label`` for ``failed``. ``wait`` then raises the first error.
    A batch must be waited for (``wait`` is idempotent), or its context is never reused.
    """

    def __init__(self) -> None:
        self._kernel = _native()
        self._ctx = -1
        #: Per request: its iocb while the kernel has it (None: it already ran here).
        self._iocbs: list[_IOCB | None] = []
        self._callbacks: list[Done | None] = []
        self._labels: list[str] = []
        self._errors: list[OSError | None] = []
        self._waited = False

    def fsync(self, fd: int, done: Done | None = None, label: str = "") -> None:
        self._add(fd, _IOCB_CMD_FSYNC, done, label)

    def fdatasync(self, fd: int, done: Done | None = None, label: str = "") -> None:
        self._add(fd, _IOCB_CMD_FDSYNC, done, label)

    def __len__(self) -> int:
        """Requests made so far."""
        return len(self._iocbs)

    @property
    def labels(self) -> list[str]:
        return list(self._labels)

    def failed(self, label: str) -> OSError | None:
        """After ``wait``: the error of the first request made with ``label``, if any."""
        for name, error in zip(self._labels, self._errors, strict=True):
            if name == label and error is not None:
                return error
        return None

    def _add(self, fd: int, opcode: int, done: Done | None, label: str) -> None:
        if self._waited or len(self._iocbs) >= MAX_BATCH:
            raise RuntimeError("flush batch already waited for, or full")
        iocb = self._submit(fd, opcode, len(self._iocbs))
        error: OSError | None = None
        if iocb is None:
            try:
                (os.fsync if opcode == _IOCB_CMD_FSYNC else os.fdatasync)(fd)
            except OSError as exc:
                error = exc
        self._iocbs.append(iocb)
        self._callbacks.append(done)
        self._labels.append(label)
        self._errors.append(error)

    def _submit(self, fd: int, opcode: int, index: int) -> _IOCB | None:
        """Hand the request to the kernel; None if it has to run here and now."""
        if self._kernel is None:
            return None
        try:
            if self._ctx < 0:
                self._ctx = self._kernel.acquire()
            iocb = _IOCB(aio_data=index, aio_lio_opcode=opcode, aio_fildes=fd)
            self._kernel.submit(self._ctx, [iocb])
        except OSError as exc:
            # EINVAL: this file system has no AIO fsync; EAGAIN: no context left
            # (fs.aio-max-nr). Anything else (EBADF) is the caller's to see.
            if exc.errno not in (errno.EINVAL, errno.EAGAIN, errno.ENOSYS):
                raise
            return None
        return iocb

    def wait(self) -> None:
        if self._waited:
            return
        self._waited = True
        queued = [i for i, iocb in enumerate(self._iocbs) if iocb is not None]
        if self._ctx >= 0:
            assert self._kernel is not None
            try:
                results = self._kernel.collect(self._ctx, len(queued)) if queued else {}
            except OSError as exc:  # not seen: io_getevents fails only on bad arguments
                self._kernel.destroy(self._ctx)  # may still hold requests: not reusable
                results = {i: -(exc.errno or errno.EIO) for i in queued}
            else:
                self._kernel.release(self._ctx)
            for i in queued:
                if results[i] < 0:
                    self._errors[i] = OSError(-results[i], os.strerror(-results[i]))
        first: OSError | None = None
        for callback, error in zip(self._callbacks, self._errors, strict=True):
            if callback is not None:
                callback(error)
            if error is not None and first is None:
                first = error
        if first is not None:
            raise first
