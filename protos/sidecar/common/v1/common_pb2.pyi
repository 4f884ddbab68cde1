from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StudyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STUDY_STATE_UNSPECIFIED: _ClassVar[StudyState]
    STUDY_STATE_RECEIVED: _ClassVar[StudyState]
    STUDY_STATE_PROCESSED: _ClassVar[StudyState]
    STUDY_STATE_AI_COMPLETE: _ClassVar[StudyState]
    STUDY_STATE_READY_FOR_REVIEW: _ClassVar[StudyState]
    STUDY_STATE_ASSIGNED: _ClassVar[StudyState]
    STUDY_STATE_IN_REVIEW: _ClassVar[StudyState]
    STUDY_STATE_DRAFT_READY: _ClassVar[StudyState]
    STUDY_STATE_LEGACY_REPORT_COMPLETED: _ClassVar[StudyState]
    STUDY_STATE_STATUS_RECORDED: _ClassVar[StudyState]
    STUDY_STATE_INELIGIBLE: _ClassVar[StudyState]
    STUDY_STATE_PREPROCESS_FAILED: _ClassVar[StudyState]
    STUDY_STATE_AI_FAILED: _ClassVar[StudyState]

class FindingKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINDING_KIND_UNSPECIFIED: _ClassVar[FindingKind]
    FINDING_KIND_CLASSIFICATION: _ClassVar[FindingKind]
    FINDING_KIND_BOX: _ClassVar[FindingKind]
    FINDING_KIND_POLYGON: _ClassVar[FindingKind]
    FINDING_KIND_POINT: _ClassVar[FindingKind]
    FINDING_KIND_MASK: _ClassVar[FindingKind]
    FINDING_KIND_SUMMARY: _ClassVar[FindingKind]
STUDY_STATE_UNSPECIFIED: StudyState
STUDY_STATE_RECEIVED: StudyState
STUDY_STATE_PROCESSED: StudyState
STUDY_STATE_AI_COMPLETE: StudyState
STUDY_STATE_READY_FOR_REVIEW: StudyState
STUDY_STATE_ASSIGNED: StudyState
STUDY_STATE_IN_REVIEW: StudyState
STUDY_STATE_DRAFT_READY: StudyState
STUDY_STATE_LEGACY_REPORT_COMPLETED: StudyState
STUDY_STATE_STATUS_RECORDED: StudyState
STUDY_STATE_INELIGIBLE: StudyState
STUDY_STATE_PREPROCESS_FAILED: StudyState
STUDY_STATE_AI_FAILED: StudyState
FINDING_KIND_UNSPECIFIED: FindingKind
FINDING_KIND_CLASSIFICATION: FindingKind
FINDING_KIND_BOX: FindingKind
FINDING_KIND_POLYGON: FindingKind
FINDING_KIND_POINT: FindingKind
FINDING_KIND_MASK: FindingKind
FINDING_KIND_SUMMARY: FindingKind

class StudyKey(_message.Message):
    __slots__ = ("facility", "accession", "study_instance_uid")
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    ACCESSION_FIELD_NUMBER: _ClassVar[int]
    STUDY_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    facility: str
    accession: str
    study_instance_uid: str
    def __init__(self, facility: _Optional[str] = ..., accession: _Optional[str] = ..., study_instance_uid: _Optional[str] = ...) -> None: ...

class Measurement(_message.Message):
    __slots__ = ("name", "value", "unit")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    unit: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ..., unit: _Optional[str] = ...) -> None: ...

class Finding(_message.Message):
    __slots__ = ("finding_id", "ai_run_id", "model_name", "model_version", "label", "code", "confidence", "kind", "series_instance_uid", "sop_instance_uid", "frame", "bbox_px", "center_mm", "points_px", "mask_object_key", "measurements", "summary", "mask")
    FINDING_ID_FIELD_NUMBER: _ClassVar[int]
    AI_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SERIES_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    SOP_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    BBOX_PX_FIELD_NUMBER: _ClassVar[int]
    CENTER_MM_FIELD_NUMBER: _ClassVar[int]
    POINTS_PX_FIELD_NUMBER: _ClassVar[int]
    MASK_OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    MEASUREMENTS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    finding_id: str
    ai_run_id: str
    model_name: str
    model_version: str
    label: str
    code: str
    confidence: float
    kind: FindingKind
    series_instance_uid: str
    sop_instance_uid: str
    frame: int
    bbox_px: _containers.RepeatedScalarFieldContainer[float]
    center_mm: _containers.RepeatedScalarFieldContainer[float]
    points_px: _containers.RepeatedScalarFieldContainer[float]
    mask_object_key: str
    measurements: _containers.RepeatedCompositeFieldContainer[Measurement]
    summary: str
    mask: Tensor
    def __init__(self, finding_id: _Optional[str] = ..., ai_run_id: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., label: _Optional[str] = ..., code: _Optional[str] = ..., confidence: _Optional[float] = ..., kind: _Optional[_Union[FindingKind, str]] = ..., series_instance_uid: _Optional[str] = ..., sop_instance_uid: _Optional[str] = ..., frame: _Optional[int] = ..., bbox_px: _Optional[_Iterable[float]] = ..., center_mm: _Optional[_Iterable[float]] = ..., points_px: _Optional[_Iterable[float]] = ..., mask_object_key: _Optional[str] = ..., measurements: _Optional[_Iterable[_Union[Measurement, _Mapping]]] = ..., summary: _Optional[str] = ..., mask: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("name", "datatype", "shape", "raw_contents")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    RAW_CONTENTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    datatype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    raw_contents: bytes
    def __init__(self, name: _Optional[str] = ..., datatype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., raw_contents: _Optional[bytes] = ...) -> None: ...
