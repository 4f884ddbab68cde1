"""One received HL7 message: store it as received, dedupe by MSH-10, record its reports."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, Select, bindparam, insert, select, true
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from sidecar_core import audit
from sidecar_core.audit import StudyRef
from sidecar_core.db import Database
from sidecar_core.messaging.subjects import Topology
from sidecar_core.observability.metrics import StageClock
from sidecar_core.secret_box import SecretBox
from sidecar_core.store.batch import WriteBatch
from sidecar_core.store.models import Facility, Hl7Message
from workflow_svc.report_loop.hl7.ack import Verdict
from workflow_svc.report_loop.hl7.message import (
    E_INTERNAL,
    E_UNKNOWN_KEY,
    RESULT_STATUSES,
    Header,
    Hl7Error,
    ParsedOru,
    decode,
    header_of,
    parse_oru,
)
from workflow_svc.report_loop.legacy_reports import ReportInput, record_report
from workflow_svc.report_loop.report_text import seal_message

log = logging.getLogger(__name__)
ACTOR = "hl7_listener"


async def receive(db: Database, topology: Topology, raw: bytes, source: str = "mllp",
                  peer: str = "", box: SecretBox | None = None,
                  clock: StageClock | None = None) -> tuple[Header, Verdict]:
    """Takes one message; the verdict says which ACK it earns. Every message is kept as
    received (`hl7_messages`), even one we refuse, sealed with `box` (without one only its MSH
    segment); a repeat of an accepted one changes nothing. Each report's text (OBX) is kept
    sealed with `box` too (not kept without one). `clock`, if any, gets a lap per stage of an
    accepted message (metrics.HL7_STAGE_SECONDS)."""
    try:
        parsed = parse_oru(raw)
    except Hl7Error as err:
        header = header_of(decode(raw))
        return header, await _refuse(db, topology, raw, source, peer, header, err, box)
    header = parsed.header
    clock = clock or _NO_CLOCK
    clock.lap("parse")
    for attempt in range(2):
        try:
            return header, await _accept(db, topology, raw, source, peer, parsed, box, clock)
        except IntegrityError:
            # the same message on another connection won the race: now it is a repeat
            if attempt:
                raise
        except DBAPIError as exc:
            # a pooled connection the server dropped (the listener does not ping before each
            # message): again on a fresh one. Safe even if it dropped during COMMIT: a message
            # that was stored is then a repeat, acknowledged without a second copy.
            if attempt or not exc.connection_invalidated:
                raise
    raise AssertionError("unreachable")


class _NoClock:
    def lap(self, stage: str) -> None:
        pass


_NO_CLOCK: Any = _NoClock()


async def _accept(db: Database, topology: Topology, raw: bytes, source: str, peer: str,
                  parsed: ParsedOru, box: SecretBox | None, clock: StageClock) -> Verdict:
    """Three round trips and the commit: the earlier copy and the facility (one query), the
    studies of each report (locked), then every write of the message as one batch."""
    async with db.unit_of_work() as s:
        await s.connection()
        clock.lap("connect")
        verdict = await _accept_in(s, topology, raw, source, peer, parsed, box, clock)
    clock.lap("commit")
    return verdict


async def _accept_in(s: AsyncSession, topology: Topology, raw: bytes, source: str, peer: str,
                     parsed: ParsedOru, box: SecretBox | None, clock: StageClock) -> Verdict:
    header = parsed.header
    earlier, facility = await _earlier_and_facility(s, header)
    clock.lap("read")
    if earlier is not None:
        await audit.record(s, topology, "hl7.duplicate_seen", ACTOR,
                           StudyRef(), context={
                               "control_id": header.control_id, "peer": peer,
                               "first_message_id": str(earlier.id),
                               "first_received_at": earlier.received_at.isoformat()})
        return Verdict("AA", f"duplicate of message {header.control_id}; nothing changed")
    if facility is None:
        err = Hl7Error("AE", "MSH", 1, 4, E_UNKNOWN_KEY,
                       f"MSH-4 sending facility {header.sending_facility} is not mapped "
                       "to a facility (sidecar facility set NAME --hl7-sending-facility)")
        await _store(s, topology, raw, source, peer, header, "rejected", err, None, box)
        return Verdict("AE", err.text, err)
    batch = WriteBatch(topology)
    message_id = uuid.uuid4()
    batch.add(insert(Hl7Message).values(
        _message_row(message_id, raw, source, peer, header, "accepted", None, facility.id,
                     box)))
    matched = 0
    for fact in parsed.reports:
        done = await record_report(s, topology, facility, ReportInput(
            accession=fact.accession, report_reference=fact.report_reference,
            result_status=fact.result_status,
            completed_at=fact.results_at or header.message_at or datetime.now(UTC),
            source="hl7", observed_at=fact.observed_at, message_at=header.message_at,
            hl7_message_id=message_id,
            details={"control_id": header.control_id, "obr": fact.sequence,
                     "accession_field": fact.accession_field,
                     "result_status_text": RESULT_STATUSES[fact.result_status]},
            text=fact.text, patient_id=fact.patient_id,
            patient_id_issuer=fact.patient_id_issuer), batch, box)
        clock.lap("lock")
        # the next report may name the same study: it must see this one's writes
        await batch.flush(s)
        clock.lap("write")
        matched += done.matched
    await batch.flush(s)
    n = len(parsed.reports)
    return Verdict("AA", f"{n} report(s) recorded, {matched} matched to a study")


def _earlier_and_facility_query() -> Select[Any]:
    earlier = (select(Hl7Message.id, Hl7Message.received_at)
               .where(Hl7Message.sending_facility == bindparam("sending_facility"),
                      Hl7Message.control_id == bindparam("control_id"),
                      Hl7Message.status == "accepted").limit(1).subquery())
    facility = (select(Facility)
                .where(Facility.hl7_sending_facility == bindparam("sending_facility"))
                .subquery())
    mapped = aliased(Facility, facility)
    return (select(earlier.c.id, earlier.c.received_at, mapped)
            .select_from(earlier.join(facility, true(), full=True)))


# built once: its SQL and cache key are computed once, not for every message
_EARLIER_AND_FACILITY = _earlier_and_facility_query()


async def _earlier_and_facility(s: AsyncSession, header: Header
                                ) -> tuple[Row[Any] | None, Facility | None]:
    """The accepted message with this MSH-4 and MSH-10, if any, and the facility MSH-4 maps
    to, if any: one round trip."""
    row = (await s.execute(_EARLIER_AND_FACILITY, {
        "sending_facility": header.sending_facility, "control_id": header.control_id})).first()
    if row is None:
        return None, None
    return (row if row.id is not None else None), row[2]


async def _refuse(db: Database, topology: Topology, raw: bytes, source: str, peer: str,
                  header: Header, err: Hl7Error, box: SecretBox | None) -> Verdict:
    try:
        async with db.unit_of_work() as s:
            facility_id = None
            if header.sending_facility:
                facility_id = (await s.execute(select(Facility.id).where(
                    Facility.hl7_sending_facility == header.sending_facility))
                ).scalar_one_or_none()
            await _store(s, topology, raw, source, peer, header, "rejected", err, facility_id,
                         box)
    except Exception:
        log.exception("could not store a refused HL7 message")
        return Verdict(err.ack, err.text, err, committed=False)
    return Verdict(err.ack, err.text, err)


def internal_error(exc: BaseException) -> Verdict:
    """The verdict when the store is unreachable: AE 207, nothing kept; the sender retries."""
    err = Hl7Error("AE", "MSH", 1, 0, E_INTERNAL,
                   f"message not stored ({type(exc).__name__}); send it again later")
    return Verdict("AE", err.text, err, committed=False)


async def _store(s: AsyncSession, topology: Topology, raw: bytes, source: str, peer: str,
                 header: Header, status: str, err: Hl7Error | None,
                 facility_id: uuid.UUID | None, box: SecretBox | None) -> uuid.UUID:
    row = Hl7Message(**_message_row(uuid.uuid4(), raw, source, peer, header, status, err,
                                    facility_id, box))
    s.add(row)
    await s.flush()
    if err is not None:
        await audit.record(s, topology, "hl7.message_rejected", ACTOR, StudyRef(),
                           error_class=f"HL7_{err.condition[0]}", error_message=err.text,
                           context={"hl7_message_id": str(row.id), "ack": err.ack,
                                    "location": err.location, "control_id": header.control_id,
                                    "sending_facility": header.sending_facility,
                                    "peer": peer})
    return row.id


def _message_row(message_id: uuid.UUID, raw: bytes, source: str, peer: str, header: Header,
                 status: str, err: Hl7Error | None, facility_id: uuid.UUID | None,
                 box: SecretBox | None) -> dict[str, Any]:
    """The `hl7_messages` row of a message as received (sealed for its row)."""
    return dict(
        id=message_id, source=source, peer=peer[:128], raw=seal_message(box, message_id, raw),
        sending_facility=header.sending_facility[:227], control_id=header.control_id[:199],
        message_type=header.message_type[:32], version=header.version[:16], status=status,
        ack_code=err.ack if err else "AA", error_location=err.location if err else "",
        error_message=err.text if err else "", facility_id=facility_id)
