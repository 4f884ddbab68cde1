from protos.sidecar.common.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HandoffJob(_message.Message):
    __slots__ = ("job_id", "study_id", "legacy_report_id", "study")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    LEGACY_REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    study_id: str
    legacy_report_id: str
    study: _common_pb2.StudyKey
    def __init__(self, job_id: _Optional[str] = ..., study_id: _Optional[str] = ..., legacy_report_id: _Optional[str] = ..., study: _Optional[_Union[_common_pb2.StudyKey, _Mapping]] = ...) -> None: ...

class ExportJob(_message.Message):
    __slots__ = ("job_id", "study_id", "study")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    study_id: str
    study: _common_pb2.StudyKey
    def __init__(self, job_id: _Optional[str] = ..., study_id: _Optional[str] = ..., study: _Optional[_Union[_common_pb2.StudyKey, _Mapping]] = ...) -> None: ...
