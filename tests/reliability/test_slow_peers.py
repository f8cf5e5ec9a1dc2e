"""Slow peers: one that connects and says nothing, one that stops halfway through a
PDU (during negotiation and after it), one that stalls in the middle of a C-STORE.

Each is closed after the configured timeout (``acse_timeout`` before the association
is negotiated, ``network_timeout`` after), a stalled C-STORE's spooled data is
discarded, and a store from another peer meanwhile completes at full speed.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from pacsd.server.dicom.client import ClientAE
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from tests import corpus
from tests.conftest import PacsdProcess
from tests.integration.test_storage import blob_files, index_rows
from tests.reliability import procstats, wire

ACSE = 1.0
NETWORK = 2.0
TIMEOUTS = {
    "PACSD_ACSE_TIMEOUT": str(ACSE),
    "PACSD_DIMSE_TIMEOUT": str(NETWORK),
    "PACSD_NETWORK_TIMEOUT": str(NETWORK),
}


@pytest.fixture
def server(start_pacsd) -> PacsdProcess:  # type: ignore[no-untyped-def]
    return start_pacsd(env=TIMEOUTS)


def _explicit_le(ds: object) -> bytes:
    buf = DicomBytesIO()
    buf.is_little_endian = True
    buf.is_implicit_VR = False
    write_dataset(buf, ds)  # type: ignore[arg-type]
    return bytes(buf.getvalue())


def _silent(port: int) -> wire.Answer:
    sock = wire.connect(port)
    with sock:
        return wire.read_answer(sock, 10)


def _half_associate_rq(port: int) -> wire.Answer:
    sock = wire.connect(port)
    with sock:
        sock.sendall(wire.associate_rq()[:40])
        return wire.read_answer(sock, 10)


def _half_p_data(port: int) -> wire.Answer:
    sock = wire.associate(port)
    with sock:
        sock.sendall(wire.p_data(1, wire.echo_rq(), command=True)[:20])
        return wire.read_answer(sock, 10)


def _stalled_store(port: int, started: threading.Event) -> wire.Answer:
    ds = corpus.instance(pixels=256)
    data = _explicit_le(ds)
    sock = wire.associate(port)
    with sock:
        sock.sendall(wire.p_data(3, wire.store_rq(str(ds.SOPInstanceUID)), command=True))
        sock.sendall(wire.p_data(3, data[: len(data) // 2], command=False, last=False))
        started.set()
        return wire.read_answer(sock, 10)


def _store_elsewhere(port: int) -> float:
    ae = ClientAE(ae_title="BYSTANDER")  # without pynetdicom's lost-response race
    ae.add_requested_context(corpus.SECONDARY_CAPTURE, "1.2.840.10008.1.2.1")
    start = time.monotonic()
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSD")
    assert assoc.is_established
    for _ in range(5):
        assert int(assoc.send_c_store(corpus.instance()).Status) == 0
    assoc.release()
    return time.monotonic() - start


def test_slow_peers_are_closed_after_their_timeout_and_others_go_on(server: PacsdProcess) -> None:
    port = server.dicom_port
    # Warm up: threads that live as long as the server start (a C-ECHO's handler runs on
    # the add-in pool, whose first thread would otherwise appear during the test).
    _store_elsewhere(port)
    assert wire.echo_ok(port)
    baseline = procstats.usage(server.proc.pid)
    results: dict[str, wire.Answer] = {}
    store_started = threading.Event()
    peers = {
        "silent": lambda: _silent(port),
        "half_rq": lambda: _half_associate_rq(port),
        "half_pdata": lambda: _half_p_data(port),
        "stalled_store": lambda: _stalled_store(port, store_started),
    }
    threads = [
        threading.Thread(target=lambda k=k, f=f: results.__setitem__(k, f()))
        for k, f in peers.items()
    ]
    for t in threads:
        t.start()
    assert store_started.wait(5)
    time.sleep(0.3)
    # The stalled C-STORE's first half is on disk while the peer stalls...
    assert list((server.data_dir / "tmp").glob("rx-*.part")), "nothing spooled: test is moot"
    # ...and meanwhile another peer stores and echoes at full speed.
    assert _store_elsewhere(port) < 1.5
    assert wire.echo_ok(port)
    for t in threads:
        t.join(15)
    assert set(results) == set(peers)

    # Before negotiation: closed (no A-ABORT needed, PS3.8 ARTIM expiry) after acse_timeout.
    for name in ("silent", "half_rq"):
        answer = results[name]
        assert answer.closed, (name, answer)
        assert ACSE - 0.2 <= answer.seconds <= ACSE + 1.5, (name, answer)
    # Established: closed after network_timeout; an idle association gets an A-ABORT.
    for name in ("half_pdata", "stalled_store"):
        answer = results[name]
        assert answer.closed, (name, answer)
        assert NETWORK - 0.2 <= answer.seconds <= NETWORK + 1.5, (name, answer)
    assert results["stalled_store"].pdu_types == [wire.ABORT]

    # Partial data is discarded: nothing spooled, nothing stored but the bystander's.
    deadline = time.monotonic() + 5
    while list((server.data_dir / "tmp").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((server.data_dir / "tmp").iterdir()) == []
    assert len(index_rows(server)) == len(blob_files(server)) == 10

    # Threads and descriptors are back where they were, and nothing raised in the server.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        now = procstats.usage(server.proc.pid)
        if now.threads <= baseline.threads and now.fds <= baseline.fds:
            break
        time.sleep(0.1)
    assert now.threads <= baseline.threads and now.fds <= baseline.fds, (baseline, now)
    assert "Traceback" not in server.stderr()
    assert "in the middle of a PDU" in server.stderr()


def test_silent_peer_is_closed_at_acse_timeout_not_network_timeout(start_pacsd) -> None:  # type: ignore[no-untyped-def]
    """The timeouts are the configured ones: a longer acse_timeout keeps a silent peer
    longer (so the first test's closings are not some fixed internal limit)."""
    server = start_pacsd(env={**TIMEOUTS, "PACSD_ACSE_TIMEOUT": "2.5"})
    answer = _silent(server.dicom_port)
    assert answer.closed and 2.3 <= answer.seconds <= 4.0, answer
    half = _half_associate_rq(server.dicom_port)
    assert half.closed and 2.3 <= half.seconds <= 4.0, half


def test_a_store_whose_pdus_arrive_in_pieces_is_stored(server: PacsdProcess) -> None:
    # Reads find part of a PDU and then nothing for a while: the rest is waited for
    # (the upper layer reads the socket directly first, dicom/engine.py), and neither
    # an empty read nor a short one is taken for a closed connection.
    ds = corpus.instance(pixels=64)  # 64 x 64, 8 KiB of pixels: a dozen pieces
    uid = str(ds.SOPInstanceUID)
    stream = wire.p_data(3, wire.store_rq(uid), command=True) + wire.p_data(
        3, _explicit_le(ds), command=False
    )
    sock = wire.associate(server.dicom_port)
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start in range(0, len(stream), 700):
            sock.sendall(stream[start : start + 700])
            time.sleep(0.005)
        answer = wire.read_answer(sock, 5, until_closed=False)
    assert answer.first == wire.P_DATA and wire._status(answer.raw) == 0, answer
    assert uid in index_rows(server)
    assert "Traceback" not in server.stderr()
