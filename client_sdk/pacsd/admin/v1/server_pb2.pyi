import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ServerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SERVER_STATE_UNSPECIFIED: _ClassVar[ServerState]
    SERVER_STATE_RUNNING: _ClassVar[ServerState]
    SERVER_STATE_PAUSED: _ClassVar[ServerState]
    SERVER_STATE_STOPPED: _ClassVar[ServerState]
    SERVER_STATE_SHUTTING_DOWN: _ClassVar[ServerState]

class WorkerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_STATE_UNSPECIFIED: _ClassVar[WorkerState]
    WORKER_STATE_STARTING: _ClassVar[WorkerState]
    WORKER_STATE_SERVING: _ClassVar[WorkerState]
    WORKER_STATE_RESTARTING: _ClassVar[WorkerState]
    WORKER_STATE_STOPPED: _ClassVar[WorkerState]
SERVER_STATE_UNSPECIFIED: ServerState
SERVER_STATE_RUNNING: ServerState
SERVER_STATE_PAUSED: ServerState
SERVER_STATE_STOPPED: ServerState
SERVER_STATE_SHUTTING_DOWN: ServerState
WORKER_STATE_UNSPECIFIED: WorkerState
WORKER_STATE_STARTING: WorkerState
WORKER_STATE_SERVING: WorkerState
WORKER_STATE_RESTARTING: WorkerState
WORKER_STATE_STOPPED: WorkerState

class Listener(_message.Message):
    __slots__ = ("protocol", "ae_title", "host", "port", "tls", "listening")
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    AE_TITLE_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    LISTENING_FIELD_NUMBER: _ClassVar[int]
    protocol: str
    ae_title: str
    host: str
    port: int
    tls: bool
    listening: bool
    def __init__(self, protocol: _Optional[str] = ..., ae_title: _Optional[str] = ..., host: _Optional[str] = ..., port: _Optional[int] = ..., tls: _Optional[bool] = ..., listening: _Optional[bool] = ...) -> None: ...

class Counters(_message.Message):
    __slots__ = ("active_associations", "associations_accepted", "associations_rejected", "associations_aborted", "dimse_messages_received", "dimse_messages_sent")
    ACTIVE_ASSOCIATIONS_FIELD_NUMBER: _ClassVar[int]
    ASSOCIATIONS_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    ASSOCIATIONS_REJECTED_FIELD_NUMBER: _ClassVar[int]
    ASSOCIATIONS_ABORTED_FIELD_NUMBER: _ClassVar[int]
    DIMSE_MESSAGES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    DIMSE_MESSAGES_SENT_FIELD_NUMBER: _ClassVar[int]
    active_associations: int
    associations_accepted: int
    associations_rejected: int
    associations_aborted: int
    dimse_messages_received: int
    dimse_messages_sent: int
    def __init__(self, active_associations: _Optional[int] = ..., associations_accepted: _Optional[int] = ..., associations_rejected: _Optional[int] = ..., associations_aborted: _Optional[int] = ..., dimse_messages_received: _Optional[int] = ..., dimse_messages_sent: _Optional[int] = ...) -> None: ...

class Server(_message.Message):
    __slots__ = ("version", "api_version", "state", "start_time", "listeners", "counters", "data_dir", "pid", "workers")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    LISTENERS_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    DATA_DIR_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    version: str
    api_version: str
    state: ServerState
    start_time: _timestamp_pb2.Timestamp
    listeners: _containers.RepeatedCompositeFieldContainer[Listener]
    counters: Counters
    data_dir: str
    pid: int
    workers: _containers.RepeatedCompositeFieldContainer[Worker]
    def __init__(self, version: _Optional[str] = ..., api_version: _Optional[str] = ..., state: _Optional[_Union[ServerState, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., listeners: _Optional[_Iterable[_Union[Listener, _Mapping]]] = ..., counters: _Optional[_Union[Counters, _Mapping]] = ..., data_dir: _Optional[str] = ..., pid: _Optional[int] = ..., workers: _Optional[_Iterable[_Union[Worker, _Mapping]]] = ...) -> None: ...

class Worker(_message.Message):
    __slots__ = ("index", "pid", "state", "restarts", "start_time", "counters")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    index: int
    pid: int
    state: WorkerState
    restarts: int
    start_time: _timestamp_pb2.Timestamp
    counters: Counters
    def __init__(self, index: _Optional[int] = ..., pid: _Optional[int] = ..., state: _Optional[_Union[WorkerState, str]] = ..., restarts: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., counters: _Optional[_Union[Counters, _Mapping]] = ...) -> None: ...

class GetServerRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetServerResponse(_message.Message):
    __slots__ = ("server",)
    SERVER_FIELD_NUMBER: _ClassVar[int]
    server: Server
    def __init__(self, server: _Optional[_Union[Server, _Mapping]] = ...) -> None: ...

class StartServerRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StartServerResponse(_message.Message):
    __slots__ = ("server", "changed")
    SERVER_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    server: Server
    changed: bool
    def __init__(self, server: _Optional[_Union[Server, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...

class StopServerRequest(_message.Message):
    __slots__ = ("grace_period",)
    GRACE_PERIOD_FIELD_NUMBER: _ClassVar[int]
    grace_period: _duration_pb2.Duration
    def __init__(self, grace_period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class StopServerResponse(_message.Message):
    __slots__ = ("server", "changed")
    SERVER_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    server: Server
    changed: bool
    def __init__(self, server: _Optional[_Union[Server, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...

class PauseServerRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PauseServerResponse(_message.Message):
    __slots__ = ("server", "changed")
    SERVER_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    server: Server
    changed: bool
    def __init__(self, server: _Optional[_Union[Server, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...

class ResumeServerRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResumeServerResponse(_message.Message):
    __slots__ = ("server", "changed")
    SERVER_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    server: Server
    changed: bool
    def __init__(self, server: _Optional[_Union[Server, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...

class ShutdownRequest(_message.Message):
    __slots__ = ("grace_period",)
    GRACE_PERIOD_FIELD_NUMBER: _ClassVar[int]
    grace_period: _duration_pb2.Duration
    def __init__(self, grace_period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ShutdownResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSettingsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSettingsResponse(_message.Message):
    __slots__ = ("settings", "runtime_settings")
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    settings: _struct_pb2.Struct
    runtime_settings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, settings: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., runtime_settings: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateSettingsRequest(_message.Message):
    __slots__ = ("settings", "validate_only")
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    settings: _struct_pb2.Struct
    validate_only: bool
    def __init__(self, settings: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class UpdateSettingsResponse(_message.Message):
    __slots__ = ("settings", "changed_fields", "changed")
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    settings: _struct_pb2.Struct
    changed_fields: _containers.RepeatedScalarFieldContainer[str]
    changed: bool
    def __init__(self, settings: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., changed_fields: _Optional[_Iterable[str]] = ..., changed: _Optional[bool] = ...) -> None: ...
