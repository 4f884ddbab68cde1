"""SQLAlchemy 2 models of the workflow store (one PostgreSQL schema shared by the services)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sidecar_core.ai_run_status import AiRunStatus

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSONB, list[Any]: JSONB}


def _uuid() -> uuid.UUID:
    return uuid.uuid4()


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Facility(Base):
    __tablename__ = "facilities"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    ae_title: Mapped[str | None] = mapped_column(String(16), unique=True)
    shadow_mode: Mapped[bool] = mapped_column(Boolean, default=False)
    quiet_period_s: Mapped[float] = mapped_column(Float, default=5.0)
    enabled_models: Mapped[list[Any] | None] = mapped_column(JSONB, default=None)
    created_at: Mapped[datetime] = _created()
    # report loop (0008): HL7 MSH-4, handoff webhook, LLM endpoint, PACS export destination
    hl7_sending_facility: Mapped[str | None] = mapped_column(String(64), unique=True)
    handoff_url: Mapped[str | None] = mapped_column(Text)
    handoff_secret: Mapped[str | None] = mapped_column(Text)
    llm_base_url: Mapped[str | None] = mapped_column(Text)
    llm_model: Mapped[str | None] = mapped_column(String(128))
    llm_api_key: Mapped[str | None] = mapped_column(Text)
    llm_timeout_s: Mapped[float] = mapped_column(Float, default=30.0, server_default="30")
    pacs_ae_title: Mapped[str | None] = mapped_column(String(16))
    pacs_host: Mapped[str | None] = mapped_column(String(255))
    pacs_port: Mapped[int | None] = mapped_column(Integer)
    export_rejected: Mapped[str] = mapped_column(String(16), default="omit",
                                                 server_default="omit")
    # quiet | association | explicit (migration 0009; ingest_svc.study.completion)
    completion_mode: Mapped[str] = mapped_column(String(16), default="quiet",
                                                 server_default="quiet")
    association_settle_s: Mapped[float] = mapped_column(Float, default=1.0,
                                                        server_default="1.0")
    # DICOM TLS (0103): a verified client certificate required of this facility's senders, the
    # peer addresses (CIDR list, comma-separated; NULL = any) allowed on both DICOM ports, and
    # DICOM TLS for the export to its PACS
    dicom_require_client_cert: Mapped[bool] = mapped_column(Boolean, default=False,
                                                            server_default=false())
    dicom_allowed_hosts: Mapped[str | None] = mapped_column(String(2000))
    pacs_tls: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # retention (0113, workflow_svc/operations/retention.py): days after a study's final state
    # until its objects are deleted (NULL = kept), and its report text (NULL = retention_days)
    retention_days: Mapped[int | None] = mapped_column(Integer)
    report_retention_days: Mapped[int | None] = mapped_column(Integer)
    # the assistant's clinical context (0119): the prior reports' look-back and maximum (NULL =
    # 3 years, 5), and the facility's DICOMweb PACS (QIDO-RS, WADO-RS) with its sealed credential
    prior_report_lookback_days: Mapped[int | None] = mapped_column(Integer)
    prior_report_max: Mapped[int | None] = mapped_column(Integer)
    pacs_dicomweb_url: Mapped[str | None] = mapped_column(Text)
    pacs_dicomweb_auth: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (CheckConstraint("completion_mode IN ('quiet', 'association', 'explicit')",
                                      name="completion_mode"),)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("oidc_issuer", "oidc_subject"),)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))
    facility_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("facilities.id"))
    created_at: Mapped[datetime] = _created()
    # Refused at login and on every request (within the revocation cache time) while set.
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Every session token issued before this moment is revoked (revoke-sessions, a reset).
    sessions_revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                                 nullable=True)
    # A single sign-on account: the OpenID provider's issuer and the user's subject there
    # (provisioned at first sign-on; no usable password).
    oidc_issuer: Mapped[str | None] = mapped_column(String(512), nullable=True)
    oidc_subject: Mapped[str | None] = mapped_column(String(255), nullable=True)


class Study(Base):
    __tablename__ = "studies"
    __table_args__ = (UniqueConstraint("facility_id", "accession", "study_instance_uid"),)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    facility_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("facilities.id"), index=True)
    accession: Mapped[str] = mapped_column(String(64), index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    modality: Mapped[str] = mapped_column(String(64), default="")
    description: Mapped[str] = mapped_column(String(256), default="")
    # Ingest side: receiving -> complete; reopened to receiving by late instances.
    ingest_status: Mapped[str] = mapped_column(String(16), default="receiving", index=True)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    last_instance_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completion_count: Mapped[int] = mapped_column(Integer, default=0)
    # Workflow side (NULL until the workflow registers the study).
    state: Mapped[str | None] = mapped_column(String(32), index=True)
    eligible: Mapped[bool | None] = mapped_column(Boolean)
    eligibility_reason: Mapped[str] = mapped_column(Text, default="")
    eligible_models: Mapped[list[Any] | None] = mapped_column(JSONB, default=None)
    partial: Mapped[bool] = mapped_column(Boolean, default=False)
    ai_status: Mapped[str] = mapped_column(String(16), default="")
    llm_status: Mapped[str] = mapped_column(String(16), default="")
    review_status: Mapped[str] = mapped_column(String(16), default="")
    handoff_status: Mapped[str] = mapped_column(String(16), default="")
    assigned_user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    assigned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # patient and study attributes read at ingest (migration 0005, docs/readme/wado.md)
    dicom_attributes: Mapped[dict[str, Any]] = mapped_column(
        JSONB, default=dict, server_default=text("'{}'::jsonb"))
    # when retention deleted the study's objects, and its report text (0113)
    objects_deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reports_deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class Series(Base):
    __tablename__ = "series"
    __table_args__ = (UniqueConstraint("study_id", "series_instance_uid"),)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("studies.id"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    modality: Mapped[str] = mapped_column(String(16), default="")
    body_part: Mapped[str] = mapped_column(String(64), default="")
    description: Mapped[str] = mapped_column(String(256), default="")
    series_number: Mapped[int | None] = mapped_column(Integer)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    preprocess_status: Mapped[str] = mapped_column(String(16), default="")
    slice_count: Mapped[int] = mapped_column(Integer, default=0)
    presets: Mapped[list[Any] | None] = mapped_column(JSONB, default=None)
    slice_refs: Mapped[list[Any] | None] = mapped_column(JSONB, default=None)  # [[sop, frame]]
    windows: Mapped[dict[str, Any] | None] = mapped_column(JSONB, default=None)  # per preset
    created_at: Mapped[datetime] = _created()


class Instance(Base):
    __tablename__ = "instances"
    __table_args__ = (UniqueConstraint("series_id", "sop_instance_uid"),)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    series_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("series.id"), index=True)
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("studies.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64), default="")
    instance_number: Mapped[int | None] = mapped_column(Integer)
    object_key: Mapped[str] = mapped_column(String(128))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    source: Mapped[str] = mapped_column(String(16), default="grpc")
    created_at: Mapped[datetime] = _created()


class Asset(Base):
    __tablename__ = "assets"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("studies.id"), index=True)
    series_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("series.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    preset: Mapped[str] = mapped_column(String(32), default="")
    slice_index: Mapped[int] = mapped_column(Integer, default=-1)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    frame: Mapped[int] = mapped_column(Integer, default=0)
    object_key: Mapped[str] = mapped_column(String(128))
    content_type: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    meta: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = _created()


class AiRun(Base):
    __tablename__ = "ai_runs"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("studies.id"), index=True)
    series_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("series.id"))
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(32), default="")
    # an AiRunStatus value (sidecar_core.ai_run_status)
    status: Mapped[str] = mapped_column(String(16), default=AiRunStatus.QUEUED.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_class: Mapped[str] = mapped_column(String(64), default="")
    error_message: Mapped[str] = mapped_column(Text, default="")
    latency_ms: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = _created()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # the model's operating threshold when its findings were stored (migration 0009)
    operating_threshold: Mapped[float | None] = mapped_column(Float)


class Finding(Base):
    __tablename__ = "findings"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    # NULL for a finding a radiologist added (origin "radiologist").
    ai_run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("ai_runs.id"), index=True)
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("studies.id"), index=True)
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(32))
    label: Mapped[str] = mapped_column(String(128))
    code: Mapped[str] = mapped_column(String(64), default="")
    confidence: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(16))
    series_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    sop_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    frame: Mapped[int] = mapped_column(Integer, default=1)
    bbox_px: Mapped[list[Any] | None] = mapped_column(JSONB)
    center_mm: Mapped[list[Any] | None] = mapped_column(JSONB)
    points_px: Mapped[list[Any] | None] = mapped_column(JSONB)
    mask_object_key: Mapped[str] = mapped_column(String(128), default="")
    measurements: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    summary: Mapped[str] = mapped_column(Text, default="")
    visible: Mapped[bool] = mapped_column(Boolean, default=True)
    review_status: Mapped[str] = mapped_column(String(16), default="pending")
    origin: Mapped[str] = mapped_column(String(16), default="ai")
    # Bumped by every review decision (optimistic concurrency); `review_current` holds the
    # radiologist's label, box, text and draft flag and the latest decision.
    review_version: Mapped[int] = mapped_column(Integer, default=0)
    review_current: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = _created()


class ReviewEvent(Base):
    __tablename__ = "review_events"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("studies.id"), index=True)
    finding_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("findings.id"), index=True)
    ai_run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("ai_runs.id"))
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    request_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    model_name: Mapped[str] = mapped_column(String(64), default="")
    model_version: Mapped[str] = mapped_column(String(32), default="")
    at: Mapped[datetime] = _created()


class Draft(Base):
    __tablename__ = "drafts"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("studies.id"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    generator: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text, default="")
    context: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = _created()
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    parent_id: Mapped[uuid.UUID | None] = mapped_column()
    sentences: Mapped[list[Any]] = mapped_column(JSONB, default=list, server_default="[]")
    author: Mapped[str] = mapped_column(String(64), default="", server_default="")
    assistive: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")


class LegacyReport(Base):
    __tablename__ = "legacy_reports"
    __table_args__ = (Index("ix_legacy_reports_facility_patient", "facility_id", "patient_id",
                            "patient_id_issuer"),)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    facility_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("facilities.id"), index=True)
    accession: Mapped[str] = mapped_column(String(64), index=True)
    study_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("studies.id"), index=True)
    completed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    source: Mapped[str] = mapped_column(String(16))
    raw: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = _created()
    hl7_message_id: Mapped[uuid.UUID | None] = mapped_column()
    report_reference: Mapped[str] = mapped_column(String(128), default="", server_default="")
    result_status: Mapped[str] = mapped_column(String(1), default="", server_default="")
    observed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    message_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    matched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    matched_by: Mapped[str] = mapped_column(String(16), default="", server_default="")
    # the report text (OBX), sealed with sidecar_core/secret_box.py; the patient (PID-3)
    report_text_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    patient_id: Mapped[str] = mapped_column(String(64), default="", server_default="")
    patient_id_issuer: Mapped[str] = mapped_column(String(64), default="", server_default="")


class Handoff(Base):
    __tablename__ = "handoffs"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("studies.id"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = _created()
    legacy_report_id: Mapped[uuid.UUID | None] = mapped_column()
    job_id: Mapped[str] = mapped_column(String(128), default="", server_default="")
    destination: Mapped[str] = mapped_column(Text, default="", server_default="")
    payload_sha256: Mapped[str] = mapped_column(String(64), default="", server_default="")
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class StateTransition(Base):
    __tablename__ = "state_transitions"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("studies.id"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = _created()


class AuditEvent(Base):
    __tablename__ = "audit_events"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    seq: Mapped[int] = mapped_column(BigInteger, Identity(), unique=True)
    type: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = _created()
    facility: Mapped[str] = mapped_column(String(64), default="")
    accession: Mapped[str] = mapped_column(String(64), default="")
    study_instance_uid: Mapped[str] = mapped_column(String(128), default="")
    study_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(String(64), default="")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    error_class: Mapped[str] = mapped_column(String(64), default="")
    error_message: Mapped[str] = mapped_column(Text, default="")
    context: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    # The hash chain (docs/audit.md), set by the database's trigger at commit, never by us.
    chain: Mapped[int | None] = mapped_column(SmallInteger)
    chain_pos: Mapped[int | None] = mapped_column(BigInteger)
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("ix_audit_events_chain", "chain", "chain_pos", unique=True),)


class AuditChainHead(Base):
    """The last event of each audit chain (written by the chain's trigger only)."""

    __tablename__ = "audit_chain_heads"
    chain: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    pos: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    hash: Mapped[str] = mapped_column(String(64), server_default="0" * 64)
    event_id: Mapped[uuid.UUID | None] = mapped_column()
    seq: Mapped[int | None] = mapped_column(BigInteger)
    at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AtnaCursor(Base):
    """The last position of each audit chain delivered to the ATNA repository
    (sidecar_core/atna.py)."""

    __tablename__ = "atna_cursor"
    chain: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    pos: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class OutboxMessage(Base):
    """A bus message written in the same transaction as the state change it announces."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    subject: Mapped[str] = mapped_column(String(255))
    msg_id: Mapped[str] = mapped_column(String(255), unique=True)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _created()
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    # W3C traceparent of the span that wrote the row; the relay sends it as a message header.
    trace_context: Mapped[str] = mapped_column(String(64), default="", server_default="")


class IdempotentRequest(Base):
    """The first response of a mutating RPC with a request_id; a repeat returns it."""

    __tablename__ = "idempotent_requests"
    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    method: Mapped[str] = mapped_column(String(128))
    response: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _created()


class ConsumedMessage(Base):
    """Idempotent consumers: a bus message id handled by a consumer, recorded in its transaction."""

    __tablename__ = "consumed_messages"
    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)
    msg_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    at: Mapped[datetime] = _created()


class Hl7Message(Base):
    """An HL7 v2 message exactly as received (MLLP or RPC), with what became of it."""

    __tablename__ = "hl7_messages"
    __table_args__ = (
        Index("ux_hl7_messages_accepted", "sending_facility", "control_id", unique=True,
              postgresql_where=text("status = 'accepted'")),
    )
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                  server_default=func.now())
    source: Mapped[str] = mapped_column(String(16))
    peer: Mapped[str] = mapped_column(String(128), default="", server_default="")
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    sending_facility: Mapped[str] = mapped_column(String(227), default="", server_default="")
    control_id: Mapped[str] = mapped_column(String(199), default="", server_default="")
    message_type: Mapped[str] = mapped_column(String(32), default="", server_default="")
    version: Mapped[str] = mapped_column(String(16), default="", server_default="")
    status: Mapped[str] = mapped_column(String(16))
    ack_code: Mapped[str] = mapped_column(String(2), default="", server_default="")
    error_location: Mapped[str] = mapped_column(String(32), default="", server_default="")
    error_message: Mapped[str] = mapped_column(Text, default="", server_default="")
    facility_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("facilities.id"))


class LlmTrace(Base):
    """The exact (de-identified) prompt sent to a drafter and its raw response."""

    __tablename__ = "llm_traces"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("studies.id"), index=True)
    draft_id: Mapped[uuid.UUID | None] = mapped_column()
    generator: Mapped[str] = mapped_column(String(64))
    endpoint: Mapped[str] = mapped_column(Text, default="", server_default="")
    prompt_version: Mapped[str] = mapped_column(String(32))
    deid_profile: Mapped[str] = mapped_column(String(64))
    prompt: Mapped[dict[str, Any]] = mapped_column(JSONB)
    response: Mapped[str] = mapped_column(Text, default="", server_default="")
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str] = mapped_column(Text, default="", server_default="")
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    created_at: Mapped[datetime] = _created()


class ChatMessage(Base):
    """One turn of the assistive chat about a study (workflow_svc/report_loop/chat.py). The
    user's message is kept only in its de-identified form (what was sent to the LLM)."""

    __tablename__ = "chat_messages"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("studies.id"), index=True)
    user_id: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))  # user | assistant
    text: Mapped[str] = mapped_column(Text)
    citations: Mapped[list[Any]] = mapped_column(JSONB, default=list)
    trace_id: Mapped[uuid.UUID | None] = mapped_column()
    created_at: Mapped[datetime] = _created()


class Export(Base):
    """One DICOM object (SR or SEG) of a study's AI results sent to the facility's PACS."""

    __tablename__ = "exports"
    __table_args__ = (UniqueConstraint("job_id", "kind"),)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("studies.id"), index=True)
    job_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(8))
    sop_instance_uid: Mapped[str] = mapped_column(String(64), default="", server_default="")
    destination: Mapped[str] = mapped_column(String(300), default="", server_default="")
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    dimse_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[datetime] = _created()


class RevokedToken(Base):
    """A session token (JWT jti) revoked by logout; kept until the token would have expired."""

    __tablename__ = "revoked_tokens"
    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    revoked_at: Mapped[datetime] = _created()


class LoginAttempt(Base):
    """One login attempt: failures per user and per address drive the rate limit."""

    __tablename__ = "login_attempts"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    address: Mapped[str] = mapped_column(String(64), index=True)
    ok: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(),
                                         index=True)


class DicomwebSeriesIndex(Base):
    """The derived objects WADO-RS serves a series from (DICOM JSON metadata, frame offsets),
    valid while the series has `instance_count` instances."""

    __tablename__ = "dicomweb_series_index"
    series_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("series.id"), primary_key=True)
    instance_count: Mapped[int] = mapped_column(Integer)
    metadata_key: Mapped[str] = mapped_column(String(128))
    frames_key: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = _created()


class DerivedObject(Base):
    """One version of an AI run's DICOM result (kind 'sr' or 'seg'); its instance row carries
    `source = 'derived'`. Versions are never overwritten: a review change adds one."""

    __tablename__ = "derived_objects"
    __table_args__ = (UniqueConstraint("ai_run_id", "kind", "version"),)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("studies.id"), index=True)
    ai_run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ai_runs.id"))
    instance_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("instances.id"))
    kind: Mapped[str] = mapped_column(String(8))
    version: Mapped[int] = mapped_column(Integer)
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(64))
    finding_count: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = _created()


class MeshCredential(Base):
    """A client certificate the embedded CA issued to an operator or a PACS adapter (a
    service's own certificates are not listed). Revoked ones are refused by every server."""

    __tablename__ = "mesh_credentials"
    serial: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(64), index=True)
    facility: Mapped[str] = mapped_column(String(64), default="")
    issued_by: Mapped[str] = mapped_column(String(128), default="")
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    issued_at: Mapped[datetime] = _created()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class PriorLookup(Base):
    """The priors lookup of one study at the facility's PACS (0116): found, failed or none."""

    __tablename__ = "prior_lookups"
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("studies.id"), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    found_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str] = mapped_column(Text, default="", server_default="")
    updated_at: Mapped[datetime] = _created()


class PriorStudy(Base):
    """An earlier study of the same patient the facility's PACS answered a C-FIND with (0116),
    and the state of its retrieval (C-MOVE to the sidecar's own AE) when one was asked for."""

    __tablename__ = "prior_studies"
    __table_args__ = (UniqueConstraint("study_id", "study_instance_uid"),)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("studies.id"), index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    study_date: Mapped[str] = mapped_column(String(8), default="", server_default="")
    description: Mapped[str] = mapped_column(String(256), default="", server_default="")
    modalities: Mapped[str] = mapped_column(String(64), default="", server_default="")
    accession: Mapped[str] = mapped_column(String(64), default="", server_default="")
    instance_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # "" | queued | retrieving | retrieved | failed (workflow_svc.priors.retrieve)
    retrieve_status: Mapped[str] = mapped_column(String(16), default="", server_default="")
    retrieve_job_id: Mapped[str] = mapped_column(String(128), default="", server_default="")
    retrieved_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str] = mapped_column(Text, default="", server_default="")
    found_at: Mapped[datetime] = _created()


class RetentionPendingObject(Base):
    """An object whose rows a retention pass or purge deleted (in the same transaction), until
    the object itself is gone; the next pass finishes what a crash interrupted (0115)."""

    __tablename__ = "retention_pending_objects"
    object_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    scrub: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = _created()
