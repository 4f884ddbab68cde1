"""The JSON shapes of the review API (docs/review-api.md): its OpenAPI schemas, from which the
front end's types are generated (`make api-types`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict

from review_gateway.errors import ApiModel, ErrorBody

Origin = Literal["ai", "radiologist"]


class Eligibility(ApiModel):
    eligible: bool
    reason: str


class Patient(ApiModel):
    name: str
    name_ideographic: str
    name_phonetic: str
    id: str
    sex: str
    birth_date: str | None
    age: str | None


class Study(ApiModel):
    """A worklist row (also the answer of claim, release, open and complete)."""

    id: str
    study_instance_uid: str
    accession: str
    facility: str
    modality: str
    description: str
    study_date: str | None
    received_at: str | None
    state: str
    ai_status: str
    finding_count: int
    max_confidence: float | None
    assigned_to: str | None
    eligibility: Eligibility
    partial: bool
    patient: Patient
    referring_physician: str
    body_part: str


class StudyList(ApiModel):
    studies: list[Study]
    next_page_token: str


class StateChange(ApiModel):
    state: str
    at: str | None
    from_state: str | None
    actor: str
    reason: str


class Series(ApiModel):
    id: str
    series_instance_uid: str
    modality: str
    description: str
    body_part: str
    instance_count: int
    slice_count: int
    preprocess_status: str
    derived: bool
    thumbnail_url: str | None
    preview_url: str | None
    model_input_url: str | None
    viewport_url_template: str
    presets: list[str]
    overlay_url_template: str


class StudyDetail(Study):
    state_history: list[StateChange]
    series: list[Series]


class ModelRef(ApiModel):
    name: str
    version: str


class Decision(ApiModel):
    action: str
    reason: str | None
    note: str | None
    by: str
    at: str | None


class CurrentFinding(ApiModel):
    """What the radiologist made of a finding (the AI's own values stay in the finding)."""

    label: str
    bbox_px: list[float] | None
    text: str
    include_in_draft: bool


class Finding(ApiModel):
    """A finding with its review state; `confidence` and `model` are null for a radiologist's
    own finding."""

    id: str
    label: str
    code: str
    confidence: float | None
    kind: str
    model: ModelRef | None
    ai_run_id: str | None
    series_instance_uid: str
    sop_instance_uid: str
    frame: int
    bbox_px: list[float] | None
    center_mm: list[float] | None
    points_px: list[float]
    measurements: dict[str, float]
    summary: str
    review_status: str
    slice_index: int
    series_id: str | None
    origin: Origin
    below_threshold: bool
    version: int
    decision: Decision | None
    current: CurrentFinding


class FindingList(ApiModel):
    findings: list[Finding]


class VersionConflict(ErrorBody):
    """409 VERSION_CONFLICT of a decision: the error and the finding as it now is."""

    current: Finding | None


class HistoryEvent(ApiModel):
    """One decision on a finding, with what was given with it (reason, note, bbox_px, label,
    text) as further fields."""

    model_config = ConfigDict(extra="allow")

    id: str
    action: str
    by: str
    at: str | None
    version: int


class FindingHistory(ApiModel):
    events: list[HistoryEvent]


class StudyEvent(ApiModel):
    """The data of a `study` event of GET /api/v1/events (server-sent events)."""

    id: str
    state: str
    ai_status: str
    finding_count: int
    max_confidence: float | None
    assigned_to: str | None


class AuditEvent(ApiModel):
    id: str
    type: str
    at: str | None
    actor: str
    job_id: str
    attempt: int
    error_class: str
    error_message: str
    context: dict[str, Any]


class AuditList(ApiModel):
    events: list[AuditEvent]
    next_page_token: str


class DraftSentence(ApiModel):
    text: str
    finding_ids: list[str]


class Draft(ApiModel):
    """An assistive draft version: never a report (`notice` says so)."""

    id: str
    study_id: str
    version: int
    status: str
    generator: str
    text: str
    author: str
    sentences: list[DraftSentence]
    assistive: Literal[True]
    notice: str
    trace_id: str
    created_at: str | None


class DraftGenerated(ApiModel):
    """`llm_failed` (with `llm_error`) when the drafter failed: the review goes on."""

    draft: Draft | None
    llm_failed: bool
    llm_error: str


class DraftVersions(ApiModel):
    current: Draft | None
    versions: list[Draft]
    llm_error: str
