import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from protos.sidecar.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StudyReceived(_message.Message):
    __slots__ = ("study_id", "study", "instance_count", "is_update", "completed_at")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    IS_UPDATE_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    study: _common_pb2.StudyKey
    instance_count: int
    is_update: bool
    completed_at: _timestamp_pb2.Timestamp
    def __init__(self, study_id: _Optional[str] = ..., study: _Optional[_Union[_common_pb2.StudyKey, _Mapping]] = ..., instance_count: _Optional[int] = ..., is_update: _Optional[bool] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PreprocessJob(_message.Message):
    __slots__ = ("job_id", "study_id", "study")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    study_id: str
    study: _common_pb2.StudyKey
    def __init__(self, job_id: _Optional[str] = ..., study_id: _Optional[str] = ..., study: _Optional[_Union[_common_pb2.StudyKey, _Mapping]] = ...) -> None: ...

class PreprocessCompleted(_message.Message):
    __slots__ = ("job_id", "study_id", "ready_series_ids", "failed_series_ids", "failed_object_count", "failed", "error_class", "error_message")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    READY_SERIES_IDS_FIELD_NUMBER: _ClassVar[int]
    FAILED_SERIES_IDS_FIELD_NUMBER: _ClassVar[int]
    FAILED_OBJECT_COUNT_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    ERROR_CLASS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    study_id: str
    ready_series_ids: _containers.RepeatedScalarFieldContainer[str]
    failed_series_ids: _containers.RepeatedScalarFieldContainer[str]
    failed_object_count: int
    failed: bool
    error_class: str
    error_message: str
    def __init__(self, job_id: _Optional[str] = ..., study_id: _Optional[str] = ..., ready_series_ids: _Optional[_Iterable[str]] = ..., failed_series_ids: _Optional[_Iterable[str]] = ..., failed_object_count: _Optional[int] = ..., failed: _Optional[bool] = ..., error_class: _Optional[str] = ..., error_message: _Optional[str] = ...) -> None: ...

class InstancesStored(_message.Message):
    __slots__ = ("instances",)
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[StoredInstance]
    def __init__(self, instances: _Optional[_Iterable[_Union[StoredInstance, _Mapping]]] = ...) -> None: ...

class StoredInstance(_message.Message):
    __slots__ = ("study_instance_uid", "series_instance_uid", "sop_instance_uid", "object_key", "modality", "body_part")
    STUDY_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    SERIES_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    SOP_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    BODY_PART_FIELD_NUMBER: _ClassVar[int]
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    object_key: str
    modality: str
    body_part: str
    def __init__(self, study_instance_uid: _Optional[str] = ..., series_instance_uid: _Optional[str] = ..., sop_instance_uid: _Optional[str] = ..., object_key: _Optional[str] = ..., modality: _Optional[str] = ..., body_part: _Optional[str] = ...) -> None: ...

class AiRunJob(_message.Message):
    __slots__ = ("job_id", "ai_run_id", "study_id", "series_id", "model_name", "study")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AI_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    SERIES_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    STUDY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    ai_run_id: str
    study_id: str
    series_id: str
    model_name: str
    study: _common_pb2.StudyKey
    def __init__(self, job_id: _Optional[str] = ..., ai_run_id: _Optional[str] = ..., study_id: _Optional[str] = ..., series_id: _Optional[str] = ..., model_name: _Optional[str] = ..., study: _Optional[_Union[_common_pb2.StudyKey, _Mapping]] = ...) -> None: ...

class AiRunFinished(_message.Message):
    __slots__ = ("ai_run_id", "study_id", "status", "findings", "error_class", "error_message", "attempts", "latency_ms", "model_version")
    class LatencyMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    AI_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CLASS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ai_run_id: str
    study_id: str
    status: str
    findings: _containers.RepeatedCompositeFieldContainer[_common_pb2.Finding]
    error_class: str
    error_message: str
    attempts: int
    latency_ms: _containers.ScalarMap[str, float]
    model_version: str
    def __init__(self, ai_run_id: _Optional[str] = ..., study_id: _Optional[str] = ..., status: _Optional[str] = ..., findings: _Optional[_Iterable[_Union[_common_pb2.Finding, _Mapping]]] = ..., error_class: _Optional[str] = ..., error_message: _Optional[str] = ..., attempts: _Optional[int] = ..., latency_ms: _Optional[_Mapping[str, float]] = ..., model_version: _Optional[str] = ...) -> None: ...

class AiRunFindingsStored(_message.Message):
    __slots__ = ("ai_run_id", "study_id", "study", "model_name", "model_version", "finding_count")
    AI_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FINDING_COUNT_FIELD_NUMBER: _ClassVar[int]
    ai_run_id: str
    study_id: str
    study: _common_pb2.StudyKey
    model_name: str
    model_version: str
    finding_count: int
    def __init__(self, ai_run_id: _Optional[str] = ..., study_id: _Optional[str] = ..., study: _Optional[_Union[_common_pb2.StudyKey, _Mapping]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., finding_count: _Optional[int] = ...) -> None: ...

class AuditRecorded(_message.Message):
    __slots__ = ("event_id", "type", "at", "actor", "study", "study_id", "job_id", "attempt", "error_class", "error_message", "context")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    STUDY_FIELD_NUMBER: _ClassVar[int]
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ERROR_CLASS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    type: str
    at: _timestamp_pb2.Timestamp
    actor: str
    study: _common_pb2.StudyKey
    study_id: str
    job_id: str
    attempt: int
    error_class: str
    error_message: str
    context: _struct_pb2.Struct
    def __init__(self, event_id: _Optional[str] = ..., type: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., study: _Optional[_Union[_common_pb2.StudyKey, _Mapping]] = ..., study_id: _Optional[str] = ..., job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., error_class: _Optional[str] = ..., error_message: _Optional[str] = ..., context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("original_subject", "original_payload", "original_msg_id", "deliveries", "consumer", "error_class", "error_message", "at")
    ORIGINAL_SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    ERROR_CLASS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    original_subject: str
    original_payload: bytes
    original_msg_id: str
    deliveries: int
    consumer: str
    error_class: str
    error_message: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, original_subject: _Optional[str] = ..., original_payload: _Optional[bytes] = ..., original_msg_id: _Optional[str] = ..., deliveries: _Optional[int] = ..., consumer: _Optional[str] = ..., error_class: _Optional[str] = ..., error_message: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
