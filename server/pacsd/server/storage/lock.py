"""One process per data directory: an advisory ``flock`` on ``DATA_DIR/pacsd.lock``.

Two servers on one data directory would each reconcile the index with the files at
startup and delete what they consider leftovers of the other; an offline
``pacsd index rebuild`` under a running server would empty the index it is serving
from. The lock makes both refuse instead.

``flock`` (not a PID file) because the kernel releases it when the holder dies, even
by SIGKILL or a power cut, so a crash never leaves a stale lock to clean up by hand.
The holder's PID is written into the file only to name it in the error message.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import suppress
from pathlib import Path
from types import TracebackType
from typing import Self

LOCK_NAME = "pacsd.lock"


class DataDirLocked(Exception):
    """Another process holds the lock; the message is the one line operators see."""

    def __init__(self, path: Path, holder: str) -> None:
        self.path = path
        self.holder = holder
        who = f"pid {holder}" if holder else "another process"
        super().__init__(f"data directory {path.parent} is in use: lock {path} is held by {who}")


class DataDirLock:
    """The lock on one data directory; ``acquire`` it, ``release`` it (or use ``with``)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir.resolve() / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock without waiting; raises DataDirLocked if another process has it,
        OSError if the file cannot be created."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DataDirLocked(self.path, holder) from None
        except BaseException:
            os.close(fd)
            raise
        # Only the holder writes, so a reader sees either the old or the new PID.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up; safe to call when not held. The file stays (removing it
        would race with a process that just opened it and is about to lock it)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with suppress(OSError):  # the lock goes with close() regardless
            os.ftruncate(fd, 0)
        os.close(fd)

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""
