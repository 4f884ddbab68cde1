"""Workflow reactions to bus events: register, decide eligibility, plan jobs, store AI results."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from protos.sidecar.common.v1 import common_pb2
from protos.sidecar.events.v1 import events_pb2
from sidecar_core import audit
from sidecar_core.ai_run_status import AiRunStatus, is_terminal, outcome
from sidecar_core.audit import StudyRef
from sidecar_core.db import Database
from sidecar_core.errors import PermanentError
from sidecar_core.messaging import outbox
from sidecar_core.messaging.bus import Delivery
from sidecar_core.messaging.consumed import first_time
from sidecar_core.messaging.redelivery import record_if_redelivered
from sidecar_core.messaging.subjects import (
    AI_RUN_FINDINGS_STORED,
    AI_RUN_FINISHED,
    ASSET_PREPROCESSED,
    JOB_AI_RUN,
    JOB_OVERLAY,
    JOB_PREPROCESS,
    STUDY_RECEIVED,
    Topology,
)
from sidecar_core.observability import metrics
from sidecar_core.registry import Registry
from sidecar_core.store.models import AiRun, Facility, Study
from workflow_svc.study.eligibility import decide
from workflow_svc.study.facts import study_facts
from workflow_svc.study.findings_store import store_findings
from workflow_svc.study.states import State, study_ref, transition

log = logging.getLogger(__name__)
ACTOR = "workflow_svc"
CONSUMER = "workflow-events"
# "redriven": failed, then replaced by a new run an operator re-drove (dead letters).
TERMINAL_RUN = {"completed", "failed", "invalid", "redriven"}
# Called in the registering transaction once a study is registered (e.g. the report loop
# completing it with an official report that arrived first); the study domain names no caller.
AfterRegistered = Callable[[AsyncSession, Topology, uuid.UUID], Awaitable[object]]


class Pipeline:
    """Handles the events stream; each handler is one transaction and idempotent."""

    def __init__(self, db: Database, topology: Topology, registry: Registry, *,
                 after_registered: Sequence[AfterRegistered]) -> None:
        self.db = db
        self.topology = topology
        self.registry = registry
        self.after_registered = tuple(after_registered)

    async def handle(self, delivery: Delivery) -> None:
        name = delivery.subject.removeprefix(self.topology.prefix + ".")
        handlers: dict[str, tuple[Any, Any]] = {
            STUDY_RECEIVED: (events_pb2.StudyReceived, self.on_study_received),
            ASSET_PREPROCESSED: (events_pb2.PreprocessCompleted, self.on_preprocessed),
            AI_RUN_FINISHED: (events_pb2.AiRunFinished, self.on_ai_run_finished),
        }
        if name not in handlers:
            return
        message_type, handler = handlers[name]
        try:
            message = message_type.FromString(delivery.data)
        except Exception as exc:
            raise PermanentError(f"undecodable {name} payload: {exc}") from exc
        async with self.db.unit_of_work() as session:
            if delivery.attempt > 1:
                await record_if_redelivered(session, self.topology, ACTOR,
                                            _ref_of(message), delivery)
            if not await first_time(session, CONSUMER, delivery.msg_id):
                return
            await handler(session, message)

    def _operating_threshold(self, model_name: str) -> float:
        """The registry's operating threshold of a model (0 for one no longer registered)."""
        try:
            return float(self.registry.get(model_name).operating_threshold)
        except KeyError:
            return 0.0

    async def on_study_received(self, s: AsyncSession, msg: events_pb2.StudyReceived) -> None:
        await self._register(s, msg)
        for react in self.after_registered:
            await react(s, self.topology, uuid.UUID(msg.study_id))

    async def _register(self, s: AsyncSession, msg: events_pb2.StudyReceived) -> None:
        study = await _study(s, msg.study_id)
        reason = "study updated by late instances" if msg.is_update else "study complete"
        if study.state is not None and msg.is_update and study.state == State.RECEIVED:
            pass  # a second update while still received: re-plan below
        else:
            await transition(s, self.topology, study.id, State.RECEIVED, ACTOR, reason)
        facility = (
            await s.execute(select(Facility).where(Facility.id == study.facility_id))
        ).scalar_one()
        sfacts, series, _ = await study_facts(s, study)
        decision = decide(sfacts, series, self.registry, facility.enabled_models)
        await s.execute(
            update(Study)
            .where(Study.id == study.id)
            .values(
                eligible=decision.eligible,
                eligibility_reason=decision.reason[:4000],
                eligible_models=[
                    {"model": r.model_name, "series_instance_uid": r.series_uid}
                    for r in decision.runs
                ],
            )
        )
        ref = await study_ref(s, study)
        metrics.ELIGIBILITY.labels(
            ref.facility, "eligible" if decision.eligible else "ineligible").inc()
        if not decision.eligible:
            await audit.record(
                s,
                self.topology,
                "study.ineligible",
                ACTOR,
                ref,
                context={"reason": decision.reason},
            )
            await transition(s, self.topology, study.id, State.INELIGIBLE, ACTOR, decision.reason)
            return
        job_id = f"preprocess:{study.id}:{study.completion_count}"
        job = events_pb2.PreprocessJob(job_id=job_id, study_id=str(study.id), study=_key(ref))
        await outbox.enqueue(s, self.topology.subject(JOB_PREPROCESS), job_id, job)
        await audit.record(
            s,
            self.topology,
            "study.eligible",
            ACTOR,
            ref,
            job_id=job_id,
            context={
                "reason": decision.reason,
                "models": sorted({r.model_name for r in decision.runs}),
            },
        )

    async def on_preprocessed(self, s: AsyncSession, msg: events_pb2.PreprocessCompleted) -> None:
        study = await _study(s, msg.study_id)
        ref = await study_ref(s, study)
        if study.state != State.RECEIVED:
            log.info("preprocess result for %s in state %s ignored", study.id, study.state)
            return
        partial = bool(msg.failed_series_ids) or msg.failed_object_count > 0
        await s.execute(update(Study).where(Study.id == study.id).values(partial=partial))
        if msg.failed and not msg.ready_series_ids:
            await transition(
                s,
                self.topology,
                study.id,
                State.PREPROCESS_FAILED,
                ACTOR,
                f"{msg.error_class}: {msg.error_message}"[:500],
            )
            return
        await transition(
            s,
            self.topology,
            study.id,
            State.PROCESSED,
            ACTOR,
            "assets ready" + (" (partial)" if partial else ""),
        )
        _, _, series_ids = await study_facts(s, study)
        ready = set(msg.ready_series_ids)
        planned = [(p["model"], p["series_instance_uid"]) for p in study.eligible_models or []]
        runs = [
            (m, series_ids[uid])
            for m, uid in planned
            if uid in series_ids and str(series_ids[uid]) in ready
        ]
        if not runs:
            await transition(
                s,
                self.topology,
                study.id,
                State.AI_FAILED,
                ACTOR,
                "no covered series could be prepared for a model",
            )
            await s.execute(update(Study).where(Study.id == study.id).values(ai_status="failed"))
            return
        await s.execute(update(Study).where(Study.id == study.id).values(ai_status="running"))
        for model_name, series_id in runs:
            run = AiRun(
                id=uuid.uuid4(),
                study_id=study.id,
                series_id=series_id,
                model_name=model_name,
                status=AiRunStatus.QUEUED,
            )
            s.add(run)
            await s.flush()
            job = events_pb2.AiRunJob(
                job_id=f"ai_run:{run.id}",
                ai_run_id=str(run.id),
                study_id=str(study.id),
                series_id=str(series_id),
                model_name=model_name,
                study=_key(ref),
            )
            await outbox.enqueue(s, self.topology.subject(JOB_AI_RUN), job.job_id, job)
            await audit.record(
                s,
                self.topology,
                "ai_run.queued",
                ACTOR,
                ref,
                job_id=job.job_id,
                context={"model": model_name, "ai_run_id": str(run.id)},
            )

    async def on_ai_run_finished(self, s: AsyncSession, msg: events_pb2.AiRunFinished) -> None:
        run = (
            await s.execute(
                select(AiRun).where(AiRun.id == uuid.UUID(msg.ai_run_id)).with_for_update()
            )
        ).scalar_one()
        if is_terminal(run.status):
            return
        try:
            status = outcome(msg.status)
        except ValueError as exc:
            raise PermanentError(f"AI run {run.id}: {exc}") from exc
        study = await _study(s, str(run.study_id))
        ref = await study_ref(s, study)
        facility = (
            await s.execute(select(Facility).where(Facility.id == study.facility_id))
        ).scalar_one()
        run.status = status
        run.attempts = msg.attempts
        run.model_version = msg.model_version
        run.error_class = msg.error_class[:64]
        run.error_message = msg.error_message
        run.latency_ms = dict(msg.latency_ms)
        run.finished_at = datetime.now(UTC)
        context = {
            "model": run.model_name,
            "model_version": msg.model_version,
            "ai_run_id": str(run.id),
            "attempts": msg.attempts,
        }
        if status is AiRunStatus.COMPLETED:
            visible = not facility.shadow_mode
            threshold = self._operating_threshold(run.model_name)
            run.operating_threshold = threshold
            n = await store_findings(s, run, msg.findings, visible, threshold)
            context["operating_threshold"] = threshold
            context["below_threshold"] = sum(f.confidence < threshold for f in msg.findings)
            await audit.record(
                s,
                self.topology,
                "ai_run.completed",
                ACTOR,
                ref,
                job_id=f"ai_run:{run.id}",
                attempt=msg.attempts,
                context={
                    **context,
                    "findings": n,
                    "shadow_mode": not visible,
                    "latency_ms": dict(msg.latency_ms),
                },
            )
            # what follows the stored findings (the DICOM SR/SEG writer) waits for this event
            stored = events_pb2.AiRunFindingsStored(
                ai_run_id=str(run.id), study_id=str(study.id), study=_key(ref),
                model_name=run.model_name, model_version=msg.model_version, finding_count=n)
            await outbox.enqueue(s, self.topology.subject(AI_RUN_FINDINGS_STORED),
                                 f"ai_run.findings_stored:{run.id}", stored)
        else:
            event = "ai_result.invalid" if status is AiRunStatus.INVALID else "ai_run.failed"
            await audit.record(
                s,
                self.topology,
                event,
                ACTOR,
                ref,
                job_id=f"ai_run:{run.id}",
                attempt=msg.attempts,
                error_class=msg.error_class,
                error_message=msg.error_message,
                context=context,
            )
        await s.flush()
        await self._maybe_finish_ai(s, study)

    async def _maybe_finish_ai(self, s: AsyncSession, study: Study) -> None:
        statuses = (
            (await s.execute(select(AiRun.status).where(AiRun.study_id == study.id)))
            .scalars()
            .all()
        )
        statuses = [st for st in statuses if st != AiRunStatus.REDRIVEN]
        if not statuses or not all(is_terminal(st) for st in statuses):
            return
        if study.state != State.PROCESSED:
            return
        if AiRunStatus.COMPLETED in statuses:
            partial = any(st != AiRunStatus.COMPLETED for st in statuses)
            await s.execute(
                update(Study)
                .where(Study.id == study.id)
                .values(ai_status="partial" if partial else "completed")
            )
            await transition(
                s,
                self.topology,
                study.id,
                State.AI_COMPLETE,
                ACTOR,
                "some models failed" if partial else "all models completed",
            )
            ref = await transition(
                s, self.topology, study.id, State.READY_FOR_REVIEW, ACTOR, "findings stored"
            )
            if study.completed_at is not None:
                metrics.RECEIVED_TO_AI_READY.labels(ref.facility).observe(
                    max(0.0, (datetime.now(UTC) - study.completed_at).total_seconds()))
            job_id = f"overlay:{study.id}:{study.completion_count}"
            await outbox.enqueue(
                s,
                self.topology.subject(JOB_OVERLAY),
                job_id,
                events_pb2.PreprocessJob(job_id=job_id, study_id=str(study.id), study=_key(ref)),
            )
        else:
            await s.execute(update(Study).where(Study.id == study.id).values(ai_status="failed"))
            await transition(
                s,
                self.topology,
                study.id,
                State.AI_FAILED,
                ACTOR,
                "every model failed; reviewable without findings",
            )


async def _study(s: AsyncSession, study_id: str) -> Study:
    try:
        sid = uuid.UUID(study_id)
    except ValueError as exc:
        raise PermanentError(f"bad study id {study_id!r}") from exc
    study = (await s.execute(select(Study).where(Study.id == sid))).scalar_one_or_none()
    if study is None:
        raise PermanentError(f"unknown study {study_id}")
    return study


def _key(ref: audit.StudyRef) -> common_pb2.StudyKey:
    return common_pb2.StudyKey(
        facility=ref.facility, accession=ref.accession, study_instance_uid=ref.study_instance_uid
    )


def _ref_of(message: Any) -> StudyRef | None:
    """The study an event names, for the audit of its redelivery."""
    try:
        return StudyRef(study_id=uuid.UUID(message.study_id))
    except (AttributeError, ValueError):
        return None
