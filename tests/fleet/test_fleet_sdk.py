"""pacsd.client.Fleet against five real pacsd processes, and its credentials plumbing."""

from __future__ import annotations

import datetime as dt
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from pacsd.client import (
    Client,
    Credentials,
    DeadlineExceeded,
    Fleet,
    FleetServer,
    InventoryError,
    ServerUnavailable,
    _health,
    message_to_dict,
)

from tests.conftest import PacsdProcess
from tests.fleet.conftest import stop, write_inventory


def test_status_of_five_servers(five: list[PacsdProcess], tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path / "fleet.toml", five)
    with Fleet.from_inventory(inventory, timeout=10) as fleet:
        results = fleet.server.get()  # a broadcast of client.server.get()
        assert [r.server.name for r in results] == [f"pacs{i}" for i in range(1, 6)]
        assert results.ok and not results.failed and not results.unreachable
        for result, server in zip(results, five, strict=True):
            described = message_to_dict(result.unwrap())
            assert described["pid"] == server.proc.pid
            assert described["state"] == "SERVER_STATE_RUNNING"
            dicom = [item for item in described["listeners"] if item["protocol"] == "dicom"]
            assert dicom[0]["port"] == server.dicom_port
            assert result.seconds > 0

        ct = fleet.run(lambda c: c.server.get().pid, selector="role=ct")
        assert list(ct.values()) == ["pacs1", "pacs2", "pacs4"]
        assert ct.values()["pacs4"] == five[3].proc.pid

        named = fleet.each(lambda server, c: (server.labels["site"], c.endpoint), names=["pacs5"])
        assert named.values() == {"pacs5": ("south", five[4].endpoint)}

        health = fleet.health("pacsd.dicom")
        assert health.values() == {f"pacs{i}": "SERVING" for i in range(1, 6)}


def test_a_dead_server_is_a_result_not_an_exception(five: list[PacsdProcess]) -> None:
    stop(five[2], signal.SIGKILL)
    with Fleet.from_endpoints([s.endpoint for s in five], timeout=10) as fleet:
        results = fleet.aetitles.create("ARCHIVE", "10.0.0.5", 104, "long-term archive")
        assert len(results) == 5
        dead = results[2]
        assert not dead.ok and dead.unreachable
        assert isinstance(dead.error, ServerUnavailable)
        assert dead.error.endpoint == five[2].endpoint
        with pytest.raises(ServerUnavailable):
            dead.unwrap()
        assert [r.server.name for r in results.unreachable] == [five[2].endpoint]
        assert all(r.value is not None and r.value.changed for r in results.succeeded)
        assert len(results.succeeded) == 4
        assert set(results.errors()) == {five[2].endpoint}

        # Every live server now has the entry; the dead one still fails alike.
        listed = fleet.run(lambda c: [e.ae_title for e in c.aetitles.list()])
        assert sorted(set(map(tuple, listed.values().values()))) == [("ARCHIVE",)]
        assert listed[2].unreachable


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A port that accepts TCP connections but never speaks HTTP/2."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def test_each_call_has_its_own_deadline(five: list[PacsdProcess], blackhole: str) -> None:
    endpoints = [five[0].endpoint, blackhole, five[1].endpoint]
    with Fleet.from_endpoints(endpoints, timeout=1.0) as fleet:
        start = time.monotonic()
        results = fleet.server.get()
        elapsed = time.monotonic() - start
    assert elapsed < 3.0, elapsed  # the silent server costs its own deadline, once
    assert [r.ok for r in results] == [True, False, True]
    assert isinstance(results[1].error, DeadlineExceeded)
    assert results[1].unreachable  # it never completed a connection: nothing usable there
    assert results[1].seconds >= 0.9


def test_parallelism_is_bounded_and_failures_stay_per_server() -> None:
    lock = threading.Lock()
    running = 0
    peak = 0

    def work(server: FleetServer, client: Client) -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.2)
            if server.name == "h:3":
                raise ValueError("deliberate failure in the caller's function")
            return client.endpoint
        finally:
            with lock:
                running -= 1

    with Fleet([f"h:{i}" for i in range(1, 7)], parallelism=2) as fleet:
        start = time.monotonic()
        results = fleet.each(work)
        elapsed = time.monotonic() - start
    assert peak == 2
    assert elapsed >= 0.55  # six calls, two at a time, 0.2 s each
    assert [r.ok for r in results] == [True, True, False, True, True, True]
    assert isinstance(results[2].error, ValueError)
    assert results[2].to_dict()["error"] == {
        "code": "UNKNOWN",
        "reason": "",
        "message": "ValueError: deliberate failure in the caller's function",
        "metadata": {},
    }
    assert results[0].to_dict() == {
        "server": "h:1",
        "endpoint": "h:1",
        "ok": True,
        "result": "h:1",
        "error": None,
    }


def test_closed_fleet_refuses_calls_but_reports_them_per_server() -> None:
    fleet = Fleet(["h:1"])
    fleet.close()
    fleet.close()
    results = fleet.run(lambda c: c.endpoint)
    assert isinstance(results[0].error, ValueError)


# -- credentials: token metadata and TLS, against a stand-in control plane -------------------


class FakeHealth:
    """A grpc.health.v1 server that records the metadata of every call."""

    def __init__(self, server_credentials: grpc.ServerCredentials | None = None) -> None:
        self.seen: list[dict[str, Any]] = []
        handler = grpc.method_handlers_generic_handler(
            "grpc.health.v1.Health",
            {
                "Check": grpc.unary_unary_rpc_method_handler(
                    self._check,
                    request_deserializer=_health.HealthCheckRequest.FromString,
                    response_serializer=_health.HealthCheckResponse.SerializeToString,
                )
            },
        )
        self.server = grpc.server(ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers((handler,))
        if server_credentials is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self.server.add_secure_port("localhost:0", server_credentials)
        self.server.start()

    def _check(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.seen.append(dict(context.invocation_metadata()))
        return _health.HealthCheckResponse(status=1)

    def stop(self) -> None:
        self.server.stop(None)


def test_token_travels_as_bearer_metadata(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeHealth()
    try:
        monkeypatch.setenv("PACSCTL_TOKEN_SITE_A", "s3cret-token")
        inventory = tmp_path / "fleet.toml"
        inventory.write_text(
            f'[[servers]]\nname = "a"\nendpoint = "127.0.0.1:{fake.port}"\n'
            'credentials = "site-a"\n'
            f'[[servers]]\nname = "b"\nendpoint = "127.0.0.1:{fake.port}0"\n'
            '[credentials.site-a]\ntoken_env = "PACSCTL_TOKEN_SITE_A"\n'
        )
        with Fleet.from_inventory(inventory, selector="name=a") as fleet:
            assert fleet.health().values() == {"a": "SERVING"}
        assert fake.seen[-1]["authorization"] == "Bearer s3cret-token"
        with Client(f"127.0.0.1:{fake.port}") as plain:
            assert plain.health() == "SERVING"
        assert "authorization" not in fake.seen[-1]
        monkeypatch.delenv("PACSCTL_TOKEN_SITE_A")
        with pytest.raises(InventoryError, match="PACSCTL_TOKEN_SITE_A is not set"):
            Fleet.from_inventory(inventory)
    finally:
        fake.stop()


def _certificates(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for localhost and a client certificate, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def issue(
        subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: Any, ca: bool
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = issue("test CA", ca_key, "test CA", ca_key, ca=True)
    files: dict[str, Path] = {}

    def save(label: str, data: bytes) -> None:
        files[label] = folder / f"{label}.pem"
        files[label].write_bytes(data)

    save("ca", ca_cert.public_bytes(serialization.Encoding.PEM))
    for who in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = issue(who, key, "test CA", ca_key, ca=False)
        save(f"{who}-cert", cert.public_bytes(serialization.Encoding.PEM))
        save(
            f"{who}-key",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    return files


def test_certificates_make_the_channel_mutual_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _certificates(tmp_path)
    server_credentials = grpc.ssl_server_credentials(
        [(files["server-key"].read_bytes(), files["server-cert"].read_bytes())],
        root_certificates=files["ca"].read_bytes(),
        require_client_auth=True,
    )
    fake = FakeHealth(server_credentials)
    try:
        monkeypatch.setenv("PACSCTL_TOKEN_TLS", "tls-token")
        inventory = tmp_path / "fleet.toml"
        inventory.write_text(
            f'[[servers]]\nname = "secure"\nendpoint = "localhost:{fake.port}"\n'
            'credentials = "tls"\n'
            '[credentials.tls]\ntoken_env = "PACSCTL_TOKEN_TLS"\n'
            'cacert = "ca.pem"\ncert = "client-cert.pem"\nkey = "client-key.pem"\n'
        )
        with Fleet.from_inventory(inventory, timeout=5) as fleet:
            results = fleet.health()
        assert results.values() == {"secure": "SERVING"}, results.errors()
        assert fake.seen[-1]["authorization"] == "Bearer tls-token"
        # Without the client certificate the server refuses the handshake.
        half = Credentials(name="ca-only", cacert=files["ca"])
        with (
            Client(f"localhost:{fake.port}", timeout=3, credentials=half) as client,
            pytest.raises(ServerUnavailable),
        ):
            client.health()
        # A plaintext client cannot talk to it at all.
        with (
            Client(f"localhost:{fake.port}", timeout=3) as client,
            pytest.raises((ServerUnavailable, DeadlineExceeded)),
        ):
            client.health()
    finally:
        fake.stop()
