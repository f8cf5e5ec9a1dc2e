"""DICOM over TLS: DCMTK and Python ssl peers against a real pacsd with the security add-in.

Mutual TLS with DCMTK's ``echoscu +tls`` / ``storescu +tls``, refusals (no client
certificate, TLS 1.0/1.1, TLS 1.2 below a 1.3 minimum, TLS 1.2 suites outside a custom
cipher list, plain DICOM on the TLS port), a silent client that must not stall the
accept loop, the TLS-only mode and the TLS port following the server's start/stop/pause
and the security add-in's load/unload.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pacsd.builtin.security import BCP195_CIPHERS
from pacsd.client import Client
from pacsd.client.errors import PacsdError
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests import corpus
from tests.conftest import LISTENING, PacsdProcess, console_script, dcmtk, dcmtk_env
from tests.security.dicom_tls_peers import (
    Pki,
    anonymous,
    client_context,
    dicom_listeners,
    echoscu,
    handshake,
    make_pki,
    storescu,
    tls_config,
    tls_port,
    with_client_cert,
)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


@pytest.fixture
def mutual(start_pacsd: object, tmp_path: Path, pki: Pki) -> PacsdProcess:
    """pacsd with a plain port and a TLS port that requires client certificates."""
    config = tls_config(tmp_path, pki, require_client_cert=True)
    return start_pacsd(["--config", str(config)])  # type: ignore[operator,no-any-return]


def test_dcmtk_storescu_over_tls_with_nagle_on_never_waits_for_a_delayed_ack(
    mutual: PacsdProcess, pki: Pki, tmp_path: Path
) -> None:
    """As on a plain port (test_storage.py): each TLS record DCMTK writes is a segment
    Nagle holds until the one before is acknowledged, so pacsd acknowledges before it
    waits for the rest of a PDU. 15 instances with Nagle on take about as long as with
    it off (a delayed ACK per message would add 0.6 s or more)."""
    port = tls_port(mutual)
    files = [str(corpus.write(corpus.instance(pixels=48), tmp_path / "src")) for _ in range(15)]
    took = {}
    for name, env in (
        ("nodelay", dcmtk_env()),
        ("nagle", {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}),
    ):
        start = time.monotonic()
        tool = [dcmtk("storescu"), *with_client_cert(pki), "-aec", "PACSD"]
        out = subprocess.run(
            [*tool, "127.0.0.1", str(port), *files],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        took[name] = time.monotonic() - start
        assert out.returncode == 0, out.stderr + out.stdout
    assert took["nagle"] < took["nodelay"] + 0.3, took


def rejected(server: PacsdProcess) -> int:
    with Client(server.endpoint) as client:
        return int(client.server.get().counters.associations_rejected)


def test_dcmtk_echoscu_and_storescu_with_client_certificates(
    mutual: PacsdProcess, pki: Pki, tmp_path: Path
) -> None:
    port = tls_port(mutual)
    assert port != mutual.dicom_port
    echo = echoscu(port, *with_client_cert(pki))
    assert echo.returncode == 0, echo.stderr + echo.stdout
    assert "Received Echo Response (Success)" in echo.stdout + echo.stderr

    # 512x512 pixels: several P-DATA PDUs, each over several TLS records, so reads
    # must also drain what OpenSSL has already decrypted (SSLSocket.pending()).
    ds = corpus.instance(pixels=512)
    path = corpus.write(ds, tmp_path / "in")
    out = storescu(port, pki, path)
    assert out.returncode == 0, out.stderr + out.stdout
    stored = list((mutual.data_dir / "blobs").rglob(f"{ds.SOPInstanceUID}.dcm"))
    assert len(stored) == 1
    assert dcmread(stored[0]).PixelData == ds.PixelData
    with Client(mutual.endpoint) as client:
        assert client.storage.stats().instances == 1
        live = client.server.get()
    assert live.counters.associations_accepted >= 2


def test_client_without_certificate_is_refused_when_required(
    mutual: PacsdProcess, pki: Pki
) -> None:
    port = tls_port(mutual)
    before = rejected(mutual)
    out = echoscu(port, *anonymous(pki))
    assert out.returncode != 0
    assert "Received Echo Response" not in out.stdout + out.stderr
    assert rejected(mutual) == before + 1
    mutual.wait_for_log("sent no certificate")
    # A certificate from another CA is not accepted either.
    other = make_pki(mutual.data_dir.parent / "other")
    foreign = ("+tls", str(other.client.key), str(other.client.cert), "+cf", str(pki.ca))
    assert echoscu(port, *foreign).returncode != 0
    mutual.wait_for_log("client certificate not accepted")
    # The listener serves on.
    assert echoscu(port, *with_client_cert(pki)).returncode == 0


def test_optional_client_certificate_admits_anonymous_tls(
    start_pacsd: object, tmp_path: Path, pki: Pki
) -> None:
    server = start_pacsd(["--config", str(tls_config(tmp_path, pki))])  # type: ignore[operator]
    port = tls_port(server)
    out = echoscu(port, *anonymous(pki))
    assert out.returncode == 0, out.stderr + out.stdout


# Python deprecates building TLS 1.0/1.1 contexts; building one is the point here.
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_1_0_and_1_1_clients_are_refused(mutual: PacsdProcess, pki: Pki) -> None:
    port = tls_port(mutual)
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        old = client_context(pki, minimum=version, maximum=version)
        # Our own OpenSSL would refuse to offer these at its default level; lowering it
        # makes the refusal the server's.
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        with pytest.raises(ssl.SSLError):
            handshake(port, old).close()
    mutual.wait_for_log("below the server's minimum")
    with handshake(port, client_context(pki, maximum=ssl.TLSVersion.TLSv1_2)) as tls:
        assert tls.version() == "TLSv1.2"


def test_minimum_version_1_3_refuses_tls_1_2(mutual: PacsdProcess, pki: Pki) -> None:
    port = tls_port(mutual)
    with Client(mutual.endpoint) as client:
        change = client.addins.update_settings("security", min_version="1.3")
    assert change.changed
    with pytest.raises(ssl.SSLError):
        handshake(port, client_context(pki, maximum=ssl.TLSVersion.TLSv1_2)).close()
    with handshake(port, client_context(pki, minimum=ssl.TLSVersion.TLSv1_3)) as tls:
        assert tls.version() == "TLSv1.3"
    # A settings change that keeps the endpoint does not move the port.
    assert tls_port(mutual) == port
    assert echoscu(port, *with_client_cert(pki)).returncode == 0


def test_plain_client_on_the_tls_port_fails_and_the_listener_serves_on(
    mutual: PacsdProcess, pki: Pki
) -> None:
    port = tls_port(mutual)
    before = rejected(mutual)
    plain = echoscu(port)
    assert plain.returncode != 0
    assert "Received Echo Response" not in plain.stdout + plain.stderr
    assert rejected(mutual) == before + 1
    log = mutual.wait_for_log("not a TLS client hello")
    assert "TLS handshake with 127.0.0.1:" in log
    assert "Traceback" not in log
    assert echoscu(port, *with_client_cert(pki)).returncode == 0
    # The plain port is untouched by all this.
    assert echoscu(mutual.dicom_port).returncode == 0


def test_silent_client_does_not_block_other_handshakes(
    start_pacsd: object, tmp_path: Path, pki: Pki
) -> None:
    config = tls_config(tmp_path, pki, core={"acse_timeout": 3.0}, require_client_cert=True)
    server: PacsdProcess = start_pacsd(["--config", str(config)])  # type: ignore[operator]
    port = tls_port(server)
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        time.sleep(0.3)  # the server has accepted them and waits for a client hello
        started = time.monotonic()
        out = echoscu(port, *with_client_cert(pki))
        elapsed = time.monotonic() - started
        assert out.returncode == 0, out.stderr + out.stdout
        assert elapsed < 2.5, f"echoscu +tls took {elapsed:.1f}s behind silent clients"
        # The silent ones are dropped once the ACSE timeout passes.
        silent[0].settimeout(10)
        assert silent[0].recv(1) == b""
    finally:
        for sock in silent:
            sock.close()
    # The server logs the drop just after closing the socket.
    server.wait_for_log("no TLS handshake within 3s")


def test_tls_only_mode(start_pacsd: object, tmp_path: Path, pki: Pki) -> None:
    config = tls_config(tmp_path, pki, core={"dicom_plain_listener": False})
    server: PacsdProcess = start_pacsd(["--config", str(config)])  # type: ignore[operator]
    listeners = dicom_listeners(server)
    assert [(item.tls, item.listening) for item in listeners] == [(True, True)]
    # The startup line names the TLS port: it is the only DICOM port.
    assert server.dicom_port == listeners[0].port
    assert echoscu(server.dicom_port, *with_client_cert(pki)).returncode == 0
    assert echoscu(server.dicom_port).returncode != 0
    # The plain listener was never opened.
    assert "DICOM listener on 127.0.0.1:" not in server.stderr()


def test_tls_only_without_certificates_is_a_startup_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            console_script("pacsd"),
            "serve",
            "--dicom-port",
            "0",
            "--control-port",
            "0",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "PACSD_DICOM_PLAIN_LISTENER": "false"},
    )
    assert proc.returncode == 1
    assert not LISTENING.match(proc.stdout.strip())
    assert "dicom_plain_listener is false and no DICOM TLS listener is configured" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_certificate_settings_fail_the_add_in_with_a_clear_error(
    start_pacsd: object, tmp_path: Path, pki: Pki
) -> None:
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n")
    config = tls_config(tmp_path, pki, key_file=str(bad_key))
    server: PacsdProcess = start_pacsd(["--config", str(config)])  # type: ignore[operator]
    assert [item.tls for item in dicom_listeners(server)] == [False]
    with Client(server.endpoint) as client:
        addin = client.addins.get("security")
        assert f"key_file {bad_key}: no PEM private key in it" in addin.error
        # Once the file holds the right key, loading the add-in brings TLS up.
        bad_key.write_bytes(pki.server.key.read_bytes())
        client.addins.load("security")
    assert echoscu(tls_port(server), *anonymous(pki)).returncode == 0
    log = server.stderr()
    assert "c2VjcmV0LWtleS1tYXRlcmlhbA" not in log


def test_stop_pause_and_resume_apply_to_the_tls_port(mutual: PacsdProcess, pki: Pki) -> None:
    port = tls_port(mutual)
    with Client(mutual.endpoint) as client:
        client.server.pause()
        out = echoscu(port, *with_client_cert(pki))
        assert out.returncode != 0
        assert "Association Rejected" in out.stdout + out.stderr
        client.server.resume()
        assert echoscu(port, *with_client_cert(pki)).returncode == 0
        client.server.stop(grace_period=1)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        assert [item.listening for item in dicom_listeners(mutual)] == [False, False]
        client.server.start()
    assert tls_port(mutual) == port
    assert echoscu(port, *with_client_cert(pki)).returncode == 0


def test_unloading_and_loading_the_security_addin_closes_and_opens_the_tls_port(
    mutual: PacsdProcess, pki: Pki
) -> None:
    port = tls_port(mutual)
    with Client(mutual.endpoint) as client:
        client.addins.unload("security")
        assert [item.tls for item in dicom_listeners(mutual)] == [False]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        assert echoscu(mutual.dicom_port).returncode == 0
        client.addins.load("security")
        reopened = tls_port(mutual)
        assert echoscu(reopened, *with_client_cert(pki)).returncode == 0
        # A reload swaps the instance but keeps the port bound.
        client.addins.reload("security")
        assert tls_port(mutual) == reopened
        assert echoscu(reopened, *with_client_cert(pki)).returncode == 0
        # A paused server opens a new TLS port paused.
        client.addins.unload("security")
        client.server.pause()
        client.addins.load("security")
        paused = tls_port(mutual)
        assert echoscu(paused, *with_client_cert(pki)).returncode != 0
        client.server.resume()
        assert echoscu(paused, *with_client_cert(pki)).returncode == 0


def test_changing_the_port_setting_moves_the_tls_listener(mutual: PacsdProcess, pki: Pki) -> None:
    old = tls_port(mutual)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    with Client(mutual.endpoint) as client:
        assert client.addins.update_settings("security", port=free).changed
    assert tls_port(mutual) == free
    assert echoscu(free, *with_client_cert(pki)).returncode == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", old), timeout=5).close()


def test_reload_and_show_without_tls_configured(pacsd: PacsdProcess) -> None:
    with Client(pacsd.endpoint) as client:
        status = client.security.certificates()
        assert not status.enabled and status.provider == "security"
        with pytest.raises(PacsdError) as err:
            client.security.reload()
    assert err.value.reason == "TLS_NOT_CONFIGURED"


def test_many_concurrent_tls_associations(mutual: PacsdProcess, pki: Pki) -> None:
    port = tls_port(mutual)
    results: list[int] = []

    def one() -> None:
        results.append(echoscu(port, *with_client_cert(pki)).returncode)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [0] * 6


def test_a_custom_cipher_list_is_what_tls_1_2_clients_get(
    start_pacsd: object, tmp_path: Path, pki: Pki
) -> None:
    """An operator narrowing ``ciphers`` must see TLS 1.2 clients outside the list
    refused: suites the built-in BCP 195 default allows are no longer negotiated."""
    config = tls_config(tmp_path, pki, ciphers="ECDHE-RSA-AES256-GCM-SHA384")
    server: PacsdProcess = start_pacsd(["--config", str(config)])  # type: ignore[operator]
    port = tls_port(server)

    def tls12(ciphers: str) -> ssl.SSLContext:
        context = client_context(pki, maximum=ssl.TLSVersion.TLSv1_2)
        context.set_ciphers(ciphers)
        return context

    # Both suites are in the default list, which prefers the AES-128 one.
    both = "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384"
    with handshake(port, tls12(both)) as tls:
        assert tls.version() == "TLSv1.2"
        assert tls.cipher()[0] == "ECDHE-RSA-AES256-GCM-SHA384"
    outside = tls12("ECDHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES128-GCM-SHA256")
    before = rejected(server)
    with pytest.raises(ssl.SSLError):
        handshake(port, outside).close()
    server.wait_for_log("no cipher suite in common with the client")
    assert rejected(server) == before + 1

    # DICOM runs over the suite in the list.
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSD", tls_args=(tls12(both), "127.0.0.1"))
    assert assoc.is_established
    try:
        assert int(assoc.send_c_echo().Status) == 0
    finally:
        assoc.release()

    # A live change back to the default admits the refused client again, and the
    # server's order, not the client's, picks among the suites both sides know.
    with Client(server.endpoint) as client:
        assert client.addins.update_settings("security", ciphers=BCP195_CIPHERS).changed
    with handshake(port, outside) as tls:
        assert tls.cipher()[0] == "ECDHE-RSA-AES128-GCM-SHA256"
    aes256_first = tls12("ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256")
    with handshake(port, aes256_first) as tls:
        assert tls.cipher()[0] == "ECDHE-RSA-AES128-GCM-SHA256"
