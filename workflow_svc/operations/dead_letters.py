"""Dead letters: audit each one as it lands, list the jobs that exhausted their deliveries,
re-drive or discard them.

The dead-letter stream (`sidecar.dlq.>`) holds one `DeadLetter` per job or event that failed
for good, with the original payload. An operator names them by their sequence number in that
stream (or by facility and kind). Re-driving puts the work back where it came from; for an AI
run that means a new run of the same model on the same series (the failed run is kept and
marked `redriven`) and the study, if it ended in `ai_failed`, goes back to `processed` so that
the new run's result moves it on. Every action is an audit event naming the operator and the
sequence, and a sequence already re-driven is never re-driven twice (a crash between the audit
and the deletion from the stream is safe).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError, Message
from nats.js.errors import NotFoundError
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from protos.sidecar.events.v1 import events_pb2
from sidecar_core import audit
from sidecar_core.ai_run_status import AiRunStatus
from sidecar_core.audit import StudyRef
from sidecar_core.db import Database
from sidecar_core.errors import InvalidArgument, TransientError
from sidecar_core.messaging import outbox
from sidecar_core.messaging.bus import Bus, Delivery
from sidecar_core.messaging.consumed import first_time
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
from sidecar_core.store.models import AiRun, Facility, Study
from workflow_svc.study.states import State, study_ref, transition

log = logging.getLogger(__name__)
ACTOR = "workflow_svc"
CONSUMER = "dead-letter-audit"
EVENT = "job.dead_lettered"
# What each original subject carries (those whose payload names its study); the operators'
# dead-letter list below decodes with the same map.
PAYLOADS: dict[str, type[Message]] = {
    JOB_PREPROCESS: events_pb2.PreprocessJob,
    JOB_OVERLAY: events_pb2.PreprocessJob,
    JOB_AI_RUN: events_pb2.AiRunJob,
    STUDY_RECEIVED: events_pb2.StudyReceived,
    ASSET_PREPROCESSED: events_pb2.PreprocessCompleted,
    AI_RUN_FINISHED: events_pb2.AiRunFinished,
    AI_RUN_FINDINGS_STORED: events_pb2.AiRunFindingsStored,
}


class DeadLetterAuditor:
    """Records `job.dead_lettered` once per dead letter, under its study when it names one."""

    def __init__(self, db: Database, topology: Topology) -> None:
        self.db = db
        self.topology = topology

    async def handle(self, delivery: Delivery) -> None:
        try:
            letter = events_pb2.DeadLetter.FromString(delivery.data)
        except DecodeError:
            log.warning("undecodable dead letter on %s skipped", delivery.subject)
            return
        subject = letter.original_subject.removeprefix(self.topology.prefix + ".")
        try:
            async with self.db.unit_of_work() as s:
                if not await first_time(s, CONSUMER, delivery.msg_id):
                    return
                await audit.record(
                    s, self.topology, EVENT, ACTOR, study_of(subject, letter.original_payload),
                    job_id=letter.original_msg_id, attempt=letter.deliveries,
                    error_class=letter.error_class, error_message=letter.error_message,
                    context={"subject": letter.original_subject, "consumer": letter.consumer})
        except (OperationalError, DBAPIError, OSError) as exc:
            raise TransientError(f"recording dead letter: {exc}") from exc


def decode_payload(subject: str, payload: bytes) -> Message | None:
    """A dead message's payload (`subject` without the prefix), or None when its type is not
    known or it no longer decodes."""
    message_type = PAYLOADS.get(subject)
    if message_type is None:
        return None
    try:
        return message_type.FromString(payload)
    except DecodeError:
        return None


def study_of(subject: str, payload: bytes) -> StudyRef | None:
    """The study a dead message was about, when its payload still decodes."""
    message = decode_payload(subject, payload)
    if message is None:
        return None
    try:
        study_id = uuid.UUID(getattr(message, "study_id", ""))
    except ValueError:
        return None
    key = getattr(message, "study", None)
    if key is None:
        return StudyRef(study_id=study_id)
    return StudyRef(key.facility, key.accession, key.study_instance_uid, study_id)


MAX_PAGE = 500


@dataclass
class Letter:
    """One dead letter as an operator sees it."""

    sequence: int
    kind: str
    name: str  # the original subject without the prefix, e.g. job.v1.ai_run
    letter: events_pb2.DeadLetter
    facility: str = ""
    accession: str = ""
    study_instance_uid: str = ""
    study_id: str = ""
    job_id: str = ""
    payload: Message | None = None


@dataclass(frozen=True)
class Filter:
    facility: str = ""
    kind: str = ""
    sequences: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.facility or self.kind or self.sequences)

    def matches(self, letter: Letter) -> bool:
        return ((not self.facility or letter.facility == self.facility)
                and (not self.kind or letter.kind == self.kind)
                and (not self.sequences or letter.sequence in self.sequences))


def kind_of(name: str) -> str:
    """`job.v1.ai_run` → `ai_run`; an event such as `study.v1.received` → `study.received`."""
    domain, _, rest = name.partition(".")
    event = rest.partition(".")[2] or rest
    return event if domain == "job" else f"{domain}.{event}"


class DeadLetters:
    """Reads and acts on the dead-letter stream; audit rows go to the workflow store."""

    def __init__(self, db: Database, bus: Bus, topology: Topology) -> None:
        self.db = db
        self.bus = bus
        self.topology = topology
        self.stream = f"{topology.stream_prefix}_DLQ"

    async def find(self, where: Filter, page_size: int = 0,
                   page_token: str = "") -> tuple[list[Letter], str]:
        """Matching letters in stream order from `page_token` (a sequence number)."""
        if page_token and not page_token.isdigit():
            raise InvalidArgument("INVALID_PAGE_TOKEN", "page_token must come from a previous page")
        size = min(page_size or 100, MAX_PAGE)
        info = await self.bus.js.stream_info(self.stream)
        first, last = info.state.first_seq, info.state.last_seq
        if not info.state.messages:
            return [], ""
        seq = max(first, int(page_token or 0), 1)
        found: list[Letter] = []
        sequences = sorted(s for s in where.sequences if s >= seq) if where.sequences else None
        candidates = iter(sequences) if sequences is not None else iter(range(seq, last + 1))
        for s in candidates:
            if s > last:
                break
            letter = await self._load(s)
            if letter is None or not where.matches(letter):
                continue
            if len(found) == size:
                return found, str(s)
            found.append(letter)
        return found, ""

    async def _load(self, sequence: int) -> Letter | None:
        try:
            raw = await self.bus.js.get_msg(self.stream, seq=sequence)
        except NotFoundError:
            return None  # discarded or re-driven
        letter = events_pb2.DeadLetter()
        try:
            letter.ParseFromString(raw.data or b"")
        except DecodeError:
            return Letter(sequence, "undecodable", raw.subject or "", letter)
        name = letter.original_subject.removeprefix(self.topology.prefix + ".")
        found = Letter(sequence, kind_of(name), name, letter)
        payload = decode_payload(name, letter.original_payload)
        if payload is not None:
            found.payload = payload
            found.study_id = getattr(payload, "study_id", "")
            found.job_id = getattr(payload, "job_id", "")
            key = getattr(payload, "study", None)
            if key is not None:
                found.facility, found.accession = key.facility, key.accession
                found.study_instance_uid = key.study_instance_uid
        if found.study_id and not found.facility:
            await self._fill_study(found)
        return found

    async def _fill_study(self, letter: Letter) -> None:
        try:
            study_id = uuid.UUID(letter.study_id)
        except ValueError:
            return
        async with self.db.read() as s:
            row = (await s.execute(
                select(Facility.name, Study.accession, Study.study_instance_uid)
                .join(Study, Study.facility_id == Facility.id).where(Study.id == study_id)
            )).first()
        if row is not None:
            letter.facility, letter.accession, letter.study_instance_uid = row

    async def _select(self, where: Filter) -> list[Letter]:
        if where.empty:
            raise InvalidArgument("FILTER_REQUIRED",
                                  "name dead letters by sequence, facility or kind")
        letters: list[Letter] = []
        token = ""
        while True:
            page, token = await self.find(where, MAX_PAGE, token)
            letters.extend(page)
            if not token:
                return letters

    async def redrive(self, where: Filter, operator: str) -> list[int]:
        """Re-drives every matching letter; returns their sequences."""
        operator = _operator(operator)
        done: list[int] = []
        for letter in await self._select(where):
            async with self.db.unit_of_work() as s:
                if not await self._already(s, letter.sequence):
                    context = await self._put_back(s, letter, operator)
                    await self._audit(s, "job.redriven", letter, operator, context)
            await self._delete(letter.sequence)
            done.append(letter.sequence)
        return done

    async def discard(self, where: Filter, operator: str, reason: str) -> list[int]:
        operator = _operator(operator)
        done: list[int] = []
        for letter in await self._select(where):
            async with self.db.unit_of_work() as s:
                if not await self._already(s, letter.sequence):
                    await self._audit(s, "job.discarded", letter, operator,
                                      {"reason": reason[:500]})
            await self._delete(letter.sequence)
            done.append(letter.sequence)
        return done

    async def _already(self, s: AsyncSession, sequence: int) -> bool:
        """True when this sequence was re-driven or discarded before (its deletion failed)."""
        row = await s.execute(text(
            "SELECT 1 FROM audit_events WHERE type IN ('job.redriven', 'job.discarded') "
            "AND context->>'dead_letter_stream' = :stream "
            "AND (context->>'sequence')::bigint = :seq LIMIT 1"),
            {"stream": self.stream, "seq": sequence})
        return row.first() is not None

    async def _put_back(self, s: AsyncSession, letter: Letter,
                        operator: str) -> dict[str, Any]:
        if letter.name == JOB_AI_RUN and isinstance(letter.payload, events_pb2.AiRunJob):
            return await self._new_ai_run(s, letter.payload, operator)
        msg_id = f"redrive:{self.stream}:{letter.sequence}"
        await outbox.enqueue_raw(s, letter.letter.original_subject, msg_id,
                                 letter.letter.original_payload)
        return {"republished_as": msg_id}

    async def _new_ai_run(self, s: AsyncSession, job: events_pb2.AiRunJob,
                          operator: str) -> dict[str, Any]:
        """A fresh run of the same model on the same series; the failed one stays, `redriven`."""
        old = (await s.execute(select(AiRun).where(AiRun.id == uuid.UUID(job.ai_run_id))
                               .with_for_update())).scalar_one_or_none()
        if old is None:
            raise InvalidArgument("UNKNOWN_AI_RUN", f"AI run {job.ai_run_id} does not exist")
        study = (await s.execute(select(Study).where(Study.id == old.study_id)
                                 .with_for_update())).scalar_one()
        if old.status != AiRunStatus.COMPLETED:
            old.status = AiRunStatus.REDRIVEN
        run = AiRun(id=uuid.uuid4(), study_id=old.study_id, series_id=old.series_id,
                    model_name=old.model_name, status=AiRunStatus.QUEUED)
        s.add(run)
        await s.flush()
        if study.state == State.AI_FAILED:
            await transition(s, self.topology, study.id, State.PROCESSED, "operator:" + operator,
                             f"AI run of {old.model_name} re-driven by {operator}")
        await s.execute(update(Study).where(Study.id == study.id).values(ai_status="running"))
        ref = await study_ref(s, study)
        new_job = events_pb2.AiRunJob(
            job_id=f"ai_run:{run.id}", ai_run_id=str(run.id), study_id=str(study.id),
            series_id=str(run.series_id or ""), model_name=run.model_name, study=job.study
            if job.HasField("study") else None)
        await outbox.enqueue(s, self.topology.subject(JOB_AI_RUN), new_job.job_id, new_job)
        await audit.record(s, self.topology, "ai_run.queued", "operator:" + operator, ref,
                           job_id=new_job.job_id,
                           context={"model": run.model_name, "ai_run_id": str(run.id),
                                    "redrive_of": str(old.id)})
        return {"new_ai_run_id": str(run.id), "redrive_of": str(old.id)}

    async def _audit(self, s: AsyncSession, event_type: str, letter: Letter, operator: str,
                     extra: dict[str, Any]) -> None:
        study = StudyRef(letter.facility, letter.accession, letter.study_instance_uid,
                         _uuid_or_none(letter.study_id))
        await audit.record(
            s, self.topology, event_type, "operator:" + operator, study,
            job_id=letter.job_id, attempt=int(letter.letter.deliveries),
            error_class=letter.letter.error_class,
            error_message=letter.letter.error_message,
            context={"dead_letter_stream": self.stream, "sequence": letter.sequence,
                     "kind": letter.kind, "original_subject": letter.letter.original_subject,
                     "consumer": letter.letter.consumer, "operator": operator, **extra})

    async def _delete(self, sequence: int) -> None:
        with contextlib.suppress(NotFoundError):  # already gone
            await self.bus.js.delete_msg(self.stream, sequence)


def _operator(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 64:
        raise InvalidArgument("OPERATOR_REQUIRED", "name the operator (1 to 64 characters)")
    return name


def _uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None
