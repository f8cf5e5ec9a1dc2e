"""Connections are shared evenly by the engine processes, whatever the kernel's hash.

SO_REUSEPORT alone puts six connections 3-3 on two processes about one time in three;
the processes hand a just-accepted connection to a less loaded sibling
(workers/balance.py), so every round here must come out even.
"""

from __future__ import annotations

import array
import socket
import threading
import time
from pathlib import Path

import grpc
import pytest
from pacsd.admin.v1 import associations_pb2, associations_pb2_grpc, server_pb2, server_pb2_grpc
from pacsd.server.workers import balance

from tests.conftest import PacsdProcess
from tests.workers.test_workers import associate

ROUNDS = 4
HELD = 6


def _live_by_worker(channel: grpc.Channel, prefix: str) -> dict[int, int]:
    stub = associations_pb2_grpc.AssociationServiceStub(channel)
    live = stub.ListAssociations(
        associations_pb2.ListAssociationsRequest(page_size=1000), timeout=10
    ).associations
    counts: dict[int, int] = {}
    for a in live:
        if a.calling_ae.startswith(prefix):
            counts[a.worker] = counts.get(a.worker, 0) + 1
    return counts


def test_held_associations_are_shared_evenly_by_the_processes(
    server: PacsdProcess, channel: grpc.Channel
) -> None:
    for n in range(ROUNDS):
        prefix = f"R{n}A"
        held = [associate(server.dicom_port, f"{prefix}{k}") for k in range(HELD)]
        try:
            assert all(a.is_established for a in held)
            for assoc in held:  # each serves on whichever process adopted it
                assert assoc.send_c_echo().Status == 0
            assert _live_by_worker(channel, prefix) == {0: HELD // 2, 1: HELD // 2}, n
        finally:
            for assoc in held:
                assoc.release()
        deadline = time.monotonic() + 10
        while _live_by_worker(channel, prefix) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _live_by_worker(channel, prefix) == {}
    workers = (
        server_pb2_grpc.ServerServiceStub(channel)
        .GetServer(server_pb2.GetServerRequest(), timeout=10)
        .server.workers
    )
    accepted = {w.index: w.counters.associations_accepted for w in workers}
    assert accepted == {0: ROUNDS * HELD // 2, 1: ROUNDS * HELD // 2}
    assert "Traceback" not in server.stderr()


# -- the pieces, in one process ---------------------------------------------------------


@pytest.mark.parametrize(
    ("loads", "me", "expected"),
    [
        ([0, 0], 0, None),  # even: keep it
        ([1, 0], 0, 1),
        ([1, 1], 1, None),
        ([2, 1], 1, None),  # the other is busier
        ([3, 1, 2], 0, 1),  # the least loaded sibling
        ([2, 1, 1], 0, 1),  # the first of equals
        ([0], 0, None),  # alone
    ],
)
def test_choose(loads: list[int], me: int, expected: int | None) -> None:
    assert balance.choose(loads, me) == expected


def test_a_connection_handed_over_is_served_by_the_sibling(tmp_path: Path) -> None:
    balance.create_board(tmp_path, 2)
    first = balance.Balancer(tmp_path, 0, 2)
    second = balance.Balancer(tmp_path, 1, 2)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    adopted: list[socket.socket] = []
    arrived = threading.Event()

    def adopt(sock: socket.socket, peer: object) -> None:
        adopted.append(sock)
        arrived.set()

    balance.register(port, adopt)
    try:
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        assert first.hand_over(accepted) is False  # nobody is busier than anybody
        first.opened()
        assert first.loads() == [1, 0]
        assert first.hand_over(accepted) is True
        accepted.close()  # the sibling's copy keeps the connection open
        assert arrived.wait(5)
        assert first.loads() == [1, 1]  # counted on the sibling's slot while in transit
        client.sendall(b"hello")
        assert adopted[0].recv(5) == b"hello"
        adopted[0].sendall(b"there")
        assert client.recv(5) == b"there"
        second.opened()  # the sibling counts it itself
        second.closed()
        assert first.loads() == [1, 0]
        second.closed()  # one it never counted (accepted while it was being installed)
        assert first.loads() == [1, 0]
        assert (first.handed_over, second.adopted) == (1, 1)
    finally:
        balance.unregister(port, adopt)
        for sock in (*adopted, listener):
            sock.close()
        first.close()
        second.close()


def test_a_sibling_that_is_gone_leaves_the_connection_here(tmp_path: Path) -> None:
    balance.create_board(tmp_path, 2)
    first = balance.Balancer(tmp_path, 0, 2)
    gone = balance.Balancer(tmp_path, 1, 2)
    gone.close()  # its hand-over socket is removed, as when a worker died
    first.opened()
    a, b = socket.socketpair()
    try:
        assert first.hand_over(a) is False
        assert first.loads() == [1, 0]  # nothing left counted on the missing sibling
    finally:
        a.close()
        b.close()
        first.close()


def test_only_stream_sockets_are_adopted(tmp_path: Path) -> None:
    balance.create_board(tmp_path, 2)
    second = balance.Balancer(tmp_path, 1, 2)
    try:
        with (
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as odd,
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender,
        ):
            fds = array.array("i", [odd.fileno()])
            sender.sendmsg(
                [b"c"],
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())],
                0,
                str(balance.handoff_path(tmp_path, 1)),
            )
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and second.adopted == 0:
            time.sleep(0.01)
        assert second.adopted == 0
    finally:
        second.close()
