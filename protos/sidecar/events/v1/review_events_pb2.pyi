import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from protos.sidecar.common.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReviewChanged(_message.Message):
    __slots__ = ("study_id", "study", "finding_id", "action", "version", "actor", "at")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_FIELD_NUMBER: _ClassVar[int]
    FINDING_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    study: _common_pb2.StudyKey
    finding_id: str
    action: str
    version: int
    actor: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, study_id: _Optional[str] = ..., study: _Optional[_Union[_common_pb2.StudyKey, _Mapping]] = ..., finding_id: _Optional[str] = ..., action: _Optional[str] = ..., version: _Optional[int] = ..., actor: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
