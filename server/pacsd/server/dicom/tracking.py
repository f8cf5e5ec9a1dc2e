"""Live associations and traffic counters, fed by pynetdicom's notification events."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from pynetdicom.association import Association


@dataclass(slots=True)
class Counters:
    associations_accepted: int = 0
    associations_rejected: int = 0
    associations_aborted: int = 0
    dimse_messages_received: int = 0
    dimse_messages_sent: int = 0


@dataclass(slots=True)
class LiveAssociation:
    id: str
    assoc: Association
    started: datetime


class AssociationTracker:
    """Counts traffic and remembers which associations are alive.

    An association is live from the moment it is accepted until its connection closes;
    the tracker holds the pynetdicom object so a graceful stop can abort stragglers.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._live: dict[int, LiveAssociation] = {}
        self.counters = Counters()
        self._idle = threading.Condition(self._lock)

    def new_id(self) -> str:
        return f"a{next(self._ids)}"

    def accepted(self, assoc: Association, assoc_id: str) -> None:
        with self._lock:
            self.counters.associations_accepted += 1
            self._live[id(assoc)] = LiveAssociation(assoc_id, assoc, datetime.now(UTC))

    def rejected(self) -> None:
        with self._lock:
            self.counters.associations_rejected += 1

    def aborted(self) -> None:
        with self._lock:
            self.counters.associations_aborted += 1

    def closed(self, assoc: Association) -> None:
        with self._lock:
            self._live.pop(id(assoc), None)
            if not self._live:
                self._idle.notify_all()

    def dimse_received(self) -> None:
        with self._lock:
            self.counters.dimse_messages_received += 1

    def dimse_sent(self) -> None:
        with self._lock:
            self.counters.dimse_messages_sent += 1

    def live(self) -> list[LiveAssociation]:
        with self._lock:
            return list(self._live.values())

    def snapshot(self) -> tuple[int, Counters]:
        with self._lock:
            c = self.counters
            return len(self._live), Counters(
                c.associations_accepted,
                c.associations_rejected,
                c.associations_aborted,
                c.dimse_messages_received,
                c.dimse_messages_sent,
            )

    def wait_idle(self, timeout: float) -> bool:
        """Block until no association is live or ``timeout`` passes; True if idle."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._live, timeout=timeout)
