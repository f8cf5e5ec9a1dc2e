"""The state the manager keeps for one add-in: instance, routes, health, counters.

Dispatch calls through ``AddinRecord.call`` so every handler call is counted, timed,
bounded by its time limit and tracked as in flight (unload waits for those).
"""

from __future__ import annotations

import bisect
import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

from pacsd.addin import Addin, AddinContext, DimseFailure
from pacsd.server.addins.registry import AddinSource
from pacsd.server.addins.watchdog import WATCHDOG

T = TypeVar("T")


class AddinState(StrEnum):
    AVAILABLE = "available"
    ENABLED = "enabled"
    DISABLED = "disabled"
    FAILED = "failed"


class HandlerTimeout(Exception):
    """A handler ran past its time limit; it was answered with a failure status."""


class LateReturn(HandlerTimeout):
    """A handler returned after its time limit, when its request had been answered
    (``AddinRecord.call_answered``): its result is dropped."""


#: Upper bounds (seconds) of the call-latency histogram the metrics endpoint exports.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


def _empty_buckets() -> list[int]:
    return [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf


@dataclass
class CallStats:
    calls: int = 0
    failures: int = 0
    timeouts: int = 0
    total_latency: float = 0.0
    max_latency: float = 0.0
    #: Calls per latency bucket (not cumulative): index i counts calls that took at
    #: most LATENCY_BUCKETS[i] and more than the bound before it.
    buckets: list[int] = field(default_factory=_empty_buckets)


#: Most results one hand-over to the worker thread collects, and how long (seconds) it
#: keeps collecting before it hands them over: the first results of a large answer still
#: leave early, and a cancel is seen within one batch.
BATCH_ITEMS = 64
BATCH_WINDOW = 0.005


@dataclass(eq=False)
class Batch(Generic[T]):
    """Results a handler's generator produced in one hand-over, and how it ended.

    ``end`` is None when the generator may have more, ``StopIteration`` when it is
    exhausted, ``HandlerTimeout`` when one result took longer than the time limit (the
    results produced before it are still in ``items``), or the exception it raised.
    """

    items: list[T] = field(default_factory=list)
    end: Exception | None = None
    #: perf_counter() when the result being produced now was asked for.
    item_started: float = 0.0
    #: Set by the waiting thread once it stopped waiting: the worker stops pulling.
    abandoned: bool = False


#: Handlers with a time limit run here, so the association thread can stop waiting. A
#: handler that never returns keeps its worker; the add-in is reported unhealthy.
_POOL = ThreadPoolExecutor(max_workers=128, thread_name_prefix="pacsd-addin")


@dataclass(eq=False)
class AddinRecord:
    name: str
    source: AddinSource
    state: AddinState = AddinState.AVAILABLE
    instance: Addin | None = None
    context: AddinContext | None = None
    version: str = ""
    description: str = ""
    error: str = ""
    healthy: bool = True
    #: Raw settings as configured or last updated (the validated form is ctx.settings).
    raw_settings: dict[str, Any] = field(default_factory=dict)
    routes: list[Any] = field(default_factory=list)
    hooks: list[tuple[str, Callable[..., Any]]] = field(default_factory=list)
    commands: dict[str, str] = field(default_factory=dict)
    stats: CallStats = field(default_factory=CallStats)
    _lock: threading.Condition = field(default_factory=threading.Condition)
    _inflight: int = 0

    @property
    def routable(self) -> bool:
        return self.state is AddinState.ENABLED

    def call(self, fn: Callable[..., T], arg: Any, time_limit: float | None) -> T:
        """Run ``fn(arg)`` under the time limit, counting it. Exceptions propagate."""
        with self._lock:
            self._inflight += 1
        started = time.perf_counter()
        failed = True
        try:
            if time_limit is None:
                result = fn(arg)
            else:
                future = _POOL.submit(contextvars.copy_context().run, fn, arg)
                try:
                    result = future.result(timeout=time_limit)
                except FutureTimeout:
                    self._timed_out(time_limit)
                    raise HandlerTimeout(
                        f"add-in {self.name} exceeded its {time_limit:g}s time limit"
                    ) from None
            failed = False
            return result
        except DimseFailure:
            failed = False  # a deliberate answer, not a fault of the add-in
            raise
        finally:
            self._settle(time.perf_counter() - started, failed)

    def call_answered(
        self,
        fn: Callable[..., T],
        arg: Any,
        time_limit: float | None,
        answer: Callable[[], None],
    ) -> T:
        """Run ``fn(arg)`` on this thread; at the time limit ``answer()`` runs on the
        watchdog thread (watchdog.py) to answer the request with a failure, and the call
        counts as timed out and no longer in flight, as with :meth:`call`.

        When a handler past its limit returns, this raises :class:`LateReturn` and the
        caller must not answer again. Exceptions of an in-time call propagate.
        """
        if time_limit is None:
            return self.call(fn, arg, None)
        with self._lock:
            self._inflight += 1
        started = time.perf_counter()

        def expire() -> None:
            self._timed_out(time_limit)
            self._settle(time_limit, failed=True)
            answer()

        ticket = WATCHDOG.arm(time_limit, expire)
        error: BaseException | None = None
        failed = False
        try:
            result = fn(arg)
        except DimseFailure as exc:  # a deliberate answer, not a fault of the add-in
            error = exc
        except BaseException as exc:
            error, failed = exc, True
        elapsed = time.perf_counter() - started
        if not ticket.finish():
            raise LateReturn(
                f"add-in {self.name} returned {elapsed:.1f}s after its call began, past "
                f"its {time_limit:g}s time limit: the request had been answered with a "
                "failure, its result is dropped"
            ) from error
        self._settle(elapsed, failed)
        if error is not None:
            raise error
        return result

    def _settle(self, elapsed: float, failed: bool) -> None:
        """A call no longer in flight: count it, and wake an unload waiting for it."""
        with self._lock:
            self._inflight -= 1
            self._record(elapsed, failed)
            if not self._inflight:
                self._lock.notify_all()

    def call_batch(
        self,
        results: Iterator[T],
        time_limit: float | None,
        stop: Callable[[], bool] = lambda: False,
        max_items: int = BATCH_ITEMS,
    ) -> Batch[T]:
        """Pull up to ``max_items`` results from a handler's generator in one hand-over.

        ``call(next, results, limit)`` per result cost a thread hand-off (submit, wake,
        set_result, wake) for every C-FIND match: a quarter of a large answer's CPU. Here
        the worker pulls results until the batch is full, ``BATCH_WINDOW`` has passed,
        ``stop()`` (a C-CANCEL) is true or the generator ends, and the time limit still
        applies to each result: the waiting thread measures from the moment the worker
        asked for the current one. Each result is counted and timed as one call.
        """
        batch: Batch[T] = Batch(item_started=time.perf_counter())
        with self._lock:
            self._inflight += 1
        try:
            if time_limit is None:
                self._pull(results, batch, stop, max_items)
                return batch
            future = _POOL.submit(
                contextvars.copy_context().run, self._pull, results, batch, stop, max_items
            )
            while True:
                left = batch.item_started + time_limit - time.perf_counter()
                try:
                    future.result(timeout=max(left, 0.0))
                    return batch
                except FutureTimeout:
                    if time.perf_counter() - batch.item_started < time_limit:
                        continue  # the worker moved on to the next result meanwhile
                batch.abandoned = True
                self._timed_out(time_limit)
                self._count(time.perf_counter() - batch.item_started, failed=True)
                return Batch(
                    list(batch.items),
                    HandlerTimeout(f"add-in {self.name} exceeded its {time_limit:g}s time limit"),
                )
        finally:
            with self._lock:
                self._inflight -= 1
                if not self._inflight:
                    self._lock.notify_all()

    def _pull(
        self, results: Iterator[T], batch: Batch[T], stop: Callable[[], bool], max_items: int
    ) -> None:
        """The worker's side of ``call_batch``."""
        begun = time.perf_counter()
        while len(batch.items) < max_items and not batch.abandoned:
            started = batch.item_started = time.perf_counter()
            end: Exception | None = None
            failed = False
            try:
                item = next(results)
            except StopIteration as exc:
                end = exc
            except DimseFailure as exc:  # a deliberate answer, not a fault of the add-in
                end = exc
            except Exception as exc:
                end, failed = exc, True
            now = time.perf_counter()
            if batch.abandoned:
                return  # timed out meanwhile: the waiting thread answered and counted it
            self._count(now - started, failed)
            if end is not None:
                batch.end = end
                return
            batch.items.append(item)
            if now - begun >= BATCH_WINDOW or stop():
                return

    def _count(self, elapsed: float, failed: bool) -> None:
        with self._lock:
            self._record(elapsed, failed)

    def _record(self, elapsed: float, failed: bool) -> None:
        """One call in the statistics (the caller holds ``_lock``)."""
        s = self.stats
        s.calls += 1
        s.failures += failed
        s.total_latency += elapsed
        s.max_latency = max(s.max_latency, elapsed)
        s.buckets[bisect.bisect_left(LATENCY_BUCKETS, elapsed)] += 1

    def count_failure(self) -> None:
        """A call that returned normally but whose answer was a failure (bad return value)."""
        with self._lock:
            self.stats.failures += 1

    def _timed_out(self, limit: float) -> None:
        with self._lock:
            self.stats.timeouts += 1
            self.healthy = False
            self.error = f"a handler exceeded its {limit:g}s time limit"

    def wait_idle(self, timeout: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: self._inflight == 0, timeout=timeout)

    def snapshot_stats(self) -> CallStats:
        with self._lock:
            s = self.stats
            return CallStats(
                s.calls, s.failures, s.timeouts, s.total_latency, s.max_latency, list(s.buckets)
            )
