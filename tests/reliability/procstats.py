"""Resource figures of a running process, read from /proc (Linux)."""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass

#: A spool file kept ready (dicom/spool_files.py): an anonymous ``O_TMPFILE`` inode in
#: ``DATA_DIR/tmp``, shown as ``.../tmp/#<inode> (deleted)``. The pool holds between half
#: of ``DEPTH`` and all of it, refilled only once half are taken, so how many are open
#: depends on how many C-STOREs came since the last refill, not on any leak.
_READY_SPOOL_FILE = re.compile(r"/tmp/#\d+ \(deleted\)$")


@dataclass(frozen=True)
class Usage:
    rss_kib: int
    threads: int
    #: Open descriptors, not counting spool files kept ready.
    fds: int


def usage(pid: int) -> Usage:
    """Resident memory, thread count and open file descriptors of ``pid`` now."""
    fields: dict[str, str] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return Usage(
        rss_kib=int(fields["VmRSS"].split()[0]),
        threads=int(fields["Threads"]),
        fds=_descriptors(pid),
    )


def _descriptors(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        target = ""
        with contextlib.suppress(OSError):  # closed meanwhile: not counted
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            count += 1
        if _READY_SPOOL_FILE.search(target):
            count -= 1
    return count
