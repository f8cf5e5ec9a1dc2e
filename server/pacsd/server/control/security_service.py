"""``pacsd.admin.v1.SecurityService``: the DICOM TLS certificates, shown and reloaded.

Thin: it asks whatever provides the "security" service. The listener takes the
service's context for every new connection, so a reload needs nothing from the
listener; this servicer only reports where the listener is.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import grpc
from pacsd.addin.services import CertificateError, CertificateInfo
from pacsd.admin.v1 import errors_pb2, security_pb2, security_pb2_grpc
from pacsd.server.control.errors import ControlError, rpc
from pacsd.server.dicom.listener import ListenerState

if TYPE_CHECKING:
    from pacsd.server.runtime import Runtime

log = logging.getLogger("pacsd.core.control")


class SecurityServicer(security_pb2_grpc.SecurityServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    @rpc
    def GetCertificates(
        self, request: security_pb2.GetCertificatesRequest, context: grpc.ServicerContext
    ) -> security_pb2.GetCertificatesResponse:
        security = self._rt.services.get("security")
        certs = [] if security is None else security.certificates()
        return security_pb2.GetCertificatesResponse(tls=self._status(certs))

    @rpc
    def ReloadCertificates(
        self, request: security_pb2.ReloadCertificatesRequest, context: grpc.ServicerContext
    ) -> security_pb2.ReloadCertificatesResponse:
        security = self._configured()
        try:
            certs = security.reload()
        except CertificateError as exc:
            # The message names files, never their contents; the old context serves on.
            log.warning("TLS certificates not reloaded: %s", exc)
            raise ControlError(
                grpc.StatusCode.FAILED_PRECONDITION,
                errors_pb2.CERTIFICATE_INVALID,
                f"certificates not reloaded, the previous ones stay in force: {exc}",
                {"error": str(exc)},
            ) from exc
        return security_pb2.ReloadCertificatesResponse(tls=self._status(certs))

    def _configured(self) -> Any:
        security = self._rt.services.get("security")
        if security is None or security.tls_endpoint() is None:
            raise ControlError(
                grpc.StatusCode.FAILED_PRECONDITION,
                errors_pb2.TLS_NOT_CONFIGURED,
                "no DICOM TLS listener is configured (the security add-in needs cert_file "
                "and key_file)",
            )
        return security

    def _status(self, certs: list[CertificateInfo]) -> security_pb2.TlsStatus:
        rt = self._rt
        listener = rt.listeners.tls
        status = security_pb2.TlsStatus(provider=rt.services.provider("security"))
        if listener is None:
            return status
        listening = listener.state is not ListenerState.STOPPED
        status.enabled = True
        status.host = listener.host
        status.port = listener.port if listening else 0
        status.listening = listening
        for cert in certs:
            item = status.certificates.add(
                role=cert.role,
                path=cert.path,
                subject=cert.subject,
                issuer=cert.issuer,
                sha256_fingerprint=cert.sha256,
                serial_number=cert.serial,
            )
            item.not_before.FromDatetime(cert.not_before)
            item.not_after.FromDatetime(cert.not_after)
        return status
