import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeadLetterFilter(_message.Message):
    __slots__ = ("facility", "kind", "sequences")
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    facility: str
    kind: str
    sequences: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, facility: _Optional[str] = ..., kind: _Optional[str] = ..., sequences: _Optional[_Iterable[int]] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("sequence", "kind", "original_subject", "original_msg_id", "consumer", "deliveries", "error_class", "error_message", "at", "facility", "accession", "study_instance_uid", "study_id", "job_id")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    ERROR_CLASS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    ACCESSION_FIELD_NUMBER: _ClassVar[int]
    STUDY_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    kind: str
    original_subject: str
    original_msg_id: str
    consumer: str
    deliveries: int
    error_class: str
    error_message: str
    at: _timestamp_pb2.Timestamp
    facility: str
    accession: str
    study_instance_uid: str
    study_id: str
    job_id: str
    def __init__(self, sequence: _Optional[int] = ..., kind: _Optional[str] = ..., original_subject: _Optional[str] = ..., original_msg_id: _Optional[str] = ..., consumer: _Optional[str] = ..., deliveries: _Optional[int] = ..., error_class: _Optional[str] = ..., error_message: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., facility: _Optional[str] = ..., accession: _Optional[str] = ..., study_instance_uid: _Optional[str] = ..., study_id: _Optional[str] = ..., job_id: _Optional[str] = ...) -> None: ...

class ListDeadLettersRequest(_message.Message):
    __slots__ = ("filter", "page_size", "page_token")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    filter: DeadLetterFilter
    page_size: int
    page_token: str
    def __init__(self, filter: _Optional[_Union[DeadLetterFilter, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDeadLettersResponse(_message.Message):
    __slots__ = ("dead_letters", "next_page_token")
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    dead_letters: _containers.RepeatedCompositeFieldContainer[DeadLetter]
    next_page_token: str
    def __init__(self, dead_letters: _Optional[_Iterable[_Union[DeadLetter, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RedriveDeadLettersRequest(_message.Message):
    __slots__ = ("filter", "operator", "request_id")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    filter: DeadLetterFilter
    operator: str
    request_id: str
    def __init__(self, filter: _Optional[_Union[DeadLetterFilter, _Mapping]] = ..., operator: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RedriveDeadLettersResponse(_message.Message):
    __slots__ = ("redriven",)
    REDRIVEN_FIELD_NUMBER: _ClassVar[int]
    redriven: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, redriven: _Optional[_Iterable[int]] = ...) -> None: ...

class DiscardDeadLettersRequest(_message.Message):
    __slots__ = ("filter", "operator", "reason", "request_id")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    filter: DeadLetterFilter
    operator: str
    reason: str
    request_id: str
    def __init__(self, filter: _Optional[_Union[DeadLetterFilter, _Mapping]] = ..., operator: _Optional[str] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DiscardDeadLettersResponse(_message.Message):
    __slots__ = ("discarded",)
    DISCARDED_FIELD_NUMBER: _ClassVar[int]
    discarded: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, discarded: _Optional[_Iterable[int]] = ...) -> None: ...

class GetReviewAnalyticsRequest(_message.Message):
    __slots__ = ("facility", "since", "until")
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    facility: str
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    def __init__(self, facility: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DecisionRates(_message.Message):
    __slots__ = ("dimension", "value", "reviewed", "accepted", "edited", "rejected", "ignored")
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REVIEWED_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    EDITED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    IGNORED_FIELD_NUMBER: _ClassVar[int]
    dimension: str
    value: str
    reviewed: int
    accepted: int
    edited: int
    rejected: int
    ignored: int
    def __init__(self, dimension: _Optional[str] = ..., value: _Optional[str] = ..., reviewed: _Optional[int] = ..., accepted: _Optional[int] = ..., edited: _Optional[int] = ..., rejected: _Optional[int] = ..., ignored: _Optional[int] = ...) -> None: ...

class StageTurnaround(_message.Message):
    __slots__ = ("stage", "studies", "p50_s", "p90_s", "mean_s")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STUDIES_FIELD_NUMBER: _ClassVar[int]
    P50_S_FIELD_NUMBER: _ClassVar[int]
    P90_S_FIELD_NUMBER: _ClassVar[int]
    MEAN_S_FIELD_NUMBER: _ClassVar[int]
    stage: str
    studies: int
    p50_s: float
    p90_s: float
    mean_s: float
    def __init__(self, stage: _Optional[str] = ..., studies: _Optional[int] = ..., p50_s: _Optional[float] = ..., p90_s: _Optional[float] = ..., mean_s: _Optional[float] = ...) -> None: ...

class AddedFindings(_message.Message):
    __slots__ = ("facility", "modality", "label", "count")
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    facility: str
    modality: str
    label: str
    count: int
    def __init__(self, facility: _Optional[str] = ..., modality: _Optional[str] = ..., label: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class ShadowComparison(_message.Message):
    __slots__ = ("facility", "studies", "studies_with_findings", "findings", "mean_confidence", "studies_reported")
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    STUDIES_FIELD_NUMBER: _ClassVar[int]
    STUDIES_WITH_FINDINGS_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    MEAN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    STUDIES_REPORTED_FIELD_NUMBER: _ClassVar[int]
    facility: str
    studies: int
    studies_with_findings: int
    findings: int
    mean_confidence: float
    studies_reported: int
    def __init__(self, facility: _Optional[str] = ..., studies: _Optional[int] = ..., studies_with_findings: _Optional[int] = ..., findings: _Optional[int] = ..., mean_confidence: _Optional[float] = ..., studies_reported: _Optional[int] = ...) -> None: ...

class GetReviewAnalyticsResponse(_message.Message):
    __slots__ = ("rates", "turnaround", "added", "shadow")
    RATES_FIELD_NUMBER: _ClassVar[int]
    TURNAROUND_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    rates: _containers.RepeatedCompositeFieldContainer[DecisionRates]
    turnaround: _containers.RepeatedCompositeFieldContainer[StageTurnaround]
    added: _containers.RepeatedCompositeFieldContainer[AddedFindings]
    shadow: _containers.RepeatedCompositeFieldContainer[ShadowComparison]
    def __init__(self, rates: _Optional[_Iterable[_Union[DecisionRates, _Mapping]]] = ..., turnaround: _Optional[_Iterable[_Union[StageTurnaround, _Mapping]]] = ..., added: _Optional[_Iterable[_Union[AddedFindings, _Mapping]]] = ..., shadow: _Optional[_Iterable[_Union[ShadowComparison, _Mapping]]] = ...) -> None: ...

class ListFacilitiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFacilitiesResponse(_message.Message):
    __slots__ = ("facilities",)
    FACILITIES_FIELD_NUMBER: _ClassVar[int]
    facilities: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    def __init__(self, facilities: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ...) -> None: ...

class CreateFacilityRequest(_message.Message):
    __slots__ = ("name", "settings", "operator")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    settings: _struct_pb2.Struct
    operator: str
    def __init__(self, name: _Optional[str] = ..., settings: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., operator: _Optional[str] = ...) -> None: ...

class CreateFacilityResponse(_message.Message):
    __slots__ = ("facility",)
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    facility: _struct_pb2.Struct
    def __init__(self, facility: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class UpdateFacilityRequest(_message.Message):
    __slots__ = ("name", "settings", "operator")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    settings: _struct_pb2.Struct
    operator: str
    def __init__(self, name: _Optional[str] = ..., settings: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., operator: _Optional[str] = ...) -> None: ...

class UpdateFacilityResponse(_message.Message):
    __slots__ = ("facility",)
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    facility: _struct_pb2.Struct
    def __init__(self, facility: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Account(_message.Message):
    __slots__ = ("username", "role", "facility", "disabled", "created_at", "disabled_at", "sessions_revoked_at")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DISABLED_AT_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    username: str
    role: str
    facility: str
    disabled: bool
    created_at: _timestamp_pb2.Timestamp
    disabled_at: _timestamp_pb2.Timestamp
    sessions_revoked_at: _timestamp_pb2.Timestamp
    def __init__(self, username: _Optional[str] = ..., role: _Optional[str] = ..., facility: _Optional[str] = ..., disabled: _Optional[bool] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., disabled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sessions_revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListUsersRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListUsersResponse(_message.Message):
    __slots__ = ("users", "next_page_token")
    USERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[Account]
    next_page_token: str
    def __init__(self, users: _Optional[_Iterable[_Union[Account, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DisableUserRequest(_message.Message):
    __slots__ = ("username",)
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    username: str
    def __init__(self, username: _Optional[str] = ...) -> None: ...

class DisableUserResponse(_message.Message):
    __slots__ = ("changed",)
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    def __init__(self, changed: _Optional[bool] = ...) -> None: ...

class EnableUserRequest(_message.Message):
    __slots__ = ("username",)
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    username: str
    def __init__(self, username: _Optional[str] = ...) -> None: ...

class EnableUserResponse(_message.Message):
    __slots__ = ("changed",)
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    def __init__(self, changed: _Optional[bool] = ...) -> None: ...

class ResetUserPasswordRequest(_message.Message):
    __slots__ = ("username", "new_password")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    NEW_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    username: str
    new_password: str
    def __init__(self, username: _Optional[str] = ..., new_password: _Optional[str] = ...) -> None: ...

class ResetUserPasswordResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RevokeUserSessionsRequest(_message.Message):
    __slots__ = ("username",)
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    username: str
    def __init__(self, username: _Optional[str] = ...) -> None: ...

class RevokeUserSessionsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
