"""Status handoff: a signed webhook per facility after the official report, retried on the bus.

The destination passes the egress policy at every attempt and the POST goes to the address that
was checked; a refused destination fails the job (`handoff.sync_failed`) and is audited as
`security.egress_refused`. The receiver's reply is never stored: only its status and size."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import exists, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from protos.sidecar.common.v1 import common_pb2
from protos.sidecar.events.v1 import report_events_pb2
from sidecar_core import audit
from sidecar_core.audit import StudyRef
from sidecar_core.db import Database
from sidecar_core.egress import REFUSED_EVENT, EgressPolicy, EgressRefused, pinned_client
from sidecar_core.errors import PermanentError, TransientError
from sidecar_core.messaging import outbox
from sidecar_core.messaging.bus import Delivery
from sidecar_core.messaging.subjects import JOB_HANDOFF, Topology
from sidecar_core.secret_box import SecretBox, SecretKeyError, facility_context
from sidecar_core.store.batch import WriteBatch
from sidecar_core.store.models import Facility, Finding, Handoff, LegacyReport, Study
from workflow_svc.study.states import State, study_ref, transition

log = logging.getLogger(__name__)
ACTOR = "handoff"
SIGNATURE_HEADER = "X-Sidecar-Signature"
TIMESTAMP_HEADER = "X-Sidecar-Timestamp"
DELIVERY_HEADER = "X-Sidecar-Delivery"
PAYLOAD_VERSION = "sidecar.handoff/1"


async def enqueue(s: AsyncSession, topology: Topology, study_id: uuid.UUID,
                  report_id: uuid.UUID, ref: StudyRef, redrive: int = 0) -> str:
    """Queues the handoff of one report of one study (in the caller's transaction)."""
    # audit job ids are at most 64 characters
    job_id = f"handoff:{report_id.hex[:16]}{study_id.hex[:16]}" + (f":r{redrive}" if redrive
                                                                   else "")
    existing = (await s.execute(select(Handoff).where(
        Handoff.study_id == study_id, Handoff.legacy_report_id == report_id))).scalar_one_or_none()
    if existing is None:
        s.add(Handoff(id=uuid.uuid4(), study_id=study_id, legacy_report_id=report_id,
                      status="pending", attempts=0, job_id=job_id))
    else:
        existing.status, existing.job_id = "pending", job_id
    await s.execute(update(Study).where(Study.id == study_id).values(handoff_status="pending"))
    job = report_events_pb2.HandoffJob(
        job_id=job_id, study_id=str(study_id), legacy_report_id=str(report_id),
        study=common_pb2.StudyKey(facility=ref.facility, accession=ref.accession,
                                  study_instance_uid=ref.study_instance_uid))
    await outbox.enqueue(s, topology.subject(JOB_HANDOFF), job_id, job)
    return job_id


def enqueue_in(batch: WriteBatch, topology: Topology, study_id: uuid.UUID,
               report_id: uuid.UUID, ref: StudyRef) -> str:
    """`enqueue` as writes of a batch: the handoff row is inserted, or, where one of this
    study and report exists, set pending again (both in the batch's one statement: the
    snapshot they share has the row or not, so exactly one of them writes)."""
    job_id = f"handoff:{report_id.hex[:16]}{study_id.hex[:16]}"
    same = (Handoff.study_id == study_id, Handoff.legacy_report_id == report_id)
    batch.add(update(Handoff).where(*same).values(status="pending", job_id=job_id))
    batch.add(insert(Handoff).from_select(
        ["id", "study_id", "legacy_report_id", "status", "attempts", "last_error", "job_id"],
        select(literal(uuid.uuid4()), literal(study_id), literal(report_id),
               literal("pending"), literal(0), literal(""), literal(job_id))
        .where(~exists().where(*same)), include_defaults=False))
    batch.update_row(Study, study_id, handoff_status="pending")
    batch.enqueue(topology.subject(JOB_HANDOFF), job_id, report_events_pb2.HandoffJob(
        job_id=job_id, study_id=str(study_id), legacy_report_id=str(report_id),
        study=common_pb2.StudyKey(facility=ref.facility, accession=ref.accession,
                                  study_instance_uid=ref.study_instance_uid)))
    return job_id


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=` + HMAC-SHA256(secret, "<timestamp>." + body), hex."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str,
           tolerance_s: float = 300.0, now: float | None = None) -> bool:
    """What a receiver does: recompute the signature and refuse stale timestamps."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs((now or time.time()) - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


def destination_of(url: str) -> str:
    """The URL as audited: no credentials, no query string."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(frozen=True)
class _Plan:
    handoff_id: uuid.UUID
    url: str
    secret: str
    body: bytes
    digest: str
    ref: StudyRef


class HandoffWorker:
    """Consumes sidecar.job.v1.handoff: one POST per delivery, audited; the bus retries."""

    def __init__(self, db: Database, topology: Topology, timeout_s: float = 10.0,
                 egress: EgressPolicy | None = None, box: SecretBox | None = None) -> None:
        self.db = db
        self.topology = topology
        self.timeout_s = timeout_s
        self.egress = egress or EgressPolicy()  # no allow-list unless the caller gives one
        self.box = box

    async def handle(self, delivery: Delivery) -> None:
        try:
            job = report_events_pb2.HandoffJob.FromString(delivery.data)
            study_id, report_id = uuid.UUID(job.study_id), uuid.UUID(job.legacy_report_id)
        except Exception as exc:
            raise PermanentError(f"undecodable handoff job: {exc}") from exc
        plan = await self._plan(study_id, report_id, job.job_id)
        if plan is None:
            return
        refused: EgressRefused | None = None
        try:
            status, error = await self._post(plan, job.job_id)
        except EgressRefused as exc:  # a name that does not resolve now is retried
            refused = exc if exc.security_event else None
            status, error = None, (f"refused by the egress policy: {exc.message}"
                                   if refused else exc.message)
        ok = status is not None and 200 <= status < 300
        permanent = refused is not None or (
            status is not None and 400 <= status < 500 and status not in (408, 429))
        exhausted = not ok and (permanent or delivery.is_last_attempt)
        await self._record(plan, study_id, job.job_id, delivery.attempt, status, error, ok,
                           exhausted, refused)
        if ok:
            return
        if exhausted:
            raise PermanentError(f"handoff to {destination_of(plan.url)} failed: {error}")
        raise TransientError(f"handoff to {destination_of(plan.url)} failed: {error}")

    async def _plan(self, study_id: uuid.UUID, report_id: uuid.UUID, job_id: str
                    ) -> _Plan | None:
        async with self.db.unit_of_work() as s:
            row = (await s.execute(select(Handoff).where(
                Handoff.study_id == study_id, Handoff.legacy_report_id == report_id)
                .with_for_update())).scalar_one_or_none()
            if row is not None and row.status in ("recorded", "skipped"):
                return None  # done already: a redelivery changes nothing
            study = (await s.execute(select(Study).where(Study.id == study_id))).scalar_one()
            facility = (await s.execute(select(Facility).where(
                Facility.id == study.facility_id))).scalar_one()
            ref = StudyRef(facility.name, study.accession, study.study_instance_uid, study.id)
            if row is None:
                row = Handoff(id=uuid.uuid4(), study_id=study_id, legacy_report_id=report_id,
                              status="pending", attempts=0, job_id=job_id)
                s.add(row)
                await s.flush()
            if not facility.handoff_url:
                await self._finish(s, row, study, ref, "skipped", "none", "",
                                   "no handoff destination configured; status recorded here")
                return None
            report = (await s.execute(select(LegacyReport).where(
                LegacyReport.id == report_id))).scalar_one()
            payload = await _payload(s, study, facility, report)
            body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
            digest = hashlib.sha256(body).hexdigest()
            row.destination = destination_of(facility.handoff_url)
            row.payload_sha256 = digest
            secret = facility.handoff_secret or ""
            if SecretBox.is_sealed(secret):
                if self.box is None:
                    raise PermanentError("the handoff secret is sealed and no secret key is "
                                         "configured")
                try:
                    secret = self.box.open(secret, facility_context(facility.name,
                                                                    "handoff_secret"))
                except SecretKeyError as exc:
                    raise PermanentError(str(exc)) from None
            return _Plan(row.id, facility.handoff_url, secret, body, digest, ref)

    async def _post(self, plan: _Plan, job_id: str) -> tuple[int | None, str]:
        ts = int(time.time())
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: str(ts),
                   DELIVERY_HEADER: job_id}
        if plan.secret:
            headers[SIGNATURE_HEADER] = sign(plan.secret, ts, plan.body)
        destination = await self.egress.check_url(plan.url)  # EgressRefused
        try:
            async with pinned_client(destination, self.timeout_s) as http:
                reply = await http.post(plan.url, content=plan.body, headers=headers)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]
        if 200 <= reply.status_code < 300:
            return reply.status_code, ""
        # the receiver's body is not ours to keep (it may echo anything): status and size only
        return reply.status_code, f"HTTP {reply.status_code} ({len(reply.content)} bytes)"

    async def _record(self, plan: _Plan, study_id: uuid.UUID, job_id: str, attempt: int,
                      status: int | None, error: str, ok: bool, exhausted: bool,
                      refused: EgressRefused | None = None) -> None:
        destination = destination_of(plan.url)
        async with self.db.unit_of_work() as s:
            if refused is not None:
                await audit.record(
                    s, self.topology, REFUSED_EVENT, ACTOR, plan.ref, job_id=job_id,
                    attempt=attempt, error_class=refused.reason, error_message=refused.message,
                    context={"destination": destination, "setting": "handoff_url",
                             "reason": refused.reason})
            row = (await s.execute(select(Handoff).where(Handoff.id == plan.handoff_id)
                                   .with_for_update())).scalar_one()
            row.attempts += 1
            row.last_error = error
            await audit.record(
                s, self.topology, "handoff.attempted", ACTOR, plan.ref, job_id=job_id,
                attempt=attempt, error_message=error,
                context={"destination": destination, "http_status": status,
                         "attempt": attempt, "payload_sha256": plan.digest,
                         "outcome": "ok" if ok else "failed"})
            study = (await s.execute(select(Study).where(Study.id == study_id))).scalar_one()
            if ok:
                await self._finish(s, row, study, plan.ref, "recorded", destination,
                                   plan.digest, f"handoff accepted by {destination}")
            elif exhausted:
                row.status = "failed"
                await s.execute(update(Study).where(Study.id == study_id)
                                .values(handoff_status="failed"))
                await audit.record(
                    s, self.topology, "handoff.sync_failed", ACTOR, plan.ref, job_id=job_id,
                    attempt=attempt, error_class="HandoffFailed", error_message=error,
                    context={"destination": destination, "attempts": row.attempts,
                             "payload_sha256": plan.digest, "http_status": status,
                             "redrive": "sidecar handoff retry --study " + str(study_id)})

    async def _finish(self, s: AsyncSession, row: Handoff, study: Study, ref: StudyRef,
                      status: str, destination: str, digest: str, reason: str) -> None:
        row.status = status
        row.finished_at = datetime.now(UTC)
        current = (await s.execute(update(Study).where(Study.id == study.id)
                                   .values(handoff_status=status).returning(Study.state))
                   ).scalar_one()
        if current == State.LEGACY_REPORT_COMPLETED:
            await transition(s, self.topology, study.id, State.STATUS_RECORDED, ACTOR, reason)
        await audit.record(s, self.topology, "handoff.recorded", ACTOR, ref, job_id=row.job_id,
                           context={"destination": destination, "payload_sha256": digest,
                                    "status": status})


async def _payload(s: AsyncSession, study: Study, facility: Facility,
                   report: LegacyReport) -> dict[str, Any]:
    """What the hospital is told: identities, the report's status and the AI review summary."""
    statuses = (await s.execute(select(Finding.review_status).where(
        Finding.study_id == study.id, Finding.visible.is_(True)))).scalars().all()
    counts: dict[str, int] = {}
    for st in statuses:
        counts[st] = counts.get(st, 0) + 1
    return {
        "version": PAYLOAD_VERSION,
        "event": "legacy_report.completed",
        "facility": facility.name,
        "accession": study.accession,
        "study_instance_uid": study.study_instance_uid,
        "report": {"reference": report.report_reference, "result_status": report.result_status,
                   "completed_at": report.completed_at.isoformat(), "source": report.source},
        "sidecar": {"study_id": str(study.id), "ai_status": study.ai_status,
                    "review_status": study.review_status, "findings": counts,
                    "eligible": study.eligible},
    }


async def redrive(db: Database, topology: Topology, study_id: uuid.UUID) -> list[str]:
    """Queues the failed handoffs of a study again (operator action after a sync failure)."""
    async with db.unit_of_work() as s:
        rows = (await s.execute(select(Handoff).where(
            Handoff.study_id == study_id, Handoff.status == "failed"))).scalars().all()
        study = (await s.execute(select(Study).where(Study.id == study_id))).scalar_one()
        ref = await study_ref(s, study)
        jobs = []
        for row in rows:
            if row.legacy_report_id is None:
                continue
            n = int(time.time())
            jobs.append(await enqueue(s, topology, study_id, row.legacy_report_id, ref, n))
            await audit.record(s, topology, "handoff.redriven", "operator", ref,
                               job_id=jobs[-1], context={"previous_job": row.job_id})
    return jobs
