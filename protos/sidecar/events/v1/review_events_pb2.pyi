import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from protos.sidecar.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReviewChanged(_message.Message):
    __slots__ = ("study_id", "finding_ids", "ai_run_ids", "action", "review_event_id", "study", "finding_id", "version", "actor", "at")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    FINDING_IDS_FIELD_NUMBER: _ClassVar[int]
    AI_RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REVIEW_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_FIELD_NUMBER: _ClassVar[int]
    FINDING_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    finding_ids: _containers.RepeatedScalarFieldContainer[str]
    ai_run_ids: _containers.RepeatedScalarFieldContainer[str]
    action: str
    review_event_id: str
    study: _common_pb2.StudyKey
    finding_id: str
    version: int
    actor: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, study_id: _Optional[str] = ..., finding_ids: _Optional[_Iterable[str]] = ..., ai_run_ids: _Optional[_Iterable[str]] = ..., action: _Optional[str] = ..., review_event_id: _Optional[str] = ..., study: _Optional[_Union[_common_pb2.StudyKey, _Mapping]] = ..., finding_id: _Optional[str] = ..., version: _Optional[int] = ..., actor: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
