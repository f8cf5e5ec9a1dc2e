"""``AddinRecord.call_batch``: a handler's results in batches, each under the time limit.

The time limit is per result, not per batch: a generator whose every result is quick
may take far longer than the limit in all, and one result past it ends the batch with
``HandlerTimeout`` (the results before it still delivered) and marks the add-in
unhealthy. Cancellation and exceptions end a batch early.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from pacsd.addin import DimseFailure
from pacsd.server.addins import record as record_module
from pacsd.server.addins.record import AddinRecord, HandlerTimeout
from pacsd.server.addins.registry import AddinSource


def make_record() -> AddinRecord:
    return AddinRecord("batches", AddinSource("batches", "path:/nowhere.py"))


def drain(
    rec: AddinRecord, results: Iterator[int], limit: float | None
) -> tuple[list[int], object]:
    got: list[int] = []
    while True:
        batch = rec.call_batch(results, limit)
        got += batch.items
        if batch.end is not None:
            return got, batch.end


def test_all_results_arrive_in_order_and_each_counts_as_a_call() -> None:
    for limit in (None, 5.0):
        rec = make_record()
        got, end = drain(rec, iter(range(300)), limit)
        assert got == list(range(300))
        assert isinstance(end, StopIteration)
        stats = rec.snapshot_stats()
        assert stats.calls == 301 and stats.failures == 0 and stats.timeouts == 0
        assert rec.healthy and rec.wait_idle(1)


def test_a_batch_stops_at_its_size() -> None:
    rec = make_record()
    batch = rec.call_batch(iter(range(1000)), 5.0)
    assert batch.items == list(range(record_module.BATCH_ITEMS)) and batch.end is None


def test_the_limit_applies_to_each_result_not_to_the_whole_answer() -> None:
    def slow() -> Iterator[int]:
        for n in range(6):
            time.sleep(0.05)  # each well under the limit; all six past it
            yield n

    rec = make_record()
    got, end = drain(rec, slow(), 0.2)
    assert got == list(range(6)) and isinstance(end, StopIteration)
    assert rec.healthy


def test_a_result_past_the_limit_ends_with_a_timeout_after_the_earlier_ones() -> None:
    release = threading.Event()

    def hangs() -> Iterator[int]:
        yield 1
        yield 2
        release.wait(10)
        yield 3

    rec = make_record()
    started = time.monotonic()
    got, end = drain(rec, hangs(), 0.2)
    elapsed = time.monotonic() - started
    release.set()
    assert got == [1, 2]
    assert isinstance(end, HandlerTimeout) and "time limit" in str(end)
    assert elapsed < 2, elapsed
    assert not rec.healthy and "time limit" in rec.error
    stats = rec.snapshot_stats()
    assert stats.timeouts == 1 and stats.failures == 1
    assert rec.wait_idle(1)


def test_exceptions_end_the_batch_and_only_faults_count_as_failures() -> None:
    def fails(exc: Exception) -> Iterator[int]:
        yield 1
        raise exc

    rec = make_record()
    got, end = drain(rec, fails(DimseFailure(0xA900, "no")), 5.0)
    assert got == [1] and isinstance(end, DimseFailure)
    assert rec.snapshot_stats().failures == 0
    got, end = drain(rec, fails(RuntimeError("boom")), 5.0)
    assert got == [1] and isinstance(end, RuntimeError)
    assert rec.snapshot_stats().failures == 1 and rec.healthy


def test_stop_ends_a_batch_after_the_current_result() -> None:
    rec = make_record()
    produced: list[int] = []

    def counting() -> Iterator[int]:
        for n in range(1000):
            produced.append(n)
            yield n

    batch = rec.call_batch(counting(), 5.0, stop=lambda: len(produced) >= 3)
    assert batch.items == [0, 1, 2] and batch.end is None
