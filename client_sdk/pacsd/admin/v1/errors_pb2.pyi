from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    INTERNAL_ERROR: _ClassVar[ErrorReason]
    INVALID_ARGUMENT: _ClassVar[ErrorReason]
    DICOM_PORT_IN_USE: _ClassVar[ErrorReason]
    DICOM_BIND_FAILED: _ClassVar[ErrorReason]
    SERVER_STOPPED: _ClassVar[ErrorReason]
    SHUTTING_DOWN: _ClassVar[ErrorReason]
    ADDIN_NOT_FOUND: _ClassVar[ErrorReason]
    ADDIN_LOAD_FAILED: _ClassVar[ErrorReason]
    ADDIN_CONFLICT: _ClassVar[ErrorReason]
    ADDIN_NOT_LOADED: _ClassVar[ErrorReason]
    ADDIN_SETTINGS_INVALID: _ClassVar[ErrorReason]
    COMMAND_NOT_FOUND: _ClassVar[ErrorReason]
    COMMAND_FAILED: _ClassVar[ErrorReason]
    AE_TITLE_NOT_FOUND: _ClassVar[ErrorReason]
    AE_TITLE_EXISTS: _ClassVar[ErrorReason]
    INVALID_PAGE_TOKEN: _ClassVar[ErrorReason]
    INVALID_UID: _ClassVar[ErrorReason]
    STORAGE_UNAVAILABLE: _ClassVar[ErrorReason]
    ASSOCIATION_NOT_FOUND: _ClassVar[ErrorReason]
    LOG_SOURCE_NOT_FOUND: _ClassVar[ErrorReason]
    TOO_MANY_STREAMS: _ClassVar[ErrorReason]
    SETTING_REQUIRES_RESTART: _ClassVar[ErrorReason]
    UNAUTHENTICATED: _ClassVar[ErrorReason]
    TOKEN_INVALID: _ClassVar[ErrorReason]
    PERMISSION_DENIED: _ClassVar[ErrorReason]
    TLS_NOT_CONFIGURED: _ClassVar[ErrorReason]
    CERTIFICATE_INVALID: _ClassVar[ErrorReason]
ERROR_REASON_UNSPECIFIED: ErrorReason
INTERNAL_ERROR: ErrorReason
INVALID_ARGUMENT: ErrorReason
DICOM_PORT_IN_USE: ErrorReason
DICOM_BIND_FAILED: ErrorReason
SERVER_STOPPED: ErrorReason
SHUTTING_DOWN: ErrorReason
ADDIN_NOT_FOUND: ErrorReason
ADDIN_LOAD_FAILED: ErrorReason
ADDIN_CONFLICT: ErrorReason
ADDIN_NOT_LOADED: ErrorReason
ADDIN_SETTINGS_INVALID: ErrorReason
COMMAND_NOT_FOUND: ErrorReason
COMMAND_FAILED: ErrorReason
AE_TITLE_NOT_FOUND: ErrorReason
AE_TITLE_EXISTS: ErrorReason
INVALID_PAGE_TOKEN: ErrorReason
INVALID_UID: ErrorReason
STORAGE_UNAVAILABLE: ErrorReason
ASSOCIATION_NOT_FOUND: ErrorReason
LOG_SOURCE_NOT_FOUND: ErrorReason
TOO_MANY_STREAMS: ErrorReason
SETTING_REQUIRES_RESTART: ErrorReason
UNAUTHENTICATED: ErrorReason
TOKEN_INVALID: ErrorReason
PERMISSION_DENIED: ErrorReason
TLS_NOT_CONFIGURED: ErrorReason
CERTIFICATE_INVALID: ErrorReason
