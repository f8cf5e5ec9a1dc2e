"""Spreading connections evenly over a server's engine processes.

The engine processes share the DICOM port with SO_REUSEPORT, and the kernel picks the
process of each new connection by a hash of its addresses: four connections land 2-2
on two processes only three times in eight; the rest go 3-1 or 4-0, and the busy
process then serves three or four associations on one interpreter (one GIL) while the
other idles. Here each process publishes how many connections it is serving on a
shared load board (a small file in the server's private run folder, mapped by every
process), and a process that accepts a connection while a sibling serves fewer hands
the socket over before reading a byte of it: the accepted descriptor travels to the
sibling over a Unix datagram socket (SCM_RIGHTS), and the sibling serves it as if it
had accepted it itself (TLS handshake, admission, association).

Handing over is an optimisation only: if the sibling is gone (restarting) or the
message cannot be sent, the accepting process serves the connection. A sibling that
has no listener on the connection's port any more (stopped in the meantime) closes it.
"""

from __future__ import annotations

import array
import contextlib
import logging
import mmap
import os
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("pacsd.core.workers")

_SLOT = struct.Struct("<q")
_FD_SIZE = array.array("i").itemsize


def choose(loads: Sequence[int], me: int) -> int | None:
    """The process to hand a new connection to, None to keep it: the least loaded
    sibling, if it serves fewer connections than this process (before this one)."""
    best: int | None = None
    for index, load in enumerate(loads):
        if index != me and load < loads[me] and (best is None or load < loads[best]):
            best = index
    return best


def board_path(run_dir: Path) -> Path:
    return run_dir / "load"


def handoff_path(run_dir: Path, index: int) -> Path:
    return run_dir / f"handoff{index}.sock"


def create_board(run_dir: Path, processes: int) -> None:
    """Make the load board (the first process, before it starts any worker)."""
    board_path(run_dir).write_bytes(bytes(_SLOT.size * processes))


#: Serves a connection a sibling handed over (a listener's ``adopt``).
Adopt = Callable[[socket.socket, Any], None]

#: This process's listeners in a port group, by local port.
_servers: dict[int, Adopt] = {}


def register(port: int, adopt: Adopt) -> None:
    """A listener of a port group started here: connections for ``port`` handed over
    by a sibling are served by ``adopt``."""
    _servers[port] = adopt


def unregister(port: int, adopt: Adopt) -> None:
    if _servers.get(port) == adopt:
        del _servers[port]


class Balancer:
    """This process's view of the load board and its end of the hand-over channel."""

    def __init__(self, run_dir: Path, index: int, processes: int) -> None:
        self.run_dir = run_dir
        self.index = index
        self.processes = processes
        self._lock = threading.Lock()
        self._live = 0
        fd = os.open(board_path(run_dir), os.O_RDWR | os.O_CLOEXEC)
        try:
            self._board = mmap.mmap(fd, _SLOT.size * processes)
        finally:
            os.close(fd)
        self._publish(0)  # a restarted worker starts from nothing
        path = handoff_path(run_dir, index)
        path.unlink(missing_ok=True)
        self._inbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._inbox.bind(str(path))
        self._outbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # Never wait on the accept thread: a sibling whose inbox is full gets nothing.
        self._outbox.setblocking(False)
        self.handed_over = 0
        self.adopted = 0
        threading.Thread(target=self._receive, name="pacsd-balance", daemon=True).start()

    # -- load ---------------------------------------------------------------------------

    def loads(self) -> list[int]:
        return [_SLOT.unpack_from(self._board, i * _SLOT.size)[0] for i in range(self.processes)]

    def opened(self) -> None:
        with self._lock:
            self._live += 1
            self._publish(self._live)

    def closed(self) -> None:
        with self._lock:
            # Never below zero: a connection accepted while the balancer was being
            # installed (startup) may end here without having been counted.
            self._live = max(0, self._live - 1)
            self._publish(self._live)

    def _publish(self, value: int) -> None:
        _SLOT.pack_into(self._board, self.index * _SLOT.size, value)

    # -- handing over -------------------------------------------------------------------

    def hand_over(self, sock: socket.socket) -> bool:
        """Send a just-accepted connection to a less loaded sibling; True if it went
        (the caller then closes its copy and forgets it)."""
        loads = self.loads()
        target = choose(loads, self.index)
        if target is None:
            return False
        # Count it on the sibling's slot until the sibling counts it itself: before
        # sending, so that the sibling's own count, written when it adopts the
        # connection, always comes after this and replaces it.
        offset = target * _SLOT.size
        _SLOT.pack_into(self._board, offset, loads[target] + 1)
        fds = array.array("i", [sock.fileno()])
        try:
            self._outbox.sendmsg(
                [b"c"],
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())],
                0,
                str(handoff_path(self.run_dir, target)),
            )
        except OSError as exc:  # the sibling is restarting, or its inbox is full
            _SLOT.pack_into(self._board, offset, loads[target])
            log.debug("connection kept: cannot hand it to process %d: %s", target, exc)
            return False
        self.handed_over += 1
        return True

    def _receive(self) -> None:
        while True:
            try:
                data, ancillary, _, _ = self._inbox.recvmsg(1, socket.CMSG_SPACE(_FD_SIZE))
            except OSError:  # closed: the process is stopping
                return
            if not data and not ancillary:  # shut down (close) or an empty datagram
                if self._inbox.fileno() < 0 or _current is not self:
                    return
                continue
            for level, kind, data in ancillary:
                if level != socket.SOL_SOCKET or kind != socket.SCM_RIGHTS:
                    continue
                fds = array.array("i")
                fds.frombytes(data[: len(data) - len(data) % _FD_SIZE])
                for fd in fds:
                    self._adopt(fd)

    def _adopt(self, fd: int) -> None:
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            return
        try:
            if sock.type != socket.SOCK_STREAM:
                raise OSError("not a stream socket")
            port = sock.getsockname()[1]
            peer = sock.getpeername()
        except OSError as exc:  # the peer already left
            log.debug("handed-over connection dropped: %s", exc)
            sock.close()
            return
        adopt = _servers.get(port)
        if adopt is None:
            log.warning("connection from %s handed over for port %d, not served here", peer, port)
            sock.close()
            return
        self.adopted += 1
        adopt(sock, peer)

    def close(self) -> None:
        # shutdown() wakes the receiving thread's recvmsg; close() alone may not.
        with contextlib.suppress(OSError):
            self._inbox.shutdown(socket.SHUT_RDWR)
        self._inbox.close()
        self._outbox.close()
        handoff_path(self.run_dir, self.index).unlink(missing_ok=True)


_current: Balancer | None = None


def current() -> Balancer | None:
    """This process's balancer, None with a single engine process."""
    return _current


def install(balancer: Balancer | None) -> None:
    global _current
    previous, _current = _current, balancer
    if previous is not None and previous is not balancer:
        previous.close()
