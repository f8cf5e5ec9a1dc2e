"""A worker's log records and association events, carried into the first process.

Operators read one server: ``pacsctl logs -f``, the console, the log files and
``pacsctl assoc watch`` must show what every engine process does. Each worker keeps
a log stream open to its supervisor; its records are handed to the first process's
sinks (bus, console, files) as if logged there, with ``worker`` among their extras.
Association events are relayed while someone watches them on the first process, and
only then, because a watched worker builds a summary of every DIMSE message.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import grpc
from pacsd.admin.v1 import associations_pb2, associations_pb2_grpc, logs_pb2, logs_pb2_grpc
from pacsd.server.control.association_service import EVENT_TYPE_NUMBERS
from pacsd.server.dicom.events import AssocEvent, MessageSummary
from pacsd.server.logbus import tag

if TYPE_CHECKING:
    from pacsd.server.runtime import Runtime

log = logging.getLogger("pacsd.core.workers")

#: Seconds between checks for watchers of association events.
_WATCH_POLL = 0.25

#: The reverse of what the association service sends (control/association_service.py).
_EVENT_TYPES = {number: kind for kind, number in EVENT_TYPE_NUMBERS.items()}

#: LogRecord attributes a relayed record's extras may not overwrite.
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class Relay:
    def __init__(self, runtime: Runtime, index: int, pid: int, channel: grpc.Channel) -> None:
        self._rt = runtime
        self._index = index
        self._pid = pid
        self._logs = logs_pb2_grpc.LogServiceStub(channel)
        self._assocs = associations_pb2_grpc.AssociationServiceStub(channel)
        self._stop = threading.Event()
        self._calls: list[Any] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        for target, name in ((self._pump_logs, "logs"), (self._pump_events, "events")):
            threading.Thread(
                target=target, name=f"pacsd-worker-{self._index}-{name}", daemon=True
            ).start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            for call in self._calls:
                call.cancel()
            self._calls.clear()

    def _open(self, call: Any) -> Any:
        with self._lock:
            if self._stop.is_set():
                call.cancel()
            self._calls.append(call)
        return call

    def _close(self, call: Any) -> None:
        with self._lock:
            if call in self._calls:
                self._calls.remove(call)

    # -- logs -------------------------------------------------------------------------

    def _pump_logs(self) -> None:
        call = self._open(
            self._logs.StreamLogs(
                # tail: what the worker logged while starting, before this stream opened
                logs_pb2.StreamLogsRequest(follow=True, tail=100_000)
            )
        )
        try:
            for item in call:
                if item.HasField("record"):
                    self._emit(item.record)
                elif item.HasField("dropped"):
                    log.warning(
                        "%d log record(s) of worker %d lost on the way",
                        item.dropped.count,
                        self._index,
                    )
        except grpc.RpcError:
            pass  # cancelled, or the worker went away (the supervisor reports that)
        finally:
            self._close(call)

    def _emit(self, record: logs_pb2.LogRecord) -> None:
        created = record.time.ToNanoseconds() / 1e9
        attrs: dict[str, Any] = {
            key: value for key, value in record.extras.items() if key not in _RESERVED
        }
        attrs.update(
            name=record.logger,
            levelno=int(record.level),
            levelname=logging.getLevelName(int(record.level)),
            msg=record.message,
            args=None,
            created=created,
            msecs=(created - int(created)) * 1000,
            exc_text=record.exception or None,
            process=self._pid,
            processName=f"worker-{self._index}",
            source=record.source,
            assoc_id=record.association_id,
            calling_ae=record.calling_ae,
            called_ae=record.called_ae,
            peer=record.peer,
            worker=str(self._index),
        )
        relayed = logging.makeLogRecord(attrs)
        tag(relayed)
        # The worker already applied its levels; every sink still applies its own.
        for handler in logging.getLogger().handlers:
            if relayed.levelno >= handler.level:
                handler.handle(relayed)

    # -- association events -----------------------------------------------------------

    def _pump_events(self) -> None:
        events = self._rt.listener.tracker.events
        while not self._stop.is_set():
            if not events.active:
                self._stop.wait(_WATCH_POLL)
                continue
            call = self._open(self._assocs.WatchEvents(associations_pb2.WatchEventsRequest()))
            stopper = threading.Thread(
                target=self._cancel_when_unwatched, args=(call,), daemon=True
            )
            stopper.start()
            try:
                for item in call:
                    if item.HasField("event"):
                        events.publish(_event(item.event))
            except grpc.RpcError:
                pass
            finally:
                self._close(call)
            self._stop.wait(_WATCH_POLL)

    def _cancel_when_unwatched(self, call: Any) -> None:
        events = self._rt.listener.tracker.events
        while not self._stop.is_set() and call.is_active():
            if not events.active:
                call.cancel()
                return
            self._stop.wait(_WATCH_POLL)


def _event(msg: associations_pb2.AssociationEvent) -> AssocEvent:
    summary = None
    if msg.HasField("message"):
        m = msg.message
        summary = MessageSummary(
            service=m.service,
            response=m.response,
            message_id=m.message_id,
            status=m.status if m.HasField("status") else None,
            sop_class_uid=m.sop_class_uid,
            sop_instance_uid=m.sop_instance_uid,
            has_dataset=m.has_dataset,
        )
    return AssocEvent(
        time=msg.time.ToNanoseconds() / 1e9,
        type=_EVENT_TYPES[msg.type],
        assoc_id=msg.association_id,
        calling_ae=msg.calling_ae,
        called_ae=msg.called_ae,
        peer=msg.peer,
        reason=msg.reason,
        message=summary,
    )
