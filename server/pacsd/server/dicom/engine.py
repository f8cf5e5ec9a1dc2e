"""pynetdicom subclasses that give pacsd control over each incoming association.

pynetdicom decides acceptance and presentation contexts from AE-wide state. pacsd needs
them per association: the admission check (paused server, later AE policy) must run
before negotiation, and the contexts offered must come from the routing table current
when the association is requested. These classes are the only place that reaches into
pynetdicom's internals; everything else uses the public event API.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, cast

from pacsd.server.addins.routing import RoutingTable
from pacsd.server.dicom import (
    dimse_encode,
    negotiation,
    pdu_guard,
    reactor,
    send_path,
    spool,
    spool_files,
)
from pacsd.server.dicom.associations import association_info
from pacsd.server.dicom.tls import TlsAcceptor
from pacsd.server.workers import balance
from pynetdicom import evt
from pynetdicom.acse import ACSE
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer


class Rejection(NamedTuple):
    """An A-ASSOCIATE-RJ: result (1 permanent, 2 transient), source and diagnostic (PS3.8)."""

    result: int
    source: int
    diagnostic: int
    why: str


class UnusableRequest(Rejection):
    """A-ASSOCIATE-RJ (permanent, service user, no reason given) for a request that
    decodes but cannot be negotiated (e.g. a presentation context without an abstract
    syntax)."""


#: Returns a rejection for the association, or None to go on negotiating.
AdmissionCheck = Callable[[Association], Rejection | None]


#: Called with each outgoing DIMSE primitive before it is encoded.
BeforeSend = Callable[[Association, Any], None]


class AdmissionACSE(ACSE):
    """ACSE that asks pacsd whether to admit an association before negotiating it."""

    def __init__(self, assoc: Association, admission: AdmissionCheck) -> None:
        super().__init__(assoc)
        self._admission = admission

    def _negotiate_as_acceptor(self) -> None:
        rejection = self._admission(self.assoc)
        if rejection is None:
            try:
                self._apply_accepts()
                self._prefer_requestor_syntaxes()
                super()._negotiate_as_acceptor()
                return
            except Exception as exc:  # a request pynetdicom cannot negotiate: refuse it
                why = pdu_guard.unusable_request(self.assoc, exc)
                rejection = UnusableRequest(0x01, 0x01, 0x01, why)
        self.requestor.ae_title = self.requestor.primitive.calling_ae_title  # type: ignore[union-attr]
        self.assoc.pacsd_rejection = rejection  # type: ignore[attr-defined]
        # Same sequence pynetdicom uses for its own rejections.
        self.send_reject(rejection.result, rejection.source, rejection.diagnostic)
        evt.trigger(self.assoc, evt.EVT_REJECTED, {})
        self.assoc.kill()

    def send_accept(self) -> None:
        # Report the acceptance before the A-ASSOCIATE-AC leaves, not after as pynetdicom
        # does: the network thread may otherwise decode the peer's first request (and
        # report it) before this thread reports the acceptance, and the association
        # would miss its first message in its counters and the event stream. The
        # listener ignores pynetdicom's own, later EVT_ACCEPTED.
        evt.trigger(self.assoc, evt.EVT_ACCEPTED, {})
        super().send_accept()

    def _apply_accepts(self) -> None:
        """Drop the abstract syntaxes an add-in's ``accepts()`` refuses for this peer."""
        table: RoutingTable = self.assoc.pacsd_routes  # type: ignore[attr-defined]
        if not any(
            r.instance is not None and r.instance.overrides_accepts() for r in table.records
        ):
            return
        deciders = {
            uid: [r for r in records if r.instance is not None and r.instance.overrides_accepts()]
            for uid, records in table.by_sop_class.items()
        }
        if not any(deciders.values()):
            return
        info = association_info(self.assoc)
        kept = []
        for cx in self.acceptor.supported_contexts:
            refused = False
            for record in deciders.get(str(cx.abstract_syntax), []):
                instance = record.instance
                try:
                    refused = instance is None or not instance.accepts(
                        info, str(cx.abstract_syntax)
                    )
                except Exception:
                    record.count_failure()
                    refused = True
                if refused:
                    break
            if not refused:
                kept.append(cx)
        self.acceptor.supported_contexts = kept

    def _prefer_requestor_syntaxes(self) -> None:
        """Accept the transfer syntax the peer prefers, not ours (negotiation.py)."""
        self.acceptor.supported_contexts = negotiation.prefer_requestor_syntaxes(
            self.assoc.pacsd_offer,  # type: ignore[attr-defined]
            self.requestor.primitive.presentation_context_definition_list,  # type: ignore[union-attr]
            self.acceptor.supported_contexts,
        )


class PacsdDIMSE(DIMSEServiceProvider):
    """DIMSE provider that spools C-STORE datasets to disk as they arrive, lets
    ``before_send`` hooks change a message before it is encoded, and sends responses
    through pacsd's own encoder (``send_path``: same bytes, without pydicom)."""

    def __init__(self, assoc: Association, before_send: BeforeSend, spool_dir: Path) -> None:
        super().__init__(assoc)
        self._before_send = before_send
        self._spool_dir = spool_dir
        dimse_encode.install()  # identifiers the service classes encode (idempotent)

    def receive_primitive(self, primitive: Any) -> None:
        if self.message is None:
            self.message = spool.new_message(self._spool_dir, str(self.assoc.requestor.ae_title))
        try:
            super().receive_primitive(primitive)
        except Exception as exc:  # a malformed command set: abort, not a dead DUL thread
            pdu_guard.refuse_message(self.assoc.dul, exc)

    def send_msg(self, primitive: Any, context_id: int) -> None:
        answered = getattr(self.assoc, "pacsd_answered", None)
        if answered:
            key = (context_id, getattr(primitive, "MessageIDBeingRespondedTo", None))
            if key in answered:
                # The watchdog answered this request at its handler's time limit
                # (dispatch._answer_at_limit); this is the late handler's answer.
                answered.discard(key)
                return
        override = getattr(self.assoc, "pacsd_status_override", None)
        if override is not None and override[0] == getattr(
            primitive, "MessageIDBeingRespondedTo", None
        ):
            # Dispatch refused a request whose first answer pynetdicom writes itself
            # (C-MOVE without permission): send that answer with dispatch's status.
            self.assoc.pacsd_status_override = None  # type: ignore[attr-defined]
            primitive.Status = override[1]
        self._before_send(self.assoc, primitive)
        if not send_path.send_message(self, primitive, context_id):
            super().send_msg(primitive, context_id)


class FastSocket(AssociationSocket):
    """pynetdicom's socket, reading PDUs with ``recv_into`` and acknowledging quickly.

    pynetdicom reads in 4 KB ``recv`` calls and grows a bytearray (many copies per PDU);
    here each read fills a buffer of the PDU's size in as few calls as the kernel allows.
    A peer that leaves Nagle on (Debian's DCMTK, by default) holds a small segment until
    everything it sent before is acknowledged, and DCMTK writes a PDU's headers and its
    fragment separately: without an immediate ACK (TCP_QUICKACK, Linux) it would wait
    ~40 ms for our delayed one, once or twice per message. So the socket asks for one
    whenever a read must wait for the rest of a PDU, and the upper layer after each PDU
    that more of its message may follow (``pdu_guard``).

    It also counts the bytes read and written, for the control plane's association list
    and the metrics. Reads happen on the association's DUL thread only. Writes come from
    two threads on a plain socket: the association thread writes its DIMSE messages
    (send_path.py), the DUL thread the association's own PDUs (A-RELEASE-RP, an A-ABORT
    an operator asked for). ``send_lock`` makes each write whole, so an A-ABORT never
    lands in the middle of a P-DATA-TF, and keeps the byte count exact.
    """

    #: Bytes read from / written to this socket (class defaults: pynetdicom builds the
    #: socket before its class is switched to this one).
    bytes_in = 0
    bytes_out = 0
    #: Set per socket when its class is switched (PacsdRequestHandler).
    send_lock: threading.Lock

    def send(self, bytestream: bytes) -> None:
        """pynetdicom's ``send``, writing a plain socket directly first: as for reads
        (``read_into``), Python polls before each ``send`` on a socket with a timeout,
        and there is nearly always room. A short write goes on through the socket's own
        ``send``, which waits for room within the timeout."""
        with self.send_lock:
            sock = cast(socket.socket, self.socket)
            try:
                sent = 0
                if sock is not None and not isinstance(sock, ssl.SSLSocket):
                    with contextlib.suppress(BlockingIOError):
                        sent = os.write(sock.fileno(), bytestream)
                view = memoryview(bytestream)
                while sent < len(view):
                    sent += sock.send(view[sent:])
                if self.assoc.get_handlers(evt.EVT_DATA_SENT):
                    evt.trigger(self.assoc, evt.EVT_DATA_SENT, {"data": bytestream})
            except Exception:
                self.event_queue.put("Evt17")  # the connection is gone, as pynetdicom says
            self.bytes_out += len(bytestream)

    def recv(self, nr_bytes: int) -> bytearray:
        """pynetdicom's read (fewer bytes only when the peer closed), as ``read_into``."""
        buffer = bytearray(nr_bytes)
        got = self.read_into(buffer, 0)
        del buffer[got:]
        if got == nr_bytes:
            self.quickack()
        return buffer

    def read_into(self, buffer: bytearray, start: int) -> int:
        """Fill ``buffer[start:]`` from the socket; returns the bytes read (fewer only
        when the peer closed). ``pdu_guard`` reads a PDU's header and then its body
        straight behind it.

        A socket with a timeout is non-blocking underneath, and Python emulates the
        timeout with a ``poll(2)`` before every ``recv``: two extra system calls per PDU,
        where the bytes are nearly always there already. A plain socket is read
        directly first; only when nothing is there does ``recv_into`` wait, with the
        timeout. (An ``SSLSocket`` must be read through ``ssl``.)
        """
        sock = cast(socket.socket, self.socket)
        self.pacsd_readable = False
        fd = -1 if isinstance(sock, ssl.SSLSocket) else sock.fileno()
        view = memoryview(buffer)
        end = len(buffer)
        got = start
        try:
            while got < end:
                n = -1
                if fd >= 0:
                    try:
                        n = os.readv(fd, (view[got:],))
                    except BlockingIOError:
                        # The rest is not here yet. A peer with Nagle on may be holding
                        # it until what it sent so far is acknowledged (DCMTK writes a
                        # PDU's headers and its fragment separately): acknowledge now,
                        # or both sides wait ~40 ms for our delayed ACK.
                        self.quickack()
                if n < 0:
                    if fd < 0 and not cast(ssl.SSLSocket, sock).pending():
                        # TLS: whether the rest is there shows only by trying; the same
                        # acknowledgement, in case the peer holds it for one.
                        self.quickack()
                    n = sock.recv_into(view[got:], end - got)
                if not n:
                    break
                got += n
        finally:
            del view
            self.bytes_in += got - start
        return got - start

    def quickack(self) -> None:
        """Ask the kernel to acknowledge what was read at once (TCP_QUICKACK, Linux)."""
        sock = self.socket
        if _QUICKACK is not None and sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)

    #: Set by the DUL thread's wait when ``poll`` just found the socket readable
    #: (reactor.py); cleared by the next read. ``ready`` then needs no second poll.
    pacsd_readable = False

    @property
    def ready(self) -> bool:
        """pynetdicom's check (data waiting?) with ``poll``: its ``select`` fails, and
        reads as a closed connection, once descriptor numbers pass 1023."""
        raw = self.socket
        if raw is None or self._is_connected is False:
            return False
        if self.pacsd_readable:
            return True
        if isinstance(raw, ssl.SSLSocket) and raw.pending():
            return True
        try:
            poller = select.poll()
            poller.register(raw, select.POLLIN | select.POLLPRI)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            self.event_queue.put("Evt17")
            return False


_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class PacsdRequestHandler(RequestHandler):
    """Creates each acceptor association with pacsd's routing snapshot and admission."""

    server: PacsdAssociationServer

    def handle(self) -> None:
        balancer = self.server.balancer
        started: list[Association] = []
        self._pacsd_started = started
        try:
            # On a TLS listener the handshake runs here, on the connection's own thread,
            # not on the accept thread as pynetdicom does it (dicom/tls.py says why).
            tls = self.server.tls
            if tls is not None:
                secured = tls.secure(self.request, self.client_address)
                if secured is None:
                    return
                self.request = secured
            super().handle()
        finally:
            # A connection counts on the process's load until its association's thread
            # ends (PacsdAssociation.run); one that never got that far ends here.
            if balancer is not None:
                assoc = started[0] if started else None
                if assoc is None or (
                    not assoc._started.is_set()  # type: ignore[attr-defined]
                    and assoc.__dict__.pop("pacsd_on_end", None) is not None
                ):
                    balancer.closed()

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        table = self.server.routing()
        offer = negotiation.offer_for(table)  # built with the table, not here
        assoc.pacsd_routes = table  # type: ignore[attr-defined]
        assoc.pacsd_offer = offer  # type: ignore[attr-defined]
        assoc.pacsd_id = self.server.new_association_id()  # type: ignore[attr-defined]
        # Negotiation builds new context objects and never mutates these, so a shallow
        # copy will do (pynetdicom deep-copies: 60-100 ms for a full storage list).
        assoc.acceptor.supported_contexts = list(offer.contexts)
        assoc.acse = AdmissionACSE(assoc, self.server.admission)
        assoc.dimse = PacsdDIMSE(assoc, self.server.before_send, self.server.spool_dir)
        assoc.dul.socket.__class__ = FastSocket
        assoc.dul.socket.send_lock = threading.Lock()  # type: ignore[union-attr]
        reactor.install(assoc)  # both threads wait for work instead of polling every 1 ms
        balancer = self.server.balancer
        if balancer is not None:
            assoc.pacsd_on_end = balancer.closed  # type: ignore[attr-defined]
        self._pacsd_started.append(assoc)
        pdu_guard.install(assoc.dul)  # bounded, time-limited PDU reads
        return assoc


class PacsdAssociationServer(ThreadedAssociationServer):
    """The listening socket. Connection threads are daemons and never joined on close:
    pacsd tracks associations itself and waits for them up to its grace period."""

    daemon_threads = True
    block_on_close = False
    #: Listen backlog (socketserver's default is 5): a burst of connections beyond it
    #: waits for SYN retransmits (1 s, 3 s, ...) instead of a prompt A-ASSOCIATE-RJ.
    request_queue_size = 256

    routing: Callable[[], RoutingTable]
    admission: AdmissionCheck
    new_association_id: Callable[[], str]
    before_send: BeforeSend
    spool_dir: Path
    #: Set on a DICOM TLS listener: accepted sockets are secured before negotiating.
    tls: TlsAcceptor | None = None
    #: Bind with SO_REUSEPORT, so that the engine processes of one server share the
    #: port and the kernel spreads connections over them (docs/workers.md).
    reuse_port = False
    #: Join a group another process of the server started (workers), rather than
    #: refuse a port that is taken.
    join_group = False

    def configure(
        self,
        routing: Callable[[], RoutingTable],
        admission: AdmissionCheck,
        new_association_id: Callable[[], str],
        before_send: BeforeSend,
        spool_dir: Path,
    ) -> None:
        self.spool_dir = spool_dir
        spool_files.for_folder(spool_dir)  # spool files made ready now, not mid-C-STORE
        self.routing = routing
        self.admission = admission
        self.new_association_id = new_association_id
        self.before_send = before_send
        # UIDs validated once per process, and the current table's presentation
        # contexts ready before the first association (later tables get theirs when
        # they are built).
        negotiation.install()
        negotiation.offer_for(routing())
        # pynetdicom deep-copies these for every association before _create_association
        # replaces them with the routing table's: nothing to copy.
        self.contexts = []

    def server_bind(self) -> None:
        if self.reuse_port:
            if not self.join_group and self.server_address[1]:
                self._refuse_taken_port()
            # Before bind(): every socket of the group needs it, and only processes of
            # the same user can join the group.
            cast(socket.socket, self.socket).setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def _refuse_taken_port(self) -> None:
        """Raise EADDRINUSE if anything listens on the port already.

        With SO_REUSEPORT, a second server of the same user configured with the same
        port would silently join the group and take half the connections. A socket
        without the option cannot bind a port in use, so one is bound (and closed)
        first: the first process of a server starts a group, only its workers join it.
        """
        probe = socket.socket(self.address_family, socket.SOCK_STREAM)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(self.server_address)
        finally:
            probe.close()

    def get_request(self) -> tuple[socket.socket, Any]:
        client, address = super().get_request()
        # pynetdicom never sets TCP_NODELAY; without it command+dataset sends stall on
        # delayed ACKs (~40 ms per message).
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address

    # -- connections, and the engine processes' share of them (workers/balance.py) ---

    @property
    def balancer(self) -> balance.Balancer | None:
        """This process's balancer, for a listener in a port group of several processes."""
        return balance.current() if self.reuse_port else None

    def server_activate(self) -> None:
        super().server_activate()
        if self.reuse_port:
            balance.register(self.server_address[1], self.adopt)

    def server_close(self) -> None:
        if self.reuse_port:
            balance.unregister(self.server_address[1], self.adopt)
        super().server_close()

    def process_request(self, request: Any, client_address: Any) -> None:
        balancer = self.balancer
        if balancer is not None and balancer.hand_over(request):
            # A sibling serves it now. Close this copy only: shutdown_request would
            # shut the connection down for the sibling too.
            request.close()
            return
        self.adopt(request, client_address)

    def adopt(self, request: Any, client_address: Any) -> None:
        """Serve a connection on its own thread: one accepted here, or one a sibling
        engine process handed over. It counts on this process's load from now until
        its association ends (PacsdRequestHandler.handle)."""
        balancer = self.balancer
        if balancer is not None:
            balancer.opened()
        try:
            super().process_request(request, client_address)
        except BaseException:
            if balancer is not None:
                balancer.closed()
            raise


class SharedPortAssociationServer(PacsdAssociationServer):
    """The first listening socket of a SO_REUSEPORT group (the server's first process)."""

    reuse_port = True


class JoiningAssociationServer(SharedPortAssociationServer):
    """A worker's listening socket, joining the group of the server's first process."""

    join_group = True
