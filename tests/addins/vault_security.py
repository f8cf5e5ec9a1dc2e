"""Test add-in: provides the ``security`` base service in place of the built-in add-in.

A site's own key management in miniature (the reason ``security`` is replaceable): one
certificate and key named in its settings, TLS 1.3 only and no client certificates
asked for, a policy the built-in add-in is never configured with in the tests, so
which provider serves the TLS port shows in the traffic. It implements the
``pacsd.addin.Security`` protocol on its own, without the built-in's code.
"""

from __future__ import annotations

import ssl
import threading
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from pacsd.addin import Addin, AddinContext, AddinSettings
from pacsd.addin.services import CertificateError, CertificateInfo


class VaultSettings(AddinSettings):
    cert_file: str = ""
    key_file: str = ""


class VaultSecurity(Addin):
    name = "vault_security"
    settings_model = VaultSettings
    provides = ("security",)

    def start(self, ctx: AddinContext) -> None:
        super().start(ctx)
        self._lock = threading.Lock()
        self._context, self._certs = self._build()

    def provide(self, service: str) -> Any:
        return self

    def _build(self) -> tuple[ssl.SSLContext, list[CertificateInfo]]:
        settings: VaultSettings = self.ctx.settings
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        try:
            context.load_cert_chain(settings.cert_file, settings.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise CertificateError(f"vault: cannot use {settings.cert_file}") from exc
        with open(settings.cert_file, "rb") as pem:
            cert = x509.load_pem_x509_certificate(pem.read())
        info = CertificateInfo(
            role="server",
            path=settings.cert_file,
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            sha256=":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256())),
            serial=format(cert.serial_number, "x"),
        )
        return context, [info]

    # -- the Security service ---------------------------------------------------------

    def tls_endpoint(self) -> tuple[str, int] | None:
        return ("", 0)  # the server's dicom_host, a free port

    def server_context(self) -> ssl.SSLContext:
        return self._context

    def reload(self) -> list[CertificateInfo]:
        context, certs = self._build()
        with self._lock:
            self._context, self._certs = context, certs
        return list(certs)

    def certificates(self) -> list[CertificateInfo]:
        return list(self._certs)
