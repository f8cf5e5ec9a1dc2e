import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Certificate(_message.Message):
    __slots__ = ("role", "path", "subject", "issuer", "not_before", "not_after", "sha256_fingerprint", "serial_number")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    SHA256_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SERIAL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    role: str
    path: str
    subject: str
    issuer: str
    not_before: _timestamp_pb2.Timestamp
    not_after: _timestamp_pb2.Timestamp
    sha256_fingerprint: str
    serial_number: str
    def __init__(self, role: _Optional[str] = ..., path: _Optional[str] = ..., subject: _Optional[str] = ..., issuer: _Optional[str] = ..., not_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., not_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sha256_fingerprint: _Optional[str] = ..., serial_number: _Optional[str] = ...) -> None: ...

class TlsStatus(_message.Message):
    __slots__ = ("enabled", "provider", "host", "port", "listening", "certificates")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    LISTENING_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATES_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    provider: str
    host: str
    port: int
    listening: bool
    certificates: _containers.RepeatedCompositeFieldContainer[Certificate]
    def __init__(self, enabled: _Optional[bool] = ..., provider: _Optional[str] = ..., host: _Optional[str] = ..., port: _Optional[int] = ..., listening: _Optional[bool] = ..., certificates: _Optional[_Iterable[_Union[Certificate, _Mapping]]] = ...) -> None: ...

class GetCertificatesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCertificatesResponse(_message.Message):
    __slots__ = ("tls",)
    TLS_FIELD_NUMBER: _ClassVar[int]
    tls: TlsStatus
    def __init__(self, tls: _Optional[_Union[TlsStatus, _Mapping]] = ...) -> None: ...

class ReloadCertificatesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadCertificatesResponse(_message.Message):
    __slots__ = ("tls",)
    TLS_FIELD_NUMBER: _ClassVar[int]
    tls: TlsStatus
    def __init__(self, tls: _Optional[_Union[TlsStatus, _Mapping]] = ...) -> None: ...
