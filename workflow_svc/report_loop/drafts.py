"""Assistive drafts: generate (template or LLM, traced), edit, accept; never a report."""

from __future__ import annotations

import re
import uuid
from datetime import UTC

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from protos.sidecar.workflow.v1 import report_service_pb2 as pb
from sidecar_core import audit
from sidecar_core.db import Database
from sidecar_core.egress import REFUSED_EVENT, EgressPolicy, EgressRefused
from sidecar_core.errors import FailedPrecondition, InvalidArgument
from sidecar_core.messaging.subjects import Topology
from sidecar_core.secret_box import SecretBox, SecretKeyError, facility_context
from sidecar_core.store.models import Draft, Facility, LlmTrace, Study
from workflow_svc.identity.access import Caller
from workflow_svc.report_loop.llm.breaker import llm_breakers
from workflow_svc.report_loop.llm.context import CONTEXT_VERSION, build_context
from workflow_svc.report_loop.llm.deid import PROFILE
from workflow_svc.report_loop.llm.drafters import (
    Drafter,
    OpenAiDrafter,
    TemplateDrafter,
    failure_text,
)
from workflow_svc.report_loop.llm.prompt import PROMPT_VERSION, InvalidDraftReply, messages
from workflow_svc.study import queries
from workflow_svc.study.states import State, check, study_ref, transition

ACTOR = "llm_assist"
MAX_TEXT = 20000
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
BREAKERS = llm_breakers()  # per workflow process


async def _study(s: AsyncSession, study_id: str, caller: Caller) -> Study:
    sid = await queries.visible_study_id(s, study_id, caller.scope())  # NotFound alike
    return (await s.execute(select(Study).where(Study.id == sid).with_for_update())
            ).scalar_one()


def _drafter(facility: Facility, egress: EgressPolicy, box: SecretBox | None) -> Drafter:
    if facility.llm_base_url:
        key = facility.llm_api_key or ""
        if SecretBox.is_sealed(key):
            if box is None:
                raise FailedPrecondition("SECRET_KEY_MISSING", "the LLM API key is sealed and "
                                         "no secret key is configured")
            try:
                key = box.open(key, facility_context(facility.name, "llm_api_key"))
            except SecretKeyError as exc:
                raise FailedPrecondition("SECRET_KEY_UNUSABLE", str(exc)) from None
        return OpenAiDrafter(facility.llm_base_url, facility.llm_model or "default", key,
                             facility.llm_timeout_s, BREAKERS, egress)
    return TemplateDrafter()


async def generate(db: Database, topology: Topology, caller: Caller, study_id: str,
                   egress: EgressPolicy | None = None, box: SecretBox | None = None
                   ) -> pb.GenerateDraftResponse:
    """Builds the de-identified context, asks the facility's drafter, stores the trace and, on
    success, a new draft version (state draft_ready). A failure is `llm_assist.failed`; an
    endpoint the egress policy refuses (no allow-list when `egress` is None) is also
    `security.egress_refused`. The LLM API key is opened with `box`."""
    caller.require_writer()
    async with db.read() as s:
        study = await _study(s, study_id, caller)
        facility = (await s.execute(select(Facility).where(Facility.id == study.facility_id))
                    ).scalar_one()
        ctx = await build_context(s, study, box)
    drafter = _drafter(facility, egress or EgressPolicy(), box)
    prompt = {"version": PROMPT_VERSION, "context_version": CONTEXT_VERSION,
              "deid_profile": PROFILE, "model": getattr(drafter, "model", drafter.generator),
              "messages": messages(ctx),
              "finding_refs": {f.ref: str(f.finding_id) for f in ctx.findings},
              "prior_refs": ctx.prior_refs}
    error, response, latency, sentences = "", "", 0.0, []
    refused: EgressRefused | None = None
    try:
        drafted = await drafter.draft(ctx)
        response, latency, sentences = drafted.response, drafted.latency_ms, drafted.sentences
    except Exception as exc:  # timeout, HTTP error, broken reply, open circuit, egress
        error = failure_text(exc)
        if isinstance(exc, EgressRefused) and exc.security_event:
            refused = exc
        response = getattr(exc, "response", "") if isinstance(exc, InvalidDraftReply) else ""
    async with db.unit_of_work() as s:
        study = await _study(s, study_id, caller)
        ref = await study_ref(s, study)
        trace = LlmTrace(id=uuid.uuid4(), study_id=study.id, generator=drafter.generator,
                         endpoint=drafter.endpoint, prompt_version=PROMPT_VERSION,
                         deid_profile=PROFILE, prompt=prompt, response=response,
                         status="failed" if error else "ok", error=error, latency_ms=latency)
        s.add(trace)
        if refused is not None:
            await audit.record(s, topology, REFUSED_EVENT, ACTOR, ref,
                               error_class=refused.reason, error_message=refused.message,
                               context={"destination": refused.destination,
                                        "setting": "llm_base_url", "user": caller.username})
        if ctx.prior_error:  # a partial failure: the draft goes on without the priors
            await audit.record(s, topology, "llm_assist.failed", ACTOR, ref,
                               error_class="PRIOR_REPORTS", error_message=ctx.prior_error,
                               context={"cause": "prior_reports", "generator": drafter.generator,
                                        "trace_id": str(trace.id), "user": caller.username})
        if error:
            await s.execute(update(Study).where(Study.id == study.id).values(llm_status="failed"))
            await audit.record(s, topology, "llm_assist.failed", ACTOR, ref,
                               error_class=error.split(":")[0], error_message=error,
                               context={"generator": drafter.generator,
                                        "trace_id": str(trace.id), "user": caller.username})
            return pb.GenerateDraftResponse(llm_failed=True, llm_error=error)
        version = await _latest_version(s, study.id) + 1
        draft = Draft(id=uuid.uuid4(), study_id=study.id, status="generated",
                      generator=drafter.generator, version=version,
                      text=" ".join(x.text for x in sentences), author=caller.username,
                      sentences=[{"text": x.text, "finding_ids": ctx.finding_ids(list(x.refs))}
                                 for x in sentences],
                      context={"trace_id": str(trace.id), "prompt_version": PROMPT_VERSION,
                               "context_version": CONTEXT_VERSION, "deid_profile": PROFILE,
                               "prior_refs": ctx.prior_refs}, assistive=True)
        s.add(draft)
        trace.draft_id = draft.id
        await s.execute(update(Study).where(Study.id == study.id).values(llm_status="ready"))
        if check(study.state, State.DRAFT_READY):
            await transition(s, topology, study.id, State.DRAFT_READY, ACTOR,
                             f"assistive draft v{version} ({drafter.generator})")
        await audit.record(s, topology, "draft.generated", ACTOR, ref, context={
            "draft_id": str(draft.id), "version": version, "generator": drafter.generator,
            "trace_id": str(trace.id), "sentences": len(sentences), "user": caller.username,
            **caller.audit_context()})
        await s.flush()
        await s.refresh(draft)
        return pb.GenerateDraftResponse(draft=_pb(draft))


async def get(db: Database, caller: Caller, study_id: str) -> pb.GetDraftResponse:
    async with db.read() as s:
        sid = await queries.visible_study_id(s, study_id, caller.scope())
        drafts = (await s.execute(select(Draft).where(Draft.study_id == sid)
                                  .order_by(Draft.version))).scalars().all()
        last = (await s.execute(select(LlmTrace).where(LlmTrace.study_id == sid)
                                .order_by(LlmTrace.created_at.desc()).limit(1))
                ).scalar_one_or_none()
    error = last.error if last is not None and last.status == "failed" else ""
    return pb.GetDraftResponse(versions=[_pb(d) for d in drafts], llm_error=error)


async def edit(db: Database, topology: Topology, caller: Caller, study_id: str,
               expected_version: int, text: str) -> pb.Draft:
    """A new version with the radiologist's text; a sentence kept verbatim keeps its links."""
    caller.require_writer()
    if not text.strip() or len(text) > MAX_TEXT:
        raise InvalidArgument("INVALID_DRAFT_TEXT", f"text must be 1 to {MAX_TEXT} characters")
    async with db.unit_of_work() as s:
        study = await _study(s, study_id, caller)
        parent = await _current(s, study.id, expected_version)
        links = {x["text"]: x["finding_ids"] for x in parent.sentences or []}
        sentences = [{"text": t, "finding_ids": links.get(t, [])}
                     for t in _SENTENCE.split(text.strip()) if t]
        draft = await _new_version(s, parent, "edited", caller, text.strip(), sentences)
        await audit.record(s, topology, "draft.edited", caller.username,
                           await study_ref(s, study),
                           context={"draft_id": str(draft.id), "version": draft.version})
        return _pb(draft)


async def accept(db: Database, topology: Topology, caller: Caller, study_id: str,
                 expected_version: int) -> pb.Draft:
    """Marks the draft accepted by the radiologist (a new version); it stays assistive text."""
    caller.require_writer()
    async with db.unit_of_work() as s:
        study = await _study(s, study_id, caller)
        parent = await _current(s, study.id, expected_version)
        draft = await _new_version(s, parent, "accepted", caller, parent.text,
                                   list(parent.sentences or []))
        await audit.record(s, topology, "draft.accepted", caller.username,
                           await study_ref(s, study),
                           context={"draft_id": str(draft.id), "version": draft.version})
        return _pb(draft)


async def _latest_version(s: AsyncSession, study_id: uuid.UUID) -> int:
    return int(await s.scalar(select(func.coalesce(func.max(Draft.version), 0))
                              .where(Draft.study_id == study_id)) or 0)


async def _current(s: AsyncSession, study_id: uuid.UUID, expected: int) -> Draft:
    latest = await _latest_version(s, study_id)
    if latest == 0:
        raise FailedPrecondition("NO_DRAFT", "no draft has been generated for this study")
    if expected != latest:
        raise FailedPrecondition("VERSION_CONFLICT", f"draft is at version {latest}",
                                 current_version=latest)
    return (await s.execute(select(Draft).where(Draft.study_id == study_id,
                                                Draft.version == latest))).scalar_one()


async def _new_version(s: AsyncSession, parent: Draft, status: str, caller: Caller, text: str,
                       sentences: list[dict[str, object]]) -> Draft:
    draft = Draft(id=uuid.uuid4(), study_id=parent.study_id, status=status,
                  generator=parent.generator, version=parent.version + 1, parent_id=parent.id,
                  text=text, sentences=sentences, author=caller.username,
                  context=dict(parent.context or {}), assistive=True)
    s.add(draft)
    await s.flush()
    await s.refresh(draft)
    return draft


def _pb(d: Draft) -> pb.Draft:
    out = pb.Draft(draft_id=str(d.id), study_id=str(d.study_id), version=d.version,
                   status=d.status, generator=d.generator, text=d.text, author=d.author,
                   assistive=True, trace_id=str((d.context or {}).get("trace_id", "")),
                   sentences=[pb.DraftSentence(text=str(x["text"]),
                                               finding_ids=list(x["finding_ids"]))
                              for x in d.sentences or []])
    if d.created_at is not None:
        out.created_at.FromDatetime(d.created_at.astimezone(UTC))
    return out
