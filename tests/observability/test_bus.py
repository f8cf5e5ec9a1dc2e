"""The fan-out and the log bus in process: bounded queues, drop counting, tail, tagging."""

from __future__ import annotations

import logging
import threading
import time

from pacsd.addin import AssociationInfo
from pacsd.server import logcontext
from pacsd.server.fanout import Broadcaster, Subscription
from pacsd.server.logbus import AUDIT, LogBus, LogFilter, source_of


def test_a_full_queue_drops_its_oldest_and_reports_the_loss_once() -> None:
    sub: Subscription[int] = Subscription(3)
    for n in range(10):
        sub.offer(n)
    items, lost = sub.take(0)
    assert items == [7, 8, 9] and lost == 7 and sub.dropped == 7
    sub.offer(10)
    assert sub.take(0) == ([10], 0)


def test_publish_never_waits_for_a_reader() -> None:
    fan: Broadcaster[int] = Broadcaster()
    assert not fan.active
    stalled = fan.subscribe(10)
    odd = fan.subscribe(10, accept=lambda n: n % 2 == 1)
    started = time.perf_counter()
    for n in range(100_000):
        fan.publish(n)
    assert time.perf_counter() - started < 5
    assert stalled.dropped == 100_000 - 10 and odd.take(0)[0] == list(range(99_981, 100_000, 2))
    assert fan.stats() == (2, 99_990 + 49_990)
    fan.unsubscribe(stalled)
    assert fan.stats()[0] == 1


def test_close_wakes_a_waiting_reader() -> None:
    sub: Subscription[int] = Subscription(5)
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(sub.take(30)))
    reader.start()
    time.sleep(0.1)
    sub.close()
    reader.join(2)
    assert got == [([], 0)] and sub.closed


def test_bus_tags_records_keeps_a_tail_and_follows_without_gaps() -> None:
    bus = LogBus(tail_size=5, queue_size=100)
    log = logging.getLogger("pacsd.addin.demo.sub")
    log.addHandler(bus)
    log.setLevel(logging.DEBUG)
    try:
        info = AssociationInfo("a9", "SCU", "PACSD", "10.0.0.1", 104)
        for n in range(8):
            log.info("before %d", n)
        recent, sub = bus.follow(3, LogFilter(min_level=logging.INFO))
        with logcontext.association(info):
            log.log(AUDIT, "during", extra={"count": 3, "what": "x"})
        log.debug("debug")
        assert [e.message for e in recent] == ["before 5", "before 6", "before 7"]
        items, lost = sub.take(1)
        assert lost == 0 and [e.message for e in items] == ["during"]
        entry = items[0]
        assert (entry.source, entry.assoc_id, entry.calling_ae, entry.called_ae, entry.peer) == (
            "demo",
            "a9",
            "SCU",
            "PACSD",
            "10.0.0.1:104",
        )
        assert entry.level_name == "AUDIT" and entry.extras == {"count": "3", "what": "x"}
        assert entry.sequence == recent[-1].sequence + 1
        assert [e.message for e in bus.tail(2)] == ["during", "debug"]
        assert bus.tail(10, LogFilter(assoc_id="a9"))[0].message == "during"
        bus.unsubscribe(sub)
        assert bus.stats() == (0, 0)
    finally:
        log.removeHandler(bus)
        log.setLevel(logging.NOTSET)


def test_sources() -> None:
    assert source_of("pacsd.addin.storage") == "storage"
    assert source_of("pacsd.core.dispatch") == "core"
    assert source_of("pacsd.control.audit") == "control"
    assert source_of("pynetdicom.assoc") == "pynetdicom"
