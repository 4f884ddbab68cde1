from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ReviewChanged(_message.Message):
    __slots__ = ("study_id", "finding_ids", "ai_run_ids", "action", "review_event_id")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    FINDING_IDS_FIELD_NUMBER: _ClassVar[int]
    AI_RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REVIEW_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    finding_ids: _containers.RepeatedScalarFieldContainer[str]
    ai_run_ids: _containers.RepeatedScalarFieldContainer[str]
    action: str
    review_event_id: str
    def __init__(self, study_id: _Optional[str] = ..., finding_ids: _Optional[_Iterable[str]] = ..., ai_run_ids: _Optional[_Iterable[str]] = ..., action: _Optional[str] = ..., review_event_id: _Optional[str] = ...) -> None: ...
