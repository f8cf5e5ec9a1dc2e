"""The TLS handshake of an accepted DICOM connection, on that connection's own thread.

pynetdicom 3.0.4 wraps accepted sockets in ``get_request``, on the accept thread, so
one client that connects and sends nothing stalls every other connection until it
gives up. pacsd accepts plain sockets and lets ``PacsdRequestHandler`` call
``TlsAcceptor.secure`` on the new connection's thread, bounded by the ACSE timeout.

The context is asked of the provider for every connection, so certificates reloaded
at runtime serve the next association while the listening socket stays as it is.
A failed handshake is an outcome, not a bug: one log line with the peer and the reason,
a rejection counted, the socket closed, the listener untouched.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

log = logging.getLogger("pacsd.core.dicom")

#: Returns the server context in force (the "security" service's ``server_context``).
ContextProvider = Callable[[], ssl.SSLContext]
#: Called with the peer ("host:port") and the reason of a refused handshake.
RefusalCallback = Callable[[str, str], None]

#: OpenSSL reasons, in the words an operator searches the log for.
_REASONS = {
    "UNSUPPORTED_PROTOCOL": "the client offers only TLS versions below the server's minimum",
    "TLSV1_ALERT_PROTOCOL_VERSION": "the client offers only TLS versions below the minimum",
    "WRONG_VERSION_NUMBER": "not a TLS client hello (plain DICOM on the TLS port?)",
    "HTTP_REQUEST": "not a TLS client hello (plain HTTP on the TLS port?)",
    "RECORD_LAYER_FAILURE": "not a TLS client hello (plain DICOM on the TLS port?)",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the client sent no certificate (require_client_cert)",
    "NO_SHARED_CIPHER": "no cipher suite in common with the client",
    "NO_CIPHERS_AVAILABLE": "no cipher suite in common with the client",
    "NO_SUITABLE_SIGNATURE_ALGORITHM": "no signature algorithm in common with the client",
}


class TlsAcceptor:
    """Turns an accepted TCP socket into a TLS one, or refuses the connection."""

    def __init__(
        self,
        context: ContextProvider,
        timeout: Callable[[], float | None],
        refused: RefusalCallback,
    ) -> None:
        self._context = context
        self._timeout = timeout
        self._refused = refused

    def secure(self, sock: socket.socket, peer: Any) -> ssl.SSLSocket | None:
        """The socket after a completed handshake, or None (socket closed, logged)."""
        where = _peer(peer)
        try:
            context = self._context()
        except Exception as exc:
            # The service went away or lost its certificate between accept and now.
            _close(sock)
            self._refuse(where, f"no TLS context available ({exc})")
            return None
        previous = sock.gettimeout()
        try:
            tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except (OSError, ValueError) as exc:
            _close(sock)
            self._refuse(where, f"cannot start TLS: {exc}")
            return None
        timeout = self._timeout()
        try:
            tls.settimeout(timeout)
            tls.do_handshake()
        except (OSError, ValueError) as exc:
            _close(tls)
            self._refuse(where, describe(exc, timeout))
            return None
        tls.settimeout(previous)
        log.debug("TLS from %s: %s, %s", where, tls.version(), (tls.cipher() or ("?",))[0])
        return tls

    def _refuse(self, peer: str, why: str) -> None:
        log.warning("TLS handshake with %s failed: %s", peer, why)
        try:
            self._refused(peer, why)
        except Exception:
            log.exception("counting a refused TLS handshake failed")


def describe(exc: BaseException, timeout: float | None = None) -> str:
    """One line for a failed handshake, without a traceback or OpenSSL's file names."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"client certificate not accepted: {exc.verify_message}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"no TLS handshake within {timeout:g}s" if timeout else "handshake timed out"
    if isinstance(exc, ssl.SSLEOFError | ConnectionError):
        return "the client closed the connection during the handshake"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        return _REASONS.get(reason, reason.lower().replace("_", " ") or str(exc))
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _peer(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()
