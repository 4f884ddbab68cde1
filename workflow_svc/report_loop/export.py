"""Results to the PACS (IHE AI Results): the reviewed SR and SEG sent by C-STORE after review,
over DICOM TLS where the facility says `pacs_tls` (the PACS's certificate verified against
SIDECAR_PACS_TLS_CA or the system store, for the host configured).

The PACS's address passes the egress policy (DICOM TLS, or listed in SIDECAR_EGRESS_ALLOW; an
ordinary address) before each export and the association goes to the address that was checked
(a refusal is `security.egress_refused`)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from protos.sidecar.common.v1 import common_pb2
from protos.sidecar.events.v1 import report_events_pb2
from sidecar_core import audit
from sidecar_core.ai_run_status import AiRunStatus
from sidecar_core.audit import StudyRef
from sidecar_core.db import Database
from sidecar_core.dicom.peer import DicomPeer
from sidecar_core.dicom.store_scu import (
    AssociationRefused,
    ContextRejected,
    StoreSCU,
    prepare,
    status_of,
)
from sidecar_core.egress import REFUSED_EVENT, EgressPolicy, EgressRefused
from sidecar_core.errors import PermanentError, TransientError
from sidecar_core.messaging import outbox
from sidecar_core.messaging.bus import Delivery
from sidecar_core.messaging.subjects import JOB_EXPORT, Topology
from sidecar_core.security.dicom_tls import DicomTlsError
from sidecar_core.storage.objectstore import ObjectStore
from sidecar_core.store.models import (
    AiRun,
    DerivedObject,
    Export,
    Facility,
    Finding,
    Instance,
    ReviewEvent,
    Study,
)
from workflow_svc.study.states import study_ref

log = logging.getLogger(__name__)
ACTOR = "export"
CALLING_AE = "SIDECAR"
# decisions that change what the SR says (the writer writes a new version for them)
SR_CHANGING = ("accept", "reject", "ignore", "relabel", "edit_geometry")


@dataclass(frozen=True)
class ExportObject:
    kind: str  # sr or seg
    sop_instance_uid: str
    data: bytes


class ResultsSource(Protocol):
    """Where the DICOM results of a study come from (the ohif-sr writer's derived objects)."""

    async def objects(self, s: AsyncSession, study: Study) -> list[ExportObject]: ...


class NotReady(TransientError):
    """The SR/SEG do not yet reflect the latest review decision (the writer is behind)."""


class DerivedResults:
    """The latest version of each AI run's SR and SEG, written by imaging_svc's results writer;
    its SR already leaves rejected and ignored findings out."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    async def objects(self, s: AsyncSession, study: Study) -> list[ExportObject]:
        latest = (select(DerivedObject.ai_run_id, DerivedObject.kind,
                         func.max(DerivedObject.version).label("v"))
                  .where(DerivedObject.study_id == study.id)
                  .group_by(DerivedObject.ai_run_id, DerivedObject.kind).subquery())
        rows = (await s.execute(
            select(DerivedObject, Instance.object_key)
            .join(latest, (latest.c.ai_run_id == DerivedObject.ai_run_id)
                  & (latest.c.kind == DerivedObject.kind) & (latest.c.v == DerivedObject.version))
            .join(Instance, Instance.id == DerivedObject.instance_id)
            .order_by(DerivedObject.kind.desc(), DerivedObject.created_at))).all()
        last_review = await s.scalar(select(func.max(ReviewEvent.at)).where(
            ReviewEvent.study_id == study.id, ReviewEvent.finding_id.is_not(None),
            ReviewEvent.action.in_(SR_CHANGING)))
        newest = max((d.created_at for d, _ in rows if d.kind == "sr"), default=None)
        if last_review is not None and (newest is None or newest < last_review):
            raise NotReady("the SR does not yet include the latest review decision")
        await self._check_complete(s, study, {(d.ai_run_id, d.kind) for d, _ in rows})
        out = []
        for derived, key in rows:
            data = await asyncio.to_thread(self.store.get, key)
            out.append(ExportObject(derived.kind, derived.sop_instance_uid, data))
        return out


    async def _check_complete(self, s: AsyncSession, study: Study,
                              written: set[tuple[uuid.UUID, str]]) -> None:
        """Every completed AI run has its SR, and its SEG when it has masks left in it (the
        writer handles runs and review changes in parallel; an export waits for both)."""
        runs = (await s.execute(select(AiRun.id).where(
            AiRun.study_id == study.id, AiRun.status == AiRunStatus.COMPLETED))).scalars().all()
        masked = set((await s.execute(select(Finding.ai_run_id).where(
            Finding.study_id == study.id, Finding.mask_object_key != "",
            Finding.visible.is_(True),
            Finding.review_status.not_in(("rejected", "ignored"))))).scalars().all())
        for run in runs:
            if (run, "sr") not in written or (run in masked and (run, "seg") not in written):
                raise NotReady(f"the SR/SEG of AI run {run} are not written yet")


def c_store(destination: DicomPeer, objects: Sequence[ExportObject],
            timeout_s: float = 30.0, tls: ssl.SSLContext | None = None) -> dict[str, int]:
    """Sends each object on one association (over TLS with `tls`); returns SOP Instance UID →
    DIMSE status. Raises TransientError when the PACS cannot be reached, aborts or fails the
    TLS handshake, PermanentError when its certificate does not verify."""
    items = [(o, prepare(o.data)) for o in objects]
    statuses: dict[str, int] = {}
    try:
        with StoreSCU(destination.connect_host, destination.port, CALLING_AE,
                      destination.ae_title, [item.context for _, item in items], timeout_s,
                      tls=tls, server_name=destination.host) as scu:
            for o, item in items:
                try:
                    rsp = scu.store(item)
                except (ContextRejected, ValueError):  # no context for its class and syntax
                    statuses[o.sop_instance_uid] = 0x0122  # refused: SOP class not supported
                    continue
                status = status_of(rsp)
                if status is None:
                    raise TransientError(f"no C-STORE response from {destination}")
                statuses[o.sop_instance_uid] = status
    except AssociationRefused as exc:
        if exc.tls_verify_failed:  # not fixed by retrying: the CA or the PACS's certificate
            raise PermanentError(f"DICOM TLS to {destination}: the PACS's {exc.tls_error} "
                                 "(SIDECAR_PACS_TLS_CA)") from exc
        if exc.tls_error:
            raise TransientError(f"DICOM TLS handshake with {destination} failed: "
                                 f"{exc.tls_error}") from exc
        raise TransientError(f"no association with {destination} (rejected, aborted or "
                             "unreachable)") from exc
    return statuses


async def enqueue(s: AsyncSession, topology: Topology, study_id: uuid.UUID, ref: StudyRef,
                  reason: str) -> str:
    """Queues the export of a study's results (in the caller's transaction)."""
    count = await s.scalar(select(func.count()).select_from(Export).where(
        Export.study_id == study_id)) or 0
    job_id = f"export:{study_id.hex}:{count}:{uuid.uuid4().hex[:8]}"
    job = report_events_pb2.ExportJob(job_id=job_id, study_id=str(study_id), study=(
        common_pb2.StudyKey(facility=ref.facility, accession=ref.accession,
                            study_instance_uid=ref.study_instance_uid)))
    await outbox.enqueue(s, topology.subject(JOB_EXPORT), job_id, job)
    await audit.record(s, topology, "export.queued", ACTOR, ref, job_id=job_id,
                       context={"reason": reason})
    return job_id


class ExportWorker:
    """Consumes sidecar.job.v1.export: C-STORE of the results, audited per object."""

    def __init__(self, db: Database, topology: Topology, source: ResultsSource, *,
                 tls: Callable[[], ssl.SSLContext] | None = None,
                 egress: EgressPolicy | None = None) -> None:
        self.db = db
        self.topology = topology
        self.source = source
        self.egress = egress or EgressPolicy()  # no allow-list unless the caller gives one
        self.tls = tls  # the client context of DICOM TLS exports (DicomTlsSettings)

    def _tls_context(self, destination: DicomPeer) -> ssl.SSLContext | None:
        if not destination.tls:
            return None
        if self.tls is None:
            raise PermanentError(f"{destination} wants DICOM TLS (pacs_tls) and this worker "
                                 "has no DICOM TLS settings")
        try:
            return self.tls()
        except DicomTlsError as exc:
            raise PermanentError(f"DICOM TLS to {destination}: {exc}") from exc

    async def handle(self, delivery: Delivery) -> None:
        try:
            job = report_events_pb2.ExportJob.FromString(delivery.data)
            study_id = uuid.UUID(job.study_id)
        except Exception as exc:
            raise PermanentError(f"undecodable export job: {exc}") from exc
        async with self.db.read() as s:
            study = (await s.execute(select(Study).where(Study.id == study_id))).scalar_one()
            facility = (await s.execute(select(Facility).where(
                Facility.id == study.facility_id))).scalar_one()
            ref = await study_ref(s, study)
            pacs = DicomPeer.pacs_of(facility)
            if pacs is None:
                return  # no PACS configured for this facility: nothing to do
            destination = pacs
            sent = set((await s.execute(select(Export.sop_instance_uid).where(
                Export.job_id.like(f"{job.job_id}:%"), Export.status == "sent"))
            ).scalars().all())
            try:
                if facility.export_rejected != "omit":
                    raise PermanentError(f"export_rejected={facility.export_rejected} is not "
                                         "supported by the SR writer (it omits rejected "
                                         "findings)")
                objects = [o for o in await self.source.objects(s, study)
                           if o.sop_instance_uid not in sent]
            except Exception as exc:
                await self._failed(ref, job.job_id, delivery, destination, exc)
                raise
        if not objects:
            return
        try:
            checked = await self.egress.check_dicom(destination.host, destination.port,
                                                    tls=destination.tls)
        except EgressRefused as exc:
            await self._refused(ref, job.job_id, delivery, destination, exc)
        destination = replace(destination, address=checked.addresses[0])
        try:
            tls = self._tls_context(destination)
            statuses = await asyncio.to_thread(c_store, destination, objects, 30.0, tls)
        except Exception as exc:
            await self._failed(ref, job.job_id, delivery, destination, exc)
            raise
        await self._record(ref, study_id, job.job_id, delivery, destination, objects, statuses)

    async def _record(self, ref: StudyRef, study_id: uuid.UUID, job_id: str,
                      delivery: Delivery, destination: DicomPeer,
                      objects: Sequence[ExportObject], statuses: dict[str, int]) -> None:
        refused = []
        async with self.db.unit_of_work() as s:
            for o in objects:
                status = statuses.get(o.sop_instance_uid, -1)
                ok = status == 0 or 0xB000 <= status <= 0xBFFF  # success or warning
                row_key = f"{job_id}:{o.sop_instance_uid}"[:128]
                s.add(Export(study_id=study_id, job_id=row_key, kind=o.kind,
                             sop_instance_uid=o.sop_instance_uid, destination=str(destination),
                             status="sent" if ok else "refused", attempts=delivery.attempt,
                             dimse_status=status))
                if ok:
                    await audit.record(s, self.topology, "export.sent", ACTOR, ref,
                                       job_id=job_id, attempt=delivery.attempt, context={
                                           "destination": str(destination), "kind": o.kind,
                                           "tls": destination.tls,
                                           "sop_instance_uid": o.sop_instance_uid,
                                           "dimse_status": f"0x{status:04X}"})
                else:
                    refused.append(f"{o.kind} {o.sop_instance_uid}: 0x{status & 0xFFFF:04X}")
            if refused:
                await audit.record(s, self.topology, "export.failed", ACTOR, ref,
                                   job_id=job_id, attempt=delivery.attempt,
                                   error_class="CStoreRefused",
                                   error_message="; ".join(refused)[:2000],
                                   context={"destination": str(destination), "final": True})
            await s.execute(update(Export).where(Export.job_id.like(f"{job_id}:%"),
                                                 Export.status == "refused")
                            .values(last_error="refused by the PACS"))
        if refused:
            raise PermanentError(f"PACS refused: {'; '.join(refused)}")

    async def _refused(self, ref: StudyRef, job_id: str, delivery: Delivery,
                       destination: DicomPeer, exc: EgressRefused) -> None:
        """A PACS address the policy refuses: final (a security event), or one that does not
        resolve now: retried."""
        if not exc.security_event:
            await self._failed(ref, job_id, delivery, destination, TransientError(exc.message))
            raise TransientError(exc.message) from exc
        async with self.db.unit_of_work() as s:
            await audit.record(s, self.topology, REFUSED_EVENT, ACTOR, ref, job_id=job_id,
                               attempt=delivery.attempt, error_class=exc.reason,
                               error_message=exc.message,
                               context={"destination": str(destination), "setting": "pacs"})
        await self._failed(ref, job_id, delivery, destination, PermanentError(
            f"refused by the egress policy: {exc.message}"))
        raise PermanentError(f"refused by the egress policy: {exc.message}") from exc

    async def _failed(self, ref: StudyRef, job_id: str, delivery: Delivery,
                      destination: DicomPeer, exc: BaseException) -> None:
        final = not isinstance(exc, TransientError) or delivery.is_last_attempt
        async with self.db.unit_of_work() as s:
            await audit.record(s, self.topology, "export.failed" if final else "export.retrying",
                               ACTOR, ref, job_id=job_id, attempt=delivery.attempt, error=exc,
                               context={"destination": str(destination), "final": final,
                                        "tls": destination.tls})
