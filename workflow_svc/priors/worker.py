"""Consumes sidecar.job.v1.priors: C-FIND of the patient's earlier studies at the facility's
PACS (recorded as prior_studies, `priors.found` / `priors.failed`), and C-MOVE of one of them
to the sidecar's own AE title (`priors.retrieved` / `priors.retrieve_failed`); the moved objects
arrive at the ingest SCP as received objects of the facility whose AE title the PACS calls with.

A facility with a DICOMweb PACS (`pacs_dicomweb_url`) is asked by QIDO-RS instead, with the same
rules, and a prior is retrieved by WADO-RS: each part goes to the ingest service's Ingest RPC
(IngestInstances, then CompleteStudy) as a received object of the study's facility, the same
Receiver the C-MOVE'd objects reach through the SCP.

The PACS's address (or URL) passes the egress policy before each association or request, as the
export's does. A
PACS that is down is retried a few times and then recorded as failed: the lookup is a job of its
own, so the study's workflow never waits for it."""

from __future__ import annotations

import asyncio
import logging
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from protos.sidecar.events.v1 import priors_events_pb2 as ppb
from protos.sidecar.ingest.v1 import ingest_service_pb2 as ipb
from protos.sidecar.ingest.v1 import ingest_service_pb2_grpc as ipb_grpc
from sidecar_core import audit
from sidecar_core.audit import StudyRef
from sidecar_core.db import Database
from sidecar_core.dicom import dicomweb_scu
from sidecar_core.dicom.dicomweb_scu import DicomwebFailed, DicomwebPeer, Part
from sidecar_core.dicom.peer import DicomPeer
from sidecar_core.dicom.query_scu import (
    FoundStudy,
    QueryFailed,
    find_studies,
    move_study,
)
from sidecar_core.dicom.store_scu import AssociationRefused
from sidecar_core.egress import REFUSED_EVENT, EgressPolicy, EgressRefused, pinned_client
from sidecar_core.errors import PermanentError, TransientError
from sidecar_core.messaging.bus import Delivery
from sidecar_core.messaging.subjects import Topology
from sidecar_core.secret_box import SecretBox, SecretKeyError, facility_context
from sidecar_core.security.dicom_tls import DicomTlsError
from sidecar_core.store.models import Facility, PriorLookup, PriorStudy, Study
from workflow_svc.study.states import study_ref

log = logging.getLogger(__name__)
ACTOR = "priors"


@dataclass(frozen=True)
class PriorsConfig:
    own_ae_title: str = "SIDECAR"  # calling AE of both requests and the C-MOVE destination
    limit: int = 50
    lookback_years: int = 10
    find_timeout_s: float = 30.0
    move_timeout_s: float = 600.0
    # what is read from a DICOMweb PACS at most (answer, study, object sizes; parts)
    dicomweb: dicomweb_scu.Limits = dicomweb_scu.Limits()
    # WADO-RS parts sent per IngestInstances call, and calls in flight at once
    ingest_batch_bytes: int = 8 * 1024 * 1024
    ingest_batch_items: int = 16
    ingest_concurrency: int = 4


@dataclass
class _Target:
    ref: StudyRef
    study: Study
    peer: DicomPeer | None  # the DIMSE PACS
    tls: bool
    web_url: str = ""  # the DICOMweb PACS: asked instead of the DIMSE one when set
    web_auth: str = ""  # sealed

    @property
    def source(self) -> str:
        return self.web_url or str(self.peer)


IngestStub = Callable[[], ipb_grpc.IngestServiceStub]


class PriorsWorker:
    """One job per delivery; each outcome is one transaction with its audit event. `box` opens
    the DICOMweb credential; `ingest` gives the Ingest RPC the WADO-RS parts are stored by."""

    def __init__(self, db: Database, topology: Topology, *, config: PriorsConfig | None = None,
                 tls: Callable[[], ssl.SSLContext] | None = None,
                 egress: EgressPolicy | None = None, box: SecretBox | None = None,
                 ingest: IngestStub | None = None) -> None:
        self.db = db
        self.topology = topology
        self.config = config or PriorsConfig()
        self.tls = tls
        self.egress = egress or EgressPolicy()
        self.box = box
        self.ingest = ingest

    async def handle(self, delivery: Delivery) -> None:
        try:
            job = ppb.PriorsJob.FromString(delivery.data)
            study_id = uuid.UUID(job.study_id)
        except Exception as exc:
            raise PermanentError(f"undecodable priors job: {exc}") from exc
        if job.action == ppb.PRIORS_ACTION_FIND:
            await self._find(job, study_id, delivery)
        elif job.action == ppb.PRIORS_ACTION_RETRIEVE:
            try:
                prior_id = uuid.UUID(job.prior_id)
            except ValueError as exc:
                raise PermanentError(f"priors job without a valid prior_id: {exc}") from exc
            await self._retrieve(job, study_id, prior_id, delivery)
        else:
            raise PermanentError(f"priors job with no action ({job.action})")

    # --- the PACS ---------------------------------------------------------------------------

    async def _target(self, s: AsyncSession, study_id: uuid.UUID) -> _Target | None:
        study = (await s.execute(select(Study).where(Study.id == study_id))).scalar_one()
        facility = (await s.execute(select(Facility).where(
            Facility.id == study.facility_id))).scalar_one()
        ref = await study_ref(s, study)
        peer = DicomPeer.pacs_of(facility)
        web = facility.pacs_dicomweb_url or ""
        if peer is None and not web:
            return None
        return _Target(ref, study, peer, bool(peer and peer.tls), web,
                       facility.pacs_dicomweb_auth or "")

    async def _refused(self, target: _Target, job_id: str, delivery: Delivery,
                       exc: EgressRefused, setting: str) -> BaseException:
        """An egress refusal: an outage (unresolved) is transient; else a security event."""
        if not exc.security_event:
            return TransientError(exc.message)
        async with self.db.unit_of_work() as s:
            await audit.record(s, self.topology, REFUSED_EVENT, ACTOR, target.ref,
                               job_id=job_id, attempt=delivery.attempt,
                               error_class=exc.reason, error_message=exc.message,
                               context={"destination": target.source, "setting": setting})
        return PermanentError(f"refused by the egress policy: {exc.message}")

    async def _connect(self, target: _Target, job_id: str, delivery: Delivery
                       ) -> tuple[DicomPeer, ssl.SSLContext | None]:
        """The checked address and TLS context; records and raises when refused."""
        assert target.peer is not None
        try:
            checked = await self.egress.check_dicom(target.peer.host, target.peer.port,
                                                    tls=target.tls)
        except EgressRefused as exc:
            raise await self._refused(target, job_id, delivery, exc, "pacs") from exc
        context = None
        if target.tls:
            if self.tls is None:
                raise PermanentError(f"{target.peer} wants DICOM TLS (pacs_tls) and this "
                                     "worker has no DICOM TLS settings")
            try:
                context = self.tls()
            except DicomTlsError as exc:
                raise PermanentError(f"DICOM TLS to {target.peer}: {exc}") from exc
        return replace(target.peer, address=checked.addresses[0]), context

    async def _web(self, target: _Target, job_id: str, delivery: Delivery, timeout_s: float
                   ) -> tuple[httpx.AsyncClient, DicomwebPeer]:
        """A client bound to the checked address of the DICOMweb PACS, and the PACS with its
        opened credential; records and raises when refused."""
        try:
            checked = await self.egress.check_url(target.web_url)
        except EgressRefused as exc:
            raise await self._refused(target, job_id, delivery, exc,
                                      "pacs_dicomweb_url") from exc
        auth = target.web_auth
        if auth:
            if self.box is None:
                raise PermanentError("pacs_dicomweb_auth is set and this worker has no "
                                     "secret key to open it")
            try:
                auth = self.box.open(auth, facility_context(target.ref.facility,
                                                            "pacs_dicomweb_auth"))
            except SecretKeyError as exc:
                raise PermanentError(f"pacs_dicomweb_auth cannot be opened: {exc}") from exc
        return (pinned_client(checked, timeout_s),
                DicomwebPeer(target.web_url, auth))

    @staticmethod
    def _classify(exc: BaseException, peer: DicomPeer | None) -> BaseException:
        if isinstance(exc, AssociationRefused):
            if exc.tls_verify_failed:
                return PermanentError(f"DICOM TLS to {peer}: the PACS's {exc.tls_error}")
            return TransientError(str(exc))
        if isinstance(exc, QueryFailed):
            return TransientError(str(exc))
        if isinstance(exc, DicomwebFailed):
            return TransientError(str(exc)) if exc.transient else PermanentError(str(exc))
        if isinstance(exc, grpc.aio.AioRpcError):
            message = f"the ingest service: {exc.code().name} {exc.details() or ''}".strip()
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return TransientError(message)
            return PermanentError(message)
        return exc

    # --- C-FIND -----------------------------------------------------------------------------

    def _since(self) -> str:
        if not self.config.lookback_years:
            return ""
        start = datetime.now(UTC) - timedelta(days=365 * self.config.lookback_years + 2)
        return start.strftime("%Y%m%d")

    async def _find(self, job: ppb.PriorsJob, study_id: uuid.UUID, delivery: Delivery) -> None:
        async with self.db.read() as s:
            target = await self._target(s, study_id)
            if target is None:
                await self._lookup(study_id, "none", 0, "")
                return
            attributes: dict[str, Any] = dict(target.study.dicom_attributes or {})
            done = await s.scalar(select(PriorLookup.status).where(
                PriorLookup.study_id == study_id))
        if done == "found":
            return  # a redelivered lookup: recorded already
        patient_id = str(attributes.get("PatientID") or "").strip()
        if not patient_id:
            await self._find_failed(target, job.job_id, delivery,
                                    PermanentError("the study has no PatientID to ask with"))
            return
        modality = (target.study.modality or "").split("\\")[0][:16]
        other_patient = 0
        try:
            if target.web_url:
                found, other_patient = await self._qido(target, job.job_id, delivery,
                                                        patient_id[:64], modality)
            else:
                peer, tls = await self._connect(target, job.job_id, delivery)
                found = await asyncio.to_thread(
                    find_studies, peer, self.config.own_ae_title, patient_id[:64],
                    modality=modality, since=self._since(),
                    exclude_uid=target.study.study_instance_uid, limit=self.config.limit,
                    timeout_s=self.config.find_timeout_s, tls=tls)
        except Exception as exc:
            error = self._classify(exc, target.peer)
            await self._find_failed(target, job.job_id, delivery, error)
            if isinstance(error, TransientError) and not delivery.is_last_attempt:
                raise error from exc
            return  # recorded as failed: the study goes on without priors
        await self._record_found(target, study_id, job.job_id, delivery, found, other_patient)

    async def _qido(self, target: _Target, job_id: str, delivery: Delivery, patient_id: str,
                    modality: str) -> tuple[list[FoundStudy], int]:
        timeout = self.config.find_timeout_s
        http, peer = await self._web(target, job_id, delivery, timeout)
        try:
            async with http, asyncio.timeout(timeout):
                result = await dicomweb_scu.find_studies(
                    http, peer, patient_id, modality=modality, since=self._since(),
                    exclude_uid=target.study.study_instance_uid, limit=self.config.limit,
                    limits=self.config.dicomweb)
        except TimeoutError:
            raise DicomwebFailed(f"QIDO-RS at {peer}: no complete answer within {timeout:g} s",
                                 transient=True) from None
        return result.studies, result.other_patient

    async def _record_found(self, target: _Target, study_id: uuid.UUID, job_id: str,
                            delivery: Delivery, found: list[FoundStudy],
                            other_patient: int = 0) -> None:
        async with self.db.unit_of_work() as s:
            for f in found:
                await s.execute(insert(PriorStudy).values(
                    id=uuid.uuid4(), study_id=study_id, study_instance_uid=f.study_instance_uid,
                    study_date=f.study_date, description=f.description,
                    modalities="\\".join(f.modalities)[:64], accession=f.accession,
                    instance_count=f.instance_count,
                ).on_conflict_do_nothing(index_elements=["study_id", "study_instance_uid"]))
            await self._upsert_lookup(s, study_id, "found", len(found), "")
            await audit.record(s, self.topology, "priors.found", ACTOR, target.ref,
                               job_id=job_id, attempt=delivery.attempt, context={
                                   "source": target.source, "count": len(found),
                                   "protocol": "qido-rs" if target.web_url else "c-find",
                                   "ignored_other_patient": other_patient,
                                   "limit": self.config.limit,
                                   "lookback_years": self.config.lookback_years,
                                   "prior_study_instance_uids":
                                       [f.study_instance_uid for f in found]})

    async def _find_failed(self, target: _Target, job_id: str, delivery: Delivery,
                           exc: BaseException) -> None:
        final = not isinstance(exc, TransientError) or delivery.is_last_attempt
        async with self.db.unit_of_work() as s:
            if final:
                await self._upsert_lookup(s, target.study.id, "failed", 0, str(exc)[:2000])
            await audit.record(s, self.topology, "priors.failed" if final else "priors.retrying",
                               ACTOR, target.ref, job_id=job_id, attempt=delivery.attempt,
                               error=exc, context={"source": target.source, "final": final})

    async def _lookup(self, study_id: uuid.UUID, status: str, count: int, error: str) -> None:
        async with self.db.unit_of_work() as s:
            await self._upsert_lookup(s, study_id, status, count, error)

    @staticmethod
    async def _upsert_lookup(s: AsyncSession, study_id: uuid.UUID, status: str, count: int,
                             error: str) -> None:
        values = {"status": status, "found_count": count, "last_error": error,
                  "updated_at": datetime.now(UTC)}
        await s.execute(insert(PriorLookup).values(study_id=study_id, **values)
                        .on_conflict_do_update(index_elements=["study_id"], set_=values))

    # --- C-MOVE -----------------------------------------------------------------------------

    async def _retrieve(self, job: ppb.PriorsJob, study_id: uuid.UUID, prior_id: uuid.UUID,
                        delivery: Delivery) -> None:
        async with self.db.unit_of_work() as s:
            target = await self._target(s, study_id)
            claimed = (await s.execute(
                update(PriorStudy).where(PriorStudy.id == prior_id,
                                         PriorStudy.study_id == study_id,
                                         PriorStudy.retrieve_job_id == job.job_id,
                                         PriorStudy.retrieve_status.in_(("queued", "retrieving")))
                .values(retrieve_status="retrieving").returning(PriorStudy.study_instance_uid)
            )).scalar_one_or_none()
        if claimed is None:
            return  # done already, or superseded by a later request
        if target is None:
            await self._retrieve_failed(study_id, prior_id, claimed, None, job.job_id, delivery,
                                        PermanentError("the facility has no PACS configured"))
            return
        try:
            if target.web_url:
                await self._wado(target, job.job_id, delivery, prior_id, claimed)
                return
            peer, tls = await self._connect(target, job.job_id, delivery)
            result = await asyncio.to_thread(
                move_study, peer, self.config.own_ae_title, self.config.own_ae_title, claimed,
                timeout_s=self.config.move_timeout_s, tls=tls)
        except Exception as exc:
            error = self._classify(exc, target.peer)
            await self._retrieve_failed(study_id, prior_id, claimed, target, job.job_id,
                                        delivery, error)
            if isinstance(error, TransientError) and not delivery.is_last_attempt:
                raise error from exc
            return
        async with self.db.unit_of_work() as s:
            await s.execute(update(PriorStudy).where(PriorStudy.id == prior_id).values(
                retrieve_status="retrieved", retrieved_count=result.completed, last_error=(
                    f"{result.failed} sub-operation(s) failed" if result.failed else "")))
            await audit.record(s, self.topology, "priors.retrieved", ACTOR, target.ref,
                               job_id=job.job_id, attempt=delivery.attempt, context={
                                   "source": target.source, "protocol": "c-move",
                                   "prior_study_instance_uid": claimed,
                                   "destination_ae": self.config.own_ae_title,
                                   "completed": result.completed, "failed": result.failed,
                                   "warning": result.warning,
                                   "dimse_status": f"0x{result.status:04X}"})

    async def _retrieve_failed(self, study_id: uuid.UUID, prior_id: uuid.UUID, uid: str,
                               target: _Target | None, job_id: str, delivery: Delivery,
                               exc: BaseException) -> None:
        final = not isinstance(exc, TransientError) or delivery.is_last_attempt
        async with self.db.unit_of_work() as s:
            await s.execute(update(PriorStudy).where(PriorStudy.id == prior_id).values(
                retrieve_status="failed" if final else "retrieving",
                last_error=str(exc)[:2000]))
            ref = target.ref if target else None
            await audit.record(s, self.topology,
                               "priors.retrieve_failed" if final else "priors.retrieve_retrying",
                               ACTOR, ref, job_id=job_id, attempt=delivery.attempt, error=exc,
                               context={"prior_study_instance_uid": uid, "final": final,
                                        "source": target.source if target else ""})

    # --- WADO-RS ----------------------------------------------------------------------------

    async def _wado(self, target: _Target, job_id: str, delivery: Delivery,
                    prior_id: uuid.UUID, uid: str) -> None:
        """Reads the prior by WADO-RS and stores each part by the Ingest RPC, in batches, as a
        received object of the study's facility; then completes the study at the ingest."""
        if self.ingest is None:
            raise PermanentError("this worker has no ingest service to store WADO-RS parts by")
        patient_id = str((target.study.dicom_attributes or {}).get("PatientID") or "").strip()
        stub, facility = self.ingest(), target.ref.facility
        batch: list[Part] = []
        sending: list[asyncio.Task[None]] = []
        counts = {"stored": 0, "duplicate": 0, "rejected": 0}
        reasons: list[str] = []

        async def send(parts: list[Part]) -> None:
            reply = await stub.IngestInstances(ipb.IngestInstancesRequest(
                facility=facility, request_id=f"{job_id}:{parts[0].index}", items=[
                    ipb.IngestInstancesRequestItem(dicom=p.data,
                                                   source_ref=f"wado-rs:{uid}#{p.index}")
                    for p in parts]), timeout=self.config.find_timeout_s * 4)
            counts["stored"] += reply.stored_count
            counts["duplicate"] += reply.duplicate_count
            counts["rejected"] += reply.rejected_count
            reasons.extend(f"{r.source_ref}: {r.reason}" for r in reply.results
                           if r.outcome == ipb.INSTANCE_OUTCOME_REJECTED)

        async def flush() -> None:
            """Sends the batch while the answer goes on being read; at most
            `ingest_concurrency` batches in flight (their objects share the ingest's syncs)."""
            if batch:
                sending.append(asyncio.create_task(send(list(batch))))
                batch.clear()
            while len(sending) >= self.config.ingest_concurrency:
                await sending.pop(0)

        async def store(part: Part) -> None:
            if batch and (sum(len(p.data) for p in batch) + len(part.data)
                          > self.config.ingest_batch_bytes
                          or len(batch) >= self.config.ingest_batch_items):
                await flush()
            batch.append(part)

        timeout = self.config.move_timeout_s
        http, peer = await self._web(target, job_id, delivery, self.config.find_timeout_s)
        try:
            async with http, asyncio.timeout(timeout):
                read = await dicomweb_scu.retrieve_study(http, peer, uid, patient_id, store,
                                                         limits=self.config.dicomweb)
                await flush()
                while sending:
                    await sending.pop(0)
                await stub.CompleteStudy(ipb.CompleteStudyRequest(
                    facility=facility, study_instance_uid=uid),
                    timeout=self.config.find_timeout_s)
        except TimeoutError:
            raise DicomwebFailed(f"WADO-RS at {peer}: the study was not read and stored "
                                 f"within {timeout:g} s", transient=True) from None
        finally:
            for task in sending:
                task.cancel()
            await asyncio.gather(*sending, return_exceptions=True)
        completed = counts["stored"] + counts["duplicate"]
        if completed == 0:
            raise DicomwebFailed(f"WADO-RS at {peer}: no object of the study was stored "
                                 f"({read.parts} part(s) read, {read.ignored} of another "
                                 f"study or patient, {counts['rejected']} refused by the "
                                 f"ingest{': ' + reasons[0] if reasons else ''})")
        async with self.db.unit_of_work() as s:
            failed = counts["rejected"] + read.ignored
            await s.execute(update(PriorStudy).where(PriorStudy.id == prior_id).values(
                retrieve_status="retrieved", retrieved_count=completed, last_error=(
                    f"{failed} object(s) not stored" + (f" ({reasons[0]})" if reasons else "")
                    if failed else "")[:2000]))
            await audit.record(s, self.topology, "priors.retrieved", ACTOR, target.ref,
                               job_id=job_id, attempt=delivery.attempt, context={
                                   "source": target.source, "protocol": "wado-rs",
                                   "prior_study_instance_uid": uid,
                                   "completed": completed, "failed": counts["rejected"],
                                   "duplicate": counts["duplicate"],
                                   "ignored_other_study_or_patient": read.ignored,
                                   "parts": read.parts, "bytes": read.bytes,
                                   "rejections": reasons[:10]})
