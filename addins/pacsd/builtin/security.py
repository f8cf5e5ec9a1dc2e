"""The ``security`` base service: DICOM TLS on its own port (PS3.15 BCP 195 profile).

It is an ordinary add-in so that a site with its own key management (an HSM, a vault,
an ACME client) can replace it: whatever provides "security" decides where the TLS
listener is and which ``ssl.SSLContext`` serves each new connection. The server owns
the socket; this add-in owns the certificates.

Why these defaults: TLS 1.2 is the floor BCP 195 sets (1.0 and 1.1 are refused by
OpenSSL before a byte of DICOM is read); the TLS 1.2 cipher list is the one DCMTK 3.6.7
offers by default (its non-downgrading BCP 195 profile: ECDHE/DHE with AES-GCM) plus the
ECDSA pair, so certificates with EC keys work too. TLS 1.3 suites are OpenSSL's, which
all qualify. Client certificates are optional unless ``require_client_cert`` is set,
because most modalities have none; with a ``ca_file`` a presented one is verified.

Without ``cert_file`` and ``key_file`` the add-in loads, says so, and provides no TLS
listener: installing pacsd must not open a port nobody configured.
"""

from __future__ import annotations

import ssl
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pacsd.addin import Addin, AddinContext, AddinSettings, command
from pacsd.addin.services import CertificateError, CertificateInfo
from pydantic import Field, model_validator

#: DCMTK 3.6.7's BCP 195 (non-downgrading) suites, with the ECDSA variants added.
BCP195_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
    )
)
#: The IANA port for DICOM over TLS.
DEFAULT_PORT = 2762


class SecuritySettings(AddinSettings):
    #: Address of the TLS listener; empty: the server's ``dicom_host``.
    host: str = ""
    #: TCP port of the TLS listener (0: a free port, for tests).
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    #: PEM certificate chain of the server, leaf first. With key_file, enables TLS.
    cert_file: str = ""
    #: PEM private key of that certificate (not encrypted: the server starts unattended).
    key_file: str = ""
    #: PEM bundle of CAs whose client certificates are accepted.
    ca_file: str = ""
    #: Refuse clients without a certificate signed by ``ca_file`` (mutual TLS).
    require_client_cert: bool = False
    #: Oldest TLS version accepted.
    min_version: Literal["1.2", "1.3"] = "1.2"
    #: OpenSSL cipher string for TLS 1.2 (TLS 1.3 suites are not configurable here).
    ciphers: str = BCP195_CIPHERS

    @model_validator(mode="after")
    def _consistent(self) -> SecuritySettings:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together: set both or neither")
        if self.require_client_cert and not self.ca_file:
            raise ValueError("require_client_cert needs ca_file (the CAs that sign client certs)")
        if self.ca_file and not self.cert_file:
            raise ValueError("ca_file without cert_file and key_file: no TLS listener to use it")
        if self.cert_file:
            # Fail the load or the settings update now, naming the file, rather than at
            # the first connection.
            build_context(self)
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


class SecurityAddin(Addin):
    name = "security"
    version = "1.0.0"
    description = "DICOM TLS listener settings and certificates (base service 'security')."
    settings_model = SecuritySettings
    provides = ("security",)

    def start(self, ctx: AddinContext) -> None:
        super().start(ctx)
        self._lock = threading.Lock()
        self._settings: SecuritySettings = ctx.settings
        self._context: ssl.SSLContext | None = None
        self._certs: list[CertificateInfo] = []
        self._apply(ctx.settings)

    def provide(self, service: str) -> Any:
        return self

    def settings_changed(self, settings: Any) -> None:
        self._apply(settings)

    def _apply(self, settings: SecuritySettings) -> None:
        context, certs = build_context(settings) if settings.enabled else (None, [])
        with self._lock:
            self._settings, self._context, self._certs = settings, context, certs
        if context is None:
            self.ctx.log.info("no cert_file/key_file configured: no DICOM TLS listener")
        else:
            self._report(certs)

    def _report(self, certs: list[CertificateInfo]) -> None:
        now = datetime.now(UTC)
        for cert in certs:
            if cert.role == "server":
                self.ctx.log.info(
                    "TLS server certificate %s (sha256 %s, valid until %s)",
                    cert.subject,
                    cert.sha256,
                    cert.not_after.isoformat(),
                )
            if cert.not_after < now:
                self.ctx.log.warning(
                    "%s certificate %s in %s expired on %s",
                    cert.role,
                    cert.subject,
                    cert.path,
                    cert.not_after.isoformat(),
                )

    # -- the Security service ---------------------------------------------------------

    def tls_endpoint(self) -> tuple[str, int] | None:
        settings = self._settings
        return (settings.host, settings.port) if settings.enabled else None

    def server_context(self) -> ssl.SSLContext:
        context = self._context
        if context is None:
            raise CertificateError("no cert_file/key_file configured")
        return context

    def reload(self) -> list[CertificateInfo]:
        settings = self._settings
        if not settings.enabled:
            raise CertificateError("no cert_file/key_file configured")
        context, certs = build_context(settings)  # raises: the old context stays
        with self._lock:
            self._context, self._certs = context, certs
        self.ctx.log.info("TLS certificates reloaded")
        self._report(certs)
        return list(certs)

    def certificates(self) -> list[CertificateInfo]:
        return list(self._certs)

    @command("status")
    def status(self, args: dict[str, Any]) -> dict[str, Any]:
        """Where TLS listens (as configured) and the certificates in force."""
        endpoint = self.tls_endpoint()
        return {
            "tls": endpoint is not None,
            "host": endpoint[0] if endpoint else "",
            "port": endpoint[1] if endpoint else 0,
            "certificates": [
                {
                    "role": c.role,
                    "path": c.path,
                    "subject": c.subject,
                    "not_after": c.not_after.isoformat(),
                    "sha256": c.sha256,
                }
                for c in self._certs
            ],
        }


# -- building the context ---------------------------------------------------------------


def build_context(settings: SecuritySettings) -> tuple[ssl.SSLContext, list[CertificateInfo]]:
    """A server context from the files as they are now, and what it holds.

    Raises ``CertificateError`` naming the file at fault; OpenSSL's own messages
    ("PEM lib") are replaced by what the operator has to fix.
    """
    chain = _read_certificates(settings.cert_file, "cert_file", "server")
    _check_key(settings.key_file)
    cas = _read_certificates(settings.ca_file, "ca_file", "ca") if settings.ca_file else []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if settings.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= ssl.OP_NO_RENEGOTIATION
    try:
        context.set_ciphers(settings.ciphers)
    except ssl.SSLError as exc:
        raise CertificateError(f"ciphers: OpenSSL knows none of {settings.ciphers!r}") from exc
    try:
        context.load_cert_chain(settings.cert_file, settings.key_file, password=_no_password)
    except ssl.SSLError as exc:
        raise CertificateError(
            f"key_file {settings.key_file} does not match cert_file {settings.cert_file}"
            if "KEY_VALUES_MISMATCH" in str(exc)
            else f"cert_file {settings.cert_file} / key_file {settings.key_file}: "
            f"rejected by OpenSSL ({exc.reason or 'unknown reason'})"
        ) from exc
    if settings.ca_file:
        context.load_verify_locations(cafile=settings.ca_file)
        required = settings.require_client_cert
        context.verify_mode = ssl.CERT_REQUIRED if required else ssl.CERT_OPTIONAL
    else:
        context.verify_mode = ssl.CERT_NONE
    return context, [*chain, *cas]


def _no_password() -> str:
    raise CertificateError("key_file is encrypted; pacsd needs an unencrypted key (mode 0600)")


def _read(path: str, field: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise CertificateError(f"{field} {path}: no such file") from exc
    except OSError as exc:
        raise CertificateError(f"{field} {path}: cannot be read ({exc.strerror})") from exc


def _read_certificates(path: str, field: str, role: str) -> list[CertificateInfo]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    data = _read(path, field)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertificateError(f"{field} {path}: no PEM certificate in it") from exc
    return [
        CertificateInfo(
            role=role,
            path=path,
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            sha256=":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256())),
            serial=format(cert.serial_number, "x"),
        )
        for cert in certs
    ]


def _check_key(path: str) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    data = _read(path, "key_file")
    try:
        load_pem_private_key(data, password=None)
    except TypeError as exc:  # encrypted
        raise CertificateError(
            f"key_file {path}: the key is encrypted; pacsd needs an unencrypted key (mode 0600)"
        ) from exc
    except Exception as exc:
        # Never the library's text: some include parts of what they failed to parse.
        raise CertificateError(f"key_file {path}: no PEM private key in it") from exc
