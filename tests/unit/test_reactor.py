"""The blocking waits that replace pynetdicom's 1 ms polling (dicom/reactor.py)."""

from __future__ import annotations

import os
import socket
import threading
import time

from pacsd.server.dicom import reactor

#: Far longer than any wake-up takes: a wait that lasts this long was not woken.
LONG = 30.0


def _timed_wait(waiter: reactor.SocketWaiter, raw: socket.socket | None) -> float:
    started = time.monotonic()
    waiter.wait(raw, LONG)
    return time.monotonic() - started


def test_a_wakeup_ends_the_wait() -> None:
    wakeup = reactor.Wakeup()
    waiter = reactor.SocketWaiter(wakeup)
    threading.Timer(0.05, wakeup.wake).start()
    assert _timed_wait(waiter, None) < LONG / 2
    wakeup.close()


def test_readable_socket_ends_the_wait() -> None:
    a, b = socket.socketpair()
    with a, b:
        waiter = reactor.SocketWaiter(reactor.Wakeup())
        threading.Timer(0.05, b.sendall, args=(b"x",)).start()
        assert _timed_wait(waiter, a) < LONG / 2


def test_a_closed_socket_is_forgotten_not_polled() -> None:
    a, b = socket.socketpair()
    waiter = reactor.SocketWaiter(reactor.Wakeup())
    b.sendall(b"x")
    waiter.wait(a, 0)
    a.close()
    b.close()
    # The descriptor number may be reused by anything now; the waiter must not poll it.
    started = time.monotonic()
    waiter.wait(a, 0.2)
    assert time.monotonic() - started >= 0.15


def test_waking_after_close_writes_nowhere() -> None:
    wakeup = reactor.Wakeup()
    fd = wakeup.fd
    wakeup.close()
    r, w = os.pipe()  # likely takes the freed descriptor number
    try:
        wakeup.wake()
        os.set_blocking(r, False)
        try:
            data = os.read(r, 16)
        except BlockingIOError:
            data = b""
        assert data == b"", f"a wake-up reached descriptor {fd}"
    finally:
        os.close(r)
        os.close(w)


def test_waking_queue_sets_its_event() -> None:
    event = threading.Event()
    q = reactor.WakingQueue(event)
    q.put("message")
    assert event.is_set()
    assert q.get_nowait() == "message"
