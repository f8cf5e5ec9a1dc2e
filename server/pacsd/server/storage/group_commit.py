"""Group commit: many C-STOREs share one index transaction (and one fsync).

Each storing thread submits its record and waits. One writer thread takes everything
queued at that moment, commits it in one transaction, and wakes every waiter. Under
load the batch grows by itself; alone, a record commits at once. If a batch fails,
its records are retried one by one, so one bad record fails alone.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from pacsd.server.storage.attributes import InstanceRecord

log = logging.getLogger("pacsd.core.storage")

_STOP = object()


class GroupCommitter:
    def __init__(self, commit: Callable[[Sequence[InstanceRecord]], None], max_batch: int = 512):
        self._commit = commit
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="pacsd-group-commit", daemon=True)
        self._thread.start()
        #: Transactions committed and records in them (for metrics and tests).
        self.batches = 0
        self.records = 0

    def submit(self, record: InstanceRecord) -> Future[None]:
        future: Future[None] = Future()
        self._queue.put((record, future))
        return future

    def add(self, record: InstanceRecord, timeout: float = 60.0) -> None:
        """Submit and wait until the record is committed (raises what the commit raised)."""
        self.submit(record).result(timeout)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(30)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                    break
                batch.append(more)
            self._commit_batch(batch)  # type: ignore[arg-type]
            if stop:
                return

    def _commit_batch(self, batch: list[tuple[InstanceRecord, Future[None]]]) -> None:
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
