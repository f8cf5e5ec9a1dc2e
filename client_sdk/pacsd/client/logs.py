"""``client.logs``: the SDK side of ``pacsd.admin.v1.LogService``.

The server keeps its last records in memory and streams new ones as they are logged::

    with client.logs.stream(follow=True, level="INFO", sources=["storage"]) as records:
        for record in records:
            print(record.source, record.association_id, record.message)

    client.logs.set_level("DEBUG", source="message_log")   # every DIMSE message, live

A reader that cannot keep up never slows the server: the server drops the oldest
records queued for it and says so; ``stream.dropped`` counts them and ``on_dropped``
is told as it happens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pacsd.admin.v1 import logs_pb2, logs_pb2_grpc
from pacsd.client._stream import DropCallback, Stream, open_stream
from pacsd.client.errors import InvalidArgument

if TYPE_CHECKING:
    from pacsd.client.client import Client

__all__ = ["LEVELS", "LevelChange", "LogLevels", "LogsAPI", "level_name", "level_value"]

_PREFIX = "LOG_LEVEL_"
#: Level names the server knows, lowest first.
LEVELS = ("DEBUG", "INFO", "AUDIT", "WARNING", "ERROR", "CRITICAL")


def level_value(level: str | int, field: str = "level") -> int:
    """``"info"``, ``"INFO"``, ``"LOG_LEVEL_INFO"`` or a LogLevel number -> the number."""
    if isinstance(level, int):
        if level in logs_pb2.LogLevel.values():
            return level
    else:
        name = level.strip().upper().removeprefix(_PREFIX)
        if name in LEVELS:
            return int(logs_pb2.LogLevel.Value(_PREFIX + name))
    raise InvalidArgument(
        f"{field} must be one of {', '.join(LEVELS)}, not {level!r}",
        reason="INVALID_ARGUMENT",
        metadata={"field": field},
    )


def level_name(value: int) -> str:
    """LogLevel number -> "INFO" ("" for UNSPECIFIED, the number for unknown ones)."""
    try:
        name = logs_pb2.LogLevel.Name(value)
    except ValueError:
        return str(value)
    return "" if value == 0 else name.removeprefix(_PREFIX)


@dataclass(frozen=True)
class LogLevels:
    """The default level and the sources with a level of their own, as names."""

    default: str
    sources: dict[str, str]

    @classmethod
    def of(cls, msg: logs_pb2.LogLevels) -> LogLevels:
        return cls(
            level_name(msg.default_level),
            {k: level_name(v) for k, v in sorted(msg.sources.items())},
        )


@dataclass(frozen=True)
class LevelChange:
    """Result of ``set_level``: every level after the change, and whether it changed."""

    levels: LogLevels
    changed: bool


def _split(
    response: logs_pb2.StreamLogsResponse,
) -> tuple[logs_pb2.LogRecord | None, logs_pb2.RecordsDropped | None]:
    kind = response.WhichOneof("item")
    if kind == "record":
        return response.record, None
    if kind == "dropped":
        return None, response.dropped
    return None, None  # a newer server's item this SDK does not know


def stream_request(
    follow: bool,
    tail: int,
    level: str | int | None,
    sources: Iterable[str],
    association_id: str,
    ae_title: str,
) -> logs_pb2.StreamLogsRequest:
    """The StreamLogs request for ``LogsAPI.stream`` and its async twin (checked)."""
    if tail < 0:
        raise InvalidArgument(
            "tail must not be negative", reason="INVALID_ARGUMENT", metadata={"field": "tail"}
        )
    return logs_pb2.StreamLogsRequest(
        min_level=level_value(level, "level") if level is not None else 0,  # type: ignore[arg-type]
        sources=list(sources),
        association_id=association_id,
        ae_title=ae_title,
        tail=tail,
        follow=follow,
    )


def level_request(level: str | int | None, source: str) -> logs_pb2.SetLogLevelRequest:
    """The SetLogLevel request for ``LogsAPI.set_level`` and its async twin (checked:
    the default level can be changed, not unset)."""
    value = 0 if level is None else level_value(level)
    if value == 0 and not source:
        raise InvalidArgument(
            "the default level cannot be unset; give a level",
            reason="INVALID_ARGUMENT",
            metadata={"field": "level"},
        )
    return logs_pb2.SetLogLevelRequest(source=source, level=value)  # type: ignore[arg-type]


class LogsAPI:
    """``pacsd.admin.v1.LogService``: read the server's log, set its levels.

    Sources are "core", "control" (the audit trail of state-changing calls, level
    AUDIT), "pynetdicom" and add-in names. ``set_level`` for an unknown source raises
    ``NotFound`` with reason LOG_SOURCE_NOT_FOUND.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = logs_pb2_grpc.LogServiceStub(client._channel)

    def stream(
        self,
        *,
        follow: bool = False,
        tail: int = 0,
        level: str | int | None = None,
        sources: Iterable[str] = (),
        association_id: str = "",
        ae_title: str = "",
        on_dropped: DropCallback | None = None,
        timeout: float | None = None,
    ) -> Stream[logs_pb2.LogRecord]:
        """Records matching the filters: the last ``tail`` kept in memory, then, with
        ``follow``, every new one until ``cancel()``.

        ``level`` is the minimum level ("WARNING" shows warnings and worse).
        ``timeout`` defaults to the client's for a tail and to none for a follow,
        which lasts as long as the caller wants.
        """
        request = stream_request(follow, tail, level, sources, association_id, ae_title)
        deadline = timeout if timeout is not None or follow else self._client.timeout
        call = open_stream(self._client, self._stub.StreamLogs, request, deadline)
        return Stream(self._client, call, _split, on_dropped)

    def tail(self, count: int = 100, **filters: object) -> list[logs_pb2.LogRecord]:
        """The last ``count`` records kept in memory (filters as for ``stream``)."""
        with self.stream(tail=count, **filters) as records:  # type: ignore[arg-type]
            return list(records)

    def levels(self, *, timeout: float | None = None) -> LogLevels:
        response = self._client._call(
            self._stub.GetLogLevels, logs_pb2.GetLogLevelsRequest(), timeout
        )
        return LogLevels.of(response.levels)

    def set_level(
        self, level: str | int | None, source: str = "", *, timeout: float | None = None
    ) -> LevelChange:
        """Set the default level (``source`` "") or one source's, at once and until the
        server restarts. ``level=None`` drops a source's own level, so it follows the
        default again."""
        request = level_request(level, source)
        response = self._client._call(self._stub.SetLogLevel, request, timeout)
        return LevelChange(LogLevels.of(response.levels), response.changed)
