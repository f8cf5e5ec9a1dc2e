"""Builds the gRPC server: pacsd services, grpc.health.v1 and server reflection."""

from __future__ import annotations

from concurrent import futures
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pacsd.admin.v1 import (
    addins_pb2,
    addins_pb2_grpc,
    aetitles_pb2,
    aetitles_pb2_grpc,
    associations_pb2,
    associations_pb2_grpc,
    logs_pb2,
    logs_pb2_grpc,
    security_pb2,
    security_pb2_grpc,
    server_pb2,
    server_pb2_grpc,
    storage_pb2,
    storage_pb2_grpc,
)
from pacsd.server.aetitles import CurrentAETitles
from pacsd.server.control.addin_service import AddinServicer
from pacsd.server.control.aetitle_service import AETitleServicer
from pacsd.server.control.association_service import AssociationServicer
from pacsd.server.control.audit import AuditInterceptor
from pacsd.server.control.auth import Authenticator, AuthInterceptor
from pacsd.server.control.log_service import LogServicer
from pacsd.server.control.security_service import SecurityServicer
from pacsd.server.control.server_service import ServerServicer
from pacsd.server.control.storage_service import StorageServicer
from pacsd.server.control.streams import MAX_STREAMS, StreamSlots
from pacsd.server.control.tls import ControlTLS
from pacsd.server.workers.replication import ReplicationInterceptor

if TYPE_CHECKING:
    from pacsd.server.runtime import Runtime

#: Health service name that reports SERVING only while the DICOM listener accepts
#: associations (RUNNING); "" reports whether the process is up at all.
DICOM_HEALTH_SERVICE = "pacsd.dicom"

SERVICE_NAMES = (
    server_pb2.DESCRIPTOR.services_by_name["ServerService"].full_name,
    addins_pb2.DESCRIPTOR.services_by_name["AddinService"].full_name,
    aetitles_pb2.DESCRIPTOR.services_by_name["AETitleService"].full_name,
    storage_pb2.DESCRIPTOR.services_by_name["StorageService"].full_name,
    logs_pb2.DESCRIPTOR.services_by_name["LogService"].full_name,
    associations_pb2.DESCRIPTOR.services_by_name["AssociationService"].full_name,
    security_pb2.DESCRIPTOR.services_by_name["SecurityService"].full_name,
)


class ControlBindError(Exception):
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        super().__init__(f"control port {host}:{port} is already in use or cannot be bound")


def grpc_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ControlPlane:
    def __init__(self, runtime: Runtime) -> None:
        self._settings = runtime.settings
        #: Set by ``bind`` when the settings name a certificate (control/tls.py).
        self.tls: ControlTLS | None = None
        self.health = health.HealthServicer()
        self.streams = StreamSlots(MAX_STREAMS)
        # Credentials and roles are checked first (control/auth.py), so the audit record
        # of a call names who made it; every state-changing call leaves an AUDIT record
        # (control/audit.py), and is then repeated on the server's other engine
        # processes (workers/replication.py). A worker's services answer only its
        # supervisor, over a private Unix socket: none of that applies there.
        interceptors: list[grpc.ServerInterceptor] = []
        if runtime.role is None:
            interceptors = [
                AuthInterceptor(Authenticator.from_settings(runtime.settings)),
                AuditInterceptor(),
                ReplicationInterceptor(lambda: runtime.supervisor),
            ]
        self._server = grpc.server(
            # Each live log/event stream holds a worker; 16 more always serve unary calls.
            futures.ThreadPoolExecutor(
                max_workers=16 + MAX_STREAMS, thread_name_prefix="pacsd-control"
            ),
            # gRPC sets SO_REUSEPORT by default, which would let a second pacsd "bind" a
            # control port that is already taken.
            options=[("grpc.so_reuseport", 0)],
            interceptors=interceptors,
        )
        server_pb2_grpc.add_ServerServiceServicer_to_server(ServerServicer(runtime), self._server)
        addins_pb2_grpc.add_AddinServiceServicer_to_server(AddinServicer(runtime), self._server)
        # The runtime creates its DICOM client with the database, before the control plane.
        assert runtime.dicom_client is not None
        aetitles_pb2_grpc.add_AETitleServiceServicer_to_server(
            AETitleServicer(CurrentAETitles(runtime.services), runtime.dicom_client),
            self._server,
        )
        storage_pb2_grpc.add_StorageServiceServicer_to_server(
            StorageServicer(runtime), self._server
        )
        logs_pb2_grpc.add_LogServiceServicer_to_server(
            LogServicer(runtime, runtime.logbus, self.streams), self._server
        )
        associations_pb2_grpc.add_AssociationServiceServicer_to_server(
            AssociationServicer(runtime, self.streams), self._server
        )
        security_pb2_grpc.add_SecurityServiceServicer_to_server(
            SecurityServicer(runtime), self._server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )

    def bind(self, host: str, port: int) -> int:
        """Bind the port, with TLS when configured; raises ControlTLSError for unusable
        certificate files and ControlBindError for a port that cannot be bound."""
        s = self._settings
        if s.control_tls_cert is not None and s.control_tls_key is not None:
            self.tls = ControlTLS(
                s.control_tls_cert,
                s.control_tls_key,
                s.control_tls_client_ca,
                require_client_cert=s.control_require_client_cert,
            )
        try:
            if self.tls is not None:
                bound = self._server.add_secure_port(
                    grpc_address(host, port), self.tls.server_credentials()
                )
            else:
                bound = self._server.add_insecure_port(grpc_address(host, port))
        except RuntimeError as exc:
            raise ControlBindError(host, port) from exc
        if bound == 0:
            raise ControlBindError(host, port)
        return bound

    def bind_private(self, address: str) -> None:
        """Bind a worker's services to its supervisor's Unix socket (``unix:/path``)."""
        try:
            bound = self._server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ControlBindError(address, 0) from exc
        if bound == 0:
            raise ControlBindError(address, 0)

    def start(self) -> None:
        self._server.start()
        self.set_health("", True)

    def set_health(self, service: str, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self.health.set(service, status)

    def stop(self, grace: float) -> None:
        self.health.enter_graceful_shutdown()
        self._server.stop(grace).wait()
