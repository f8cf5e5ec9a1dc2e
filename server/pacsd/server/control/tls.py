"""The control plane's TLS material, re-read when its files change.

gRPC asks ``fetch`` for the certificate configuration before every new TLS handshake
(``grpc.dynamic_ssl_server_credentials``). It compares the files' modification times
and sizes with those of the material in use and re-reads them only when they differ,
so a renewed certificate (or client CA) is used by the next connection without a
restart, and an unchanged one costs a few ``stat`` calls. Connections already open
keep the certificate they were made with.

Material is checked before use (certificate chain and CA parse, the key is not
encrypted and matches the certificate): at startup a bad file is a one-line error;
while serving, a half-written or mismatched set (say the certificate was replaced but
not the key yet) is logged and the previous material stays in force until the files
are consistent again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger("pacsd.core.control")


class ControlTLSError(Exception):
    """The control plane's certificate, key or client CA cannot be used."""


@dataclass(frozen=True)
class _Material:
    key: bytes
    chain: bytes
    client_ca: bytes | None
    #: (mtime_ns, size) of each file when it was read.
    stamp: tuple[tuple[int, int], ...]


class ControlTLS:
    """Server credentials for the control plane built from PEM files."""

    def __init__(
        self,
        cert: Path,
        key: Path,
        client_ca: Path | None = None,
        *,
        require_client_cert: bool = False,
    ) -> None:
        self.cert_path, self.key_path, self.client_ca_path = cert, key, client_ca
        self.require_client_cert = require_client_cert
        self._lock = threading.Lock()
        self._current = self._load()
        #: Material loaded by ``reload()`` that gRPC has not fetched yet.
        self._pending: _Material | None = None

    def _paths(self) -> tuple[Path, ...]:
        paths = (self.cert_path, self.key_path)
        return (*paths, self.client_ca_path) if self.client_ca_path else paths

    def _stamp(self) -> tuple[tuple[int, int], ...]:
        stamps = []
        for path in self._paths():
            st = os.stat(path)
            stamps.append((st.st_mtime_ns, st.st_size))
        return tuple(stamps)

    def _load(self) -> _Material:
        try:
            stamp = self._stamp()
        except OSError as exc:
            raise ControlTLSError(
                f"control-plane TLS file {exc.filename} cannot be read: {exc.strerror}"
            ) from exc
        chain = _read(self.cert_path, "control_tls_cert")
        key = _read(self.key_path, "control_tls_key")
        client_ca = (
            _read(self.client_ca_path, "control_tls_client_ca") if self.client_ca_path else None
        )
        _check(chain, key, client_ca, self)
        return _Material(key, chain, client_ca, stamp)

    def _configuration(self, material: _Material) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(material.key, material.chain)], root_certificates=material.client_ca
        )

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(self._current),
            self.fetch,
            require_client_authentication=self.require_client_cert,
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's callback before each handshake: new material, or None to keep it.

        Runs on a gRPC core thread, where an exception would fail the handshake;
        every failure is logged and the material in force is kept.
        """
        try:
            with self._lock:
                material = self._pending
                self._pending = None
                if material is None:
                    if self._stamp() == self._current.stamp:
                        return None
                    material = self._load()
                self._current = material
            log.info("control-plane TLS certificate reloaded from %s", self.cert_path)
            return self._configuration(material)
        except (OSError, ControlTLSError) as exc:
            # Remember the broken stamp so the warning is logged once per change, not
            # once per connection.
            with self._lock, contextlib.suppress(OSError):
                self._current = dataclasses.replace(self._current, stamp=self._stamp())
            log.warning("keeping the current control-plane TLS certificate: %s", exc)
            return None
        except Exception:
            log.exception("cannot reload the control-plane TLS certificate")
            return None

    def reload(self) -> None:
        """Read the files now (e.g. on an admin's request); raises ControlTLSError.

        The next handshake uses the new material even if the files' times did not
        change (a copy that preserved them, say).
        """
        material = self._load()
        with self._lock:
            self._pending = material


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ControlTLSError(f"{setting} {path} cannot be read: {exc.strerror}") from exc


def _check(chain: bytes, key: bytes, client_ca: bytes | None, tls: ControlTLS) -> None:
    """Fail with a message naming the file, never its contents."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        certs = x509.load_pem_x509_certificates(chain)
    except ValueError as exc:
        raise ControlTLSError(f"control_tls_cert {tls.cert_path} holds no PEM certificate") from exc
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except TypeError as exc:
        raise ControlTLSError(
            f"control_tls_key {tls.key_path} is encrypted; pacsd needs an unencrypted key "
            "(protect it with file permissions)"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ControlTLSError(f"control_tls_key {tls.key_path} holds no PEM private key") from exc
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if private.public_key().public_bytes(der, spki) != certs[0].public_key().public_bytes(
        der, spki
    ):
        raise ControlTLSError(
            f"control_tls_key {tls.key_path} does not belong to the certificate in {tls.cert_path}"
        )
    if client_ca is not None:
        try:
            x509.load_pem_x509_certificates(client_ca)
        except ValueError as exc:
            raise ControlTLSError(
                f"control_tls_client_ca {tls.client_ca_path} holds no PEM certificate"
            ) from exc
