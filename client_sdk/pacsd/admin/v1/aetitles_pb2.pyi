from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Permission(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PERMISSION_UNSPECIFIED: _ClassVar[Permission]
    PERMISSION_ECHO: _ClassVar[Permission]
    PERMISSION_STORE: _ClassVar[Permission]
    PERMISSION_FIND: _ClassVar[Permission]
    PERMISSION_MOVE: _ClassVar[Permission]
    PERMISSION_GET: _ClassVar[Permission]
    PERMISSION_N_SERVICES: _ClassVar[Permission]
    PERMISSION_OVERWRITE: _ClassVar[Permission]
    PERMISSION_DELETE: _ClassVar[Permission]
PERMISSION_UNSPECIFIED: Permission
PERMISSION_ECHO: Permission
PERMISSION_STORE: Permission
PERMISSION_FIND: Permission
PERMISSION_MOVE: Permission
PERMISSION_GET: Permission
PERMISSION_N_SERVICES: Permission
PERMISSION_OVERWRITE: Permission
PERMISSION_DELETE: Permission

class AETitle(_message.Message):
    __slots__ = ("ae_title", "host", "port", "description", "allowed_addresses", "permissions")
    AE_TITLE_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    ae_title: str
    host: str
    port: int
    description: str
    allowed_addresses: _containers.RepeatedScalarFieldContainer[str]
    permissions: PermissionSet
    def __init__(self, ae_title: _Optional[str] = ..., host: _Optional[str] = ..., port: _Optional[int] = ..., description: _Optional[str] = ..., allowed_addresses: _Optional[_Iterable[str]] = ..., permissions: _Optional[_Union[PermissionSet, _Mapping]] = ...) -> None: ...

class PermissionSet(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[Permission]
    def __init__(self, values: _Optional[_Iterable[_Union[Permission, str]]] = ...) -> None: ...

class ListAETitlesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAETitlesResponse(_message.Message):
    __slots__ = ("ae_titles", "next_page_token")
    AE_TITLES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ae_titles: _containers.RepeatedCompositeFieldContainer[AETitle]
    next_page_token: str
    def __init__(self, ae_titles: _Optional[_Iterable[_Union[AETitle, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetAETitleRequest(_message.Message):
    __slots__ = ("ae_title",)
    AE_TITLE_FIELD_NUMBER: _ClassVar[int]
    ae_title: str
    def __init__(self, ae_title: _Optional[str] = ...) -> None: ...

class GetAETitleResponse(_message.Message):
    __slots__ = ("ae_title",)
    AE_TITLE_FIELD_NUMBER: _ClassVar[int]
    ae_title: AETitle
    def __init__(self, ae_title: _Optional[_Union[AETitle, _Mapping]] = ...) -> None: ...

class CreateAETitleRequest(_message.Message):
    __slots__ = ("ae_title",)
    AE_TITLE_FIELD_NUMBER: _ClassVar[int]
    ae_title: AETitle
    def __init__(self, ae_title: _Optional[_Union[AETitle, _Mapping]] = ...) -> None: ...

class CreateAETitleResponse(_message.Message):
    __slots__ = ("ae_title", "changed")
    AE_TITLE_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    ae_title: AETitle
    changed: bool
    def __init__(self, ae_title: _Optional[_Union[AETitle, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...

class UpdateAETitleRequest(_message.Message):
    __slots__ = ("ae_title", "update_mask")
    AE_TITLE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    ae_title: AETitle
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, ae_title: _Optional[_Union[AETitle, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateAETitleResponse(_message.Message):
    __slots__ = ("ae_title", "changed")
    AE_TITLE_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    ae_title: AETitle
    changed: bool
    def __init__(self, ae_title: _Optional[_Union[AETitle, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...

class DeleteAETitleRequest(_message.Message):
    __slots__ = ("ae_title",)
    AE_TITLE_FIELD_NUMBER: _ClassVar[int]
    ae_title: str
    def __init__(self, ae_title: _Optional[str] = ...) -> None: ...

class DeleteAETitleResponse(_message.Message):
    __slots__ = ("changed",)
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    def __init__(self, changed: _Optional[bool] = ...) -> None: ...

class EchoAETitleRequest(_message.Message):
    __slots__ = ("ae_title", "timeout")
    AE_TITLE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    ae_title: str
    timeout: float
    def __init__(self, ae_title: _Optional[str] = ..., timeout: _Optional[float] = ...) -> None: ...

class EchoAETitleResponse(_message.Message):
    __slots__ = ("success", "status", "error", "round_trip_ms")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ROUND_TRIP_MS_FIELD_NUMBER: _ClassVar[int]
    success: bool
    status: int
    error: str
    round_trip_ms: float
    def __init__(self, success: _Optional[bool] = ..., status: _Optional[int] = ..., error: _Optional[str] = ..., round_trip_ms: _Optional[float] = ...) -> None: ...
