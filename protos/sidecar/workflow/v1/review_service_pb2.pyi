import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from protos.sidecar.common.v1 import common_pb2 as _common_pb2
from protos.sidecar.workflow.v1 import workflow_service_pb2 as _workflow_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LoginRequest(_message.Message):
    __slots__ = ("username", "password", "client_address", "session_id")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    username: str
    password: str
    client_address: str
    session_id: str
    def __init__(self, username: _Optional[str] = ..., password: _Optional[str] = ..., client_address: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class LoginResponse(_message.Message):
    __slots__ = ("user_id", "username", "role", "facilities")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    FACILITIES_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    username: str
    role: str
    facilities: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user_id: _Optional[str] = ..., username: _Optional[str] = ..., role: _Optional[str] = ..., facilities: _Optional[_Iterable[str]] = ...) -> None: ...

class SsoLoginRequest(_message.Message):
    __slots__ = ("issuer", "subject", "username", "role", "facilities", "client_address", "refused_reason", "session_id")
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    FACILITIES_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_REASON_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    issuer: str
    subject: str
    username: str
    role: str
    facilities: _containers.RepeatedScalarFieldContainer[str]
    client_address: str
    refused_reason: str
    session_id: str
    def __init__(self, issuer: _Optional[str] = ..., subject: _Optional[str] = ..., username: _Optional[str] = ..., role: _Optional[str] = ..., facilities: _Optional[_Iterable[str]] = ..., client_address: _Optional[str] = ..., refused_reason: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class SsoLoginResponse(_message.Message):
    __slots__ = ("user_id", "username", "role", "facilities")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    FACILITIES_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    username: str
    role: str
    facilities: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user_id: _Optional[str] = ..., username: _Optional[str] = ..., role: _Optional[str] = ..., facilities: _Optional[_Iterable[str]] = ...) -> None: ...

class RevokeSessionRequest(_message.Message):
    __slots__ = ("jti", "expires_at")
    JTI_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    jti: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, jti: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RevokeSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RedeemViewerCodeRequest(_message.Message):
    __slots__ = ("jti", "expires_at", "client_address")
    JTI_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    jti: str
    expires_at: _timestamp_pb2.Timestamp
    client_address: str
    def __init__(self, jti: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., client_address: _Optional[str] = ...) -> None: ...

class RedeemViewerCodeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CheckSessionRequest(_message.Message):
    __slots__ = ("jti", "user_id", "issued_at")
    JTI_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    jti: str
    user_id: str
    issued_at: int
    def __init__(self, jti: _Optional[str] = ..., user_id: _Optional[str] = ..., issued_at: _Optional[int] = ...) -> None: ...

class CheckSessionResponse(_message.Message):
    __slots__ = ("revoked", "reason")
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    revoked: bool
    reason: str
    def __init__(self, revoked: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class Patient(_message.Message):
    __slots__ = ("name", "name_ideographic", "name_phonetic", "id", "sex", "birth_date", "age")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAME_IDEOGRAPHIC_FIELD_NUMBER: _ClassVar[int]
    NAME_PHONETIC_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SEX_FIELD_NUMBER: _ClassVar[int]
    BIRTH_DATE_FIELD_NUMBER: _ClassVar[int]
    AGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    name_ideographic: str
    name_phonetic: str
    id: str
    sex: str
    birth_date: str
    age: str
    def __init__(self, name: _Optional[str] = ..., name_ideographic: _Optional[str] = ..., name_phonetic: _Optional[str] = ..., id: _Optional[str] = ..., sex: _Optional[str] = ..., birth_date: _Optional[str] = ..., age: _Optional[str] = ...) -> None: ...

class WorklistStudy(_message.Message):
    __slots__ = ("study", "patient", "study_date", "referring_physician", "body_part", "finding_count", "max_confidence", "assigned_to", "review_ai_status")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    PATIENT_FIELD_NUMBER: _ClassVar[int]
    STUDY_DATE_FIELD_NUMBER: _ClassVar[int]
    REFERRING_PHYSICIAN_FIELD_NUMBER: _ClassVar[int]
    BODY_PART_FIELD_NUMBER: _ClassVar[int]
    FINDING_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_TO_FIELD_NUMBER: _ClassVar[int]
    REVIEW_AI_STATUS_FIELD_NUMBER: _ClassVar[int]
    study: _workflow_service_pb2.Study
    patient: Patient
    study_date: str
    referring_physician: str
    body_part: str
    finding_count: int
    max_confidence: float
    assigned_to: str
    review_ai_status: str
    def __init__(self, study: _Optional[_Union[_workflow_service_pb2.Study, _Mapping]] = ..., patient: _Optional[_Union[Patient, _Mapping]] = ..., study_date: _Optional[str] = ..., referring_physician: _Optional[str] = ..., body_part: _Optional[str] = ..., finding_count: _Optional[int] = ..., max_confidence: _Optional[float] = ..., assigned_to: _Optional[str] = ..., review_ai_status: _Optional[str] = ...) -> None: ...

class ListWorklistRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "state", "modality", "ai_status", "date_from", "date_to", "assigned_to_me", "facility", "accession", "sort", "eligible", "patient_query")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    AI_STATUS_FIELD_NUMBER: _ClassVar[int]
    DATE_FROM_FIELD_NUMBER: _ClassVar[int]
    DATE_TO_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_TO_ME_FIELD_NUMBER: _ClassVar[int]
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    ACCESSION_FIELD_NUMBER: _ClassVar[int]
    SORT_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_FIELD_NUMBER: _ClassVar[int]
    PATIENT_QUERY_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    state: str
    modality: str
    ai_status: str
    date_from: str
    date_to: str
    assigned_to_me: bool
    facility: str
    accession: str
    sort: str
    eligible: str
    patient_query: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state: _Optional[str] = ..., modality: _Optional[str] = ..., ai_status: _Optional[str] = ..., date_from: _Optional[str] = ..., date_to: _Optional[str] = ..., assigned_to_me: _Optional[bool] = ..., facility: _Optional[str] = ..., accession: _Optional[str] = ..., sort: _Optional[str] = ..., eligible: _Optional[str] = ..., patient_query: _Optional[str] = ...) -> None: ...

class ListWorklistResponse(_message.Message):
    __slots__ = ("studies", "next_page_token")
    STUDIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    studies: _containers.RepeatedCompositeFieldContainer[WorklistStudy]
    next_page_token: str
    def __init__(self, studies: _Optional[_Iterable[_Union[WorklistStudy, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetStudyDetailRequest(_message.Message):
    __slots__ = ("study_id",)
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    def __init__(self, study_id: _Optional[str] = ...) -> None: ...

class GetStudyDetailResponse(_message.Message):
    __slots__ = ("study", "state_history", "series")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    STATE_HISTORY_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    study: WorklistStudy
    state_history: _containers.RepeatedCompositeFieldContainer[_workflow_service_pb2.StateTransition]
    series: _containers.RepeatedCompositeFieldContainer[_workflow_service_pb2.Series]
    def __init__(self, study: _Optional[_Union[WorklistStudy, _Mapping]] = ..., state_history: _Optional[_Iterable[_Union[_workflow_service_pb2.StateTransition, _Mapping]]] = ..., series: _Optional[_Iterable[_Union[_workflow_service_pb2.Series, _Mapping]]] = ...) -> None: ...

class ClaimStudyRequest(_message.Message):
    __slots__ = ("study_id",)
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    def __init__(self, study_id: _Optional[str] = ...) -> None: ...

class ClaimStudyResponse(_message.Message):
    __slots__ = ("study",)
    STUDY_FIELD_NUMBER: _ClassVar[int]
    study: WorklistStudy
    def __init__(self, study: _Optional[_Union[WorklistStudy, _Mapping]] = ...) -> None: ...

class ReleaseStudyRequest(_message.Message):
    __slots__ = ("study_id",)
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    def __init__(self, study_id: _Optional[str] = ...) -> None: ...

class ReleaseStudyResponse(_message.Message):
    __slots__ = ("study",)
    STUDY_FIELD_NUMBER: _ClassVar[int]
    study: WorklistStudy
    def __init__(self, study: _Optional[_Union[WorklistStudy, _Mapping]] = ...) -> None: ...

class OpenStudyRequest(_message.Message):
    __slots__ = ("study_id",)
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    def __init__(self, study_id: _Optional[str] = ...) -> None: ...

class OpenStudyResponse(_message.Message):
    __slots__ = ("study",)
    STUDY_FIELD_NUMBER: _ClassVar[int]
    study: WorklistStudy
    def __init__(self, study: _Optional[_Union[WorklistStudy, _Mapping]] = ...) -> None: ...

class CompleteReviewRequest(_message.Message):
    __slots__ = ("study_id",)
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    def __init__(self, study_id: _Optional[str] = ...) -> None: ...

class CompleteReviewResponse(_message.Message):
    __slots__ = ("study",)
    STUDY_FIELD_NUMBER: _ClassVar[int]
    study: WorklistStudy
    def __init__(self, study: _Optional[_Union[WorklistStudy, _Mapping]] = ...) -> None: ...

class RecordAccessRequest(_message.Message):
    __slots__ = ("study_id", "type", "finding_id", "visible")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    FINDING_ID_FIELD_NUMBER: _ClassVar[int]
    VISIBLE_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    type: str
    finding_id: str
    visible: bool
    def __init__(self, study_id: _Optional[str] = ..., type: _Optional[str] = ..., finding_id: _Optional[str] = ..., visible: _Optional[bool] = ...) -> None: ...

class RecordAccessResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PhiAccess(_message.Message):
    __slots__ = ("user_token", "at", "client_address", "what", "method", "route", "status", "reason", "study_ids", "study_instance_uids", "series_instance_uids", "count", "query")
    USER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    WHAT_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STUDY_IDS_FIELD_NUMBER: _ClassVar[int]
    STUDY_INSTANCE_UIDS_FIELD_NUMBER: _ClassVar[int]
    SERIES_INSTANCE_UIDS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    user_token: str
    at: _timestamp_pb2.Timestamp
    client_address: str
    what: str
    method: str
    route: str
    status: int
    reason: str
    study_ids: _containers.RepeatedScalarFieldContainer[str]
    study_instance_uids: _containers.RepeatedScalarFieldContainer[str]
    series_instance_uids: _containers.RepeatedScalarFieldContainer[str]
    count: int
    query: str
    def __init__(self, user_token: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., client_address: _Optional[str] = ..., what: _Optional[str] = ..., method: _Optional[str] = ..., route: _Optional[str] = ..., status: _Optional[int] = ..., reason: _Optional[str] = ..., study_ids: _Optional[_Iterable[str]] = ..., study_instance_uids: _Optional[_Iterable[str]] = ..., series_instance_uids: _Optional[_Iterable[str]] = ..., count: _Optional[int] = ..., query: _Optional[str] = ...) -> None: ...

class RecordPhiAccessRequest(_message.Message):
    __slots__ = ("accesses",)
    ACCESSES_FIELD_NUMBER: _ClassVar[int]
    accesses: _containers.RepeatedCompositeFieldContainer[PhiAccess]
    def __init__(self, accesses: _Optional[_Iterable[_Union[PhiAccess, _Mapping]]] = ...) -> None: ...

class RecordPhiAccessResponse(_message.Message):
    __slots__ = ("recorded",)
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    recorded: int
    def __init__(self, recorded: _Optional[int] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("action", "reason", "note", "by", "at")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    action: str
    reason: str
    note: str
    by: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, action: _Optional[str] = ..., reason: _Optional[str] = ..., note: _Optional[str] = ..., by: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CurrentFinding(_message.Message):
    __slots__ = ("label", "bbox_px", "text", "include_in_draft")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    BBOX_PX_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_IN_DRAFT_FIELD_NUMBER: _ClassVar[int]
    label: str
    bbox_px: _containers.RepeatedScalarFieldContainer[float]
    text: str
    include_in_draft: bool
    def __init__(self, label: _Optional[str] = ..., bbox_px: _Optional[_Iterable[float]] = ..., text: _Optional[str] = ..., include_in_draft: _Optional[bool] = ...) -> None: ...

class ReviewFinding(_message.Message):
    __slots__ = ("finding", "state", "origin", "below_threshold", "version", "decision", "current")
    FINDING_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    BELOW_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    finding: _common_pb2.Finding
    state: _workflow_service_pb2.FindingState
    origin: str
    below_threshold: bool
    version: int
    decision: Decision
    current: CurrentFinding
    def __init__(self, finding: _Optional[_Union[_common_pb2.Finding, _Mapping]] = ..., state: _Optional[_Union[_workflow_service_pb2.FindingState, _Mapping]] = ..., origin: _Optional[str] = ..., below_threshold: _Optional[bool] = ..., version: _Optional[int] = ..., decision: _Optional[_Union[Decision, _Mapping]] = ..., current: _Optional[_Union[CurrentFinding, _Mapping]] = ...) -> None: ...

class ListReviewFindingsRequest(_message.Message):
    __slots__ = ("study_id", "include_hidden")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_HIDDEN_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    include_hidden: bool
    def __init__(self, study_id: _Optional[str] = ..., include_hidden: _Optional[bool] = ...) -> None: ...

class ListReviewFindingsResponse(_message.Message):
    __slots__ = ("findings",)
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    findings: _containers.RepeatedCompositeFieldContainer[ReviewFinding]
    def __init__(self, findings: _Optional[_Iterable[_Union[ReviewFinding, _Mapping]]] = ...) -> None: ...

class DecideFindingRequest(_message.Message):
    __slots__ = ("study_id", "finding_id", "action", "expected_version", "reason", "note", "bbox_px", "label", "text", "request_id")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    FINDING_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    BBOX_PX_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    finding_id: str
    action: str
    expected_version: int
    reason: str
    note: str
    bbox_px: _containers.RepeatedScalarFieldContainer[float]
    label: str
    text: str
    request_id: str
    def __init__(self, study_id: _Optional[str] = ..., finding_id: _Optional[str] = ..., action: _Optional[str] = ..., expected_version: _Optional[int] = ..., reason: _Optional[str] = ..., note: _Optional[str] = ..., bbox_px: _Optional[_Iterable[float]] = ..., label: _Optional[str] = ..., text: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DecideFindingResponse(_message.Message):
    __slots__ = ("finding",)
    FINDING_FIELD_NUMBER: _ClassVar[int]
    finding: ReviewFinding
    def __init__(self, finding: _Optional[_Union[ReviewFinding, _Mapping]] = ...) -> None: ...

class AddFindingRequest(_message.Message):
    __slots__ = ("study_id", "label", "bbox_px", "series_instance_uid", "sop_instance_uid", "frame", "text", "request_id")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    BBOX_PX_FIELD_NUMBER: _ClassVar[int]
    SERIES_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    SOP_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    label: str
    bbox_px: _containers.RepeatedScalarFieldContainer[float]
    series_instance_uid: str
    sop_instance_uid: str
    frame: int
    text: str
    request_id: str
    def __init__(self, study_id: _Optional[str] = ..., label: _Optional[str] = ..., bbox_px: _Optional[_Iterable[float]] = ..., series_instance_uid: _Optional[str] = ..., sop_instance_uid: _Optional[str] = ..., frame: _Optional[int] = ..., text: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class AddFindingResponse(_message.Message):
    __slots__ = ("finding",)
    FINDING_FIELD_NUMBER: _ClassVar[int]
    finding: ReviewFinding
    def __init__(self, finding: _Optional[_Union[ReviewFinding, _Mapping]] = ...) -> None: ...

class ListFindingHistoryRequest(_message.Message):
    __slots__ = ("study_id", "finding_id")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    FINDING_ID_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    finding_id: str
    def __init__(self, study_id: _Optional[str] = ..., finding_id: _Optional[str] = ...) -> None: ...

class ReviewHistoryEvent(_message.Message):
    __slots__ = ("event_id", "action", "by", "at", "version", "details")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    action: str
    by: str
    at: _timestamp_pb2.Timestamp
    version: int
    details: _struct_pb2.Struct
    def __init__(self, event_id: _Optional[str] = ..., action: _Optional[str] = ..., by: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[int] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ListFindingHistoryResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[ReviewHistoryEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[ReviewHistoryEvent, _Mapping]]] = ...) -> None: ...

class PriorStudy(_message.Message):
    __slots__ = ("prior_id", "study_instance_uid", "study_date", "description", "modalities", "accession", "instance_count", "retrieve_status", "retrieved_count", "last_error", "retrieved_study_id")
    PRIOR_ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    STUDY_DATE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MODALITIES_FIELD_NUMBER: _ClassVar[int]
    ACCESSION_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    RETRIEVE_STATUS_FIELD_NUMBER: _ClassVar[int]
    RETRIEVED_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    RETRIEVED_STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    prior_id: str
    study_instance_uid: str
    study_date: str
    description: str
    modalities: _containers.RepeatedScalarFieldContainer[str]
    accession: str
    instance_count: int
    retrieve_status: str
    retrieved_count: int
    last_error: str
    retrieved_study_id: str
    def __init__(self, prior_id: _Optional[str] = ..., study_instance_uid: _Optional[str] = ..., study_date: _Optional[str] = ..., description: _Optional[str] = ..., modalities: _Optional[_Iterable[str]] = ..., accession: _Optional[str] = ..., instance_count: _Optional[int] = ..., retrieve_status: _Optional[str] = ..., retrieved_count: _Optional[int] = ..., last_error: _Optional[str] = ..., retrieved_study_id: _Optional[str] = ...) -> None: ...

class ListPriorsRequest(_message.Message):
    __slots__ = ("study_id", "page_size", "page_token")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    page_size: int
    page_token: str
    def __init__(self, study_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPriorsResponse(_message.Message):
    __slots__ = ("priors", "lookup_status", "next_page_token")
    PRIORS_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_STATUS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    priors: _containers.RepeatedCompositeFieldContainer[PriorStudy]
    lookup_status: str
    next_page_token: str
    def __init__(self, priors: _Optional[_Iterable[_Union[PriorStudy, _Mapping]]] = ..., lookup_status: _Optional[str] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RetrievePriorRequest(_message.Message):
    __slots__ = ("study_id", "prior_id", "request_id")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    PRIOR_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    prior_id: str
    request_id: str
    def __init__(self, study_id: _Optional[str] = ..., prior_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RetrievePriorResponse(_message.Message):
    __slots__ = ("prior",)
    PRIOR_FIELD_NUMBER: _ClassVar[int]
    prior: PriorStudy
    def __init__(self, prior: _Optional[_Union[PriorStudy, _Mapping]] = ...) -> None: ...
