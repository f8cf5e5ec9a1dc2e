"""The SDK's own C-ECHO SCU (pacsd.client.dicom_echo) against real peers.

It is what rollout health checks rely on, so it is tested against pacsd itself and
against DCMTK's storescp (an independent implementation of the upper layer), and for
each way a peer can fail: refusing, closing, staying silent, nothing listening.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pacsd.client import Client
from pacsd.client.dicom_echo import c_echo

from tests.conftest import PacsdProcess, dcmtk, dcmtk_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[int]:
    """DCMTK storescp (it answers Verification too), AE title STORESCP."""
    port = free_port()
    proc = subprocess.Popen(
        [dcmtk("storescp"), "-aet", "STORESCP", "-od", str(tmp_path), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dcmtk_env(),
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        else:
            pytest.fail("storescp did not start listening")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_echo_to_pacsd_succeeds_and_is_counted(pacsd: PacsdProcess) -> None:
    with Client(pacsd.endpoint) as client:
        before = client.server.get().counters.associations_accepted
        result = c_echo("127.0.0.1", pacsd.dicom_port, pacsd.ae_title, calling_ae="FLEETTEST")
        assert result.success, result
        assert result.status == 0x0000
        assert result.error == ""
        assert 0 < result.round_trip_ms < 5000
        deadline = time.monotonic() + 5
        while client.server.get().counters.associations_accepted == before:
            assert time.monotonic() < deadline, "the association was never counted"
            time.sleep(0.05)


def test_echo_to_dcmtk_storescp(storescp: int) -> None:
    result = c_echo("127.0.0.1", storescp, "STORESCP")
    assert result.success, result
    assert result.status == 0


def test_paused_pacsd_rejects_the_association(pacsd: PacsdProcess) -> None:
    with Client(pacsd.endpoint) as client:
        client.server.pause()
        result = c_echo("127.0.0.1", pacsd.dicom_port, pacsd.ae_title)
        assert not result.success
        assert result.error == "association rejected (transient): temporary congestion"
        client.server.resume()
    assert c_echo("127.0.0.1", pacsd.dicom_port, pacsd.ae_title).success


def test_pacsd_without_verification_refuses_the_context(pacsd: PacsdProcess) -> None:
    with Client(pacsd.endpoint) as client:
        client.addins.disable("verification")
        result = c_echo("127.0.0.1", pacsd.dicom_port, pacsd.ae_title)
    assert not result.success
    # pacsd accepts only the contexts some enabled add-in handles.
    assert result.error == (
        "Verification presentation context refused: abstract syntax not supported"
    )


def test_nothing_listening() -> None:
    result = c_echo("127.0.0.1", free_port(), "ANY")
    assert not result.success
    assert result.error.startswith("cannot connect to 127.0.0.1:")
    assert "refused" in result.error.lower()


def _serve_once(behaviour: str) -> int:
    """A fake peer: accepts one connection, then closes it or says nothing."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = int(server.getsockname()[1])

    def run() -> None:
        conn, _ = server.accept()
        if behaviour == "close":
            conn.recv(4096)
            conn.close()
        else:
            time.sleep(3)
            conn.close()
        server.close()

    threading.Thread(target=run, daemon=True).start()
    return port


def test_peer_that_closes_the_connection() -> None:
    result = c_echo("127.0.0.1", _serve_once("close"), "ANY")
    assert not result.success
    assert result.error == "the peer closed the connection"


def test_silent_peer_times_out() -> None:
    start = time.monotonic()
    result = c_echo("127.0.0.1", _serve_once("silent"), "ANY", timeout=0.5)
    assert time.monotonic() - start < 2.5
    assert not result.success
    assert "no answer" in result.error and "0.5s" in result.error


def test_bad_ae_titles_are_results_not_exceptions() -> None:
    result = c_echo("127.0.0.1", 1, "A" * 17)
    assert not result.success and "called AE title" in result.error
    result = c_echo("127.0.0.1", 1, "PACSD", calling_ae="")
    assert not result.success and "calling AE title" in result.error
