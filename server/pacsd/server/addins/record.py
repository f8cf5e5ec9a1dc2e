"""The state the manager keeps for one add-in: instance, routes, health, counters.

Dispatch calls through ``AddinRecord.call`` so every handler call is counted, timed,
bounded by its time limit and tracked as in flight (unload waits for those).
"""

from __future__ import annotations

import bisect
import contextvars
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from pacsd.addin import Addin, AddinContext, DimseFailure
from pacsd.server.addins.registry import AddinSource

T = TypeVar("T")


class AddinState(StrEnum):
    AVAILABLE = "available"
    ENABLED = "enabled"
    DISABLED = "disabled"
    FAILED = "failed"


class HandlerTimeout(Exception):
    """A handler ran past its time limit; it was answered with a failure status."""


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
            elapsed = time.perf_counter() - started
            with self._lock:
                self._inflight -= 1
                s = self.stats
                s.calls += 1
                s.failures += failed
                s.total_latency += elapsed
                s.max_latency = max(s.max_latency, elapsed)
                s.buckets[bisect.bisect_left(LATENCY_BUCKETS, elapsed)] += 1
                if not self._inflight:
                    self._lock.notify_all()

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
