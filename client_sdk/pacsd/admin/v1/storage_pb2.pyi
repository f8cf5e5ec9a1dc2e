from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StorageStats(_message.Message):
    __slots__ = ("patients", "studies", "series", "instances", "bytes", "data_dir", "index_backend")
    PATIENTS_FIELD_NUMBER: _ClassVar[int]
    STUDIES_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_DIR_FIELD_NUMBER: _ClassVar[int]
    INDEX_BACKEND_FIELD_NUMBER: _ClassVar[int]
    patients: int
    studies: int
    series: int
    instances: int
    bytes: int
    data_dir: str
    index_backend: str
    def __init__(self, patients: _Optional[int] = ..., studies: _Optional[int] = ..., series: _Optional[int] = ..., instances: _Optional[int] = ..., bytes: _Optional[int] = ..., data_dir: _Optional[str] = ..., index_backend: _Optional[str] = ...) -> None: ...

class GetStorageStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStorageStatsResponse(_message.Message):
    __slots__ = ("stats",)
    STATS_FIELD_NUMBER: _ClassVar[int]
    stats: StorageStats
    def __init__(self, stats: _Optional[_Union[StorageStats, _Mapping]] = ...) -> None: ...

class Study(_message.Message):
    __slots__ = ("study_instance_uid", "patient_id", "patient_name", "study_date", "study_description", "accession_number", "modalities", "series", "instances", "bytes")
    STUDY_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    PATIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    STUDY_DATE_FIELD_NUMBER: _ClassVar[int]
    STUDY_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ACCESSION_NUMBER_FIELD_NUMBER: _ClassVar[int]
    MODALITIES_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    study_instance_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    study_description: str
    accession_number: str
    modalities: _containers.RepeatedScalarFieldContainer[str]
    series: int
    instances: int
    bytes: int
    def __init__(self, study_instance_uid: _Optional[str] = ..., patient_id: _Optional[str] = ..., patient_name: _Optional[str] = ..., study_date: _Optional[str] = ..., study_description: _Optional[str] = ..., accession_number: _Optional[str] = ..., modalities: _Optional[_Iterable[str]] = ..., series: _Optional[int] = ..., instances: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class ListStudiesRequest(_message.Message):
    __slots__ = ("patient_id", "study_date_from", "study_date_to", "modality", "page_size", "page_token")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_DATE_FROM_FIELD_NUMBER: _ClassVar[int]
    STUDY_DATE_TO_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    study_date_from: str
    study_date_to: str
    modality: str
    page_size: int
    page_token: str
    def __init__(self, patient_id: _Optional[str] = ..., study_date_from: _Optional[str] = ..., study_date_to: _Optional[str] = ..., modality: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListStudiesResponse(_message.Message):
    __slots__ = ("studies", "next_page_token", "total_size")
    STUDIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    studies: _containers.RepeatedCompositeFieldContainer[Study]
    next_page_token: str
    total_size: int
    def __init__(self, studies: _Optional[_Iterable[_Union[Study, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class DeleteStudyRequest(_message.Message):
    __slots__ = ("study_instance_uid",)
    STUDY_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    study_instance_uid: str
    def __init__(self, study_instance_uid: _Optional[str] = ...) -> None: ...

class DeleteStudyResponse(_message.Message):
    __slots__ = ("changed", "instances_deleted", "bytes_deleted")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_DELETED_FIELD_NUMBER: _ClassVar[int]
    BYTES_DELETED_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    instances_deleted: int
    bytes_deleted: int
    def __init__(self, changed: _Optional[bool] = ..., instances_deleted: _Optional[int] = ..., bytes_deleted: _Optional[int] = ...) -> None: ...

class DeleteSeriesRequest(_message.Message):
    __slots__ = ("series_instance_uid",)
    SERIES_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    series_instance_uid: str
    def __init__(self, series_instance_uid: _Optional[str] = ...) -> None: ...

class DeleteSeriesResponse(_message.Message):
    __slots__ = ("changed", "instances_deleted", "bytes_deleted")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_DELETED_FIELD_NUMBER: _ClassVar[int]
    BYTES_DELETED_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    instances_deleted: int
    bytes_deleted: int
    def __init__(self, changed: _Optional[bool] = ..., instances_deleted: _Optional[int] = ..., bytes_deleted: _Optional[int] = ...) -> None: ...

class DeleteInstanceRequest(_message.Message):
    __slots__ = ("sop_instance_uid",)
    SOP_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    sop_instance_uid: str
    def __init__(self, sop_instance_uid: _Optional[str] = ...) -> None: ...

class DeleteInstanceResponse(_message.Message):
    __slots__ = ("changed", "instances_deleted", "bytes_deleted")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_DELETED_FIELD_NUMBER: _ClassVar[int]
    BYTES_DELETED_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    instances_deleted: int
    bytes_deleted: int
    def __init__(self, changed: _Optional[bool] = ..., instances_deleted: _Optional[int] = ..., bytes_deleted: _Optional[int] = ...) -> None: ...
