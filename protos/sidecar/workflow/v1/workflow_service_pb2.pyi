import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from protos.sidecar.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Eligibility(_message.Message):
    __slots__ = ("eligible", "reason", "decided", "models")
    ELIGIBLE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DECIDED_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    eligible: bool
    reason: str
    decided: bool
    models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, eligible: _Optional[bool] = ..., reason: _Optional[str] = ..., decided: _Optional[bool] = ..., models: _Optional[_Iterable[str]] = ...) -> None: ...

class StateTransition(_message.Message):
    __slots__ = ("from_state", "state", "at", "actor", "reason")
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    from_state: str
    state: str
    at: _timestamp_pb2.Timestamp
    actor: str
    reason: str
    def __init__(self, from_state: _Optional[str] = ..., state: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Asset(_message.Message):
    __slots__ = ("asset_id", "kind", "content_type", "preset", "slice_index", "sha256", "sop_instance_uid", "frame")
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    SLICE_INDEX_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SOP_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    kind: str
    content_type: str
    preset: str
    slice_index: int
    sha256: str
    sop_instance_uid: str
    frame: int
    def __init__(self, asset_id: _Optional[str] = ..., kind: _Optional[str] = ..., content_type: _Optional[str] = ..., preset: _Optional[str] = ..., slice_index: _Optional[int] = ..., sha256: _Optional[str] = ..., sop_instance_uid: _Optional[str] = ..., frame: _Optional[int] = ...) -> None: ...

class Series(_message.Message):
    __slots__ = ("series_id", "series_instance_uid", "modality", "description", "instance_count", "body_part", "assets", "slice_count", "presets", "preprocess_status", "derived")
    SERIES_ID_FIELD_NUMBER: _ClassVar[int]
    SERIES_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    BODY_PART_FIELD_NUMBER: _ClassVar[int]
    ASSETS_FIELD_NUMBER: _ClassVar[int]
    SLICE_COUNT_FIELD_NUMBER: _ClassVar[int]
    PRESETS_FIELD_NUMBER: _ClassVar[int]
    PREPROCESS_STATUS_FIELD_NUMBER: _ClassVar[int]
    DERIVED_FIELD_NUMBER: _ClassVar[int]
    series_id: str
    series_instance_uid: str
    modality: str
    description: str
    instance_count: int
    body_part: str
    assets: _containers.RepeatedCompositeFieldContainer[Asset]
    slice_count: int
    presets: _containers.RepeatedScalarFieldContainer[str]
    preprocess_status: str
    derived: bool
    def __init__(self, series_id: _Optional[str] = ..., series_instance_uid: _Optional[str] = ..., modality: _Optional[str] = ..., description: _Optional[str] = ..., instance_count: _Optional[int] = ..., body_part: _Optional[str] = ..., assets: _Optional[_Iterable[_Union[Asset, _Mapping]]] = ..., slice_count: _Optional[int] = ..., presets: _Optional[_Iterable[str]] = ..., preprocess_status: _Optional[str] = ..., derived: _Optional[bool] = ...) -> None: ...

class Study(_message.Message):
    __slots__ = ("study_id", "study_instance_uid", "accession", "facility", "modality", "state", "eligibility", "received_at", "updated_at", "description", "partial", "ai_status")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    ACCESSION_FIELD_NUMBER: _ClassVar[int]
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ELIGIBILITY_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    AI_STATUS_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    study_instance_uid: str
    accession: str
    facility: str
    modality: str
    state: str
    eligibility: Eligibility
    received_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    description: str
    partial: bool
    ai_status: str
    def __init__(self, study_id: _Optional[str] = ..., study_instance_uid: _Optional[str] = ..., accession: _Optional[str] = ..., facility: _Optional[str] = ..., modality: _Optional[str] = ..., state: _Optional[str] = ..., eligibility: _Optional[_Union[Eligibility, _Mapping]] = ..., received_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., description: _Optional[str] = ..., partial: _Optional[bool] = ..., ai_status: _Optional[str] = ...) -> None: ...

class FindingState(_message.Message):
    __slots__ = ("finding_id", "review_status", "visible", "slice_index", "series_id")
    FINDING_ID_FIELD_NUMBER: _ClassVar[int]
    REVIEW_STATUS_FIELD_NUMBER: _ClassVar[int]
    VISIBLE_FIELD_NUMBER: _ClassVar[int]
    SLICE_INDEX_FIELD_NUMBER: _ClassVar[int]
    SERIES_ID_FIELD_NUMBER: _ClassVar[int]
    finding_id: str
    review_status: str
    visible: bool
    slice_index: int
    series_id: str
    def __init__(self, finding_id: _Optional[str] = ..., review_status: _Optional[str] = ..., visible: _Optional[bool] = ..., slice_index: _Optional[int] = ..., series_id: _Optional[str] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("event_id", "type", "at", "actor", "study", "job_id", "attempt", "error_class", "error_message", "context")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    STUDY_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ERROR_CLASS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    type: str
    at: _timestamp_pb2.Timestamp
    actor: str
    study: _common_pb2.StudyKey
    job_id: str
    attempt: int
    error_class: str
    error_message: str
    context: _struct_pb2.Struct
    def __init__(self, event_id: _Optional[str] = ..., type: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., study: _Optional[_Union[_common_pb2.StudyKey, _Mapping]] = ..., job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., error_class: _Optional[str] = ..., error_message: _Optional[str] = ..., context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ListAuditEventsRequest(_message.Message):
    __slots__ = ("study_id", "page_size", "page_token")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    page_size: int
    page_token: str
    def __init__(self, study_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAuditEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[AuditEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[AuditEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetAssetRequest(_message.Message):
    __slots__ = ("study_id", "asset_id", "series_id", "kind", "preset", "slice_index")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    SERIES_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    SLICE_INDEX_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    asset_id: str
    series_id: str
    kind: str
    preset: str
    slice_index: int
    def __init__(self, study_id: _Optional[str] = ..., asset_id: _Optional[str] = ..., series_id: _Optional[str] = ..., kind: _Optional[str] = ..., preset: _Optional[str] = ..., slice_index: _Optional[int] = ...) -> None: ...

class GetAssetResponse(_message.Message):
    __slots__ = ("asset", "object_key")
    ASSET_FIELD_NUMBER: _ClassVar[int]
    OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    asset: Asset
    object_key: str
    def __init__(self, asset: _Optional[_Union[Asset, _Mapping]] = ..., object_key: _Optional[str] = ...) -> None: ...
