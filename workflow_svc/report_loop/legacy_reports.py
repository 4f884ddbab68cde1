"""Legacy report completion: record the official report, match it to its study (now or later)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from sidecar_core.audit import StudyRef
from sidecar_core.db import Database
from sidecar_core.errors import InvalidArgument, NotFound
from sidecar_core.messaging.subjects import Topology
from sidecar_core.secret_box import SecretBox, SecretKeyError
from sidecar_core.store.batch import WriteBatch
from sidecar_core.store.models import Facility, Hl7Message, LegacyReport, Study
from workflow_svc.report_loop import handoff
from workflow_svc.report_loop.report_text import (
    open_message,
    open_text,
    seal_message,
    seal_text,
)
from workflow_svc.study.states import State, check, study_ref, transition_in

log = logging.getLogger(__name__)
ACTOR = "legacy_reports"
COMPLETING = ("F", "C")  # final and corrected reports complete a study; preliminary ones do not


@dataclass(frozen=True)
class ReportInput:
    """One official report as the legacy tools told us about it (HL7 or RPC)."""

    accession: str
    report_reference: str
    result_status: str  # P, F or C (OBR-25)
    completed_at: datetime
    source: str  # hl7 or rpc
    observed_at: datetime | None = None
    message_at: datetime | None = None
    hl7_message_id: uuid.UUID | None = None
    details: dict[str, Any] = field(default_factory=dict)
    text: str = ""  # the report text (OBX), kept sealed
    patient_id: str = ""  # PID-3 CX.1
    patient_id_issuer: str = ""  # PID-3 CX.4


@dataclass
class Recorded:
    report_id: uuid.UUID
    study_ids: list[uuid.UUID] = field(default_factory=list)

    @property
    def matched(self) -> bool:
        return bool(self.study_ids)


# the registered studies of an accession, locked; built once (its cache key too)
_STUDIES_OF_ACCESSION = (
    select(Study).where(Study.facility_id == bindparam("facility_id"),
                        Study.accession == bindparam("accession"), Study.state.is_not(None))
    .order_by(Study.created_at).with_for_update())


async def record_report(s: AsyncSession, topology: Topology, facility: Facility,
                        report: ReportInput, batch: WriteBatch | None = None,
                        box: SecretBox | None = None) -> Recorded:
    """Stores the report and completes every registered study of its accession, in the
    caller's transaction. Without such a study the report waits (`legacy_report.unmatched`).
    The report text is sealed with `box` into the same row write (never stored without it).

    Two round trips: the studies of the accession, read and locked, then every write (the
    report, the transitions, the handoffs, the audit events) as one batch. A caller passing
    `batch` flushes it itself (with its own writes)."""
    own = batch is None
    if batch is None:
        batch = WriteBatch(topology)
    studies = (await s.execute(_STUDIES_OF_ACCESSION, {
        "facility_id": facility.id, "accession": report.accession})).scalars().all()
    row = LegacyReport(
        id=uuid.uuid4(), facility_id=facility.id, accession=report.accession,
        completed_at=report.completed_at, source=report.source,
        raw={**report.details, "accession": report.accession},
        hl7_message_id=report.hl7_message_id, report_reference=report.report_reference,
        result_status=report.result_status, observed_at=report.observed_at,
        message_at=report.message_at,
    )
    if studies:
        row.study_id, row.matched_at, row.matched_by = (studies[0].id, datetime.now(UTC),
                                                        "message")
    batch.add(insert(LegacyReport).values(
        id=row.id, facility_id=row.facility_id, accession=row.accession,
        completed_at=row.completed_at, source=row.source, raw=row.raw,
        hl7_message_id=row.hl7_message_id, report_reference=row.report_reference,
        result_status=row.result_status, observed_at=row.observed_at,
        message_at=row.message_at, study_id=row.study_id, matched_at=row.matched_at,
        matched_by=row.matched_by or "",
        report_text_enc=seal_text(box, row.id, report.text),
        patient_id=report.patient_id[:64], patient_id_issuer=report.patient_id_issuer[:64]))
    out = Recorded(row.id)
    context = _context(row)
    if not studies:
        batch.audit("legacy_report.unmatched", ACTOR,
                    StudyRef(facility.name, report.accession), context=context)
    for study in studies:
        ref = StudyRef(facility.name, study.accession, study.study_instance_uid, study.id)
        _apply(batch, topology, study, ref, row, context, late=False)
        out.study_ids.append(study.id)
    if own:
        await batch.flush(s)
    return out


async def match_waiting_reports(s: AsyncSession, topology: Topology, study_id: uuid.UUID) -> bool:
    """Called when a study is registered: a report that arrived before it completes it now."""
    study = (await s.execute(select(Study).where(Study.id == study_id).with_for_update())
             ).scalar_one()
    reports = (await s.execute(
        select(LegacyReport).where(LegacyReport.facility_id == study.facility_id,
                                   LegacyReport.accession == study.accession)
        .order_by(LegacyReport.created_at))).scalars().all()
    if not reports:
        return False
    latest = reports[-1]
    completing = [r for r in reports if r.result_status in COMPLETING]
    chosen = completing[-1] if completing else latest
    batch = WriteBatch(topology)
    _apply(batch, topology, study, await study_ref(s, study), chosen,
           {**_context(chosen), "late_match": True}, late=True)
    await batch.flush(s)
    waiting = [r.id for r in reports if r.study_id is None]
    if waiting:
        await s.execute(update(LegacyReport).where(LegacyReport.id.in_(waiting)).values(
            study_id=study.id, matched_at=datetime.now(UTC), matched_by="study_arrival"))
    return True


def _apply(batch: WriteBatch, topology: Topology, study: Study, ref: StudyRef,
           report: LegacyReport, context: dict[str, Any], *, late: bool) -> None:
    """One report on one study, read FOR UPDATE in this transaction: complete it (F/C), or
    note a preliminary or later report."""
    state = study.state
    if report.result_status not in COMPLETING:
        batch.audit("legacy_report.preliminary", ACTOR, ref, context=context)
        return
    if state in (State.LEGACY_REPORT_COMPLETED, State.STATUS_RECORDED):
        # a corrected (or re-issued) report of a study already completed: record and sync it
        batch.audit("legacy_report.updated", ACTOR, ref, context=context)
        handoff.enqueue_in(batch, topology, study.id, report.id, ref)
        return
    if not check(state, State.LEGACY_REPORT_COMPLETED):
        batch.audit("legacy_report.deferred", ACTOR, ref, context={**context, "state": state})
        return
    how = "arrived before the study; matched on arrival" if late else "report message"
    transition_in(batch, study, ref, State.LEGACY_REPORT_COMPLETED, ACTOR,
                  f"official report {report.result_status} {report.report_reference} ({how})")
    batch.audit("legacy_report.completed", ACTOR, ref, context=context)
    handoff.enqueue_in(batch, topology, study.id, report.id, ref)


def _context(row: LegacyReport) -> dict[str, Any]:
    return {
        "legacy_report_id": str(row.id), "report_reference": row.report_reference,
        "result_status": row.result_status, "source": row.source,
        "completed_at": row.completed_at.isoformat(),
        "observed_at": row.observed_at.isoformat() if row.observed_at else None,
        "hl7_message_id": str(row.hl7_message_id) if row.hl7_message_id else None,
    }


async def complete_report(db: Database, topology: Topology, facility_name: str,
                          report: ReportInput) -> Recorded:
    """The RPC path: the facility is named directly (no MSH-4 mapping)."""
    if not report.accession or len(report.accession) > 64:
        raise InvalidArgument("INVALID_ACCESSION", "accession must be 1 to 64 characters",
                              accession=report.accession[:80])
    if report.result_status not in ("P", "F", "C"):
        raise InvalidArgument("INVALID_RESULT_STATUS", "result status must be P, F or C",
                              result_status=report.result_status)
    async with db.unit_of_work() as s:
        facility = (await s.execute(select(Facility).where(Facility.name == facility_name))
                    ).scalar_one_or_none()
        if facility is None:
            raise NotFound("FACILITY_NOT_FOUND", f"no facility {facility_name!r}",
                           facility=facility_name)
        return await record_report(s, topology, facility, report)


async def reseal_texts(db: Database, box: SecretBox, chunk: int = 500) -> int:
    """Re-seals every report text and every HL7 message as received that an earlier key sealed
    or that is still plaintext (`sidecar secrets rotate`), in chunks; a value that does not
    open is left as it is (and logged). Returns how many."""
    texts = await _reseal(db, box, LegacyReport.id, LegacyReport.report_text_enc, chunk,
                          lambda i, v: seal_text(box, i, open_text(box, i, v)) or b"")
    messages = await _reseal(db, box, Hl7Message.id, Hl7Message.raw, chunk,
                             lambda i, v: seal_message(box, i, open_message(box, i, v)))
    return texts + messages


async def _reseal(db: Database, box: SecretBox, key: Any, column: Any, chunk: int,
                  fresh: Callable[[uuid.UUID, bytes], bytes]) -> int:
    done, after = 0, uuid.UUID(int=0)
    while True:
        async with db.unit_of_work() as s:
            rows = (await s.execute(
                select(key, column).where(column.is_not(None), key > after)
                .order_by(key).limit(chunk))).all()
            for row_id, kept in rows:
                if not kept or not box.needs_sealing(bytes(kept).decode("latin-1")):
                    continue
                try:
                    value = fresh(row_id, bytes(kept))
                except SecretKeyError as exc:
                    log.error("%s left as it is: %s", column, exc)
                    continue
                result = await s.execute(update(column.class_).where(
                    key == row_id, column == kept).values({column.key: value}))
                done += result.rowcount or 0  # type: ignore[attr-defined]
        if len(rows) < chunk:
            return done
        after = rows[-1][0]
