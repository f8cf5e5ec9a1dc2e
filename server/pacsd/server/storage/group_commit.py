"""Group commit: many C-STOREs share one index transaction (and one fsync).

Each storing thread queues its record. If no commit is running, that thread becomes
the leader: it takes everything queued at that moment, commits it in one transaction,
and wakes the records' other owners; it goes on while records keep arriving, then steps
down. A thread that finds a commit running waits for its record to be committed by the
leader. Under load the batch grows by itself; alone, a record commits at once, on its
own thread.

There is no committer thread: handing each record to one and waking the storing thread
again cost two thread wake-ups per C-STORE (tens of microseconds each on a virtual
machine, on the path every instance takes). If a batch fails, its records are retried
one by one, so one bad record fails alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from pacsd.server.storage.attributes import InstanceRecord

log = logging.getLogger("pacsd.core.storage")


class CommitterClosed(RuntimeError):
    """The archive is closing: no more index writes."""


class _Waiter:
    """What ``add`` waits on: the part of a Future it needs. A thread that leads commits
    its own record and never waits, so only the others get an Event (a Future made a
    Condition and its lock for every C-STORE)."""

    __slots__ = ("_done", "_error", "_event")

    def __init__(self) -> None:
        self._error: BaseException | None = None
        self._done = False
        self._event: threading.Event | None = None

    def follow(self) -> None:
        """This thread will wait for another's commit: it needs an Event to wait on."""
        self._event = threading.Event()

    def done(self) -> bool:
        return self._done

    def set_result(self, _: None) -> None:
        self._done = True
        if self._event is not None:
            self._event.set()

    def set_exception(self, exc: BaseException) -> None:
        self._error = exc
        self.set_result(None)

    def result(self, timeout: float) -> None:
        if not self._done:
            assert self._event is not None  # given under the lock to any non-leader
            if not self._event.wait(timeout):
                raise TimeoutError("the index commit did not finish in time")
        if self._error is not None:
            raise self._error


class GroupCommitter:
    def __init__(self, commit: Callable[[Sequence[InstanceRecord]], None], max_batch: int = 512):
        self._commit = commit
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: list[tuple[InstanceRecord, Future[None] | _Waiter]] = []
        self._leading = False
        self._closed = False
        #: Set while no commit runs (close() waits for it).
        self._idle = threading.Event()
        self._idle.set()
        #: Transactions committed and records in them (for metrics and tests).
        self.batches = 0
        self.records = 0

    def submit(self, record: InstanceRecord) -> Future[None]:
        """Queue a record; commits now (on this thread) unless a commit is running."""
        future: Future[None] = Future()
        self._queue(record, future)
        return future

    def add(self, record: InstanceRecord, timeout: float = 60.0) -> None:
        """Submit and wait until the record is committed (raises what the commit raised)."""
        waiter = _Waiter()
        self._queue(record, waiter, waiter.follow)
        waiter.result(timeout)

    def _queue(
        self,
        record: InstanceRecord,
        settle: Future[None] | _Waiter,
        follow: Callable[[], None] | None = None,
    ) -> None:
        """Queue ``record``, then lead (commit on this thread) unless a commit is running;
        ``follow`` runs under the lock when another thread leads, before it can take the
        record."""
        with self._lock:
            if self._closed:
                raise CommitterClosed("the index is closing")
            self._pending.append((record, settle))
            lead = not self._leading
            if lead:
                self._leading = True
                self._idle.clear()
            elif follow is not None:
                follow()
        if lead:
            self._lead()

    def close(self, timeout: float = 30.0) -> None:
        """Refuse new records and wait for the running commit to finish."""
        with self._lock:
            self._closed = True
        self._idle.wait(timeout)

    def _lead(self) -> None:
        while True:
            with self._lock:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                if not batch:
                    self._leading = False
                    self._idle.set()
                    return
            try:
                self._commit_batch(batch)
            except BaseException as exc:  # never leave waiters hanging on a dead leader
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                with self._lock:
                    orphans, self._pending = self._pending, []
                    self._leading = False
                    self._idle.set()
                for _, future in orphans:
                    future.set_exception(exc)
                raise

    def _commit_batch(self, batch: list[tuple[InstanceRecord, Future[None] | _Waiter]]) -> None:
        try:
            self._commit([record for record, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            log.warning(
                "batch of %d index writes failed (%s); retrying one by one", len(batch), exc
            )
            for record, future in batch:
                try:
                    self._commit([record])
                except Exception as single:
                    future.set_exception(single)
                else:
                    future.set_result(None)
            return
        self.batches += 1
        self.records += len(batch)
        for _, future in batch:
            future.set_result(None)
