from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AddinState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ADDIN_STATE_UNSPECIFIED: _ClassVar[AddinState]
    ADDIN_STATE_AVAILABLE: _ClassVar[AddinState]
    ADDIN_STATE_ENABLED: _ClassVar[AddinState]
    ADDIN_STATE_DISABLED: _ClassVar[AddinState]
    ADDIN_STATE_FAILED: _ClassVar[AddinState]
ADDIN_STATE_UNSPECIFIED: AddinState
ADDIN_STATE_AVAILABLE: AddinState
ADDIN_STATE_ENABLED: AddinState
ADDIN_STATE_DISABLED: AddinState
ADDIN_STATE_FAILED: AddinState

class Binding(_message.Message):
    __slots__ = ("service", "sop_class_uid", "transfer_syntaxes")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    SOP_CLASS_UID_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_SYNTAXES_FIELD_NUMBER: _ClassVar[int]
    service: str
    sop_class_uid: str
    transfer_syntaxes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, service: _Optional[str] = ..., sop_class_uid: _Optional[str] = ..., transfer_syntaxes: _Optional[_Iterable[str]] = ...) -> None: ...

class AddinCounters(_message.Message):
    __slots__ = ("calls", "failures", "timeouts", "mean_latency_ms", "max_latency_ms")
    CALLS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUTS_FIELD_NUMBER: _ClassVar[int]
    MEAN_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    calls: int
    failures: int
    timeouts: int
    mean_latency_ms: float
    max_latency_ms: float
    def __init__(self, calls: _Optional[int] = ..., failures: _Optional[int] = ..., timeouts: _Optional[int] = ..., mean_latency_ms: _Optional[float] = ..., max_latency_ms: _Optional[float] = ...) -> None: ...

class Addin(_message.Message):
    __slots__ = ("name", "version", "description", "state", "source", "bindings", "hooks", "commands", "healthy", "error", "counters")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    BINDINGS_FIELD_NUMBER: _ClassVar[int]
    HOOKS_FIELD_NUMBER: _ClassVar[int]
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    description: str
    state: AddinState
    source: str
    bindings: _containers.RepeatedCompositeFieldContainer[Binding]
    hooks: _containers.RepeatedScalarFieldContainer[str]
    commands: _containers.RepeatedScalarFieldContainer[str]
    healthy: bool
    error: str
    counters: AddinCounters
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., description: _Optional[str] = ..., state: _Optional[_Union[AddinState, str]] = ..., source: _Optional[str] = ..., bindings: _Optional[_Iterable[_Union[Binding, _Mapping]]] = ..., hooks: _Optional[_Iterable[str]] = ..., commands: _Optional[_Iterable[str]] = ..., healthy: _Optional[bool] = ..., error: _Optional[str] = ..., counters: _Optional[_Union[AddinCounters, _Mapping]] = ...) -> None: ...

class ListAddinsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAddinsResponse(_message.Message):
    __slots__ = ("addins", "next_page_token")
    ADDINS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    addins: _containers.RepeatedCompositeFieldContainer[Addin]
    next_page_token: str
    def __init__(self, addins: _Optional[_Iterable[_Union[Addin, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetAddinRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetAddinResponse(_message.Message):
    __slots__ = ("addin",)
    ADDIN_FIELD_NUMBER: _ClassVar[int]
    addin: Addin
    def __init__(self, addin: _Optional[_Union[Addin, _Mapping]] = ...) -> None: ...

class LoadAddinRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class LoadAddinResponse(_message.Message):
    __slots__ = ("addin", "changed")
    ADDIN_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    addin: Addin
    changed: bool
    def __init__(self, addin: _Optional[_Union[Addin, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...

class UnloadAddinRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UnloadAddinResponse(_message.Message):
    __slots__ = ("addin", "changed")
    ADDIN_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    addin: Addin
    changed: bool
    def __init__(self, addin: _Optional[_Union[Addin, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...

class ReloadAddinRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ReloadAddinResponse(_message.Message):
    __slots__ = ("addin",)
    ADDIN_FIELD_NUMBER: _ClassVar[int]
    addin: Addin
    def __init__(self, addin: _Optional[_Union[Addin, _Mapping]] = ...) -> None: ...

class EnableAddinRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class EnableAddinResponse(_message.Message):
    __slots__ = ("addin", "changed")
    ADDIN_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    addin: Addin
    changed: bool
    def __init__(self, addin: _Optional[_Union[Addin, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...

class DisableAddinRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DisableAddinResponse(_message.Message):
    __slots__ = ("addin", "changed")
    ADDIN_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    addin: Addin
    changed: bool
    def __init__(self, addin: _Optional[_Union[Addin, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...

class GetAddinSettingsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetAddinSettingsResponse(_message.Message):
    __slots__ = ("settings",)
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    settings: _struct_pb2.Struct
    def __init__(self, settings: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class UpdateAddinSettingsRequest(_message.Message):
    __slots__ = ("name", "settings")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    settings: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., settings: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class UpdateAddinSettingsResponse(_message.Message):
    __slots__ = ("settings", "changed")
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    settings: _struct_pb2.Struct
    changed: bool
    def __init__(self, settings: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...

class InvokeCommandRequest(_message.Message):
    __slots__ = ("name", "command", "args")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    command: str
    args: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., command: _Optional[str] = ..., args: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class InvokeCommandResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: _struct_pb2.Struct
    def __init__(self, result: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...
