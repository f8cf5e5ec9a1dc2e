import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AssociationEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ASSOCIATION_EVENT_TYPE_UNSPECIFIED: _ClassVar[AssociationEventType]
    ASSOCIATION_EVENT_TYPE_ACCEPTED: _ClassVar[AssociationEventType]
    ASSOCIATION_EVENT_TYPE_REJECTED: _ClassVar[AssociationEventType]
    ASSOCIATION_EVENT_TYPE_RELEASED: _ClassVar[AssociationEventType]
    ASSOCIATION_EVENT_TYPE_ABORTED: _ClassVar[AssociationEventType]
    ASSOCIATION_EVENT_TYPE_CLOSED: _ClassVar[AssociationEventType]
    ASSOCIATION_EVENT_TYPE_MESSAGE_RECEIVED: _ClassVar[AssociationEventType]
    ASSOCIATION_EVENT_TYPE_MESSAGE_SENT: _ClassVar[AssociationEventType]
ASSOCIATION_EVENT_TYPE_UNSPECIFIED: AssociationEventType
ASSOCIATION_EVENT_TYPE_ACCEPTED: AssociationEventType
ASSOCIATION_EVENT_TYPE_REJECTED: AssociationEventType
ASSOCIATION_EVENT_TYPE_RELEASED: AssociationEventType
ASSOCIATION_EVENT_TYPE_ABORTED: AssociationEventType
ASSOCIATION_EVENT_TYPE_CLOSED: AssociationEventType
ASSOCIATION_EVENT_TYPE_MESSAGE_RECEIVED: AssociationEventType
ASSOCIATION_EVENT_TYPE_MESSAGE_SENT: AssociationEventType

class PresentationContext(_message.Message):
    __slots__ = ("id", "abstract_syntax", "abstract_syntax_name", "transfer_syntax", "scu_role", "scp_role")
    ID_FIELD_NUMBER: _ClassVar[int]
    ABSTRACT_SYNTAX_FIELD_NUMBER: _ClassVar[int]
    ABSTRACT_SYNTAX_NAME_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_SYNTAX_FIELD_NUMBER: _ClassVar[int]
    SCU_ROLE_FIELD_NUMBER: _ClassVar[int]
    SCP_ROLE_FIELD_NUMBER: _ClassVar[int]
    id: int
    abstract_syntax: str
    abstract_syntax_name: str
    transfer_syntax: str
    scu_role: bool
    scp_role: bool
    def __init__(self, id: _Optional[int] = ..., abstract_syntax: _Optional[str] = ..., abstract_syntax_name: _Optional[str] = ..., transfer_syntax: _Optional[str] = ..., scu_role: _Optional[bool] = ..., scp_role: _Optional[bool] = ...) -> None: ...

class Association(_message.Message):
    __slots__ = ("id", "peer_host", "peer_port", "calling_ae", "called_ae", "start_time", "accepted_contexts", "messages_received", "messages_sent", "bytes_received", "bytes_sent", "tls", "tls_peer_subject", "worker")
    ID_FIELD_NUMBER: _ClassVar[int]
    PEER_HOST_FIELD_NUMBER: _ClassVar[int]
    PEER_PORT_FIELD_NUMBER: _ClassVar[int]
    CALLING_AE_FIELD_NUMBER: _ClassVar[int]
    CALLED_AE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_CONTEXTS_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_SENT_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    TLS_PEER_SUBJECT_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    id: str
    peer_host: str
    peer_port: int
    calling_ae: str
    called_ae: str
    start_time: _timestamp_pb2.Timestamp
    accepted_contexts: _containers.RepeatedCompositeFieldContainer[PresentationContext]
    messages_received: int
    messages_sent: int
    bytes_received: int
    bytes_sent: int
    tls: bool
    tls_peer_subject: str
    worker: int
    def __init__(self, id: _Optional[str] = ..., peer_host: _Optional[str] = ..., peer_port: _Optional[int] = ..., calling_ae: _Optional[str] = ..., called_ae: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., accepted_contexts: _Optional[_Iterable[_Union[PresentationContext, _Mapping]]] = ..., messages_received: _Optional[int] = ..., messages_sent: _Optional[int] = ..., bytes_received: _Optional[int] = ..., bytes_sent: _Optional[int] = ..., tls: _Optional[bool] = ..., tls_peer_subject: _Optional[str] = ..., worker: _Optional[int] = ...) -> None: ...

class ListAssociationsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAssociationsResponse(_message.Message):
    __slots__ = ("associations", "next_page_token")
    ASSOCIATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    associations: _containers.RepeatedCompositeFieldContainer[Association]
    next_page_token: str
    def __init__(self, associations: _Optional[_Iterable[_Union[Association, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetAssociationRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetAssociationResponse(_message.Message):
    __slots__ = ("association",)
    ASSOCIATION_FIELD_NUMBER: _ClassVar[int]
    association: Association
    def __init__(self, association: _Optional[_Union[Association, _Mapping]] = ...) -> None: ...

class AbortAssociationRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class AbortAssociationResponse(_message.Message):
    __slots__ = ("association",)
    ASSOCIATION_FIELD_NUMBER: _ClassVar[int]
    association: Association
    def __init__(self, association: _Optional[_Union[Association, _Mapping]] = ...) -> None: ...

class DimseSummary(_message.Message):
    __slots__ = ("service", "response", "message_id", "status", "sop_class_uid", "sop_instance_uid", "has_dataset")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SOP_CLASS_UID_FIELD_NUMBER: _ClassVar[int]
    SOP_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    HAS_DATASET_FIELD_NUMBER: _ClassVar[int]
    service: str
    response: bool
    message_id: int
    status: int
    sop_class_uid: str
    sop_instance_uid: str
    has_dataset: bool
    def __init__(self, service: _Optional[str] = ..., response: _Optional[bool] = ..., message_id: _Optional[int] = ..., status: _Optional[int] = ..., sop_class_uid: _Optional[str] = ..., sop_instance_uid: _Optional[str] = ..., has_dataset: _Optional[bool] = ...) -> None: ...

class AssociationEvent(_message.Message):
    __slots__ = ("time", "type", "association_id", "calling_ae", "called_ae", "peer", "reason", "message")
    TIME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ASSOCIATION_ID_FIELD_NUMBER: _ClassVar[int]
    CALLING_AE_FIELD_NUMBER: _ClassVar[int]
    CALLED_AE_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    type: AssociationEventType
    association_id: str
    calling_ae: str
    called_ae: str
    peer: str
    reason: str
    message: DimseSummary
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., type: _Optional[_Union[AssociationEventType, str]] = ..., association_id: _Optional[str] = ..., calling_ae: _Optional[str] = ..., called_ae: _Optional[str] = ..., peer: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[_Union[DimseSummary, _Mapping]] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ("association_id", "ae_title", "lifecycle_only")
    ASSOCIATION_ID_FIELD_NUMBER: _ClassVar[int]
    AE_TITLE_FIELD_NUMBER: _ClassVar[int]
    LIFECYCLE_ONLY_FIELD_NUMBER: _ClassVar[int]
    association_id: str
    ae_title: str
    lifecycle_only: bool
    def __init__(self, association_id: _Optional[str] = ..., ae_title: _Optional[str] = ..., lifecycle_only: _Optional[bool] = ...) -> None: ...

class EventsDropped(_message.Message):
    __slots__ = ("count", "total")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    count: int
    total: int
    def __init__(self, count: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class WatchEventsResponse(_message.Message):
    __slots__ = ("event", "dropped")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    event: AssociationEvent
    dropped: EventsDropped
    def __init__(self, event: _Optional[_Union[AssociationEvent, _Mapping]] = ..., dropped: _Optional[_Union[EventsDropped, _Mapping]] = ...) -> None: ...
