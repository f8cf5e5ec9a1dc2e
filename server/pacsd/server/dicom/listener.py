"""The DICOM listener: binds the port and runs it through RUNNING, PAUSED and STOPPED.

STOPPED closes the listening socket (new connections are refused by the kernel);
PAUSED keeps it open and answers every new association with a transient
A-ASSOCIATE-RJ, so peers know to retry. Running associations are never cut short by a
state change: they finish, or are aborted once the grace period has passed.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from pacsd.addin import sop
from pacsd.server.addins.routing import RoutingTable
from pacsd.server.config import Settings
from pacsd.server.dicom import find_loop, policy, spool
from pacsd.server.dicom.associations import association_info
from pacsd.server.dicom.client import ClientAE
from pacsd.server.dicom.dispatch import Dispatcher
from pacsd.server.dicom.engine import (
    JoiningAssociationServer,
    PacsdAssociationServer,
    PacsdRequestHandler,
    Rejection,
    SharedPortAssociationServer,
    UnusableRequest,
)
from pacsd.server.dicom.observers import Observers
from pacsd.server.dicom.tls import ContextProvider, TlsAcceptor
from pacsd.server.dicom.tracking import AssociationTracker, LiveAssociation
from pynetdicom import _config, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.presentation import build_context

log = logging.getLogger("pacsd.core.dicom")

# pynetdicom's own per-PDU/per-message log handlers cost 7-13 % of throughput.
_config.LOG_HANDLER_LEVEL = "none"

#: Transient rejection, service provider (presentation), temporary congestion.
PAUSED_REJECTION = Rejection(0x02, 0x03, 0x01, "server paused")
#: Transient rejection, service provider (presentation), local limit exceeded.
LIMIT_REJECTION = Rejection(0x02, 0x03, 0x02, "maximum associations reached")


class ListenerState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class BindError(Exception):
    """The listening socket could not be bound."""

    def __init__(self, host: str, port: int, err: OSError, kind: str = "DICOM") -> None:
        self.host, self.port, self.errno = host, port, err.errno
        self.in_use = err.errno == errno.EADDRINUSE
        what = "is already in use" if self.in_use else f"cannot be bound: {err.strerror}"
        super().__init__(f"{kind} port {host}:{port} {what}")


class DicomListener:
    def __init__(
        self,
        settings: Settings,
        routing: Callable[[], RoutingTable],
        tracker: AssociationTracker,
        dispatcher: Dispatcher,
        observers: Observers,
        *,
        name: str = "dicom",
        host: str | None = None,
        port: int | None = None,
        tls_context: ContextProvider | None = None,
        reuse_port: bool = False,
        join_port: bool = False,
    ) -> None:
        """``tls_context`` makes this a DICOM TLS listener: each accepted connection is
        secured with the context it returns at that moment (dicom/tls.py). ``host`` and
        ``port`` default to the settings' dicom_host and dicom_port. ``reuse_port``
        binds with SO_REUSEPORT, to share the port with the server's other engine
        processes (docs/workers.md); ``join_port`` joins the port the first one bound."""
        self.reuse_port = reuse_port or join_port
        self.join_port = join_port
        #: "dicom" or "dicom-tls": names the listener in logs, threads and GetServer.
        self.name = name
        self.tls_context = tls_context
        self._settings = settings
        self._routing = routing
        self.tracker = tracker
        self._dispatch = dispatcher
        self._observers = observers
        self._lock = threading.RLock()
        self._server: PacsdAssociationServer | None = None
        self._thread: threading.Thread | None = None
        self._paused = False
        #: Where incoming C-STORE datasets are written as they arrive.
        self.spool_dir = settings.data_dir / "tmp"
        self.host = settings.dicom_host if host is None else host
        #: The port actually bound; keeps its value while stopped so start() rebinds it.
        self.port = settings.dicom_port if port is None else port
        self.ae = self._make_ae()

    def _make_ae(self) -> ClientAE:
        s = self._settings
        # ClientAE: the associations pynetdicom opens for C-MOVE sub-operations get
        # TCP_NODELAY and the lost-response guard; accepted sockets are unaffected.
        ae = ClientAE(ae_title=s.ae_title)
        ae.maximum_pdu_size = s.max_pdu_size
        ae.acse_timeout = s.acse_timeout
        ae.dimse_timeout = s.dimse_timeout
        ae.network_timeout = s.network_timeout
        # pacsd enforces the limit itself (admission), with the same rejection.
        ae.maximum_associations = 1_000_000
        return ae

    @property
    def kind(self) -> str:
        """The listener named for log lines and errors: DICOM or DICOM TLS."""
        return "DICOM TLS" if self.tls_context else "DICOM"

    @property
    def state(self) -> ListenerState:
        with self._lock:
            if self._server is None:
                return ListenerState.STOPPED
            return ListenerState.PAUSED if self._paused else ListenerState.RUNNING

    def start(self) -> bool:
        """Bind and serve; False when already listening. Raises BindError."""
        with self._lock:
            if self._server is not None:
                return False
            find_loop.install()  # C-FIND answers without pynetdicom's per-match overhead
            d = self._dispatch
            handlers: list[evt.EventHandlerType] = [
                (evt.EVT_C_ECHO, d.handle_echo),
                (evt.EVT_C_STORE, d.handle_store),
                (evt.EVT_C_FIND, d.handle_find),
                (evt.EVT_C_GET, d.handle_get),
                (evt.EVT_C_MOVE, d.handle_move),
                (evt.EVT_N_ACTION, d.handle_n_action),
                (evt.EVT_N_CREATE, d.handle_n_create),
                (evt.EVT_N_SET, d.handle_n_set),
                (evt.EVT_N_GET, d.handle_n_get),
                (evt.EVT_N_EVENT_REPORT, d.handle_n_event_report),
                (evt.EVT_N_DELETE, d.handle_n_delete),
                (evt.EVT_ACCEPTED, self._on_accepted),
                (evt.EVT_REJECTED, self._on_rejected),
                (evt.EVT_ABORTED, self._on_aborted),
                (evt.EVT_RELEASED, self._on_released),
                (evt.EVT_CONN_CLOSE, self._on_closed),
                (evt.EVT_DIMSE_RECV, self._on_dimse_recv),
                (evt.EVT_DIMSE_SENT, SentMessages(self.tracker, self._observers)),
            ]
            try:
                server = self.ae.make_server(
                    (self.host, self.port),
                    # make_server insists on a context; ours come from the routing table
                    # per association (PacsdRequestHandler).
                    contexts=[build_context(sop.VERIFICATION)],
                    evt_handlers=handlers,
                    server_class=(
                        JoiningAssociationServer
                        if self.join_port
                        else SharedPortAssociationServer
                        if self.reuse_port
                        else PacsdAssociationServer
                    ),
                    request_handler=PacsdRequestHandler,
                )
            except OSError as exc:
                raise BindError(self.host, self.port, exc, self.kind) from exc
            assert isinstance(server, PacsdAssociationServer)
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            server.configure(
                self._routing,
                self._admit,
                self.tracker.new_id,
                self._observers.before_send,
                self.spool_dir,
            )
            if self.tls_context is not None:
                server.tls = TlsAcceptor(
                    self.tls_context, lambda: self.ae.acse_timeout, self._tls_refused
                )
            self.ae._servers.append(server)  # AssociationServer.shutdown() removes it
            self.port = int(server.server_address[1])
            self._server = server
            self._paused = False
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.2},
                name=f"pacsd-{self.name}-listener",
                daemon=True,
            )
            self._thread.start()
            log.info(
                "%s listener on %s:%d as %s",
                self.kind,
                self.host,
                self.port,
                self.ae.ae_title,
            )
            return True

    def stop(self, grace_period: float, wait: bool = True) -> bool:
        """Close the listening socket, then let running associations go on for up to the
        grace period and abort those still running. With ``wait=False`` the draining
        happens in the background and this returns at once. False when already stopped."""
        if not self.close():
            return False
        if wait:
            self.drain(grace_period)
        else:
            threading.Thread(
                target=self.drain, args=(grace_period,), name="pacsd-drain", daemon=True
            ).start()
        return True

    def close(self) -> bool:
        """Close the listening socket only; running associations go on (the caller
        drains them). False when already closed."""
        with self._lock:
            server, self._server = self._server, None
            self._paused = False
            if server is None:
                return False
            server.shutdown()  # stops serve_forever and closes the listening socket
            log.info(
                "%s listener on %s:%d closed",
                self.kind,
                self.host,
                self.port,
            )
            return True

    def drain(self, grace_period: float) -> None:
        if self.tracker.wait_idle(grace_period):
            return
        live = self.tracker.live()
        log.warning(
            "grace period of %.1fs over; aborting %d association(s)", grace_period, len(live)
        )
        for item in live:
            _abort_soon(item.assoc)
        if not self.tracker.wait_idle(5.0):
            log.warning(
                "%d association(s) still open after their abort (an add-in handler holds"
                " their thread); stopping without them",
                len(self.tracker.live()),
            )

    def pause(self) -> bool:
        with self._lock:
            if self._server is None:
                raise ListenerStoppedError("the DICOM listener is stopped; start it first")
            changed, self._paused = not self._paused, True
            return changed

    def resume(self) -> bool:
        with self._lock:
            if self._server is None:
                raise ListenerStoppedError("the DICOM listener is stopped; start it first")
            changed, self._paused = self._paused, False
            return changed

    # -- admission and event handlers (run on association threads) -----------------

    def _admit(self, assoc: Association) -> Rejection | None:
        if self._paused:
            return PAUSED_REJECTION
        if not self.tracker.take_slot(assoc, self._settings.max_associations):
            return LIMIT_REJECTION
        # The access policy (dicom/policy.py) decides before add-ins see the association,
        # so their hooks get its permissions and never hear of a refused peer.
        refused = policy.admit(assoc, self._settings, self._dispatch.resolve_ae)
        if refused is not None:
            return refused
        verdict = self._observers.requested(assoc)
        if verdict is not None:
            return Rejection(verdict.result, verdict.source, verdict.diagnostic, verdict.reason)
        return None

    def _tls_refused(self, peer: str, why: str) -> None:
        # Counted like an association rejection (metrics reason "tls"); no association
        # exists yet, so no event is published.
        self.tracker.rejected(None, "tls", f"TLS handshake with {peer} failed: {why}")

    def _on_accepted(self, event: Event) -> None:
        if getattr(event.assoc, "pacsd_accept_reported", False):
            return  # reported once already, before the A-ASSOCIATE-AC (engine.py)
        event.assoc.pacsd_accept_reported = True  # type: ignore[attr-defined]
        self.tracker.accepted(event.assoc, getattr(event.assoc, "pacsd_id", ""))
        self._observers.accepted(event)

    def _on_rejected(self, event: Event) -> None:
        rejection = getattr(event.assoc, "pacsd_rejection", None)
        why = rejection.why if rejection else "rejected during negotiation"
        log.info(
            "association from %s (%s) rejected: %s",
            event.assoc.requestor.ae_title,
            event.assoc.requestor.address,
            why,
        )
        self.tracker.rejected(event.assoc, _rejection_kind(rejection), why)
        self._observers.rejected(event.assoc, why)

    def _on_released(self, event: Event) -> None:
        self.tracker.released(event.assoc)
        self._observers.released(event)

    def _on_aborted(self, event: Event) -> None:
        self.tracker.aborted(event.assoc)
        self._observers.aborted(event)

    def _on_closed(self, event: Event) -> None:
        spool.discard_unfinished(getattr(event.assoc.dimse, "message", None))
        self.tracker.closed(event.assoc)

    def _on_dimse_recv(self, event: Event) -> None:
        self.tracker.dimse_received(event.assoc, event.message)
        self._observers.message_received(event.assoc, event.message)

    # -- operator actions -------------------------------------------------------------

    def abort(self, assoc_id: str, timeout: float = 5.0) -> LiveAssociation | None:
        """Abort a live association for an operator: the peer gets an A-ABORT, then the
        connection closes and its resources go (thread, socket, unfinished spool file,
        via ``_on_closed``). Returns the association as it was, None if not live."""
        item = self.tracker.find(assoc_id)
        if item is None:
            return None
        info = association_info(item.assoc)
        log.warning(
            "association %s (%s -> %s from %s:%d) aborted by the control plane",
            assoc_id,
            info.calling_ae,
            info.called_ae,
            info.peer_host,
            info.peer_port,
            extra={
                "assoc_id": assoc_id,
                "calling_ae": info.calling_ae,
                "called_ae": info.called_ae,
                "peer": f"{info.peer_host}:{info.peer_port}",
            },
        )
        item.assoc.pacsd_abort_reason = "by control plane"  # type: ignore[attr-defined]
        _abort_soon(item.assoc)
        if not self.tracker.wait_closed(assoc_id, timeout):
            log.warning("association %s still open %.0fs after its abort", assoc_id, timeout)
        return item


def _abort_soon(assoc: Any) -> None:
    """Abort ``assoc`` on a thread of its own; the caller waits a bounded time.

    pynetdicom's abort returns once the association's reading thread has stopped, and a
    handler past its time limit may hold that thread for as long as it runs, for ever if
    it hangs: a shutdown, or an operator's abort, waited for it whatever the grace
    period. The thread is a daemon, so a stuck abort never keeps the process alive.
    """
    threading.Thread(target=assoc.abort, name="pacsd-abort", daemon=True).start()


class SentMessages:
    """``EVT_DIMSE_SENT``: the tracker's counters and event stream, then the
    ``message_sent`` hooks, in the order messages leave.

    For the responses ``send_path`` encodes, ``response_sent`` is called instead of the
    event (send_path.report_sent): it counts them from their type and Status, and the
    message object is built only if a watcher of the event stream or a hook that
    observes messages wants it.
    """

    #: pynetdicom names a handler by ``__name__`` when it logs the handler's exception.
    __name__ = "dimse_sent"

    def __init__(self, tracker: AssociationTracker, observers: Observers) -> None:
        self._tracker = tracker
        self._observers = observers

    def __call__(self, event: Event) -> None:
        self._tracker.dimse_sent(event.assoc, event.message)
        self._observers.message_sent(event.assoc, event.message)

    def response_sent(
        self, assoc: Association, message_type: str, status: int, message: Callable[[], Any]
    ) -> None:
        self._tracker.response_sent(assoc, message_type, status, message)
        self._observers.message_sent(assoc, message)


class ListenerStoppedError(Exception):
    """Pause or resume was asked of a stopped listener."""


def _rejection_kind(rejection: Rejection | None) -> str:
    """A short, bounded label for why an association was rejected (metrics)."""
    if rejection is None or isinstance(rejection, UnusableRequest):
        return "negotiation"
    if rejection is PAUSED_REJECTION:
        return "paused"
    if rejection is LIMIT_REJECTION:
        return "limit"
    if isinstance(rejection, policy.PolicyRejection):
        return "policy"
    return "addin"
