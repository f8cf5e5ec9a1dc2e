"""``pacsd.admin.v1.LogService``: thin mapping from RPCs to the log bus and the levels."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import grpc
from google.protobuf import timestamp_pb2
from pacsd.admin.v1 import errors_pb2, logs_pb2, logs_pb2_grpc
from pacsd.server import logsetup
from pacsd.server.control.errors import ControlError, rpc
from pacsd.server.control.streams import StreamSlots, pump
from pacsd.server.fanout import Subscription
from pacsd.server.logbus import LogBus, LogEntry, LogFilter

if TYPE_CHECKING:
    from pacsd.server.runtime import Runtime

#: The named levels, lowest first; a record at another number shows as the one below.
_NAMED = sorted(v for v in logs_pb2.LogLevel.values() if v != logs_pb2.LOG_LEVEL_UNSPECIFIED)


def level_enum(number: int) -> int:
    """The LogLevel for a logging level number (custom levels round down)."""
    best = _NAMED[0]
    for value in _NAMED:
        if value <= number:
            best = value
    return best


def record_message(entry: LogEntry) -> logs_pb2.LogRecord:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(entry.time * 1_000_000_000))
    return logs_pb2.LogRecord(
        sequence=entry.sequence,
        time=stamp,
        level=level_enum(entry.level),  # type: ignore[arg-type]
        source=entry.source,
        logger=entry.logger,
        association_id=entry.assoc_id,
        calling_ae=entry.calling_ae,
        called_ae=entry.called_ae,
        peer=entry.peer,
        message=entry.message,
        extras=entry.extras,
        exception=entry.exception,
    )


def levels_message() -> logs_pb2.LogLevels:
    default, own = logsetup.levels()
    return logs_pb2.LogLevels(
        default_level=level_enum(default),  # type: ignore[arg-type]
        sources={source: level_enum(level) for source, level in own.items()},  # type: ignore[misc]
    )


def _invalid(field: str, message: str) -> ControlError:
    return ControlError(
        grpc.StatusCode.INVALID_ARGUMENT, errors_pb2.INVALID_ARGUMENT, message, {"field": field}
    )


class LogServicer(logs_pb2_grpc.LogServiceServicer):
    def __init__(self, runtime: Runtime, bus: LogBus, slots: StreamSlots) -> None:
        self._rt = runtime
        self._bus = bus
        self._slots = slots

    @rpc
    def StreamLogs(
        self, request: logs_pb2.StreamLogsRequest, context: grpc.ServicerContext
    ) -> Iterator[logs_pb2.StreamLogsResponse]:
        # Validation happens here, before the generator exists, so errors reach the
        # caller through @rpc as a status rather than as a broken stream.
        if request.tail < 0:
            raise _invalid("tail", "tail must not be negative")
        if request.min_level and request.min_level not in _NAMED:
            raise _invalid("min_level", f"min_level {request.min_level} is not a LogLevel")
        accept = LogFilter(
            min_level=request.min_level,
            sources=frozenset(request.sources),
            assoc_id=request.association_id,
            ae_title=request.ae_title.strip(),
        )
        if not request.follow:
            return iter(
                [
                    logs_pb2.StreamLogsResponse(record=record_message(e))
                    for e in self._bus.tail(request.tail, accept)
                ]
            )
        release = self._slots.claim(context)
        try:
            recent, sub = self._bus.follow(request.tail, accept)
        except BaseException:
            release()
            raise

        def done() -> None:  # idempotent: runs when the stream ends, however it ends
            self._bus.unsubscribe(sub)
            release()

        if not context.add_callback(done):
            done()
        return self._follow(context, recent, sub, done)

    def _follow(
        self,
        context: grpc.ServicerContext,
        recent: list[LogEntry],
        sub: Subscription[LogEntry],
        done: Callable[[], None],
    ) -> Iterator[logs_pb2.StreamLogsResponse]:
        try:
            for entry in recent:
                yield logs_pb2.StreamLogsResponse(record=record_message(entry))
        except BaseException:
            done()
            raise
        yield from pump(
            context,
            sub,
            lambda e: logs_pb2.StreamLogsResponse(record=record_message(e)),
            lambda count, total: logs_pb2.StreamLogsResponse(
                dropped=logs_pb2.RecordsDropped(count=count, total=total)
            ),
            done,
        )

    @rpc
    def GetLogLevels(
        self, request: logs_pb2.GetLogLevelsRequest, context: grpc.ServicerContext
    ) -> logs_pb2.GetLogLevelsResponse:
        return logs_pb2.GetLogLevelsResponse(levels=levels_message())

    @rpc
    def SetLogLevel(
        self, request: logs_pb2.SetLogLevelRequest, context: grpc.ServicerContext
    ) -> logs_pb2.SetLogLevelResponse:
        source = request.source.strip()
        level = int(request.level)
        if level and level not in _NAMED:
            raise _invalid("level", f"level {level} is not a LogLevel")
        if not source and not level:
            raise _invalid("level", "level is required to set the default level")
        if source and source not in logsetup.FIXED_SOURCES:
            known = {record.name for record in self._rt.addins.list()}
            if source not in known:
                choices = ", ".join(sorted({*logsetup.FIXED_SOURCES, *known}))
                raise ControlError(
                    grpc.StatusCode.NOT_FOUND,
                    errors_pb2.LOG_SOURCE_NOT_FOUND,
                    f"no log source {source!r}; known sources: {choices}",
                    {"source": source},
                )
        changed = logsetup.set_level(source, level or None)
        if changed:
            logging.getLogger("pacsd.core.control").info(
                "log level of %s set to %s",
                source or "the default",
                logging.getLevelName(level) if level else "the default",
            )
        return logs_pb2.SetLogLevelResponse(levels=levels_message(), changed=changed)
