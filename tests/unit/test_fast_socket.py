"""FastSocket's reads: straight from the socket first, waiting only for what is missing."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from pacsd.server.dicom.engine import FastSocket


@pytest.fixture
def pair() -> Iterator[tuple[FastSocket, socket.socket]]:
    ours, peer = socket.socketpair()
    ours.settimeout(5)  # non-blocking underneath, as an association's socket
    fast = FastSocket.__new__(FastSocket)
    fast.socket = ours
    fast._is_connected = True
    fast.send_lock = threading.Lock()
    try:
        yield fast, peer
    finally:
        ours.close()
        peer.close()


def _read(fast: FastSocket, size: int) -> bytes:
    buffer = bytearray(size)
    got = fast.read_into(buffer, 0)
    return bytes(buffer[:got])


def test_a_read_takes_what_is_there_and_waits_for_the_rest(
    pair: tuple[FastSocket, socket.socket],
) -> None:
    fast, peer = pair
    peer.sendall(b"abc")

    def later() -> None:
        time.sleep(0.1)
        peer.sendall(b"defghi")

    threading.Thread(target=later).start()
    started = time.monotonic()
    assert _read(fast, 6) == b"abcdef"  # 3 bytes at once, nothing, then the rest
    assert time.monotonic() - started >= 0.09
    assert _read(fast, 3) == b"ghi"
    assert fast.bytes_in == 9


def test_the_peer_closing_mid_read_returns_what_arrived(
    pair: tuple[FastSocket, socket.socket],
) -> None:
    fast, peer = pair
    peer.sendall(b"abc")
    peer.close()
    assert _read(fast, 6) == b"abc"


def test_a_read_with_nothing_coming_ends_at_the_timeout(
    pair: tuple[FastSocket, socket.socket],
) -> None:
    fast, _ = pair
    fast.socket.settimeout(0.2)
    with pytest.raises(TimeoutError):
        _read(fast, 6)


def test_a_write_goes_out_whole(pair: tuple[FastSocket, socket.socket]) -> None:
    fast, peer = pair
    fast._assoc = _NoHandlers()  # type: ignore[assignment]
    data = b"x" * (4 << 20)  # more than the socket buffers: a short direct write first
    received = bytearray()

    def drain() -> None:
        while len(received) < len(data):
            received.extend(peer.recv(1 << 16))

    reader = threading.Thread(target=drain)
    reader.start()
    fast.send(data)
    reader.join(10)
    assert bytes(received) == data
    assert fast.bytes_out == len(data)


class _NoHandlers:
    def get_handlers(self, event: object) -> list[object]:
        return []
