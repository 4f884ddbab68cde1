from protos.sidecar.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageGeometry(_message.Message):
    __slots__ = ("slices", "rows", "columns", "positions", "orientation", "pixel_spacing", "slice_spacing", "sop_instance_uids", "frames", "laterality", "view_position")
    SLICES_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    ORIENTATION_FIELD_NUMBER: _ClassVar[int]
    PIXEL_SPACING_FIELD_NUMBER: _ClassVar[int]
    SLICE_SPACING_FIELD_NUMBER: _ClassVar[int]
    SOP_INSTANCE_UIDS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    LATERALITY_FIELD_NUMBER: _ClassVar[int]
    VIEW_POSITION_FIELD_NUMBER: _ClassVar[int]
    slices: int
    rows: int
    columns: int
    positions: _containers.RepeatedScalarFieldContainer[float]
    orientation: _containers.RepeatedScalarFieldContainer[float]
    pixel_spacing: _containers.RepeatedScalarFieldContainer[float]
    slice_spacing: float
    sop_instance_uids: _containers.RepeatedScalarFieldContainer[str]
    frames: _containers.RepeatedScalarFieldContainer[int]
    laterality: _containers.RepeatedScalarFieldContainer[str]
    view_position: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, slices: _Optional[int] = ..., rows: _Optional[int] = ..., columns: _Optional[int] = ..., positions: _Optional[_Iterable[float]] = ..., orientation: _Optional[_Iterable[float]] = ..., pixel_spacing: _Optional[_Iterable[float]] = ..., slice_spacing: _Optional[float] = ..., sop_instance_uids: _Optional[_Iterable[str]] = ..., frames: _Optional[_Iterable[int]] = ..., laterality: _Optional[_Iterable[str]] = ..., view_position: _Optional[_Iterable[str]] = ...) -> None: ...

class StudyContext(_message.Message):
    __slots__ = ("study", "modality", "series_instance_uid", "geometry")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    SERIES_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    GEOMETRY_FIELD_NUMBER: _ClassVar[int]
    study: _common_pb2.StudyKey
    modality: str
    series_instance_uid: str
    geometry: ImageGeometry
    def __init__(self, study: _Optional[_Union[_common_pb2.StudyKey, _Mapping]] = ..., modality: _Optional[str] = ..., series_instance_uid: _Optional[str] = ..., geometry: _Optional[_Union[ImageGeometry, _Mapping]] = ...) -> None: ...

class NormalizeRequest(_message.Message):
    __slots__ = ("model_name", "model_version", "ai_run_id", "context", "outputs")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    AI_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    ai_run_id: str
    context: StudyContext
    outputs: _containers.RepeatedCompositeFieldContainer[_common_pb2.Tensor]
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., ai_run_id: _Optional[str] = ..., context: _Optional[_Union[StudyContext, _Mapping]] = ..., outputs: _Optional[_Iterable[_Union[_common_pb2.Tensor, _Mapping]]] = ...) -> None: ...

class NormalizeResponse(_message.Message):
    __slots__ = ("findings",)
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    findings: _containers.RepeatedCompositeFieldContainer[_common_pb2.Finding]
    def __init__(self, findings: _Optional[_Iterable[_Union[_common_pb2.Finding, _Mapping]]] = ...) -> None: ...

class DescribeNormalizerRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeNormalizerResponse(_message.Message):
    __slots__ = ("model_names", "normalizer_version")
    MODEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    NORMALIZER_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_names: _containers.RepeatedScalarFieldContainer[str]
    normalizer_version: str
    def __init__(self, model_names: _Optional[_Iterable[str]] = ..., normalizer_version: _Optional[str] = ...) -> None: ...
