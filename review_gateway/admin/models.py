"""The JSON shapes of the operator and auditor routes (`/api/v1/admin/...`, `/api/v1/analytics`)."""

from __future__ import annotations

from pydantic import ConfigDict

from review_gateway.errors import ApiModel


class ServiceState(ApiModel):
    up: bool
    error: str


class MetricSample(ApiModel):
    service: str
    name: str
    labels: dict[str, str]
    value: float


class MetricsSummary(ApiModel):
    """Every service's sidecar_* metrics; a service that did not answer is `up: false`."""

    services: dict[str, ServiceState]
    samples: list[MetricSample]


class DeadLetter(ApiModel):
    sequence: int
    kind: str
    facility: str
    accession: str
    study_instance_uid: str
    study_id: str | None
    job_id: str
    consumer: str
    deliveries: int
    error_class: str
    error_message: str
    original_subject: str
    at: str | None


class DeadLetterPage(ApiModel):
    dead_letters: list[DeadLetter]
    next_page_token: str


class Redriven(ApiModel):
    redriven: list[int]


class Discarded(ApiModel):
    discarded: list[int]


class Facility(ApiModel):
    """A facility: its name and every onboarding setting (secrets only as set or not)."""

    model_config = ConfigDict(extra="allow")

    name: str


class FacilityList(ApiModel):
    facilities: list[Facility]


class Account(ApiModel):
    """A user as the admin page shows it (never a password or its hash)."""

    username: str
    role: str
    facility: str | None
    disabled: bool
    created_at: str | None
    disabled_at: str | None
    sessions_revoked_at: str | None


class AccountList(ApiModel):
    users: list[Account]
    next_page_token: str


class AccountChanged(ApiModel):
    """Whether the change did anything (False: the account already was so)."""

    username: str
    changed: bool


class DecisionRates(ApiModel):
    """What radiologists made of the AI findings of one group (model, modality, facility or
    label)."""

    dimension: str
    value: str
    reviewed: int
    accepted: int
    edited: int
    rejected: int
    ignored: int


class StageTurnaround(ApiModel):
    stage: str
    studies: int
    p50_s: float
    p90_s: float
    mean_s: float


class AddedFindings(ApiModel):
    facility: str
    modality: str
    label: str
    count: int


class ShadowComparison(ApiModel):
    facility: str
    studies: int
    studies_with_findings: int
    findings: int
    mean_confidence: float
    studies_reported: int


class ReviewAnalytics(ApiModel):
    rates: list[DecisionRates]
    turnaround: list[StageTurnaround]
    added: list[AddedFindings]
    shadow: list[ShadowComparison]
