import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResultStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESULT_STATUS_UNSPECIFIED: _ClassVar[ResultStatus]
    RESULT_STATUS_PRELIMINARY: _ClassVar[ResultStatus]
    RESULT_STATUS_FINAL: _ClassVar[ResultStatus]
    RESULT_STATUS_CORRECTED: _ClassVar[ResultStatus]
RESULT_STATUS_UNSPECIFIED: ResultStatus
RESULT_STATUS_PRELIMINARY: ResultStatus
RESULT_STATUS_FINAL: ResultStatus
RESULT_STATUS_CORRECTED: ResultStatus

class CompleteReportRequest(_message.Message):
    __slots__ = ("request_id", "facility", "accession", "report_reference", "result_status", "completed_at", "observed_at")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    ACCESSION_FIELD_NUMBER: _ClassVar[int]
    REPORT_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    RESULT_STATUS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    facility: str
    accession: str
    report_reference: str
    result_status: ResultStatus
    completed_at: _timestamp_pb2.Timestamp
    observed_at: _timestamp_pb2.Timestamp
    def __init__(self, request_id: _Optional[str] = ..., facility: _Optional[str] = ..., accession: _Optional[str] = ..., report_reference: _Optional[str] = ..., result_status: _Optional[_Union[ResultStatus, str]] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., observed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CompleteReportResponse(_message.Message):
    __slots__ = ("legacy_report_id", "matched", "study_ids", "duplicate")
    LEGACY_REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    STUDY_IDS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    legacy_report_id: str
    matched: bool
    study_ids: _containers.RepeatedScalarFieldContainer[str]
    duplicate: bool
    def __init__(self, legacy_report_id: _Optional[str] = ..., matched: _Optional[bool] = ..., study_ids: _Optional[_Iterable[str]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class SubmitHl7MessageRequest(_message.Message):
    __slots__ = ("message", "peer")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    message: bytes
    peer: str
    def __init__(self, message: _Optional[bytes] = ..., peer: _Optional[str] = ...) -> None: ...

class SubmitHl7MessageResponse(_message.Message):
    __slots__ = ("acks", "code", "error_location", "error_message")
    ACKS_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_LOCATION_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    acks: _containers.RepeatedScalarFieldContainer[bytes]
    code: str
    error_location: str
    error_message: str
    def __init__(self, acks: _Optional[_Iterable[bytes]] = ..., code: _Optional[str] = ..., error_location: _Optional[str] = ..., error_message: _Optional[str] = ...) -> None: ...

class DraftSentence(_message.Message):
    __slots__ = ("text", "finding_ids")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FINDING_IDS_FIELD_NUMBER: _ClassVar[int]
    text: str
    finding_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, text: _Optional[str] = ..., finding_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Draft(_message.Message):
    __slots__ = ("draft_id", "study_id", "version", "status", "generator", "text", "sentences", "author", "assistive", "trace_id", "created_at")
    DRAFT_ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SENTENCES_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    ASSISTIVE_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    draft_id: str
    study_id: str
    version: int
    status: str
    generator: str
    text: str
    sentences: _containers.RepeatedCompositeFieldContainer[DraftSentence]
    author: str
    assistive: bool
    trace_id: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, draft_id: _Optional[str] = ..., study_id: _Optional[str] = ..., version: _Optional[int] = ..., status: _Optional[str] = ..., generator: _Optional[str] = ..., text: _Optional[str] = ..., sentences: _Optional[_Iterable[_Union[DraftSentence, _Mapping]]] = ..., author: _Optional[str] = ..., assistive: _Optional[bool] = ..., trace_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GenerateDraftRequest(_message.Message):
    __slots__ = ("study_id", "request_id")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    request_id: str
    def __init__(self, study_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class GenerateDraftResponse(_message.Message):
    __slots__ = ("draft", "llm_failed", "llm_error")
    DRAFT_FIELD_NUMBER: _ClassVar[int]
    LLM_FAILED_FIELD_NUMBER: _ClassVar[int]
    LLM_ERROR_FIELD_NUMBER: _ClassVar[int]
    draft: Draft
    llm_failed: bool
    llm_error: str
    def __init__(self, draft: _Optional[_Union[Draft, _Mapping]] = ..., llm_failed: _Optional[bool] = ..., llm_error: _Optional[str] = ...) -> None: ...

class GetDraftRequest(_message.Message):
    __slots__ = ("study_id",)
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    def __init__(self, study_id: _Optional[str] = ...) -> None: ...

class GetDraftResponse(_message.Message):
    __slots__ = ("versions", "llm_error")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    LLM_ERROR_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[Draft]
    llm_error: str
    def __init__(self, versions: _Optional[_Iterable[_Union[Draft, _Mapping]]] = ..., llm_error: _Optional[str] = ...) -> None: ...

class EditDraftRequest(_message.Message):
    __slots__ = ("study_id", "expected_version", "text")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    expected_version: int
    text: str
    def __init__(self, study_id: _Optional[str] = ..., expected_version: _Optional[int] = ..., text: _Optional[str] = ...) -> None: ...

class EditDraftResponse(_message.Message):
    __slots__ = ("draft",)
    DRAFT_FIELD_NUMBER: _ClassVar[int]
    draft: Draft
    def __init__(self, draft: _Optional[_Union[Draft, _Mapping]] = ...) -> None: ...

class AcceptDraftRequest(_message.Message):
    __slots__ = ("study_id", "expected_version")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    expected_version: int
    def __init__(self, study_id: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class AcceptDraftResponse(_message.Message):
    __slots__ = ("draft",)
    DRAFT_FIELD_NUMBER: _ClassVar[int]
    draft: Draft
    def __init__(self, draft: _Optional[_Union[Draft, _Mapping]] = ...) -> None: ...

class ChatCitation(_message.Message):
    __slots__ = ("ref", "kind", "target_id")
    REF_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TARGET_ID_FIELD_NUMBER: _ClassVar[int]
    ref: str
    kind: str
    target_id: str
    def __init__(self, ref: _Optional[str] = ..., kind: _Optional[str] = ..., target_id: _Optional[str] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("message_id", "role", "text", "citations", "uncited_sentences", "trace_id", "user_id", "created_at")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    UNCITED_SENTENCES_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    role: str
    text: str
    citations: _containers.RepeatedCompositeFieldContainer[ChatCitation]
    uncited_sentences: int
    trace_id: str
    user_id: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, message_id: _Optional[str] = ..., role: _Optional[str] = ..., text: _Optional[str] = ..., citations: _Optional[_Iterable[_Union[ChatCitation, _Mapping]]] = ..., uncited_sentences: _Optional[int] = ..., trace_id: _Optional[str] = ..., user_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ChatRequest(_message.Message):
    __slots__ = ("study_id", "message")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    message: str
    def __init__(self, study_id: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ChatResponse(_message.Message):
    __slots__ = ("answer", "llm_failed", "llm_error", "timed_out")
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    LLM_FAILED_FIELD_NUMBER: _ClassVar[int]
    LLM_ERROR_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    answer: ChatMessage
    llm_failed: bool
    llm_error: str
    timed_out: bool
    def __init__(self, answer: _Optional[_Union[ChatMessage, _Mapping]] = ..., llm_failed: _Optional[bool] = ..., llm_error: _Optional[str] = ..., timed_out: _Optional[bool] = ...) -> None: ...

class GetChatRequest(_message.Message):
    __slots__ = ("study_id",)
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    def __init__(self, study_id: _Optional[str] = ...) -> None: ...

class GetChatResponse(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ...) -> None: ...
