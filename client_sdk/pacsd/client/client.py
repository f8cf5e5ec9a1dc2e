"""The pacsd control-plane client.

One ``Client`` owns one gRPC channel. Calls are grouped by the service they drive
(``client.server``, ``client.addins``; AE titles and the like get their own attribute
the same way) so the SDK mirrors the proto's services instead of growing one flat class.
Every call has a deadline and raises only ``pacsd.client.errors.PacsdError`` subclasses,
so a caller never needs to know gRPC.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
from pacsd.admin.v1 import server_pb2, server_pb2_grpc
from pacsd.client import _health
from pacsd.client.addins import AddinsAPI, from_struct, to_struct
from pacsd.client.aetitles import AETitlesAPI
from pacsd.client.associations import AssociationsAPI
from pacsd.client.credentials import Credentials, PathArg, resolve
from pacsd.client.errors import InvalidArgument, PacsdError, from_rpc_error
from pacsd.client.logs import LogsAPI
from pacsd.client.security import SecurityAPI
from pacsd.client.storage import StorageAPI

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_TIMEOUT",
    "Change",
    "Client",
    "ServerAPI",
    "ServerSettings",
    "SettingsUpdate",
]

DEFAULT_ENDPOINT = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 10.0

R = TypeVar("R")


@dataclass(frozen=True)
class Change:
    """Result of an idempotent state change.

    ``changed`` is False when the server already was in the requested state, so scripts
    can re-run a change safely and still learn whether it did anything.
    """

    server: server_pb2.Server
    changed: bool


@dataclass(frozen=True)
class ServerSettings:
    """Every setting in force (keyed as in the TOML file, secrets masked) and the names
    ``update_settings`` can change without a restart."""

    settings: dict[str, Any]
    runtime_settings: tuple[str, ...]


@dataclass(frozen=True)
class SettingsUpdate:
    """Result of ``update_settings``: every setting after it, the names whose value
    changed (would change, with ``validate_only``), and whether there were any."""

    settings: dict[str, Any]
    changed_fields: tuple[str, ...]
    changed: bool


class Client:
    """A connection to one pacsd control plane, e.g. ``Client("127.0.0.1:50051")``.

    The channel connects lazily: constructing a Client never fails because the server is
    down; the first call does, with ``ServerUnavailable``. ``timeout`` is the deadline in
    seconds of each call; every method also takes ``timeout=`` to override it once.
    Misuse (an empty endpoint, a non-positive timeout, calling after ``close()``) raises
    ValueError; everything that goes wrong on the wire raises a PacsdError.
    ``credentials`` (see ``pacsd.client.credentials``), or the same given directly as
    ``token`` (sent as a bearer token with every call), ``cacert`` (PEM that verifies
    the server: TLS), ``cert`` and ``key`` (the client's own certificate: mutual TLS),
    authenticate the client; unusable credentials raise ``CredentialsError`` (a
    ValueError) here, before anything is sent, e.g. a token over plaintext to a host
    that is not loopback. A refusal by the server raises ``Unauthenticated`` or
    ``PermissionDenied``.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        credentials: Credentials | None = None,
        token: str | None = None,
        cacert: PathArg = None,
        cert: PathArg = None,
        key: PathArg = None,
    ) -> None:
        if not endpoint.strip():
            raise ValueError("endpoint must not be empty")
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        credentials = resolve(credentials, token=token, cacert=cacert, cert=cert, key=key)
        self.endpoint = endpoint
        self.timeout = float(timeout)
        self.credentials = credentials
        self._metadata = credentials.call_metadata(endpoint) if credentials else None
        secure = credentials.channel_credentials() if credentials else None
        self._channel = (
            grpc.secure_channel(endpoint, secure)
            if secure is not None
            else grpc.insecure_channel(endpoint)
        )
        # Connectivity is tracked so that a DEADLINE_EXCEEDED can be told apart:
        # still connecting (nothing usable there) or connected but slow (a server issue).
        self._state_lock = threading.Lock()
        self._ready = False
        self._channel.subscribe(self._on_connectivity, try_to_connect=False)
        self._closed = False
        self.server = ServerAPI(self)
        self.addins = AddinsAPI(self)
        self.aetitles = AETitlesAPI(self)
        self.storage = StorageAPI(self)
        self.logs = LogsAPI(self)
        self.associations = AssociationsAPI(self)
        self.security = SecurityAPI(self)
        self._health_check = self._channel.unary_unary(
            _health.CHECK_METHOD,
            request_serializer=_health.HealthCheckRequest.SerializeToString,
            response_deserializer=_health.HealthCheckResponse.FromString,
        )

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Release the channel; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._channel.unsubscribe(self._on_connectivity)
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(endpoint={self.endpoint!r}, timeout={self.timeout!r})"

    # -- process-wide calls ----------------------------------------------------------

    def shutdown(self, grace_period: float | None = None, *, timeout: float | None = None) -> None:
        """Ask the server process to exit (status 0).

        Returns once the request is accepted, not when the process is gone: the server
        first lets running associations finish for up to ``grace_period`` seconds
        (None: the server's configured grace period).
        """
        request = server_pb2.ShutdownRequest()
        _set_grace(request, grace_period)
        self._call(self.server._stub.Shutdown, request, timeout)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """grpc.health.v1 status of ``service``: "SERVING", "NOT_SERVING",
        "SERVICE_UNKNOWN" or "UNKNOWN".

        "" is the process as a whole; "pacsd.dicom" is SERVING only while the DICOM
        listener accepts associations. A service the server does not know is answered
        NOT_FOUND by gRPC's health servicer; that is reported as "SERVICE_UNKNOWN"
        rather than raised, because it is an answer, not a failure.
        """
        try:
            response = self._call(
                self._health_check, _health.HealthCheckRequest(service=service), timeout
            )
        except PacsdError as exc:
            if exc.code is grpc.StatusCode.NOT_FOUND:
                return "SERVICE_UNKNOWN"
            raise
        return _health.STATUS_NAMES.get(int(response.status), "UNKNOWN")

    # -- plumbing shared by the API namespaces ----------------------------------------

    def _call(self, method: Callable[..., R], request: Any, timeout: float | None = None) -> R:
        """Run one unary call with a deadline, mapping every gRPC failure to PacsdError."""
        if self._closed:
            raise ValueError("this Client is closed")
        deadline = self.timeout if timeout is None else timeout
        try:
            if self._metadata is None:
                return method(request, timeout=deadline)
            return method(request, timeout=deadline, metadata=self._metadata)
        except grpc.RpcError as exc:
            with self._state_lock:
                connected = self._ready
            raise from_rpc_error(exc, self.endpoint, connected=connected) from exc

    def _on_connectivity(self, state: grpc.ChannelConnectivity) -> None:
        with self._state_lock:
            self._ready = state is grpc.ChannelConnectivity.READY


class ServerAPI:
    """``pacsd.admin.v1.ServerService``: the DICOM listener's state and counters.

    Every change returns a ``Change``; asking for the state the server is already in
    is not an error but ``changed=False``.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = server_pb2_grpc.ServerServiceStub(client._channel)

    def get(self, *, timeout: float | None = None) -> server_pb2.Server:
        """Version, state, listeners and traffic counters."""
        response = self._client._call(self._stub.GetServer, server_pb2.GetServerRequest(), timeout)
        return response.server

    def start(self, *, timeout: float | None = None) -> Change:
        """Bind the DICOM listener again after ``stop``.

        Raises ServerUnavailable with reason DICOM_PORT_IN_USE (metadata host, port) when
        another process took the port meanwhile, FailedPrecondition/DICOM_BIND_FAILED for
        other bind failures.
        """
        response = self._client._call(
            self._stub.StartServer, server_pb2.StartServerRequest(), timeout
        )
        return Change(response.server, response.changed)

    def stop(self, grace_period: float | None = None, *, timeout: float | None = None) -> Change:
        """Close the DICOM listening socket; the control plane stays up.

        The server answers at once; running associations may go on for the grace period
        (``grace_period`` or the server's setting) and are then aborted.
        """
        request = server_pb2.StopServerRequest()
        _set_grace(request, grace_period)
        response = self._client._call(self._stub.StopServer, request, timeout)
        return Change(response.server, response.changed)

    def pause(self, *, timeout: float | None = None) -> Change:
        """Keep listening but reject new associations (transient A-ASSOCIATE-RJ).

        Raises FailedPrecondition with reason SERVER_STOPPED when the listener is stopped.
        """
        response = self._client._call(
            self._stub.PauseServer, server_pb2.PauseServerRequest(), timeout
        )
        return Change(response.server, response.changed)

    def resume(self, *, timeout: float | None = None) -> Change:
        """Accept associations again after ``pause``.

        Raises FailedPrecondition with reason SERVER_STOPPED when the listener is stopped.
        """
        response = self._client._call(
            self._stub.ResumeServer, server_pb2.ResumeServerRequest(), timeout
        )
        return Change(response.server, response.changed)

    def settings(self, *, timeout: float | None = None) -> ServerSettings:
        """Every server setting in force; passwords, token and passcode hashes read "***"."""
        response = self._client._call(
            self._stub.GetSettings, server_pb2.GetSettingsRequest(), timeout
        )
        return ServerSettings(from_struct(response.settings), tuple(response.runtime_settings))

    def update_settings(
        self,
        changes: Mapping[str, Any] | None = None,
        /,
        *,
        validate_only: bool = False,
        timeout: float | None = None,
        **more: Any,
    ) -> SettingsUpdate:
        """Change settings that apply without a restart, e.g.
        ``update_settings(log_level="DEBUG", max_associations=128)``.

        Validated whole first: an invalid value raises ``InvalidArgument`` naming the
        field, a setting that needs a restart raises ``FailedPrecondition`` with reason
        SETTING_REQUIRES_RESTART (metadata "fields"); nothing changes then. Values
        already in force are no change, so re-running is safe. The change lasts until
        the server process ends.
        """
        merged = {**(changes or {}), **more}
        request = server_pb2.UpdateSettingsRequest(
            settings=to_struct(merged, "settings"), validate_only=validate_only
        )
        response = self._client._call(self._stub.UpdateSettings, request, timeout)
        return SettingsUpdate(
            from_struct(response.settings), tuple(response.changed_fields), response.changed
        )


def _set_grace(
    request: server_pb2.StopServerRequest | server_pb2.ShutdownRequest,
    grace_period: float | None,
) -> None:
    if grace_period is None:
        return
    # Negative values are the server's to refuse (it names the field); values a Duration
    # cannot hold at all would otherwise escape as OverflowError/ValueError.
    if not math.isfinite(grace_period):
        raise InvalidArgument(
            f"grace_period must be a finite number of seconds, not {grace_period!r}",
            reason="INVALID_ARGUMENT",
            metadata={"field": "grace_period"},
        )
    try:
        request.grace_period.FromTimedelta(timedelta(seconds=grace_period))
    except (OverflowError, ValueError) as exc:
        raise InvalidArgument(
            f"grace_period {grace_period!r} is out of range",
            reason="INVALID_ARGUMENT",
            metadata={"field": "grace_period"},
        ) from exc
