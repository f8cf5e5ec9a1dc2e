"""The handler watchdog: deadlines fire once, in order, and never after the caller won."""

from __future__ import annotations

import threading
import time

import pytest
from pacsd.addin import DimseFailure
from pacsd.server.addins.record import AddinRecord, LateReturn
from pacsd.server.addins.registry import AddinSource
from pacsd.server.addins.watchdog import Watchdog


def test_a_ticket_finished_in_time_never_fires() -> None:
    dog = Watchdog()
    fired = threading.Event()
    ticket = dog.arm(0.05, fired.set)
    assert ticket.finish() is True
    assert not fired.wait(0.2)


def test_an_unfinished_ticket_fires_at_its_deadline_and_finish_says_so() -> None:
    dog = Watchdog()
    fired_at: list[float] = []
    started = time.monotonic()
    ticket = dog.arm(0.1, lambda: fired_at.append(time.monotonic()))
    time.sleep(0.3)
    assert len(fired_at) == 1 and 0.09 <= fired_at[0] - started < 0.3
    assert ticket.finish() is False


def test_tickets_of_different_limits_fire_in_deadline_order() -> None:
    dog = Watchdog()
    order: list[str] = []
    done = threading.Event()
    dog.arm(0.4, lambda: (order.append("slow"), done.set()))
    dog.arm(0.1, lambda: order.append("fast"))  # due sooner: wakes the sleeping watchdog
    finished = dog.arm(0.2, lambda: order.append("finished"))
    finished.finish()
    assert done.wait(2)
    assert order == ["fast", "slow"]


def test_a_late_finish_waits_for_the_expiry_action_to_end() -> None:
    dog = Watchdog()
    entered = threading.Event()
    steps: list[str] = []

    def slow_expiry() -> None:
        entered.set()
        time.sleep(0.2)
        steps.append("answered")

    ticket = dog.arm(0.01, slow_expiry)
    assert entered.wait(2)
    in_time = ticket.finish()  # blocks until the action has answered
    steps.append("finish returned")
    assert in_time is False
    assert steps == ["answered", "finish returned"]


def test_an_expiry_action_that_raises_is_logged_and_the_watchdog_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dog = Watchdog()

    def broken() -> None:
        raise RuntimeError("no socket")

    dog.arm(0.01, broken)
    later = threading.Event()
    dog.arm(0.05, later.set)
    assert later.wait(2)
    assert "answering a handler past its time limit failed" in caplog.text


def _record() -> AddinRecord:
    return AddinRecord(name="probe", source=AddinSource(name="probe", origin="path:probe.py"))


def test_call_answered_in_time_returns_and_counts() -> None:
    record = _record()
    answered: list[int] = []
    assert record.call_answered(lambda x: x * 2, 21, 1.0, lambda: answered.append(1)) == 42
    with pytest.raises(DimseFailure):
        record.call_answered(_raise_failure, None, 1.0, lambda: answered.append(1))
    assert answered == []
    assert record.stats.calls == 2 and record.stats.failures == 0
    assert record.stats.timeouts == 0 and record.wait_idle(0)


def test_call_answered_past_its_limit_answers_once_and_the_late_result_is_refused() -> None:
    record = _record()
    answered: list[bool] = []
    idle_when_answered: list[bool] = []

    def answer() -> None:
        # At the limit the call no longer counts as in flight (unload does not wait).
        idle_when_answered.append(record.wait_idle(0))
        answered.append(True)

    with pytest.raises(LateReturn, match=r"past its 0\.05s time limit"):
        record.call_answered(lambda _: time.sleep(0.3), None, 0.05, answer)
    assert answered == [True] and idle_when_answered == [True]
    assert record.stats.timeouts == 1 and record.stats.calls == 1
    assert not record.healthy and "0.05s time limit" in record.error


def _raise_failure(_: object) -> None:
    raise DimseFailure(0xA700, "full")
