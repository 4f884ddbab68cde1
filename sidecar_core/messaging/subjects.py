"""Every NATS subject, stream and durable consumer of the sidecar, declared once."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

STUDY_RECEIVED = "study.v1.received"
ASSET_PREPROCESSED = "asset.v1.preprocessed"
AI_RUN_FINISHED = "ai_run.v1.finished"
# The workflow stored a completed run's findings (payload sidecar.events.v1.AiRunFindingsStored).
AI_RUN_FINDINGS_STORED = "ai_run.v1.findings_stored"
# A radiologist's decision on findings changed (payload sidecar.events.v1.ReviewChanged).
REVIEW_CHANGED = "review.v1.changed"
JOB_PREPROCESS = "job.v1.preprocess"
JOB_AI_RUN = "job.v1.ai_run"
JOB_LLM_ASSIST = "job.v1.llm_assist"
JOB_HANDOFF = "job.v1.handoff"
JOB_OVERLAY = "job.v1.overlay"
JOB_EXPORT = "job.v1.export"
# A covered study's priors at the facility's PACS: find, or retrieve one (events.v1.PriorsJob).
JOB_PRIORS = "job.v1.priors"
AUDIT = "audit.v1"
# Instances the ingest just stored (payload sidecar.events.v1.InstancesStored): core NATS, at
# most once, in no stream (no stream's subjects match `notice.>`). The preprocess process decodes
# them early (imaging_svc/assets/early_decode.py); a lost notice only costs speed.
INSTANCES_STORED = "notice.v1.instances_stored"
DLQ = "dlq.v1"


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    work_queue: bool = False


# Every consumer's default ack wait. A running handler reports progress several times per ack
# wait (bus.heartbeat_interval: every 2 s at 10 s), so the ack wait bounds only how long the job
# of a worker that is gone (SIGKILL, OOM, lost connection) waits before another worker takes it
# up: about 10 s after the last heartbeat, plus the restart. A live slow job is never taken over.
ACK_WAIT_S = 10.0


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer with explicit redelivery policy.

    Ack waits are short: a running handler reports progress several times per ack wait
    (`msg.in_progress()`, which JetStream does not count as a delivery, so max_deliver and the
    backoff count only real attempts), so only a job whose worker is gone (killed,
    disconnected) waits the ack wait out before another worker takes it up."""

    stream: str
    durable: str
    filter_subject: str
    ack_wait_s: float = ACK_WAIT_S
    max_deliver: int = 5
    backoff_s: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)
    max_ack_pending: int = 64


@dataclass(frozen=True)
class Topology:
    """Subjects/streams/consumers under one prefix (tests use their own prefix)."""

    prefix: str = "sidecar"
    stream_prefix: str = "SIDECAR"
    # Per durable consumer, fields of ConsumerSpec to override (settings.consumer_overrides).
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    streams: tuple[StreamSpec, ...] = field(init=False)

    def __post_init__(self) -> None:
        p = self.prefix
        object.__setattr__(
            self,
            "streams",
            (
                StreamSpec(
                    f"{self.stream_prefix}_EVENTS",
                    (f"{p}.study.>", f"{p}.asset.>", f"{p}.ai_run.>", f"{p}.review.>"),
                ),
                StreamSpec(f"{self.stream_prefix}_JOBS", (f"{p}.job.>",), work_queue=True),
                StreamSpec(f"{self.stream_prefix}_AUDIT", (f"{p}.audit.>",)),
                StreamSpec(f"{self.stream_prefix}_DLQ", (f"{p}.dlq.>",)),
            ),
        )

    def subject(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def audit_subject(self, event_type: str) -> str:
        return f"{self.prefix}.{AUDIT}.{event_type}"

    def dlq_subject(self, original: str) -> str:
        return f"{self.prefix}.{DLQ}.{original.removeprefix(self.prefix + '.')}"

    @property
    def events_stream(self) -> str:
        return f"{self.stream_prefix}_EVENTS"

    @property
    def review_stream(self) -> str:
        # review-api had its own _REVIEW stream, ohif-sr put review.> in _EVENTS: one stream may
        # hold a subject, so after merging both the review events live in _EVENTS.
        return self.events_stream

    @property
    def jobs_stream(self) -> str:
        return f"{self.stream_prefix}_JOBS"

    @property
    def dlq_stream(self) -> str:
        return f"{self.stream_prefix}_DLQ"

    def is_dead_letter(self, subject: str) -> bool:
        return subject.startswith(f"{self.prefix}.{DLQ}.")

    def _spec(self, spec: ConsumerSpec) -> ConsumerSpec:
        extra = dict(self.overrides.get(spec.durable, {}))
        if "backoff_s" in extra:
            extra["backoff_s"] = tuple(extra["backoff_s"])
        return dataclasses.replace(spec, **extra) if extra else spec

    def workflow_events(self) -> ConsumerSpec:
        return self._spec(ConsumerSpec(self.events_stream, "workflow-events", "",
                                       max_deliver=8))

    def preprocess_jobs(self) -> ConsumerSpec:
        return self._spec(ConsumerSpec(self.jobs_stream, "preprocess-worker",
                                       self.subject(JOB_PREPROCESS),
                                       max_deliver=4, backoff_s=(2.0, 10.0, 30.0)))

    def ai_run_jobs(self) -> ConsumerSpec:
        return self._spec(ConsumerSpec(self.jobs_stream, "ai-run-worker",
                                       self.subject(JOB_AI_RUN),
                                       max_deliver=5, backoff_s=(1.0, 3.0, 10.0, 30.0)))

    def overlay_jobs(self) -> ConsumerSpec:
        return self._spec(ConsumerSpec(self.jobs_stream, "overlay-worker",
                                       self.subject(JOB_OVERLAY),
                                       max_deliver=4, backoff_s=(2.0, 10.0, 30.0)))

    def handoff_jobs(self) -> ConsumerSpec:
        return self._spec(ConsumerSpec(self.jobs_stream, "handoff-worker",
                                       self.subject(JOB_HANDOFF),
                                       max_deliver=6, backoff_s=(2.0, 5.0, 15.0, 30.0, 60.0)))

    def export_jobs(self) -> ConsumerSpec:
        return self._spec(ConsumerSpec(self.jobs_stream, "export-worker",
                                       self.subject(JOB_EXPORT),
                                       max_deliver=5, backoff_s=(2.0, 10.0, 30.0, 60.0)))

    def priors_jobs(self) -> ConsumerSpec:
        """C-FIND / C-MOVE at the facility's PACS (workflow_svc.priors): a PACS that is down is
        retried a little, then recorded as failed (it never blocks the study)."""
        return self._spec(ConsumerSpec(self.jobs_stream, "priors-worker",
                                       self.subject(JOB_PRIORS), ack_wait_s=120,
                                       max_deliver=3, backoff_s=(2.0, 10.0)))

    def derived_results_runs(self) -> ConsumerSpec:
        """ingest_svc's DICOM results writer: an AI run's findings are stored (SR and SEG,
        version 1). It listens for the workflow's event, not for `ai_run.v1.finished`: what the
        writer reads is in the store when the event exists."""
        return self._spec(ConsumerSpec(self.events_stream, "derived-results-runs",
                                       self.subject(AI_RUN_FINDINGS_STORED),
                                       max_deliver=8, backoff_s=(1.0, 2.0, 5.0, 10.0, 30.0)))

    def derived_results_reviews(self) -> ConsumerSpec:
        """ingest_svc's DICOM results writer: review decisions changed (a new version)."""
        return self._spec(ConsumerSpec(self.events_stream, "derived-results-reviews",
                                       self.subject(REVIEW_CHANGED),
                                       max_deliver=8, backoff_s=(1.0, 2.0, 5.0, 10.0, 30.0)))

    def dead_letter_audit(self) -> ConsumerSpec:
        """Reads the dead-letter stream (which keeps its letters) to audit each one."""
        return self._spec(ConsumerSpec(self.dlq_stream, "dead-letter-audit", "",
                                       max_deliver=8))
