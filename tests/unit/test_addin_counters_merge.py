"""An add-in's counters and health over several engine processes (``add_worker``).

tests/workers/test_workers.py shows the sums and a worker's bad health reaching the
control plane; these pin the arithmetic a count alone does not show.
"""

from __future__ import annotations

import pytest
from pacsd.admin.v1 import addins_pb2
from pacsd.server.control.addin_service import add_worker


def addin(
    calls: int, mean_ms: float, max_ms: float, healthy: bool = True, error: str = ""
) -> addins_pb2.Addin:
    return addins_pb2.Addin(
        name="a",
        healthy=healthy,
        error=error,
        counters=addins_pb2.AddinCounters(
            calls=calls,
            failures=calls // 10,
            timeouts=0 if healthy else 1,
            mean_latency_ms=mean_ms,
            max_latency_ms=max_ms,
        ),
    )


def test_counts_add_up_and_the_mean_is_weighted_by_calls() -> None:
    mine = addin(30, 2.0, 9.0)
    add_worker(mine, addin(10, 6.0, 40.0), worker=1)
    c = mine.counters
    assert (c.calls, c.failures, c.timeouts) == (40, 4, 0)
    assert c.mean_latency_ms == pytest.approx((30 * 2.0 + 10 * 6.0) / 40)  # 3.0, not 4.0
    assert c.max_latency_ms == 40.0
    assert mine.healthy and mine.error == ""


def test_no_calls_anywhere_leaves_a_zero_mean() -> None:
    mine = addin(0, 0.0, 0.0)
    add_worker(mine, addin(0, 0.0, 0.0), worker=1)
    assert mine.counters.mean_latency_ms == 0.0


def test_unhealthy_anywhere_is_unhealthy_and_each_reason_names_its_process() -> None:
    mine = addin(5, 1.0, 1.0)
    add_worker(mine, addin(5, 1.0, 1.0, healthy=False, error="slow"), worker=1)
    assert not mine.healthy and mine.error == "worker 1: slow"
    assert mine.counters.timeouts == 1

    add_worker(mine, addin(5, 1.0, 1.0, healthy=False, error="stuck"), worker=2)
    assert mine.error == "worker 1: slow; worker 2: stuck"

    own = addin(5, 1.0, 1.0, healthy=False, error="hung here")
    add_worker(own, addin(5, 1.0, 1.0), worker=1)  # a healthy worker changes nothing
    assert not own.healthy and own.error == "hung here"
