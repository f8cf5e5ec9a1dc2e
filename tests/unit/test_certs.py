"""The development CA (pacsd.client.certs) against real verifiers and real TLS.

Certificates are judged by what consumes them: cryptography's X.509 path validation,
``openssl verify -x509_strict``, TLS handshakes between Python ``ssl`` sockets on
loopback (OpenSSL 3, with VERIFY_X509_STRICT) and gRPC (BoringSSL), never by re-reading
our own fields only. DCMTK's verdict is in tests/client/test_certs_cli.py.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import ssl
import stat
import subprocess
import threading
from concurrent import futures
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from pacsd.client import certs
from pacsd.client.certs import CertsError, Issued


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def ext(cert: x509.Certificate, kind: type[Any]) -> Any:
    return cert.extensions.get_extension_for_class(kind)


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One RSA CA for the module: RSA key generation is the slow part of these tests."""
    directory = tmp_path_factory.mktemp("pki") / "ca"
    certs.create_ca(directory)
    return directory


@pytest.fixture(scope="module")
def server(ca_dir: Path) -> Issued:
    return certs.issue_certificate(
        ca_dir, "server", "localhost", ["127.0.0.1", "localhost", "::1"], usage="server"
    )


@pytest.fixture(scope="module")
def client(ca_dir: Path) -> Issued:
    return certs.issue_certificate(ca_dir, "client", "pacsctl-alice", usage="client")


# -- TLS on loopback -------------------------------------------------------------------------


@dataclass
class Handshake:
    client_error: Exception | None
    server_error: Exception | None
    server_saw: dict[str, Any] | None  # the client certificate as the server verified it

    @property
    def ok(self) -> bool:
        return self.client_error is None and self.server_error is None


def server_context(cert: Issued, ca: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert.cert, cert.key)
    ctx.load_verify_locations(ca)
    ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


def client_context(cert: Issued | None, ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))  # hostname checking on
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    return ctx


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str) -> Handshake:
    """A TLS connection over 127.0.0.1; the server echoes one byte. With TLS 1.3 the
    server judges the client certificate after the client's handshake returns, so the
    client reads the byte to learn the verdict."""
    outcome: dict[str, Any] = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    outcome["saw"] = tls.getpeercert()
                    tls.sendall(tls.recv(1))
            except (ssl.SSLError, OSError) as exc:
                outcome["server_error"] = exc

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        client_error: Exception | None = None
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                client_ctx.wrap_socket(raw, server_hostname=hostname) as tls,
            ):
                tls.sendall(b"x")
                if tls.recv(1) != b"x":
                    client_error = ConnectionError("no echo: the server closed the connection")
        except (ssl.SSLError, OSError) as exc:
            client_error = exc
        thread.join(10)
        assert not thread.is_alive()
    return Handshake(client_error, outcome.get("server_error"), outcome.get("saw"))


@pytest.mark.parametrize("key_type", ["rsa", "ec"])
def test_mutual_tls_handshake_with_issued_certificates(
    tmp_path: Path, key_type: certs.KeyType
) -> None:
    ca = certs.create_ca(tmp_path / "ca", key_type=key_type)
    srv = certs.issue_certificate(
        tmp_path / "ca", "srv", "pacsd", ["127.0.0.1"], usage="server", key_type=key_type
    )
    cli = certs.issue_certificate(tmp_path / "ca", "cli", "peer", usage="client", key_type=key_type)
    result = handshake(server_context(srv, ca.cert), client_context(cli, ca.cert), "127.0.0.1")
    assert result.ok, result
    assert result.server_saw is not None
    assert result.server_saw["subject"] == ((("commonName", "peer"),),)


def test_ip_san_matches_127_0_0_1_and_a_missing_name_does_not(
    ca_dir: Path, server: Issued, client: Issued
) -> None:
    ca = ca_dir / "ca.crt"
    for hostname in ("127.0.0.1", "localhost", "::1"):
        assert handshake(server_context(server, ca), client_context(client, ca), hostname).ok
    dns_only = certs.issue_certificate(ca_dir, "dns-only", "pacsd.test", usage="server")
    result = handshake(server_context(dns_only, ca), client_context(client, ca), "127.0.0.1")
    assert isinstance(result.client_error, ssl.SSLCertVerificationError)
    assert "IP address mismatch" in str(result.client_error)


def test_client_certificate_is_refused_as_server_certificate(ca_dir: Path, client: Issued) -> None:
    ca = ca_dir / "ca.crt"
    as_server = certs.issue_certificate(ca_dir, "client-only", "127.0.0.1", usage="client")
    result = handshake(server_context(as_server, ca), client_context(client, ca), "127.0.0.1")
    assert isinstance(result.client_error, ssl.SSLCertVerificationError)
    assert "certificate purpose" in str(result.client_error)


def test_server_certificate_is_refused_as_client_certificate(ca_dir: Path, server: Issued) -> None:
    ca = ca_dir / "ca.crt"
    result = handshake(server_context(server, ca), client_context(server, ca), "127.0.0.1")
    assert isinstance(result.server_error, ssl.SSLError)
    assert "certificate purpose" in str(result.server_error)
    assert result.client_error is not None  # the server's alert reaches the client


def test_certificate_of_another_ca_is_refused(tmp_path: Path, ca_dir: Path, server: Issued) -> None:
    certs.create_ca(tmp_path / "other", key_type="ec")
    stranger = certs.issue_certificate(tmp_path / "other", "x", "x", usage="client", key_type="ec")
    ca = ca_dir / "ca.crt"
    result = handshake(server_context(server, ca), client_context(stranger, ca), "127.0.0.1")
    assert result.client_error is not None
    assert isinstance(result.server_error, ssl.SSLCertVerificationError)
    assert "unable to get local issuer certificate" in str(result.server_error)


# -- gRPC (BoringSSL) -------------------------------------------------------------------------


def grpc_health_over_mtls(server: Issued, client: Issued, ca: Path) -> grpc.StatusCode:
    """One health check from a gRPC client to a gRPC server on 127.0.0.1, both on the
    issued certificates and requiring each other's (the control plane's setup)."""
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), srv)
    creds = grpc.ssl_server_credentials(
        [(server.key.read_bytes(), server.cert.read_bytes())],
        root_certificates=ca.read_bytes(),
        require_client_auth=True,
    )
    port = srv.add_secure_port("127.0.0.1:0", creds)
    srv.start()
    try:
        channel_creds = grpc.ssl_channel_credentials(
            ca.read_bytes(), client.key.read_bytes(), client.cert.read_bytes()
        )
        with grpc.secure_channel(f"127.0.0.1:{port}", channel_creds) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            except grpc.RpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK
    finally:
        srv.stop(None)


def test_grpc_mutual_tls_with_issued_certificates(
    tmp_path: Path, ca_dir: Path, server: Issued, client: Issued
) -> None:
    ca = ca_dir / "ca.crt"
    assert grpc_health_over_mtls(server, client, ca) is grpc.StatusCode.OK
    certs.create_ca(tmp_path / "other", key_type="ec")
    stranger = certs.issue_certificate(tmp_path / "other", "s", "s.test", key_type="ec")
    assert grpc_health_over_mtls(server, stranger, ca) is grpc.StatusCode.UNAVAILABLE
    client_only = certs.issue_certificate(ca_dir, "grpc-c", "127.0.0.1", usage="client")
    assert grpc_health_over_mtls(client_only, client, ca) is grpc.StatusCode.UNAVAILABLE
    dns_only = certs.issue_certificate(ca_dir, "grpc-dns", "pacsd.test", usage="server")
    assert grpc_health_over_mtls(dns_only, client, ca) is grpc.StatusCode.UNAVAILABLE


# -- chains and profile ----------------------------------------------------------------------


def test_chains_verify_with_cryptography_path_validation(
    ca_dir: Path, server: Issued, client: Issued
) -> None:
    store = verification.Store([load(ca_dir / "ca.crt")])
    builder = verification.PolicyBuilder().store(store)
    ip = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    chain = builder.build_server_verifier(ip).verify(load(server.cert), [])
    assert [c.subject.rfc4514_string() for c in chain] == [
        "CN=localhost",
        "CN=pacsd development CA",
    ]
    verified = builder.build_client_verifier().verify(load(client.cert), [])
    assert verified.subjects == [x509.DNSName("pacsctl-alice")]
    with pytest.raises(verification.VerificationError):
        builder.build_server_verifier(ip).verify(load(client.cert), [])


@pytest.mark.parametrize(("usage", "purpose"), [("server", "sslserver"), ("client", "sslclient")])
def test_openssl_verify_strict_accepts_the_chain_for_its_purpose_only(
    ca_dir: Path, usage: certs.Usage, purpose: str
) -> None:
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl is required"
    issued = certs.issue_certificate(ca_dir, f"ossl-{usage}", "ossl.test", usage=usage)
    other = "sslclient" if purpose == "sslserver" else "sslserver"

    def verify(p: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [openssl, "verify", "-x509_strict", "-purpose", p, "-CAfile", str(ca_dir / "ca.crt"),
             str(issued.cert)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip

    assert verify(purpose).returncode == 0, verify(purpose)
    refused = verify(other)
    assert refused.returncode != 0
    assert "certificate purpose" in refused.stdout + refused.stderr


def test_ca_profile(ca_dir: Path) -> None:
    ca = load(ca_dir / "ca.crt")
    assert ca.subject == ca.issuer
    basic = ext(ca, x509.BasicConstraints)
    assert basic.critical and basic.value.ca
    usage = ext(ca, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    assert ext(ca, x509.SubjectKeyIdentifier).value.digest == (
        x509.SubjectKeyIdentifier.from_public_key(ca.public_key()).digest
    )
    assert isinstance(ca.signature_hash_algorithm, hashes.SHA256)
    key = ca.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
    assert ca.not_valid_after_utc - ca.not_valid_before_utc >= timedelta(days=3650)


def test_leaf_profile(ca_dir: Path, server: Issued, client: Issued) -> None:
    ca = load(ca_dir / "ca.crt")
    srv, cli = load(server.cert), load(client.cert)
    for leaf in (srv, cli):
        basic = ext(leaf, x509.BasicConstraints)
        assert basic.critical and not basic.value.ca
        ku = ext(leaf, x509.KeyUsage).value
        assert ku.digital_signature and ku.key_encipherment and not ku.key_cert_sign
        assert ext(leaf, x509.AuthorityKeyIdentifier).value.key_identifier == (
            ext(ca, x509.SubjectKeyIdentifier).value.digest
        )
        assert ext(leaf, x509.SubjectKeyIdentifier).value.digest == (
            x509.SubjectKeyIdentifier.from_public_key(leaf.public_key()).digest
        )
        assert isinstance(leaf.signature_hash_algorithm, hashes.SHA256)
        assert leaf.issuer == ca.subject
        now = datetime.now(UTC)
        assert now - timedelta(minutes=10) < leaf.not_valid_before_utc <= now - timedelta(minutes=4)
    assert list(ext(srv, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert list(ext(cli, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ext(srv, x509.SubjectAlternativeName).value == x509.SubjectAlternativeName(
        [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
    )
    assert srv.serial_number != cli.serial_number
    assert srv.serial_number.bit_length() > 64  # random, not a counter


def test_both_usage_and_ec_keys(ca_dir: Path) -> None:
    issued = certs.issue_certificate(ca_dir, "both-ec", "both.test", key_type="ec")
    cert = load(issued.cert)
    assert set(ext(cert, x509.ExtendedKeyUsage).value) == {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    }
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert not ext(cert, x509.KeyUsage).value.key_encipherment  # meaningless for EC


def test_sans_default_to_the_common_name(ca_dir: Path) -> None:
    def sans(issued: Issued) -> list[x509.GeneralName]:
        return list(ext(load(issued.cert), x509.SubjectAlternativeName).value)

    as_ip = certs.issue_certificate(ca_dir, "cn-ip", "127.0.0.1", usage="server")
    assert sans(as_ip) == [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    as_dns = certs.issue_certificate(ca_dir, "cn-dns", "PACS.Example.org", usage="server")
    assert sans(as_dns) == [x509.DNSName("pacs.example.org")]
    forced = certs.issue_certificate(
        ca_dir, "forced", "x.test", ["DNS:10.1.2.3", "IP:::1", "*.pacs.test"], usage="server"
    )
    assert sans(forced) == [
        x509.DNSName("10.1.2.3"),
        x509.IPAddress(ipaddress.ip_address("::1")),
        x509.DNSName("*.pacs.test"),
    ]
    # A person's name is no host name: a client certificate then carries no SAN at all
    # (an empty SAN extension would be invalid), a server certificate is refused.
    person = certs.issue_certificate(ca_dir, "person", "Alice Operator", usage="client")
    with pytest.raises(x509.ExtensionNotFound):
        ext(load(person.cert), x509.SubjectAlternativeName)
    with pytest.raises(CertsError, match="give it with --san") as info:
        certs.issue_certificate(ca_dir, "person-srv", "Alice Operator", usage="server")
    assert info.value.reason == certs.BAD_INPUT


@pytest.mark.parametrize(
    "san", ["", "a b", "-bad.test", "bad-.test", "x" * 64 + ".test", "IP:pacs.test", "hôte.test"]
)
def test_bad_sans_are_refused_before_anything_is_written(ca_dir: Path, san: str) -> None:
    with pytest.raises(CertsError, match="invalid SAN") as info:
        certs.issue_certificate(ca_dir, "bad-san", "ok.test", [san], out_dir=ca_dir / "bad")
    assert info.value.reason == certs.BAD_INPUT
    assert not (ca_dir / "bad").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"common_name": ""}, "must not be empty"),
        ({"common_name": "x" * 65}, "X.509 allows 64"),
        ({"common_name": "a\nb"}, "control characters"),
        ({"name": "../escape"}, "invalid name"),
        ({"name": "ca"}, "would overwrite the CA"),
        ({"days": 0}, "days must be between"),
        ({"key_type": "dsa"}, "unknown key type"),
        ({"usage": "email"}, "unknown usage"),
    ],
)
def test_bad_arguments_are_refused(ca_dir: Path, kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"name": "bad-arg", "common_name": "ok.test", **kwargs}
    with pytest.raises(CertsError, match=message) as info:
        certs.issue_certificate(ca_dir, **args)
    assert info.value.reason == certs.BAD_INPUT
    assert "\n" not in str(info.value)


# -- files -----------------------------------------------------------------------------------


def test_keys_are_private_and_certificates_readable(ca_dir: Path, server: Issued) -> None:
    assert stat.S_IMODE(os.stat(ca_dir / "ca.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(server.key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(server.cert).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(ca_dir).st_mode) == 0o700
    assert not [p for p in ca_dir.iterdir() if p.name.startswith(".")]  # no temporary left


def test_overwriting_is_refused_without_force(tmp_path: Path) -> None:
    first = certs.create_ca(tmp_path)
    before = first.cert.read_bytes(), first.key.read_bytes()
    with pytest.raises(CertsError, match="already exists; use --force") as info:
        certs.create_ca(tmp_path)
    assert info.value.reason == certs.EXISTS
    assert (first.cert.read_bytes(), first.key.read_bytes()) == before
    second = certs.create_ca(tmp_path, force=True, key_type="ec")
    assert second.fingerprint_sha256 != first.fingerprint_sha256

    leaf = certs.issue_certificate(tmp_path, "leaf", "leaf.test")
    with pytest.raises(CertsError, match=r"leaf\.crt already exists"):
        certs.issue_certificate(tmp_path, "leaf", "other.test")
    assert certs.describe(leaf.cert).subject == "CN=leaf.test"
    replaced = certs.issue_certificate(tmp_path, "leaf", "other.test", force=True)
    assert certs.describe(replaced.cert).subject == "CN=other.test"
    assert stat.S_IMODE(os.stat(replaced.key).st_mode) == 0o600


def test_a_key_alone_blocks_overwriting_too(tmp_path: Path) -> None:
    (tmp_path / "ca.key").write_text("someone's key")
    with pytest.raises(CertsError, match=r"ca\.key already exists"):
        certs.create_ca(tmp_path)
    assert (tmp_path / "ca.key").read_text() == "someone's key"
    assert not (tmp_path / "ca.crt").exists()


def test_out_dir_and_issued_paths(ca_dir: Path, tmp_path: Path) -> None:
    issued = certs.issue_certificate(ca_dir, "elsewhere", "e.test", out_dir=tmp_path / "out")
    assert issued.cert == tmp_path / "out" / "elsewhere.crt"
    assert issued.key == tmp_path / "out" / "elsewhere.key"
    assert issued.ca_cert == ca_dir / "ca.crt"
    assert issued.subject == "CN=e.test"
    assert issued.not_after.tzinfo is not None


def test_missing_or_unusable_ca(tmp_path: Path, ca_dir: Path) -> None:
    with pytest.raises(CertsError, match="pacsctl certs init") as info:
        certs.issue_certificate(tmp_path / "none", "x", "x.test")
    assert info.value.reason == certs.CA_NOT_FOUND

    mixed = tmp_path / "mixed"
    certs.create_ca(mixed, key_type="ec")
    shutil.copy(ca_dir / "ca.key", mixed / "ca.key")
    with pytest.raises(CertsError, match="does not belong to") as info:
        certs.issue_certificate(mixed, "x", "x.test")
    assert info.value.reason == certs.BAD_FILE
    assert "PRIVATE KEY" not in str(info.value)

    leaf_as_ca = tmp_path / "leaf-as-ca"
    leaf = certs.issue_certificate(ca_dir, "leaf", "leaf.test", out_dir=leaf_as_ca)
    leaf.cert.rename(leaf_as_ca / "ca.crt")
    leaf.key.rename(leaf_as_ca / "ca.key")
    with pytest.raises(CertsError, match="is not a CA certificate"):
        certs.issue_certificate(leaf_as_ca, "x", "x.test")

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "ca.crt").write_text("not a certificate")
    (garbage / "ca.key").write_text("not a key")
    with pytest.raises(CertsError, match="is not a PEM certificate"):
        certs.issue_certificate(garbage, "x", "x.test")


def test_expired_ca_is_refused(tmp_path: Path) -> None:
    """An expired CA (built by hand: create_ca cannot make one) signs nothing."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "old CA")])
    long_ago = datetime.now(UTC) - timedelta(days=30)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(long_ago)
        .not_valid_after(long_ago + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "ca.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(CertsError, match="expired on") as info:
        certs.issue_certificate(tmp_path, "leaf", "leaf.test")
    assert info.value.reason == certs.BAD_FILE
    assert not (tmp_path / "leaf.key").exists()


def test_validity_is_capped_at_the_cas(tmp_path: Path) -> None:
    ca = certs.create_ca(tmp_path, days=30, key_type="ec")
    leaf = certs.issue_certificate(tmp_path, "leaf", "leaf.test", days=825, key_type="ec")
    assert leaf.not_after == ca.not_after
    short = certs.issue_certificate(tmp_path, "short", "short.test", days=1, key_type="ec")
    assert short.not_after < ca.not_after


def test_describe_and_fingerprint_match_openssl(ca_dir: Path, server: Issued) -> None:
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl is required"
    printed = subprocess.run(
        [openssl, "x509", "-in", str(server.cert), "-noout", "-fingerprint", "-sha256"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    assert printed.strip().split("=", 1)[1] == server.fingerprint_sha256
    info = certs.describe(server.cert)
    assert info.fingerprint_sha256 == server.fingerprint_sha256
    assert info.subject == "CN=localhost"
    assert info.issuer == "CN=pacsd development CA"
    assert info.sans == ("IP:127.0.0.1", "DNS:localhost", "IP:::1")
    assert info.usages == ("serverAuth",)
    assert info.key_type == "rsa2048"
    assert not info.is_ca
    assert info.not_after == server.not_after
    assert certs.describe(ca_dir / "ca.crt").is_ca
    with pytest.raises(CertsError, match="no certificate at") as missing:
        certs.describe(ca_dir / "nope.crt")
    assert missing.value.reason == certs.NOT_FOUND
