"""The ai_run job handler: load the model input, run the model, publish the validated result."""

from __future__ import annotations

import asyncio
import io
import logging
import time
import uuid

import numpy as np
from sqlalchemy import select, update

from normalizer_svc.builtin.model_input import ModelInput
from normalizer_svc.convert import finding_to_proto
from normalizer_svc.external import ExternalNormaliser
from normalizer_svc.inference import Inferer, Normaliser, RetryPolicy, builtin_normaliser, run_model
from normalizer_svc.validation import InvalidResult
from protos.sidecar.events.v1 import events_pb2
from sidecar_core import audit
from sidecar_core.ai_run_status import TERMINAL, AiRunStatus, is_terminal
from sidecar_core.audit import StudyRef
from sidecar_core.circuit import CircuitBreakers
from sidecar_core.db import Database
from sidecar_core.errors import PermanentError, TransientError
from sidecar_core.messaging import outbox
from sidecar_core.messaging.bus import Delivery
from sidecar_core.messaging.redelivery import record_if_redelivered
from sidecar_core.messaging.subjects import AI_RUN_FINISHED, Topology
from sidecar_core.observability import metrics
from sidecar_core.registry import ModelEntry, Registry
from sidecar_core.security.mesh_tls import MeshCredentials
from sidecar_core.storage.objectstore import ObjectStore
from sidecar_core.store.models import AiRun, Asset, Series

log = logging.getLogger(__name__)
ACTOR = "normalizer_svc"


class AiRunWorker:
    """Consumes `job.v1.ai_run`; every attempt is audited, the result goes out via the outbox."""

    def __init__(
        self,
        db: Database,
        objects: ObjectStore,
        topology: Topology,
        registry: Registry,
        triton: Inferer,
        breakers: CircuitBreakers,
        retry: RetryPolicy,
        mesh: MeshCredentials | None = None,
    ) -> None:
        self.db = db
        self.objects = objects
        self.topology = topology
        self.registry = registry
        self.triton = triton
        self.breakers = breakers
        self.retry = retry
        self.mesh = mesh
        self._normalisers: dict[str, Normaliser] = {}

    def normaliser(self, entry: ModelEntry) -> Normaliser:
        if entry.name not in self._normalisers:
            if entry.builtin_name is not None:
                self._normalisers[entry.name] = builtin_normaliser(entry.builtin_name)
            else:
                self._normalisers[entry.name] = ExternalNormaliser(
                    str(entry.grpc_target),
                    credentials=self.mesh if entry.grpc_tls else None)
        return self._normalisers[entry.name]

    async def handle(self, delivery: Delivery) -> None:
        try:
            job = events_pb2.AiRunJob.FromString(delivery.data)
            run_id = uuid.UUID(job.ai_run_id)
        except Exception as exc:
            raise PermanentError(f"undecodable ai_run job: {exc}") from exc
        async with self.db.read() as s:
            run = (await s.execute(select(AiRun).where(AiRun.id == run_id))).scalar_one_or_none()
            if run is None:
                raise PermanentError(f"unknown AI run {run_id}")
            series_uid = (
                await s.execute(
                    select(Series.series_instance_uid).where(Series.id == run.series_id)
                )
            ).scalar_one()
            key = (
                await s.execute(
                    select(Asset.object_key)
                    .where(Asset.series_id == run.series_id, Asset.kind == "model_input")
                    .order_by(Asset.created_at.desc())
                    .limit(1)
                )
            ).scalar_one_or_none()
        if is_terminal(run.status):
            return  # redelivered after the result was published (or the run was re-driven)
        ref = StudyRef(
            job.study.facility, job.study.accession, job.study.study_instance_uid, run.study_id
        )
        await self._started(run_id, ref, job.job_id, delivery, run.model_name)
        try:
            entry = self.registry.get(run.model_name)
        except KeyError as exc:
            await self._finish(
                run,
                ref,
                job.job_id,
                delivery.attempt,
                AiRunStatus.FAILED,
                error=PermanentError(f"model {run.model_name} not in registry"),
            )
            log.warning("unknown model: %s", exc)
            return
        t0 = time.monotonic()
        try:
            if key is None:
                raise PermanentError(f"series {series_uid} has no model input")
            model_input = await asyncio.to_thread(self._model_input, key)
            fetch_ms = (time.monotonic() - t0) * 1000
            result = await run_model(
                entry,
                model_input,
                self.triton,
                self.breakers.get(entry.name),
                self.normaliser(entry),
                series_uid=series_uid,
                ai_run_id=str(run_id),
                retry=self.retry,
                fetch_input_ms=fetch_ms,
            )
        except InvalidResult as exc:
            # The run is stored as invalid; the job goes to the dead letters, where an operator
            # can re-drive it once the model is fixed.
            await self._finish(run, ref, job.job_id, delivery.attempt, AiRunStatus.INVALID,
                               error=exc)
            raise PermanentError(f"invalid result: {exc}") from exc
        except TransientError as exc:
            if delivery.is_last_attempt:
                await self._finish(run, ref, job.job_id, delivery.attempt, AiRunStatus.FAILED,
                                   error=exc)
                raise  # the bus dead-letters the last attempt
            async with self.db.unit_of_work() as s:
                await audit.record(
                    s,
                    self.topology,
                    "ai_run.retry_scheduled",
                    ACTOR,
                    ref,
                    job_id=job.job_id,
                    attempt=delivery.attempt,
                    error=exc,
                    context={"model": run.model_name, "ai_run_id": str(run_id)},
                )
            raise
        except (PermanentError, OSError, ValueError) as exc:
            await self._finish(run, ref, job.job_id, delivery.attempt, AiRunStatus.FAILED,
                               error=exc)
            if isinstance(exc, PermanentError):
                raise
            raise PermanentError(f"{type(exc).__name__}: {exc}") from exc
        findings = []
        for draft in result.findings:
            finding = finding_to_proto(draft, ai_run_id=str(run_id), finding_id=str(uuid.uuid4()))
            if draft.mask is not None:
                finding.ClearField("mask")
                finding.mask_object_key = await asyncio.to_thread(self._store_mask, draft.mask)
            findings.append(finding)
        await self._finish(
            run,
            ref,
            job.job_id,
            delivery.attempt,
            AiRunStatus.COMPLETED,
            findings=findings,
            version=result.model_version,
            latency={**result.latency_ms, "total": (time.monotonic() - t0) * 1000},
        )

    def _model_input(self, key: str) -> ModelInput:
        """The series' model input. The preprocess worker announces it before its durable write
        ends (a killed process loses nothing: the bytes are in the page cache); only a machine
        crash in between can leave it missing or damaged. That is retried, not failed: the
        preprocess job, unacknowledged, is redone and writes it again."""
        try:
            data = self.objects.get(key)
        except FileNotFoundError as exc:
            raise TransientError(f"model input {key} is not in the object store (yet): "
                                 "its preprocess job writes it again") from exc
        try:
            return ModelInput.from_npz(data)
        except Exception:
            if ObjectStore.key_for(data) != key:
                raise TransientError(f"model input {key} is damaged (its bytes are not its "
                                     "digest): its preprocess job writes it again") from None
            raise

    def _store_mask(self, mask: np.ndarray) -> str:
        buf = io.BytesIO()
        np.savez_compressed(buf, mask=np.asarray(mask).astype(np.uint8))
        return self.objects.put(buf.getvalue())

    async def _started(
        self, run_id: uuid.UUID, ref: StudyRef, job_id: str, delivery: Delivery, model: str
    ) -> None:
        attempt = delivery.attempt
        async with self.db.unit_of_work() as s:
            await record_if_redelivered(s, self.topology, ACTOR, ref, delivery, job_id)
            await s.execute(
                update(AiRun)
                .where(AiRun.id == run_id, AiRun.status.not_in(TERMINAL))
                .values(status=AiRunStatus.RUNNING, attempts=attempt)
            )
            await audit.record(
                s,
                self.topology,
                "ai_run.started",
                ACTOR,
                ref,
                job_id=job_id,
                attempt=attempt,
                context={"model": model, "ai_run_id": str(run_id)},
            )

    async def _finish(
        self,
        run: AiRun,
        ref: StudyRef,
        job_id: str,
        attempt: int,
        status: AiRunStatus,
        *,
        error: BaseException | None = None,
        findings: list | None = None,
        version: str = "",
        latency: dict[str, float] | None = None,
    ) -> None:
        msg = events_pb2.AiRunFinished(
            ai_run_id=str(run.id),
            study_id=str(run.study_id),
            status=status.value,
            findings=findings or [],
            attempts=attempt,
            model_version=version,
            error_class=type(error).__name__ if error else "",
            error_message=str(error)[:4000] if error else "",
            latency_ms=latency or {},
        )
        async with self.db.unit_of_work() as s:
            await outbox.enqueue(
                s, self.topology.subject(AI_RUN_FINISHED), f"ai_run.finished:{run.id}", msg
            )
        metrics.AI_RUNS.labels(run.model_name, status.value).inc()
        if latency and "infer" in latency:
            metrics.INFERENCE_SECONDS.labels(run.model_name).observe(latency["infer"] / 1000)
        log.info("ai run %s (%s) %s", run.id, run.model_name, status.value)
