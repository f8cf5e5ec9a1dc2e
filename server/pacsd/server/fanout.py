"""One producer side, many readers, none of which may ever slow the producer.

The log bus and the association event feed publish from DICOM association threads.
A remote reader can be slow or stalled (a terminal scrolled back, a client that
stopped reading its gRPC stream), so each reader gets its own bounded queue: a
publish takes one short lock per subscriber and never waits for a reader. When a
queue is full its *oldest* item is dropped (a live view wants what is happening now)
and counted, and the reader is told how many it lost, in order, before the next item.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Subscription(Generic[T]):
    """A reader's bounded queue. ``offer`` is the producer side, ``take`` the reader's."""

    def __init__(self, maxsize: int, accept: Callable[[T], bool] | None = None) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._accept = accept
        self._items: deque[T] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        #: Items dropped since the subscription began.
        self.dropped = 0
        self._unreported = 0

    def offer(self, item: T) -> None:
        """Queue ``item`` if the filter accepts it; never blocks on the reader."""
        if self._accept is not None and not self._accept(item):
            return
        with self._cond:
            if self._closed:
                return
            if len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
                self._unreported += 1
            self._items.append(item)
            self._cond.notify()

    def take(self, timeout: float) -> tuple[list[T], int]:
        """Everything queued (waiting up to ``timeout`` for something) and how many
        items were dropped since the previous ``take``. The dropped items were older
        than those returned, so a reader reports the loss first."""
        with self._cond:
            if not self._items and not self._unreported and not self._closed:
                self._cond.wait(timeout)
            items = list(self._items)
            self._items.clear()
            lost, self._unreported = self._unreported, 0
            return items, lost

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop accepting items and wake the reader (its stream is over)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Broadcaster(Generic[T]):
    """Hands every published item to every current subscription.

    The subscriber list is replaced, never mutated, so ``publish`` iterates without a
    lock and costs one attribute read when nobody listens (``active`` tells callers
    whether building an item is worth it at all).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: tuple[Subscription[T], ...] = ()
        #: Dropped items of subscriptions that have ended (for metrics).
        self._dropped_closed = 0

    @property
    def active(self) -> bool:
        return bool(self._subs)

    def subscribe(self, maxsize: int, accept: Callable[[T], bool] | None = None) -> Subscription[T]:
        sub: Subscription[T] = Subscription(maxsize, accept)
        with self._lock:
            self._subs = (*self._subs, sub)
        return sub

    def unsubscribe(self, sub: Subscription[T]) -> None:
        sub.close()
        with self._lock:
            if sub in self._subs:
                self._subs = tuple(s for s in self._subs if s is not sub)
                self._dropped_closed += sub.dropped

    def publish(self, item: T) -> None:
        for sub in self._subs:
            sub.offer(item)

    def close_all(self) -> None:
        """End every subscription (server shutdown): their readers return."""
        with self._lock:
            subs, self._subs = self._subs, ()
            for sub in subs:
                sub.close()
                self._dropped_closed += sub.dropped

    def stats(self) -> tuple[int, int]:
        """(current subscribers, items dropped over all subscriptions ever)."""
        with self._lock:
            subs = self._subs
            return len(subs), self._dropped_closed + sum(s.dropped for s in subs)
