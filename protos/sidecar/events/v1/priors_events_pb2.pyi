from protos.sidecar.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PriorsAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORS_ACTION_UNSPECIFIED: _ClassVar[PriorsAction]
    PRIORS_ACTION_FIND: _ClassVar[PriorsAction]
    PRIORS_ACTION_RETRIEVE: _ClassVar[PriorsAction]
PRIORS_ACTION_UNSPECIFIED: PriorsAction
PRIORS_ACTION_FIND: PriorsAction
PRIORS_ACTION_RETRIEVE: PriorsAction

class PriorsJob(_message.Message):
    __slots__ = ("job_id", "study_id", "study", "action", "prior_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PRIOR_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    study_id: str
    study: _common_pb2.StudyKey
    action: PriorsAction
    prior_id: str
    def __init__(self, job_id: _Optional[str] = ..., study_id: _Optional[str] = ..., study: _Optional[_Union[_common_pb2.StudyKey, _Mapping]] = ..., action: _Optional[_Union[PriorsAction, str]] = ..., prior_id: _Optional[str] = ...) -> None: ...
