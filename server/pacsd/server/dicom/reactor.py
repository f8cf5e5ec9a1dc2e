"""Blocking waits for an acceptor association's two threads, instead of 1 ms polling.

pynetdicom runs two loops per association that sleep 1 ms whenever they find nothing
to do: the upper layer (DUL) thread polls the socket and the queue of PDUs to send,
and the association thread polls the queue of received DIMSE messages. Every C-STORE
waits on both (the request reaches the association thread up to 1 ms late, the answer
leaves up to 1 ms late), and an idle association wakes 2,000 times a second.

Here each loop blocks until there is something for it:

- the DUL thread polls (``poll(2)``) the socket and a :class:`Wakeup` descriptor that
  :meth:`GuardedDUL.send_pdu <pacsd.server.dicom.pdu_guard.GuardedDUL.send_pdu>` writes
  after queueing a primitive to send;
- the association thread waits on a :class:`threading.Event` that the queues it reads
  (:class:`WakingQueue`: received DIMSE messages, A-RELEASE/A-ABORT primitives) set when
  something is put, and that the DUL thread sets when it ends.

Both waits are bounded (:data:`MAX_WAIT`) so that what pynetdicom signals by setting a
flag without any queue (a kill, the ARTIM and idle timers) is still seen promptly.

A C-STORE request skips the hand-over: when the association thread has nothing to do,
the DUL thread that assembled the request serves it itself (:class:`DimseQueue`).
Handing each instance to the other thread cost a wake-up and a GIL hand-over per
C-STORE, and with several associations in one process those hand-overs queue up behind
each other. Order is kept: the DUL thread serves a request only when no earlier one is
queued or being served, checked under the lock the association thread takes its
messages under, and while it serves it reads nothing more from the peer.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import ssl
import threading
from typing import Any, cast

from pacsd.server.dicom.spool import SpoolFile
from pynetdicom import evt
from pynetdicom.association import LOGGER, Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.service_class import StorageServiceClass, attempt

#: Longest a loop blocks without looking at pynetdicom's flags and timers (seconds).
MAX_WAIT = 0.05


class Wakeup:
    """A descriptor another thread makes readable to wake a ``poll`` (eventfd on Linux).

    Closing and waking are serialised: a write after close must not reach whatever file
    the descriptor number was reused for.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        if hasattr(os, "eventfd"):
            self.fd = self._write_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:  # pragma: no cover - non-Linux
            self.fd, self._write_fd = os.pipe()
            os.set_blocking(self.fd, False)
            os.set_blocking(self._write_fd, False)

    def wake(self) -> None:
        with self._lock:
            if self._write_fd >= 0:
                with contextlib.suppress(BlockingIOError):  # already pending: enough
                    os.write(self._write_fd, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    def clear(self) -> None:
        """Consume pending wake-ups (only on the waiting thread)."""
        with contextlib.suppress(OSError):
            os.read(self.fd, 64)

    def close(self) -> None:
        with self._lock:
            fds = {self.fd, self._write_fd} - {-1}
            self.fd = self._write_fd = -1
        for fd in fds:
            os.close(fd)

    def __del__(self) -> None:
        # An association whose DUL thread never ran still gives its descriptor back.
        with contextlib.suppress(Exception):
            self.close()


class SocketWaiter:
    """Blocks the DUL thread until its socket is readable, it is woken, or a timeout.

    The socket's descriptor is registered once and unregistered as soon as the socket is
    seen closed, so a reused descriptor number never wakes this loop.
    """

    def __init__(self, wakeup: Wakeup) -> None:
        self.wakeup = wakeup
        self._poll = select.poll()
        self._poll.register(wakeup.fd, select.POLLIN)
        self._sock_fd = -1

    def wait(self, raw: Any, timeout: float) -> bool:
        """True when the socket has something to read (or is closed or failed)."""
        fd = -1
        if raw is not None:
            if isinstance(raw, ssl.SSLSocket) and raw.pending():
                return True  # decrypted bytes already buffered: poll(2) cannot see them
            with contextlib.suppress(OSError, ValueError):
                fd = raw.fileno()
        if fd != self._sock_fd:
            if self._sock_fd >= 0:
                with contextlib.suppress(KeyError, ValueError):
                    self._poll.unregister(self._sock_fd)
            if fd >= 0:
                self._poll.register(fd, select.POLLIN | select.POLLPRI)
            self._sock_fd = fd
        try:
            events = self._poll.poll(max(0, int(timeout * 1000)))
        except InterruptedError:  # pragma: no cover - retried by Python since 3.5
            return False
        readable = False
        for ready_fd, _ in events:
            if ready_fd == self.wakeup.fd:
                self.wakeup.clear()
            elif ready_fd == fd:
                readable = True
        return readable


class WakingQueue(queue.Queue[Any]):
    """A queue that sets ``wake`` whenever something is put in it."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake.set()


class DimseQueue(WakingQueue):
    """The received-message queue: a C-STORE request arriving while the association
    thread is idle is served at once on the putting (DUL) thread instead."""

    def __init__(self, wake: threading.Event, assoc: PacsdAssociation) -> None:
        super().__init__(wake)
        self._assoc = assoc

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        context_id, msg = item
        if msg.__class__ is C_STORE and self._assoc.pacsd_serve_here(msg, context_id):
            return
        super().put(item, block, timeout)


class _StorageSCP(StorageServiceClass):
    """pynetdicom's Storage SCP (3.0.4), less two costs per instance.

    - The response takes the request's Message ID and UIDs as they are: its setters
      would convert and validate each UID again (~17 us), and they are the values the
      request was accepted with (``dimse_decode`` or pynetdicom checked them, or
      ``spool._refuse`` replaced what failed).
    - A spooled dataset is discarded as a ``SpoolFile`` (``discard`` knows whether the
      archive moved it): pynetdicom's SCP would ``unlink`` its name whatever happened,
      a failing system call once the file is in the blob store.
    """

    def SCP(self, req: C_STORE, context: Any) -> None:
        rsp = C_STORE()
        rsp._message_id = req._message_id
        rsp._message_id_being_responded_to = req._message_id
        rsp._affected_sop_instance_uid = req._affected_sop_instance_uid
        rsp._affected_sop_class_uid = req._affected_sop_class_uid
        cx_id = cast(int, context.context_id)
        with attempt(rsp, self.dimse, cx_id, self.assoc) as ctx:
            ctx.error_msg = "Exception in handler bound to 'evt.EVT_C_STORE'"
            ctx.error_status = 0xC211
            rsp_status = evt.trigger(
                ctx.assoc, evt.EVT_C_STORE, {"request": req, "context": context.as_tuple}
            )
            spooled = req._dataset_file  # a SpoolFile or None: spool.SpoolingMessage
            if spooled is not None:
                cast(SpoolFile, spooled).discard()  # before the answer: nothing left in tmp/
        if not ctx.success or not self.assoc.is_established:
            return
        rsp = self.validate_status(cast(Any, rsp_status), rsp)
        self.dimse.send_msg(rsp, cx_id)


def install(assoc: Association) -> threading.Event:
    """Make an acceptor association's thread wait for work instead of polling.

    Called before its threads start, while the queues are empty. Returns the event the
    DUL thread must set when it ends.
    """
    wake = threading.Event()
    assoc.__class__ = PacsdAssociation
    pacsd = cast(PacsdAssociation, assoc)
    pacsd.pacsd_wake = wake
    pacsd.pacsd_serving = threading.Lock()
    assoc.dimse.msg_queue = DimseQueue(wake, pacsd)
    assoc.dul.to_user_queue = WakingQueue(wake)
    return wake


class PacsdAssociation(Association):
    """pynetdicom's acceptor association with an event-driven reactor loop."""

    pacsd_wake: threading.Event
    #: Held by whichever thread is serving a request (see DimseQueue).
    pacsd_serving: threading.Lock

    def pacsd_serve_here(self, msg: Any, context_id: int) -> bool:
        """Serve ``msg`` on the calling thread if nothing is queued or being served and
        the reactor is not paused; False to queue it for the association thread."""
        if (
            self._sent_abort
            or not self._reactor_checkpoint.is_set()
            or not self.dimse.msg_queue.empty()
            or context_id not in self._accepted_cx  # pynetdicom aborts: its thread's job
        ):
            return False
        if not self.pacsd_serving.acquire(blocking=False):
            return False
        try:
            if not self.dimse.msg_queue.empty():  # queued meanwhile: keep the order
                return False
            self._serve_request(msg, context_id)
            return True
        finally:
            self.pacsd_serving.release()

    def _serve_request(self, msg: Any, context_id: int) -> None:
        try:
            if msg.__class__ is C_STORE:
                self._pacsd_serve_store(msg, context_id)
            else:
                super()._serve_request(msg, context_id)
        finally:
            # Dispatch discards (or the archive moves) every spooled dataset it is
            # given; one that never reached it (ignored, aborted) must not keep its
            # descriptor and its file in tmp/ until the next start.
            spooled = getattr(msg, "_pacsd_spool", None)
            if spooled is not None:
                spooled.discard()

    def _pacsd_serve_store(self, msg: C_STORE, context_id: int) -> None:
        """pynetdicom's ``_serve_request`` (3.0.4) for a C-STORE-RQ, with one change:
        it always goes to the Storage service class, whatever SOP class the command
        names.

        pynetdicom picks the service class by that SOP class, and one it does not list
        as storage (a private SOP class an add-in accepted, or a command naming some
        other class) finds no SCP and aborts the association. Dispatch routes a
        C-STORE by its presentation context instead, and the add-in (the archive
        checks the dataset against the command) answers it. This also spares the
        linear search of pynetdicom's SOP class tables per instance.
        """
        if self._sent_release:
            LOGGER.warning(f"{msg.msg_type} message received during association release, ignoring")
            return
        if not msg.is_valid_request:
            LOGGER.warning(f"Received unexpected {msg.msg_type} service message")
            return
        context = self._accepted_cx.get(context_id)
        if context is None:
            LOGGER.info(f"Received DIMSE message with invalid or rejected context ID: {context_id}")
            self.abort()
            return
        self.dimse.cancel_req = {}
        self._is_paused = True
        _StorageSCP(self).SCP(msg, context)
        self._is_paused = False
        self.dimse.cancel_req = {}

    def run(self) -> None:
        try:
            super().run()
        finally:
            # The engine process serves one connection less (workers/balance.py).
            on_end = self.__dict__.pop("pacsd_on_end", None)
            if on_end is not None:
                on_end()

    #: Set when a request served on the DUL thread aborted the association: the
    #: association thread finishes the abort (see _abort_blocking).
    pacsd_finish_abort = False

    def _abort_blocking(self, block: bool = True) -> None:
        # pynetdicom's blocking abort queues the A-ABORT, then waits for the DUL thread
        # to stop and shuts the socket. On the DUL thread (a request served there) that
        # wait would never end: queue the A-ABORT now and leave the waiting and the
        # shutdown to the association thread, as if it had served the request.
        if block and threading.current_thread() is self.dul:
            super()._abort_blocking(False)
            self.pacsd_finish_abort = True
            self.pacsd_wake.set()
            return
        super()._abort_blocking(block)

    def _run_reactor(self) -> None:
        """pynetdicom's ``_run_reactor`` (3.0.4), waiting on ``pacsd_wake`` instead of
        sleeping 1 ms per turn; a turn that handled a message loops at once."""
        self._is_paused = False
        wake = self.pacsd_wake
        busy = False
        while not self._kill:
            if not busy:
                wake.wait(MAX_WAIT)
                wake.clear()  # then look at everything: a later put sets it again
            busy = False
            if self.pacsd_finish_abort:
                self.kill()
                with contextlib.suppress(Exception):
                    cast(Any, self.dul.socket)._shutdown_socket()
                return

            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            with self.pacsd_serving:
                context_id, msg = self.dimse.get_msg(block=False)
                if msg:
                    busy = True
                    self._serve_request(msg, int(context_id))  # type: ignore[arg-type]

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                LOGGER.info("Association Released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                LOGGER.info("Association Aborted")
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                LOGGER.error("Network timeout reached")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
