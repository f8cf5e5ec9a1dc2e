"""Time limits for handlers that run on the thread that asked for them.

Handing every C-STORE to a pool thread so that the association thread could stop
waiting at the limit cost two thread wake-ups and a GIL hand-over per instance: about
a fifth of the ingest rate here (bench/README.md). A handler now runs where its request
is served, and one watchdog thread keeps the deadlines. If a handler is still running at
its deadline, the watchdog runs the call's expiry action (dispatch answers the request
with a failure status, see ``Dispatcher._answer_at_limit``); when the handler finally
returns, the caller learns that its result came too late (:meth:`Ticket.finish`).

Whichever of the two comes first wins, under the ticket's lock: the expiry action runs
to its end before a late ``finish`` returns, so anything the action arranged (such as
dropping the late answer) is in place by then.

Arming costs a lock and a deque append. Tickets of one limit expire in the order they
were armed, so each limit keeps a FIFO queue whose head is the next to expire, finished
tickets are dropped from the head as new ones arrive, and the watchdog sleeps until the
earliest head's deadline, woken only by a ticket due sooner than that.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger("pacsd.core.addins")

_PENDING, _DONE, _FIRED = 0, 1, 2


class Ticket:
    """One armed call: pending until the caller finishes it or the watchdog fires it."""

    __slots__ = ("_expire", "_lock", "_state", "deadline")

    def __init__(self, deadline: float, expire: Callable[[], None]) -> None:
        self.deadline = deadline
        self._expire = expire
        self._state = _PENDING
        self._lock = threading.Lock()

    @property
    def pending(self) -> bool:
        return self._state == _PENDING

    def finish(self) -> bool:
        """The caller is done: True if in time, False if the deadline fired first (its
        expiry action has then completed)."""
        with self._lock:
            if self._state == _PENDING:
                self._state = _DONE
                return True
            return False

    def fire(self) -> None:
        """Run the expiry action unless the caller finished first."""
        with self._lock:
            if self._state != _PENDING:
                return
            self._state = _FIRED
            try:
                self._expire()
            except Exception:
                log.exception("answering a handler past its time limit failed")


class Watchdog:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queues: dict[float, deque[Ticket]] = {}
        #: When the watchdog thread will next look (-inf while it is awake and looking).
        self._wakes_at = float("-inf")
        # Started now, not with the first ticket: a server's thread count then does not
        # grow by one at its first C-STORE (the reliability tests compare it).
        self._thread = threading.Thread(
            target=self._run, name="pacsd-handler-watchdog", daemon=True
        )
        self._thread.start()

    def arm(self, limit: float, expire: Callable[[], None]) -> Ticket:
        """A ticket that fires ``expire`` (on the watchdog thread) after ``limit``
        seconds unless finished before."""
        ticket = Ticket(time.monotonic() + limit, expire)
        with self._cond:
            queue = self._queues.get(limit)
            if queue is None:
                queue = self._queues[limit] = deque()
            while queue and not queue[0].pending:
                queue.popleft()
            queue.append(ticket)
            if ticket.deadline < self._wakes_at:
                self._cond.notify()
        return ticket

    def _due(self, now: float) -> tuple[list[Ticket], float]:
        """Pop the tickets due at ``now``; also the next deadline (inf: none)."""
        due: list[Ticket] = []
        next_at = float("inf")
        for queue in self._queues.values():
            while queue and (not queue[0].pending or queue[0].deadline <= now):
                ticket = queue.popleft()
                if ticket.pending:
                    due.append(ticket)
            if queue:
                next_at = min(next_at, queue[0].deadline)
        return due, next_at

    def _run(self) -> None:
        while True:
            with self._cond:
                due, next_at = self._due(time.monotonic())
                if not due:
                    self._wakes_at = next_at
                    wait = None if next_at == float("inf") else next_at - time.monotonic()
                    if wait is None or wait > 0:
                        self._cond.wait(wait)
                    self._wakes_at = float("-inf")
                    continue
            for ticket in due:  # outside the lock: an expiry action may take a while
                ticket.fire()


#: The process's watchdog.
WATCHDOG = Watchdog()
