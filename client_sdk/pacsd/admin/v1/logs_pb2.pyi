import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LogLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOG_LEVEL_UNSPECIFIED: _ClassVar[LogLevel]
    LOG_LEVEL_DEBUG: _ClassVar[LogLevel]
    LOG_LEVEL_INFO: _ClassVar[LogLevel]
    LOG_LEVEL_AUDIT: _ClassVar[LogLevel]
    LOG_LEVEL_WARNING: _ClassVar[LogLevel]
    LOG_LEVEL_ERROR: _ClassVar[LogLevel]
    LOG_LEVEL_CRITICAL: _ClassVar[LogLevel]
LOG_LEVEL_UNSPECIFIED: LogLevel
LOG_LEVEL_DEBUG: LogLevel
LOG_LEVEL_INFO: LogLevel
LOG_LEVEL_AUDIT: LogLevel
LOG_LEVEL_WARNING: LogLevel
LOG_LEVEL_ERROR: LogLevel
LOG_LEVEL_CRITICAL: LogLevel

class LogRecord(_message.Message):
    __slots__ = ("sequence", "time", "level", "source", "logger", "association_id", "calling_ae", "called_ae", "peer", "message", "extras", "exception")
    class ExtrasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    LOGGER_FIELD_NUMBER: _ClassVar[int]
    ASSOCIATION_ID_FIELD_NUMBER: _ClassVar[int]
    CALLING_AE_FIELD_NUMBER: _ClassVar[int]
    CALLED_AE_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXTRAS_FIELD_NUMBER: _ClassVar[int]
    EXCEPTION_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    time: _timestamp_pb2.Timestamp
    level: LogLevel
    source: str
    logger: str
    association_id: str
    calling_ae: str
    called_ae: str
    peer: str
    message: str
    extras: _containers.ScalarMap[str, str]
    exception: str
    def __init__(self, sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., level: _Optional[_Union[LogLevel, str]] = ..., source: _Optional[str] = ..., logger: _Optional[str] = ..., association_id: _Optional[str] = ..., calling_ae: _Optional[str] = ..., called_ae: _Optional[str] = ..., peer: _Optional[str] = ..., message: _Optional[str] = ..., extras: _Optional[_Mapping[str, str]] = ..., exception: _Optional[str] = ...) -> None: ...

class StreamLogsRequest(_message.Message):
    __slots__ = ("min_level", "sources", "association_id", "ae_title", "tail", "follow")
    MIN_LEVEL_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    ASSOCIATION_ID_FIELD_NUMBER: _ClassVar[int]
    AE_TITLE_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    min_level: LogLevel
    sources: _containers.RepeatedScalarFieldContainer[str]
    association_id: str
    ae_title: str
    tail: int
    follow: bool
    def __init__(self, min_level: _Optional[_Union[LogLevel, str]] = ..., sources: _Optional[_Iterable[str]] = ..., association_id: _Optional[str] = ..., ae_title: _Optional[str] = ..., tail: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class RecordsDropped(_message.Message):
    __slots__ = ("count", "total")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    count: int
    total: int
    def __init__(self, count: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class StreamLogsResponse(_message.Message):
    __slots__ = ("record", "dropped")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    record: LogRecord
    dropped: RecordsDropped
    def __init__(self, record: _Optional[_Union[LogRecord, _Mapping]] = ..., dropped: _Optional[_Union[RecordsDropped, _Mapping]] = ...) -> None: ...

class LogLevels(_message.Message):
    __slots__ = ("default_level", "sources")
    class SourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: LogLevel
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[LogLevel, str]] = ...) -> None: ...
    DEFAULT_LEVEL_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    default_level: LogLevel
    sources: _containers.ScalarMap[str, LogLevel]
    def __init__(self, default_level: _Optional[_Union[LogLevel, str]] = ..., sources: _Optional[_Mapping[str, LogLevel]] = ...) -> None: ...

class GetLogLevelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetLogLevelsResponse(_message.Message):
    __slots__ = ("levels",)
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    levels: LogLevels
    def __init__(self, levels: _Optional[_Union[LogLevels, _Mapping]] = ...) -> None: ...

class SetLogLevelRequest(_message.Message):
    __slots__ = ("source", "level")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    source: str
    level: LogLevel
    def __init__(self, source: _Optional[str] = ..., level: _Optional[_Union[LogLevel, str]] = ...) -> None: ...

class SetLogLevelResponse(_message.Message):
    __slots__ = ("levels", "changed")
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    levels: LogLevels
    changed: bool
    def __init__(self, levels: _Optional[_Union[LogLevels, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...
