"""DICOM TLS peers for the tests: a PKI, a pacsd with the security add-in, DCMTK and
Python ssl clients. Certificates come from ``pacsd.client.certs`` (what operators use)."""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pacsd.client import Client
from pacsd.client.certs import Issued, create_ca, issue_certificate

from tests.conftest import PacsdProcess, dcmtk, dcmtk_env
from tests.integration import dicom_peers


@dataclass(frozen=True)
class Pki:
    ca_dir: Path
    ca: Path
    server: Issued
    client: Issued


def make_pki(tmp_path: Path) -> Pki:
    ca_dir = tmp_path / "pki"
    ca = create_ca(ca_dir, common_name="test DICOM CA")
    server = issue_certificate(
        ca_dir, "server", "pacsd-a", ["127.0.0.1", "localhost"], usage="server"
    )
    client = issue_certificate(ca_dir, "client", "MODALITY", usage="client")
    return Pki(ca_dir, ca.cert, server, client)


def rotate_server_certificate(pki: Pki, common_name: str) -> Issued:
    """A new server certificate written over the files the server is configured with."""
    return issue_certificate(
        pki.ca_dir, "server", common_name, ["127.0.0.1", "localhost"], usage="server", force=True
    )


def tls_config(
    tmp_path: Path, pki: Pki, core: dict[str, Any] | None = None, **security: Any
) -> Path:
    """A settings file: ``core`` top-level settings, ``security`` the add-in's (port 0,
    the PKI's server certificate and CA unless given)."""
    values: dict[str, Any] = {
        "port": 0,
        "cert_file": str(pki.server.cert),
        "key_file": str(pki.server.key),
        "ca_file": str(pki.ca),
        **security,
    }
    lines = [f"{k} = {json.dumps(v)}" for k, v in (core or {}).items()]
    lines.append("[addins.security.settings]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = tmp_path / f"tls-{len(list(tmp_path.glob('tls-*.toml')))}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def dicom_listeners(server: PacsdProcess) -> list[Any]:
    with Client(server.endpoint) as client:
        return [item for item in client.server.get().listeners if item.protocol == "dicom"]


def tls_port(server: PacsdProcess) -> int:
    found = [item for item in dicom_listeners(server) if item.tls]
    assert len(found) == 1, found
    assert found[0].listening
    return int(found[0].port)


def echoscu(port: int, *tls: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk("echoscu"), "-v", "-aet", "MODALITY", "-aec", "PACSD", *tls, "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dcmtk_env(),
    )


def with_client_cert(pki: Pki) -> tuple[str, ...]:
    """DCMTK's options for mutual TLS: our key and certificate, the CA to check the server."""
    return ("+tls", str(pki.client.key), str(pki.client.cert), "+cf", str(pki.ca))


def anonymous(pki: Pki) -> tuple[str, ...]:
    """TLS without a client certificate (the server is still verified)."""
    return ("+tla", "+cf", str(pki.ca))


def storescu(port: int, pki: Pki, *files: Path) -> subprocess.CompletedProcess[str]:
    return dicom_peers.storescu(port, files, extra=with_client_cert(pki), timeout=60)


def client_context(
    pki: Pki,
    *,
    client_cert: bool = True,
    minimum: ssl.TLSVersion | None = None,
    maximum: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if client_cert:
        context.load_cert_chain(str(pki.client.cert), str(pki.client.key))
    if minimum is not None:
        context.minimum_version = minimum
    if maximum is not None:
        context.maximum_version = maximum
    return context


def handshake(port: int, context: ssl.SSLContext, timeout: float = 10) -> ssl.SSLSocket:
    """A completed TLS handshake with the server (the caller closes it)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return context.wrap_socket(raw, server_hostname="127.0.0.1")
    except BaseException:
        raw.close()
        raise


def fingerprint(der: bytes) -> str:
    """As the server reports it (and ``openssl x509 -fingerprint -sha256`` prints it)."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def served_fingerprint(port: int, pki: Pki) -> str:
    """The fingerprint of the certificate the server presents to a new connection."""
    with handshake(port, client_context(pki)) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return fingerprint(der)
