"""Spool files created ahead of need, off the network thread.

Creating a file that will outlive its name in ``tmp/`` (it is renamed into the blob
store) costs ~0.3-0.7 ms of kernel time here, almost all of it allocating a new inode,
and the upper layer thread paid it in the middle of every C-STORE, with the peer
waiting. A background thread keeps a few *anonymous* files ready (``O_TMPFILE``: an
inode with no name, in the spool folder's file system); a C-STORE takes one and gives
it its ``rx-*.part`` name with ``linkat`` (~20 us). Files never taken vanish with the
process: nothing is left in ``tmp/`` that a crash or a shutdown could orphan.

Where ``O_TMPFILE`` or ``/proc`` is missing, :meth:`ReadyFiles.take_into` returns None
and the caller creates the file itself, as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
from collections import deque
from pathlib import Path

log = logging.getLogger("pacsd.core.spool")

#: Files kept ready per spool folder. The filler is woken only once half of them are
#: taken, and then refills them all: waking it after every take cost a thread wake-up
#: and a GIL hand-over in the middle of every C-STORE.
DEPTH = 8

_O_TMPFILE: int | None = getattr(os, "O_TMPFILE", None)
_AT_FDCWD = -100
_AT_SYMLINK_FOLLOW = 0x400


def _load_linkat() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        fn = ctypes.CDLL(None, use_errno=True).linkat
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_linkat = _load_linkat() if _O_TMPFILE is not None else None


class ReadyFiles:
    """Anonymous files in one folder, refilled by a daemon thread after each take."""

    def __init__(self, folder: Path, depth: int = DEPTH) -> None:
        self.folder = folder
        self._depth = depth
        self._ready: deque[int] = deque()
        self._wake = threading.Event()
        self._wake.set()
        #: False once creating or naming one failed: the caller creates files itself.
        self.usable = _linkat is not None
        if self.usable:
            threading.Thread(target=self._fill, name="pacsd-spool-files", daemon=True).start()

    def take_into(self, path: Path | str) -> int | None:
        """A writable descriptor of a new, empty file now named ``path``; None when no
        file is ready (or this system cannot do it): create it the usual way."""
        if not self.usable:
            return None
        try:
            fd = self._ready.popleft()
        except IndexError:
            fd = None
        if len(self._ready) <= self._depth // 2:
            self._wake.set()
        if fd is None:
            return None
        assert _linkat is not None
        source = f"/proc/self/fd/{fd}".encode()
        if _linkat(_AT_FDCWD, source, _AT_FDCWD, os.fsencode(path), _AT_SYMLINK_FOLLOW) != 0:
            err = ctypes.get_errno()
            os.close(fd)
            if err not in (28, 122):  # ENOSPC, EDQUOT: the caller's open reports it
                log.info(
                    "cannot name a prepared spool file (%s); creating them inline",
                    os.strerror(err),
                )
                self.usable = False
            return None
        return fd

    def _fill(self) -> None:
        assert _O_TMPFILE is not None
        flags = _O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC
        while self.usable:
            self._wake.wait()
            self._wake.clear()
            while len(self._ready) < self._depth:
                try:
                    fd = os.open(self.folder, flags, 0o666)
                except OSError as exc:
                    if exc.errno in (28, 122):  # disk full: try again after the next take
                        break
                    log.info("no anonymous spool files in %s (%s)", self.folder, exc)
                    self.usable = False
                    return
                self._ready.append(fd)

    def close(self) -> None:
        """Stop refilling and release the files still ready."""
        self.usable = False
        self._wake.set()
        while self._ready:
            with contextlib.suppress(IndexError, OSError):
                os.close(self._ready.popleft())


_lock = threading.Lock()
_by_folder: dict[Path, ReadyFiles] = {}


def for_folder(folder: Path) -> ReadyFiles:
    """The (process-wide) ready files of ``folder``, started on first use."""
    found = _by_folder.get(folder)
    if found is None:
        with _lock:
            found = _by_folder.get(folder)
            if found is None:
                found = _by_folder[folder] = ReadyFiles(folder)
    return found
