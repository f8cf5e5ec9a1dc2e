"""One pacsd process: starts its parts in order and takes them down again.

Startup order (each step fails with a one-line error and exit status 1):
settings -> data directory and database (migrated) -> add-ins -> control plane bound ->
DICOM listener bound -> workers started -> "listening ..." line printed -> serving.

The same class runs a worker process (``role`` set; workers/): it skips the data
directory's lock and the index check (the first process owns both), serves its
control services on a private Unix socket for the supervisor, and joins the DICOM
port's SO_REUSEPORT group.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from pacsd.addin import AddinContext
from pacsd.server import logsetup
from pacsd.server.addins.manager import AddinManager
from pacsd.server.aetitles import CurrentAETitles, SqliteAETitles
from pacsd.server.config import Settings
from pacsd.server.control.grpc_server import DICOM_HEALTH_SERVICE, ControlPlane, grpc_address
from pacsd.server.dicom.client import PynetdicomClient
from pacsd.server.dicom.dispatch import Dispatcher
from pacsd.server.dicom.listener import DicomListener, ListenerState
from pacsd.server.dicom.listeners import DicomListeners
from pacsd.server.dicom.observers import Observers
from pacsd.server.dicom.tracking import AssociationTracker
from pacsd.server.metrics import MetricsEndpoint, StoreCounter
from pacsd.server.services import ServiceRegistry
from pacsd.server.storage.archive import Archive, open_archive
from pacsd.server.storage.database import ServerDatabase
from pacsd.server.storage.journal import JournalReplayFailed
from pacsd.server.storage.lock import DataDirLock, DataDirLocked
from pacsd.server.version import API_VERSION, VERSION
from pacsd.server.workers.role import WorkerRole

if TYPE_CHECKING:
    from pacsd.server.workers.supervisor import Supervisor

log = logging.getLogger("pacsd.core")


class StartupError(Exception):
    """A startup step failed; the message is the one line the operator sees."""


class Runtime:
    def __init__(self, settings: Settings, role: WorkerRole | None = None) -> None:
        self.settings = settings
        #: Set in a worker process; None in the process that hosts the control plane.
        self.role = role
        #: The other engine processes, when ``workers`` > 1 (set by start()).
        self.supervisor: Supervisor | None = None
        #: Engine processes share the DICOM port(s) when there is more than one.
        self._shared_port = role is not None or settings.workers > 1
        self.version = VERSION
        self.api_version = API_VERSION
        self.pid = os.getpid()
        self.started_at = datetime.now(UTC)
        self.shutting_down = False
        self.control_port = settings.control_port
        self._shutdown_requested = threading.Event()
        #: Set by a shutdown request that names its own grace period.
        self._shutdown_grace: float | None = None
        self.db: ServerDatabase | None = None
        #: Default base services, created once the database is open (see start()).
        self.aetitles: SqliteAETitles | None = None
        self.dicom_client: PynetdicomClient | None = None
        self.archive: Archive | None = None
        self.services = ServiceRegistry()
        self.observers = Observers(lambda: self.addins.hooks)
        self.addins = AddinManager(settings, self._addin_context, services=self.services)
        dispatcher = Dispatcher(
            lambda: self.addins.table,
            lambda: self.settings.handler_time_limit,
            self._resolve_ae,
        )
        self._dispatcher = dispatcher
        #: The plain DICOM listener. Its tracker is shared by every listener, so live
        #: associations, counters and aborts cover the TLS port too.
        self.listener = DicomListener(
            settings,
            lambda: self.addins.table,
            AssociationTracker(role.assoc_prefix if role is not None else ""),
            dispatcher,
            self.observers,
            reuse_port=self._shared_port,
            join_port=role is not None,
        )
        #: Plain and TLS listeners driven as one (start/stop/pause/resume, shutdown).
        self.listeners = DicomListeners(
            self.listener, self._tls_listener, serve_plain=settings.dicom_plain_listener
        )
        # The TLS port opens, moves and closes with the "security" service.
        self.services.subscribe("security", lambda _name: self._security_changed())
        self.control: ControlPlane | None = None
        #: The log bus (tail and live streams) that logsetup installed on the root logger.
        self.logbus = logsetup.bus()
        #: Instances and bytes stored since start, for the metrics.
        self.stored = StoreCounter()
        #: The Prometheus endpoint, when ``metrics_port`` is set.
        self.metrics: MetricsEndpoint | None = None
        #: Held from startup to exit: one process per data directory (storage/lock.py).
        self.data_lock = DataDirLock(settings.data_dir)

    def dicom_listeners(self) -> list[DicomListener]:
        """Every DICOM listener of the process (settings changes apply to each)."""
        return self.listeners.all()

    def _tls_listener(self, host: str, port: int) -> DicomListener:
        return DicomListener(
            self.settings,
            lambda: self.addins.table,
            self.listener.tracker,
            self._dispatcher,
            self.observers,
            name="dicom-tls",
            host=host or self.settings.dicom_host,
            port=port,
            tls_context=self._tls_context,
            reuse_port=self._shared_port,
            join_port=self.role is not None,
        )

    def _tls_context(self) -> ssl.SSLContext:
        security = self.services.get("security")
        if security is None:
            raise LookupError("no security service")
        return cast(ssl.SSLContext, security.server_context())

    def _tls_endpoint(self) -> tuple[str, int] | None:
        """Where the "security" service wants the TLS listener; None for none."""
        security = self.services.get("security")
        if security is None:
            return None
        try:
            endpoint = security.tls_endpoint()
        except Exception:
            log.exception("the security service failed to say where TLS listens")
            return None
        if endpoint is None:
            return None
        host, port = endpoint
        if int(port) == 0 and self.role is not None and self.role.tls_port:
            port = self.role.tls_port  # join the port the first process was given
        return (host or self.settings.dicom_host, int(port))

    def _security_changed(self) -> None:
        self.listeners.set_tls(self._tls_endpoint())
        self.refresh_health()

    def _addin_context(self, name: str, settings: Any) -> AddinContext:
        """The base services an add-in gets; the defaults until an add-in replaces one."""
        return AddinContext(
            name=name,
            log=logging.getLogger(f"pacsd.addin.{name}"),
            settings=settings,
            services=self.services,
        )

    def _resolve_ae(self, ae_title: str) -> Any:
        registry = self.services.get("aetitles")
        return None if registry is None else registry.get(ae_title)

    def start(self) -> str:
        """Bring every part up; returns the ``listening ...`` line. Raises StartupError."""
        from pacsd.server.addins.manager import StartupAddinError
        from pacsd.server.control.grpc_server import ControlBindError
        from pacsd.server.control.tls import ControlTLSError
        from pacsd.server.dicom.listener import BindError
        from pacsd.server.metrics import MetricsBindError
        from pacsd.server.storage.database import DatabaseError
        from pacsd.server.storage.index.db import IndexUnavailable

        s = self.settings
        try:
            s.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(
                f"cannot create data directory {s.data_dir}: {exc.strerror}"
            ) from exc
        try:
            if self.role is None:  # workers run under the first process's lock
                self.data_lock.acquire()
        except DataDirLocked as exc:
            raise StartupError(str(exc)) from exc
        except OSError as exc:
            raise StartupError(f"cannot lock {self.data_lock.path}: {exc.strerror}") from exc
        try:
            self.db = ServerDatabase.open(s.data_dir)
            self.aetitles = SqliteAETitles(self.db)
            # The client resolves peers through whichever registry is in force, so an
            # add-in that replaces "aetitles" redirects outgoing requests too.
            self.dicom_client = PynetdicomClient(
                CurrentAETitles(self.services),
                s.ae_title,
                acse_timeout=s.acse_timeout,
                dimse_timeout=s.dimse_timeout,
                network_timeout=s.network_timeout,
                max_pdu_size=s.max_pdu_size,
            )
            self.services.set_default("aetitles", self.aetitles)
            self.services.set_default("dicom_client", self.dicom_client)
            self.archive = open_archive(
                s,
                self._instance_stored,
                node=self.db.meta("server_id") or "",
                # Only the first process checks the index against the files, before any
                # worker runs: a worker doing it would delete the others' spool files.
                reconcile=self.role is None,
                prepare_buckets=s.prepare_buckets,
            )
            self.services.set_default("storage", self.archive)
            self.addins.load_startup()
            self.control = ControlPlane(self)
            if self.role is not None:
                self.control.bind_private(self.role.control_address)
            else:
                self.control_port = self.control.bind(s.control_host, s.control_port)
            if s.metrics_port is not None:
                self.metrics = MetricsEndpoint(self)
                self.metrics.start(s.metrics_host, s.metrics_port)
            self.listeners.set_tls(self._tls_endpoint())
            if not self.listeners.all():
                raise StartupError(
                    "dicom_plain_listener is false and no DICOM TLS listener is configured "
                    "(the security add-in needs cert_file and key_file)"
                )
            self.listeners.start()
            if self.role is None and s.workers > 1:
                self._start_workers()
        except (
            DatabaseError,
            IndexUnavailable,
            JournalReplayFailed,
            StartupAddinError,
            ControlBindError,
            ControlTLSError,
            MetricsBindError,
            BindError,
            StartupError,
        ) as exc:
            self._close()
            raise StartupError(str(exc)) from exc
        self.control.start()
        if self.supervisor is not None:
            self.supervisor.watch()
        self.refresh_health()
        # The plain listener, or the TLS one when it is the only one (TLS-only mode).
        primary = self.listeners.primary()
        assert primary is not None
        return (
            f"listening dicom={grpc_address(primary.host, primary.port)} "
            f"control={grpc_address(s.control_host, self.control_port)}"
        )

    def _start_workers(self) -> None:
        """Start workers 1 .. workers-1 on the ports just bound; raises StartupError."""
        from pacsd.server.workers.supervisor import Supervisor, WorkerStartError

        plain = self.listener.port if self.settings.dicom_plain_listener else 0
        tls = self.listeners.tls.port if self.listeners.tls is not None else None
        self.supervisor = Supervisor(self, dicom_port=plain, tls_port=tls)
        try:
            self.supervisor.start()
        except WorkerStartError as exc:
            self.supervisor.stop(0.0)
            self.supervisor = None
            raise StartupError(str(exc)) from exc

    def _instance_stored(self, req: Any, stored: Any) -> None:
        """The archive's callback once an instance is durable: count it, tell add-ins."""
        self.stored.add(stored.size)
        self.observers.instance_stored(req, stored)

    def refresh_health(self) -> None:
        """Publish the listener's state on the ``pacsd.dicom`` health service."""
        if self.control is not None:
            running = self.listeners.state is ListenerState.RUNNING and not self.shutting_down
            self.control.set_health(DICOM_HEALTH_SERVICE, running)

    def request_shutdown(self, grace_period: float | None = None) -> None:
        """Ask the main thread to shut down (signal handlers and the Shutdown RPC)."""
        if grace_period is not None:
            self._shutdown_grace = grace_period
        self.shutting_down = True
        self._shutdown_requested.set()

    def wait(self) -> None:
        """Block the main thread until shutdown is requested."""
        # A timed wait keeps the main thread responsive to signals.
        while not self._shutdown_requested.wait(0.5):
            pass

    def shutdown(self) -> None:
        """Stop accepting, let associations finish up to the grace period, stop the rest."""
        self.shutting_down = True
        self.refresh_health()
        grace = self._shutdown_grace
        if grace is None:  # the setting may have changed at runtime
            grace = self.settings.grace_period
        log.info("shutting down (grace period %.1fs)", grace)
        workers = self.supervisor
        stopping = None
        if workers is not None:  # the workers drain at the same time as this process
            stopping = threading.Thread(
                target=workers.stop, args=(grace,), name="pacsd-workers-stop", daemon=True
            )
            stopping.start()
        self.listeners.stop(grace)
        if stopping is not None:
            stopping.join()
        self._close()
        log.info("stopped")

    def _close(self) -> None:
        if self.metrics is not None:
            self.metrics.stop()
        # Live log and event streams end now rather than hold the control plane's stop.
        self.logbus.close_streams()
        self.listener.tracker.events.close_all()
        if self.control is not None:
            self.control.stop(1.0)
        self.addins.stop_all()
        if self.archive is not None:
            self.archive.close()
            self.archive.index.db.close()
        if self.db is not None:
            self.db.close()
        self.data_lock.release()
