"""Certificate rotation without a restart: ReloadCertificates and ``pacsctl certs``.

The files are overwritten in place (as a renewal job does), the reload is asked for, and
a new TLS connection must see the new certificate's fingerprint while the port stays
bound and an association opened before the reload completes normally.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pacsd.client import Client
from pacsd.client.errors import FailedPrecondition
from pynetdicom import AE

from tests.conftest import PacsdProcess, run_pacsctl
from tests.security.dicom_tls_peers import (
    Pki,
    client_context,
    echoscu,
    fingerprint,
    make_pki,
    rotate_server_certificate,
    served_fingerprint,
    tls_config,
    tls_port,
    with_client_cert,
)

VERIFICATION = "1.2.840.10008.1.1"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


@pytest.fixture
def server(start_pacsd: object, tmp_path: Path, pki: Pki) -> PacsdProcess:
    config = tls_config(tmp_path, pki, require_client_cert=True)
    return start_pacsd(["--config", str(config)])  # type: ignore[operator,no-any-return]


def tls_listener_lines(server: PacsdProcess) -> int:
    return server.stderr().count("DICOM TLS listener on 127.0.0.1:")


def test_rotation_through_the_sdk_reaches_the_next_association(
    server: PacsdProcess, pki: Pki
) -> None:
    port = tls_port(server)
    old = pki.server.fingerprint_sha256
    assert served_fingerprint(port, pki) == old

    # An association opened before the rotation...
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate(
        "127.0.0.1", port, ae_title="PACSD", tls_args=(client_context(pki), "127.0.0.1")
    )
    assert assoc.is_established
    try:
        new = rotate_server_certificate(pki, "pacsd-b")
        assert new.fingerprint_sha256 != old
        # Files replaced but not reloaded: the server still serves the old certificate.
        assert served_fingerprint(port, pki) == old
        with Client(server.endpoint) as client:
            status = client.security.reload()
            shown = client.security.certificates()
        leaf = status.certificates[0]
        assert (leaf.role, leaf.subject) == ("server", "CN=pacsd-b")
        assert leaf.sha256_fingerprint == new.fingerprint_sha256
        assert status.port == port and status.listening
        assert shown.certificates[0].sha256_fingerprint == new.fingerprint_sha256
        assert [c.role for c in shown.certificates] == ["server", "ca"]

        # ...the next one sees the new certificate, on the same port.
        assert served_fingerprint(port, pki) == new.fingerprint_sha256
        assert echoscu(port, *with_client_cert(pki)).returncode == 0
        # ...and the one opened before completes on the session it negotiated.
        sock = assoc.dul.socket.socket  # type: ignore[union-attr]
        assert fingerprint(sock.getpeercert(binary_form=True)) == old
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()
    assert assoc.is_released
    assert tls_port(server) == port
    assert tls_listener_lines(server) == 1  # bound once, never re-bound
    assert "TLS certificates reloaded" in server.stderr()


def test_rotation_through_pacsctl(server: PacsdProcess, pki: Pki) -> None:
    port = tls_port(server)
    new = rotate_server_certificate(pki, "pacsd-c")
    result = run_pacsctl(server, "-w", "json", "certs", "reload")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)["tls"]
    assert document["enabled"] and document["port"] == port
    server_cert = document["certificates"][0]
    assert server_cert["sha256_fingerprint"] == new.fingerprint_sha256
    assert server_cert["subject"] == "CN=pacsd-c"
    assert served_fingerprint(port, pki) == new.fingerprint_sha256

    shown = run_pacsctl(server, "certs", "show")
    assert shown.returncode == 0, shown.stderr
    assert new.fingerprint_sha256 in shown.stdout
    assert f"DICOM TLS on 127.0.0.1:{port}" in shown.stdout
    assert tls_listener_lines(server) == 1


def test_unusable_files_keep_the_old_certificate_serving(server: PacsdProcess, pki: Pki) -> None:
    port = tls_port(server)
    old = pki.server.fingerprint_sha256
    key = pki.server.key.read_bytes()
    secret = b"bm90LWEta2V5LWJ1dC1zZWNyZXQ"
    pki.server.key.write_bytes(b"-----BEGIN PRIVATE KEY-----\n" + secret + b"\n")
    with Client(server.endpoint) as client, pytest.raises(FailedPrecondition) as err:
        client.security.reload()
    assert err.value.reason == "CERTIFICATE_INVALID"
    assert str(pki.server.key) in str(err.value)
    assert secret.decode() not in str(err.value)
    assert served_fingerprint(port, pki) == old

    # A key that does not match the certificate is refused as well.
    other = make_pki(pki.ca_dir.parent / "other")
    pki.server.key.write_bytes(other.server.key.read_bytes())
    result = run_pacsctl(server, "certs", "reload")
    assert result.returncode == 1
    assert "does not match" in result.stderr and "CERTIFICATE_INVALID" in result.stderr
    assert served_fingerprint(port, pki) == old

    pki.server.key.write_bytes(key)
    with Client(server.endpoint) as client:
        assert client.security.reload().certificates[0].sha256_fingerprint == old
    log = server.stderr()
    assert secret.decode() not in log
    assert "BEGIN PRIVATE KEY" not in log
