"""Server-streaming RPCs over a ``fanout.Subscription``: the shared plumbing.

A live stream holds one control-plane worker thread for as long as the caller keeps
it open, so their number is bounded (``StreamSlots``): past the limit a new stream
is refused with RESOURCE_EXHAUSTED / TOO_MANY_STREAMS, and the unary RPCs always
keep threads to run on. ``pump`` turns a subscription into the stream's messages,
reports drops in order, and ends when the caller cancels or the server shuts down.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc
from pacsd.admin.v1 import errors_pb2
from pacsd.server.control.errors import ControlError
from pacsd.server.fanout import Subscription

T = TypeVar("T")
M = TypeVar("M")

#: Live streams (StreamLogs with follow, WatchEvents) open at once, all callers together.
MAX_STREAMS = 32

#: How often a waiting stream wakes to notice a cancelled caller or unreported drops.
_WAKE_SECONDS = 1.0


class StreamSlots:
    """Counts open streams against ``MAX_STREAMS``."""

    def __init__(self, limit: int = MAX_STREAMS) -> None:
        self.limit = limit
        self._sem = threading.BoundedSemaphore(limit)

    def claim(self, context: grpc.ServicerContext) -> Callable[[], None]:
        """Take a slot for this RPC; returns the (idempotent) release, which also runs
        when the RPC ends, even if its generator never started."""
        if not self._sem.acquire(blocking=False):
            raise ControlError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                errors_pb2.TOO_MANY_STREAMS,
                f"{self.limit} streams are open already; close one and retry",
                {"limit": str(self.limit)},
            )
        lock = threading.Lock()
        held = [True]

        def release() -> None:
            with lock:
                if held[0]:
                    held[0] = False
                    self._sem.release()

        if not context.add_callback(release):
            release()
        return release


def pump(
    context: grpc.ServicerContext,
    sub: Subscription[T],
    to_message: Callable[[T], M],
    to_dropped: Callable[[int, int], M],
    done: Callable[[], None],
) -> Iterator[M]:
    """Messages for everything ``sub`` receives until the caller goes away or ``sub``
    is closed; a drop notice precedes the items that came after the loss. ``done``
    runs at the end (unsubscribe, release the slot)."""
    context.add_callback(sub.close)  # a cancelled caller wakes the wait at once
    try:
        while context.is_active():
            items, lost = sub.take(_WAKE_SECONDS)
            if lost:
                yield to_dropped(lost, sub.dropped)
            for item in items:
                yield to_message(item)
            if sub.closed and not items:
                return
    finally:
        done()
