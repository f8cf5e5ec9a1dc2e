"""The process's DICOM listeners, driven as one: the plain port and the TLS port.

Operators start, stop, pause and resume "the DICOM server", not a socket; so every
action applies to each listener, and the state reported is the group's. The TLS
listener comes and goes with the "security" service: ``set_tls`` opens it where the
service says, moves it when the endpoint changes and closes it when TLS is no longer
configured, following what the operator last asked for (a stopped server stays
stopped; a paused one opens the new port paused). Closing a port never cuts the
associations running on it: they finish, or the next stop's grace period ends them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pacsd.server.dicom.listener import (
    BindError,
    DicomListener,
    ListenerState,
    ListenerStoppedError,
)

log = logging.getLogger("pacsd.core.dicom")

#: Builds the TLS listener for (host, port); the context comes from the service.
TlsListenerFactory = Callable[[str, int], DicomListener]


class DicomListeners:
    def __init__(self, plain: DicomListener, tls_factory: TlsListenerFactory, serve_plain: bool):
        self.plain = plain
        self._serve_plain = serve_plain
        self._tls_factory = tls_factory
        #: The TLS listener and the endpoint it was asked for (its port may be 0).
        self.tls: DicomListener | None = None
        self._tls_endpoint: tuple[str, int] | None = None
        self._lock = threading.RLock()
        #: What the operator last asked for; a TLS listener appearing later follows it.
        self._wanted = False
        self._paused = False

    def all(self) -> list[DicomListener]:
        """The listeners configured (bound or not): plain first."""
        with self._lock:
            found = [self.plain] if self._serve_plain else []
            return [*found, self.tls] if self.tls is not None else found

    def primary(self) -> DicomListener | None:
        """The listener the startup line names: plain, or TLS in TLS-only mode."""
        items = self.all()
        return items[0] if items else None

    @property
    def state(self) -> ListenerState:
        with self._lock:
            if not any(item.state is not ListenerState.STOPPED for item in self.all()):
                return ListenerState.STOPPED
            return ListenerState.PAUSED if self._paused else ListenerState.RUNNING

    def start(self) -> bool:
        """Bind every listener not yet bound; False when none needed it.

        Raises BindError; the listeners this call opened are closed again, so a failed
        start changes nothing."""
        with self._lock:
            opened: list[DicomListener] = []
            try:
                for item in self.all():
                    if item.start():
                        opened.append(item)
            except BindError:
                for item in opened:
                    item.close()
                raise
            self._wanted = True
            if opened:
                self._paused = False
            return bool(opened)

    def stop(self, grace_period: float, wait: bool = True) -> bool:
        """Close every listening socket, then drain the associations of all of them."""
        with self._lock:
            self._wanted, self._paused = False, False
            closed = [item.close() for item in self.all()]
        if not any(closed):
            return False
        if wait:
            self.plain.drain(grace_period)  # one tracker for all listeners
        else:
            threading.Thread(
                target=self.plain.drain, args=(grace_period,), name="pacsd-drain", daemon=True
            ).start()
        return True

    def pause(self) -> bool:
        return self._set_paused(True)

    def resume(self) -> bool:
        return self._set_paused(False)

    def _set_paused(self, paused: bool) -> bool:
        with self._lock:
            bound = [i for i in self.all() if i.state is not ListenerState.STOPPED]
            if not bound:
                raise ListenerStoppedError("the DICOM listener is stopped; start it first")
            changed = self._paused != paused
            self._paused = paused
            for item in bound:
                item.pause() if paused else item.resume()
            return changed

    def set_tls(self, endpoint: tuple[str, int] | None) -> None:
        """Make the TLS listener match ``endpoint`` ((host, port) or None for none).

        A bind failure here (the service changed at runtime) is logged and leaves the
        listener configured but closed: GetServer shows it not listening and the next
        StartServer tries again."""
        with self._lock:
            if endpoint == self._tls_endpoint:
                return
            old, self.tls, self._tls_endpoint = self.tls, None, endpoint
            if old is not None:
                old.close()
            if endpoint is None:
                if old is not None:
                    log.info("DICOM TLS listener removed (the security service provides none)")
                return
            self.tls = self._tls_factory(*endpoint)
            if not self._wanted:
                return
            try:
                self.tls.start()
            except BindError as exc:
                log.error("DICOM TLS listener not opened: %s", exc)
                return
            if self._paused:
                self.tls.pause()
