"""Live associations and traffic counters, fed by pynetdicom's notification events.

Besides the counters ``GetServer`` shows, the tracker keeps what the control plane's
association list, its event stream and the metrics read: messages per association,
DIMSE messages by service and status, rejections by reason, and the bytes of
associations that have closed (live ones are read from their sockets when asked).
Everything is counted under one short lock on the association's own threads; the
readers take snapshots.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pacsd.server.dicom.associations import association_info
from pacsd.server.dicom.events import (
    AssocEvent,
    EventType,
    kind_of,
    message_kind,
    message_status,
    summarize,
)
from pacsd.server.fanout import Broadcaster
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
    messages_received: int = 0
    messages_sent: int = 0

    @property
    def bytes_received(self) -> int:
        return _socket_bytes(self.assoc)[0]

    @property
    def bytes_sent(self) -> int:
        return _socket_bytes(self.assoc)[1]


@dataclass(slots=True)
class Traffic:
    """What the metrics read: counters by label, and bytes of all associations."""

    active: int = 0
    counters: Counters = field(default_factory=Counters)
    #: rejection reason ("paused", "limit", "addin", "negotiation") -> count
    rejected: dict[str, int] = field(default_factory=dict)
    #: (service, direction, "request"|"response") -> count
    messages: dict[tuple[str, str, str], int] = field(default_factory=dict)
    #: (service, direction, status) -> count, responses only
    statuses: dict[tuple[str, str, int], int] = field(default_factory=dict)
    bytes_received: int = 0
    bytes_sent: int = 0


def _socket_bytes(assoc: Association) -> tuple[int, int]:
    sock: Any = getattr(assoc.dul, "socket", None)
    return int(getattr(sock, "bytes_in", 0)), int(getattr(sock, "bytes_out", 0))


#: Longest a CLOSED event waits for its RELEASED or ABORTED (seconds).
CLOSE_ORDER_WAIT = 1.0


class AssociationTracker:
    """Counts traffic and remembers which associations are alive.

    An association is live from the moment it is accepted until its connection closes;
    the tracker holds the pynetdicom object so a graceful stop, or an operator, can
    abort it. Lifecycle events and message summaries go to ``events`` subscribers.
    """

    def __init__(self, id_prefix: str = "") -> None:
        self._lock = threading.Lock()
        #: Prefixed with the worker ("w1.a7") in engine processes other than the first,
        #: so IDs stay unique across the processes of one server (docs/workers.md).
        self._id_prefix = id_prefix
        self._ids = itertools.count(1)
        self._live: dict[int, LiveAssociation] = {}
        #: Associations holding one of the max_associations slots (see take_slot).
        self._slots: list[Association] = []
        self.counters = Counters()
        self._rejected: Counter[str] = Counter()
        self._messages: Counter[tuple[str, str, str]] = Counter()
        self._statuses: Counter[tuple[str, str, int]] = Counter()
        self._closed_bytes = [0, 0]
        self._idle = threading.Condition(self._lock)
        #: CLOSED events held until the release or abort is reported (see _ended).
        self._held_close: dict[int, threading.Timer] = {}
        #: Lifecycle events and message summaries, for WatchEvents.
        self.events: Broadcaster[AssocEvent] = Broadcaster()

    def new_id(self) -> str:
        return f"{self._id_prefix}a{next(self._ids)}"

    # -- fed by the listener ----------------------------------------------------------

    def accepted(self, assoc: Association, assoc_id: str) -> None:
        with self._lock:
            self.counters.associations_accepted += 1
            if getattr(assoc, "pacsd_closed", False):
                # The connection closed while negotiation was answering (the peer sent
                # an invalid PDU meanwhile, dicom/pdu_guard.py): nothing is live.
                return
            self._live[id(assoc)] = LiveAssociation(assoc_id, assoc, datetime.now(UTC))
        self._publish(EventType.ACCEPTED, assoc)

    def rejected(self, assoc: Association | None = None, kind: str = "", why: str = "") -> None:
        with self._lock:
            self.counters.associations_rejected += 1
            self._rejected[kind or "negotiation"] += 1
        if assoc is not None:
            self._publish(EventType.REJECTED, assoc, why)

    def released(self, assoc: Association) -> None:
        self._ended(EventType.RELEASED, assoc)

    def aborted(self, assoc: Association | None = None) -> None:
        with self._lock:
            self.counters.associations_aborted += 1
        if assoc is not None:
            self._ended(EventType.ABORTED, assoc, getattr(assoc, "pacsd_abort_reason", ""))

    def _ended(self, kind: EventType, assoc: Association, reason: str = "") -> None:
        """Publish RELEASED or ABORTED, then the CLOSED that may have been held for it.

        The two come from different threads: pynetdicom reports the release or abort on
        the thread that handled it, the closed connection on the network thread, which
        may get there first (it wakes as soon as the A-RELEASE-RP or A-ABORT is queued).
        Watchers are promised the lifecycle in order, so ``closed`` holds CLOSED back
        until the end is reported, or CLOSE_ORDER_WAIT has passed.
        """
        with self._lock:
            assoc.pacsd_ended = True  # type: ignore[attr-defined]
            held = self._held_close.pop(id(assoc), None)
        self._publish(kind, assoc, reason)
        if held is not None:
            held.cancel()
            self._publish(EventType.CLOSED, assoc)

    def closed(self, assoc: Association) -> None:
        received, sent = _socket_bytes(assoc)
        with self._lock:
            assoc.pacsd_closed = True  # type: ignore[attr-defined]
            live = self._live.pop(id(assoc), None)
            self._closed_bytes[0] += received
            self._closed_bytes[1] += sent
            # Wakes wait_idle and wait_closed (each re-checks its own condition).
            self._idle.notify_all()
        if live is None:
            return
        with self._lock:
            if self.events.active and not getattr(assoc, "pacsd_ended", False):
                held = threading.Timer(CLOSE_ORDER_WAIT, self._release_close, args=(assoc,))
                held.daemon = True
                self._held_close[id(assoc)] = held
                held.start()
                return
        self._publish(EventType.CLOSED, assoc)

    def _release_close(self, assoc: Association) -> None:
        """CLOSED for a connection whose release or abort was never reported."""
        with self._lock:
            if self._held_close.pop(id(assoc), None) is None:
                return
        self._publish(EventType.CLOSED, assoc)

    def dimse_received(self, assoc: Association | None = None, msg: Any = None) -> None:
        self._dimse(assoc, msg, "received")

    def dimse_sent(self, assoc: Association | None = None, msg: Any = None) -> None:
        self._dimse(assoc, msg, "sent")

    def response_sent(
        self, assoc: Association, message_type: str, status: int, message: Callable[[], Any]
    ) -> None:
        """A response pacsd encoded itself (send_path), counted from its class name
        ("C_FIND_RSP") and Status: ``message`` builds the pynetdicom message object,
        called only when someone watches the event stream."""
        service = kind_of(message_type)[0]
        with self._lock:
            self.counters.dimse_messages_sent += 1
            self._messages[(service, "sent", "response")] += 1
            self._statuses[(service, "sent", status)] += 1
            live = self._live.get(id(assoc))
            if live is not None:
                live.messages_sent += 1
        if self.events.active:
            self._publish_message(EventType.MESSAGE_SENT, assoc, message())

    def _dimse(self, assoc: Association | None, msg: Any, direction: str) -> None:
        service, response = message_kind(msg) if msg is not None else ("", False)
        status = message_status(msg) if response else None
        with self._lock:
            c = self.counters
            if direction == "received":
                c.dimse_messages_received += 1
            else:
                c.dimse_messages_sent += 1
            if msg is not None:
                self._messages[(service, direction, "response" if response else "request")] += 1
                if status is not None:
                    self._statuses[(service, direction, status)] += 1
            live = self._live.get(id(assoc)) if assoc is not None else None
            if live is not None:
                if direction == "received":
                    live.messages_received += 1
                else:
                    live.messages_sent += 1
        if assoc is not None and msg is not None and self.events.active:
            kind = EventType.MESSAGE_RECEIVED if direction == "received" else EventType.MESSAGE_SENT
            self._publish_message(kind, assoc, msg)

    def _publish_message(self, kind: EventType, assoc: Association, msg: Any) -> None:
        self.events.publish(AssocEvent.of(kind, association_info(assoc), message=summarize(msg)))

    def _publish(self, kind: EventType, assoc: Association, reason: str = "") -> None:
        if self.events.active:
            self.events.publish(AssocEvent.of(kind, association_info(assoc), reason))

    # -- read by the control plane and the metrics ------------------------------------

    def live(self) -> list[LiveAssociation]:
        with self._lock:
            return list(self._live.values())

    def take_slot(self, assoc: Association, limit: int) -> bool:
        """Count ``assoc`` against ``limit`` from admission on; False when all are taken.

        ``live()`` only holds associations once accepted, so many requests negotiating
        at once would all pass a check of it. A slot is held by an association whose
        thread still runs and that was not rejected afterwards (policy, add-in, no
        context); it frees itself when the thread ends, so no exit path can leak one.
        """
        with self._lock:
            self._slots = [
                a
                for a in self._slots
                if a.is_alive() and not a.is_rejected and not hasattr(a, "pacsd_rejection")
            ]
            if len(self._slots) >= limit:
                return False
            self._slots.append(assoc)
            return True

    def find(self, assoc_id: str) -> LiveAssociation | None:
        with self._lock:
            for item in self._live.values():
                if item.id == assoc_id:
                    return item
            return None

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

    def traffic(self) -> Traffic:
        with self._lock:
            live = list(self._live.values())
            c = self.counters
            traffic = Traffic(
                active=len(live),
                counters=Counters(
                    c.associations_accepted,
                    c.associations_rejected,
                    c.associations_aborted,
                    c.dimse_messages_received,
                    c.dimse_messages_sent,
                ),
                rejected=dict(self._rejected),
                messages=dict(self._messages),
                statuses=dict(self._statuses),
                bytes_received=self._closed_bytes[0],
                bytes_sent=self._closed_bytes[1],
            )
            # Inside the lock: an association closing meanwhile must not count twice.
            for item in live:
                received, sent = _socket_bytes(item.assoc)
                traffic.bytes_received += received
                traffic.bytes_sent += sent
        return traffic

    def wait_idle(self, timeout: float) -> bool:
        """Block until no association is live or ``timeout`` passes; True if idle."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._live, timeout=timeout)

    def wait_closed(self, assoc_id: str, timeout: float) -> bool:
        """Block until the association ``assoc_id`` is no longer live; True if gone."""
        with self._lock:
            return self._idle.wait_for(
                lambda: all(item.id != assoc_id for item in self._live.values()), timeout=timeout
            )
