"""``client.security``: the SDK side of ``pacsd.admin.v1.SecurityService``.

The DICOM TLS listener's certificates, and rotating them without a restart::

    status = client.security.certificates()        # TlsStatus: host, port, certificates
    # ... replace the files the server's security settings name, then:
    status = client.security.reload()              # the next association sees them
    print(status.certificates[0].sha256_fingerprint)

``reload`` of files that cannot be used raises ``FailedPrecondition`` with reason
CERTIFICATE_INVALID, and the certificates in force keep serving; on a server without
TLS configured both calls' reason is TLS_NOT_CONFIGURED (``certificates`` answers
``enabled=False`` instead).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pacsd.admin.v1 import security_pb2, security_pb2_grpc

if TYPE_CHECKING:
    from pacsd.client.client import Client

__all__ = ["SecurityAPI"]


class SecurityAPI:
    """``pacsd.admin.v1.SecurityService`` of one server."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = security_pb2_grpc.SecurityServiceStub(client._channel)

    def certificates(self, *, timeout: float | None = None) -> security_pb2.TlsStatus:
        """Where the DICOM TLS listener is and the certificates it serves."""
        response = self._client._call(
            self._stub.GetCertificates, security_pb2.GetCertificatesRequest(), timeout
        )
        return response.tls

    def reload(self, *, timeout: float | None = None) -> security_pb2.TlsStatus:
        """Read the certificate, key and CA files again; returns what is now in force."""
        response = self._client._call(
            self._stub.ReloadCertificates, security_pb2.ReloadCertificatesRequest(), timeout
        )
        return response.tls
