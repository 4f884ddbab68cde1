"""Consumes sidecar.job.v1.priors: C-FIND of the patient's earlier studies at the facility's
PACS (recorded as prior_studies, `priors.found` / `priors.failed`), and C-MOVE of one of them
to the sidecar's own AE title (`priors.retrieved` / `priors.retrieve_failed`); the moved objects
arrive at the ingest SCP as received objects of the facility whose AE title the PACS calls with.

The PACS's address passes the egress policy before each association, as the export's does. A
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

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from protos.sidecar.events.v1 import priors_events_pb2 as ppb
from sidecar_core import audit
from sidecar_core.audit import StudyRef
from sidecar_core.db import Database
from sidecar_core.dicom.peer import DicomPeer
from sidecar_core.dicom.query_scu import (
    FoundStudy,
    QueryFailed,
    find_studies,
    move_study,
)
from sidecar_core.dicom.store_scu import AssociationRefused
from sidecar_core.egress import REFUSED_EVENT, EgressPolicy, EgressRefused
from sidecar_core.errors import PermanentError, TransientError
from sidecar_core.messaging.bus import Delivery
from sidecar_core.messaging.subjects import Topology
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


@dataclass
class _Target:
    ref: StudyRef
    study: Study
    peer: DicomPeer
    tls: bool


class PriorsWorker:
    """One job per delivery; each outcome is one transaction with its audit event."""

    def __init__(self, db: Database, topology: Topology, *, config: PriorsConfig | None = None,
                 tls: Callable[[], ssl.SSLContext] | None = None,
                 egress: EgressPolicy | None = None) -> None:
        self.db = db
        self.topology = topology
        self.config = config or PriorsConfig()
        self.tls = tls
        self.egress = egress or EgressPolicy()

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
        return None if peer is None else _Target(ref, study, peer, peer.tls)

    async def _connect(self, target: _Target, job_id: str, delivery: Delivery
                       ) -> tuple[DicomPeer, ssl.SSLContext | None]:
        """The checked address and TLS context; records and raises when refused."""
        try:
            checked = await self.egress.check_dicom(target.peer.host, target.peer.port,
                                                    tls=target.tls)
        except EgressRefused as exc:
            if not exc.security_event:
                raise TransientError(exc.message) from exc
            async with self.db.unit_of_work() as s:
                await audit.record(s, self.topology, REFUSED_EVENT, ACTOR, target.ref,
                                   job_id=job_id, attempt=delivery.attempt,
                                   error_class=exc.reason, error_message=exc.message,
                                   context={"destination": str(target.peer), "setting": "pacs"})
            raise PermanentError(f"refused by the egress policy: {exc.message}") from exc
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

    @staticmethod
    def _classify(exc: BaseException, peer: DicomPeer) -> BaseException:
        if isinstance(exc, AssociationRefused):
            if exc.tls_verify_failed:
                return PermanentError(f"DICOM TLS to {peer}: the PACS's {exc.tls_error}")
            return TransientError(str(exc))
        if isinstance(exc, QueryFailed):
            return TransientError(str(exc))
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
        try:
            peer, tls = await self._connect(target, job.job_id, delivery)
            found = await asyncio.to_thread(
                find_studies, peer, self.config.own_ae_title, patient_id[:64],
                modality=(target.study.modality or "").split("\\")[0][:16],
                since=self._since(), exclude_uid=target.study.study_instance_uid,
                limit=self.config.limit, timeout_s=self.config.find_timeout_s, tls=tls)
        except Exception as exc:
            error = self._classify(exc, target.peer)
            await self._find_failed(target, job.job_id, delivery, error)
            if isinstance(error, TransientError) and not delivery.is_last_attempt:
                raise error from exc
            return  # recorded as failed: the study goes on without priors
        await self._record_found(target, study_id, job.job_id, delivery, found)

    async def _record_found(self, target: _Target, study_id: uuid.UUID, job_id: str,
                            delivery: Delivery, found: list[FoundStudy]) -> None:
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
                                   "source": str(target.peer), "count": len(found),
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
                               error=exc, context={"source": str(target.peer), "final": final})

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
                                   "source": str(target.peer),
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
                                        "source": str(target.peer) if target else ""})
