from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InstanceOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INSTANCE_OUTCOME_UNSPECIFIED: _ClassVar[InstanceOutcome]
    INSTANCE_OUTCOME_STORED: _ClassVar[InstanceOutcome]
    INSTANCE_OUTCOME_DUPLICATE: _ClassVar[InstanceOutcome]
    INSTANCE_OUTCOME_REJECTED: _ClassVar[InstanceOutcome]
INSTANCE_OUTCOME_UNSPECIFIED: InstanceOutcome
INSTANCE_OUTCOME_STORED: InstanceOutcome
INSTANCE_OUTCOME_DUPLICATE: InstanceOutcome
INSTANCE_OUTCOME_REJECTED: InstanceOutcome

class UploadInstancesRequest(_message.Message):
    __slots__ = ("facility", "request_id", "dicom", "source_ref")
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DICOM_FIELD_NUMBER: _ClassVar[int]
    SOURCE_REF_FIELD_NUMBER: _ClassVar[int]
    facility: str
    request_id: str
    dicom: bytes
    source_ref: str
    def __init__(self, facility: _Optional[str] = ..., request_id: _Optional[str] = ..., dicom: _Optional[bytes] = ..., source_ref: _Optional[str] = ...) -> None: ...

class InstanceResult(_message.Message):
    __slots__ = ("index", "source_ref", "outcome", "reason", "message", "study_instance_uid", "series_instance_uid", "sop_instance_uid", "accession")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SOURCE_REF_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STUDY_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    SERIES_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    SOP_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    ACCESSION_FIELD_NUMBER: _ClassVar[int]
    index: int
    source_ref: str
    outcome: InstanceOutcome
    reason: str
    message: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    accession: str
    def __init__(self, index: _Optional[int] = ..., source_ref: _Optional[str] = ..., outcome: _Optional[_Union[InstanceOutcome, str]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., study_instance_uid: _Optional[str] = ..., series_instance_uid: _Optional[str] = ..., sop_instance_uid: _Optional[str] = ..., accession: _Optional[str] = ...) -> None: ...

class UploadInstancesResponse(_message.Message):
    __slots__ = ("results", "stored_count", "duplicate_count", "rejected_count")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    STORED_COUNT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[InstanceResult]
    stored_count: int
    duplicate_count: int
    rejected_count: int
    def __init__(self, results: _Optional[_Iterable[_Union[InstanceResult, _Mapping]]] = ..., stored_count: _Optional[int] = ..., duplicate_count: _Optional[int] = ..., rejected_count: _Optional[int] = ...) -> None: ...

class IngestInstancesRequest(_message.Message):
    __slots__ = ("facility", "request_id", "items")
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    facility: str
    request_id: str
    items: _containers.RepeatedCompositeFieldContainer[IngestInstancesRequestItem]
    def __init__(self, facility: _Optional[str] = ..., request_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[IngestInstancesRequestItem, _Mapping]]] = ...) -> None: ...

class IngestInstancesRequestItem(_message.Message):
    __slots__ = ("dicom", "source_ref")
    DICOM_FIELD_NUMBER: _ClassVar[int]
    SOURCE_REF_FIELD_NUMBER: _ClassVar[int]
    dicom: bytes
    source_ref: str
    def __init__(self, dicom: _Optional[bytes] = ..., source_ref: _Optional[str] = ...) -> None: ...

class IngestInstancesResponse(_message.Message):
    __slots__ = ("results", "stored_count", "duplicate_count", "rejected_count")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    STORED_COUNT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[InstanceResult]
    stored_count: int
    duplicate_count: int
    rejected_count: int
    def __init__(self, results: _Optional[_Iterable[_Union[InstanceResult, _Mapping]]] = ..., stored_count: _Optional[int] = ..., duplicate_count: _Optional[int] = ..., rejected_count: _Optional[int] = ...) -> None: ...

class CompleteStudyRequest(_message.Message):
    __slots__ = ("facility", "study_instance_uid", "accession", "request_id")
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    STUDY_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    ACCESSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    facility: str
    study_instance_uid: str
    accession: str
    request_id: str
    def __init__(self, facility: _Optional[str] = ..., study_instance_uid: _Optional[str] = ..., accession: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class CompleteStudyResponse(_message.Message):
    __slots__ = ("completed_count", "study_ids")
    COMPLETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    STUDY_IDS_FIELD_NUMBER: _ClassVar[int]
    completed_count: int
    study_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, completed_count: _Optional[int] = ..., study_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class QueryParameter(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class SearchStudiesRequest(_message.Message):
    __slots__ = ("match", "include_fields", "page_size", "page_token", "fuzzy_matching")
    MATCH_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FIELDS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FUZZY_MATCHING_FIELD_NUMBER: _ClassVar[int]
    match: _containers.RepeatedCompositeFieldContainer[QueryParameter]
    include_fields: _containers.RepeatedScalarFieldContainer[str]
    page_size: int
    page_token: str
    fuzzy_matching: bool
    def __init__(self, match: _Optional[_Iterable[_Union[QueryParameter, _Mapping]]] = ..., include_fields: _Optional[_Iterable[str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., fuzzy_matching: _Optional[bool] = ...) -> None: ...

class SearchStudiesResponse(_message.Message):
    __slots__ = ("dicom_json", "next_page_token")
    DICOM_JSON_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    dicom_json: _containers.RepeatedScalarFieldContainer[str]
    next_page_token: str
    def __init__(self, dicom_json: _Optional[_Iterable[str]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SearchSeriesRequest(_message.Message):
    __slots__ = ("match", "include_fields", "page_size", "page_token", "study_instance_uid", "fuzzy_matching")
    MATCH_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FIELDS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STUDY_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    FUZZY_MATCHING_FIELD_NUMBER: _ClassVar[int]
    match: _containers.RepeatedCompositeFieldContainer[QueryParameter]
    include_fields: _containers.RepeatedScalarFieldContainer[str]
    page_size: int
    page_token: str
    study_instance_uid: str
    fuzzy_matching: bool
    def __init__(self, match: _Optional[_Iterable[_Union[QueryParameter, _Mapping]]] = ..., include_fields: _Optional[_Iterable[str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., study_instance_uid: _Optional[str] = ..., fuzzy_matching: _Optional[bool] = ...) -> None: ...

class SearchSeriesResponse(_message.Message):
    __slots__ = ("dicom_json", "next_page_token")
    DICOM_JSON_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    dicom_json: _containers.RepeatedScalarFieldContainer[str]
    next_page_token: str
    def __init__(self, dicom_json: _Optional[_Iterable[str]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SearchInstancesRequest(_message.Message):
    __slots__ = ("match", "include_fields", "page_size", "page_token", "study_instance_uid", "series_instance_uid", "fuzzy_matching")
    MATCH_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FIELDS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STUDY_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    SERIES_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    FUZZY_MATCHING_FIELD_NUMBER: _ClassVar[int]
    match: _containers.RepeatedCompositeFieldContainer[QueryParameter]
    include_fields: _containers.RepeatedScalarFieldContainer[str]
    page_size: int
    page_token: str
    study_instance_uid: str
    series_instance_uid: str
    fuzzy_matching: bool
    def __init__(self, match: _Optional[_Iterable[_Union[QueryParameter, _Mapping]]] = ..., include_fields: _Optional[_Iterable[str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., study_instance_uid: _Optional[str] = ..., series_instance_uid: _Optional[str] = ..., fuzzy_matching: _Optional[bool] = ...) -> None: ...

class SearchInstancesResponse(_message.Message):
    __slots__ = ("dicom_json", "next_page_token")
    DICOM_JSON_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    dicom_json: _containers.RepeatedScalarFieldContainer[str]
    next_page_token: str
    def __init__(self, dicom_json: _Optional[_Iterable[str]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
