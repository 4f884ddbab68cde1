"""The assistive chat about a study: questions answered by the facility's LLM from the same
de-identified context as a draft (findings, decisions, priors, the current draft), every
factual sentence citing its findings or prior reports; the conversation is kept with the
study, each answer traced (llm_traces) and audited. A user's message is scrubbed by the
study's de-identifier before it is sent and only that scrubbed form is stored."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import openai
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from protos.sidecar.workflow.v1 import report_service_pb2 as pb
from sidecar_core import audit
from sidecar_core.db import Database
from sidecar_core.egress import REFUSED_EVENT, EgressPolicy, EgressRefused
from sidecar_core.errors import InvalidArgument
from sidecar_core.messaging.subjects import Topology
from sidecar_core.secret_box import SecretBox
from sidecar_core.store.models import ChatMessage, Draft, Facility, LlmTrace, Study
from workflow_svc.identity.access import Caller
from workflow_svc.report_loop.drafts import _drafter
from workflow_svc.report_loop.llm import chat_prompt
from workflow_svc.report_loop.llm.context import build_context
from workflow_svc.report_loop.llm.deid import PROFILE
from workflow_svc.report_loop.llm.drafters import OpenAiDrafter, failure_text
from workflow_svc.study import queries
from workflow_svc.study.states import study_ref

ACTOR = "llm_assist"
MAX_MESSAGE = 2000
NOT_CONFIGURED = "LlmNotConfigured: no language model is configured for this facility"


class _NotConfigured(Exception):
    pass


async def _study(s: AsyncSession, study_id: str, caller: Caller) -> Study:
    sid = await queries.visible_study_id(s, study_id, caller.scope())  # NotFound alike
    return (await s.execute(select(Study).where(Study.id == sid))).scalar_one()


def _history_pairs(rows: list[ChatMessage]) -> list[tuple[str, str]]:
    return [(r.role, r.text) for r in rows]


async def ask(db: Database, topology: Topology, caller: Caller, study_id: str, message: str,
              egress: EgressPolicy | None = None, box: SecretBox | None = None
              ) -> pb.ChatResponse:
    """Answers `message` about the study. A failure (no LLM, down, slow, refused) is
    `llm_assist.failed` and `llm_failed` in the reply; the study is not otherwise touched."""
    caller.require_writer()
    if not message.strip() or len(message) > MAX_MESSAGE:
        raise InvalidArgument("INVALID_CHAT_MESSAGE",
                              f"message must be 1 to {MAX_MESSAGE} characters")
    async with db.read() as s:
        study = await _study(s, study_id, caller)
        facility = (await s.execute(select(Facility).where(Facility.id == study.facility_id))
                    ).scalar_one()
        ctx = await build_context(s, study, box)
        draft = (await s.execute(select(Draft.text).where(Draft.study_id == study.id)
                                 .order_by(Draft.version.desc()).limit(1))).scalar_one_or_none()
        earlier = list((await s.execute(
            select(ChatMessage).where(ChatMessage.study_id == study.id)
            .order_by(ChatMessage.created_at.desc(), ChatMessage.id)
            .limit(chat_prompt.HISTORY_TURNS))).scalars().all())[::-1]
    question = ctx.deid.text(message.strip())
    content, priors = chat_prompt.with_refs(ctx.content)
    content["draft"] = ctx.deid.text(draft or "")
    chat = chat_prompt.messages(content, _history_pairs(earlier), question)
    findings = {f.ref: str(f.finding_id) for f in ctx.findings}
    drafter = _drafter(facility, egress or EgressPolicy(), box)
    model = getattr(drafter, "model", "")
    error, answer, latency, timed_out = "", "", 0.0, False
    refused: EgressRefused | None = None
    try:
        if not isinstance(drafter, OpenAiDrafter):
            raise _NotConfigured
        answer, latency = await drafter.ask(chat)
        if not answer.strip():
            raise ValueError("the model's answer is empty")
    except Exception as exc:  # timeout, HTTP error, open circuit, egress, none configured
        error = NOT_CONFIGURED if isinstance(exc, _NotConfigured) else failure_text(exc)
        timed_out = isinstance(exc, openai.APITimeoutError | asyncio.TimeoutError | TimeoutError)
        if isinstance(exc, EgressRefused) and exc.security_event:
            refused = exc
    cited = chat_prompt.parse_citations(answer, findings, priors)
    async with db.unit_of_work() as s:
        study = await _study(s, study_id, caller)
        ref = await study_ref(s, study)
        trace = LlmTrace(
            id=uuid.uuid4(), study_id=study.id, generator=drafter.generator,
            endpoint=drafter.endpoint, prompt_version=chat_prompt.CHAT_PROMPT_VERSION,
            deid_profile=PROFILE,
            prompt={"version": chat_prompt.CHAT_PROMPT_VERSION, "purpose": "chat",
                    "model": model, "context_version": ctx.content.get("context_version", ""),
                    "deid_profile": PROFILE, "messages": chat, "finding_refs": findings,
                    "prior_refs": priors},
            response=answer, status="failed" if error else "ok", error=error,
            latency_ms=latency)
        s.add(trace)
        asked = ChatMessage(id=uuid.uuid4(), study_id=study.id, user_id=caller.user_id,
                            role="user", text=question, citations=[], trace_id=trace.id,
                            created_at=datetime.now(UTC))
        s.add(asked)
        await s.flush()
        if refused is not None:
            await audit.record(s, topology, REFUSED_EVENT, ACTOR, ref,
                               error_class=refused.reason, error_message=refused.message,
                               context={"destination": refused.destination,
                                        "setting": "llm_base_url", "user": caller.username})
        if ctx.prior_error:  # a partial failure: the answer goes on without the priors
            await audit.record(s, topology, "llm_assist.failed", ACTOR, ref,
                               error_class="PRIOR_REPORTS", error_message=ctx.prior_error,
                               context={"purpose": "chat", "cause": "prior_reports",
                                        "trace_id": str(trace.id), "user": caller.username})
        if error:
            await audit.record(s, topology, "llm_assist.failed", ACTOR, ref,
                               error_class=error.split(":")[0], error_message=error,
                               context={"purpose": "chat", "generator": drafter.generator,
                                        "trace_id": str(trace.id), "timed_out": timed_out,
                                        "user": caller.username})
            return pb.ChatResponse(llm_failed=True, llm_error=error, timed_out=timed_out)
        reply = ChatMessage(id=uuid.uuid4(), study_id=study.id, user_id=caller.user_id,
                            role="assistant", text=answer.strip(), citations=cited.citations,
                            trace_id=trace.id,
                            created_at=asked.created_at + timedelta(microseconds=1))
        s.add(reply)
        await s.flush()
        await audit.record(s, topology, "llm_chat.answered", ACTOR, ref, context={
            "trace_id": str(trace.id), "question_id": str(asked.id),
            "answer_id": str(reply.id), "generator": drafter.generator,
            "prompt_version": chat_prompt.CHAT_PROMPT_VERSION,
            "citations": [c["ref"] for c in cited.citations],
            "uncited_sentences": cited.uncited_sentences, "unknown_refs": cited.unknown_refs,
            "user": caller.username, **caller.audit_context()})
        await s.refresh(reply)
        return pb.ChatResponse(answer=_pb(reply))


async def history(db: Database, caller: Caller, study_id: str) -> pb.GetChatResponse:
    """The study's conversation, oldest first (auditors may read it)."""
    async with db.read() as s:
        sid = await queries.visible_study_id(s, study_id, caller.scope())
        rows = (await s.execute(select(ChatMessage).where(ChatMessage.study_id == sid)
                                .order_by(ChatMessage.created_at, ChatMessage.id))
                ).scalars().all()
    return pb.GetChatResponse(messages=[_pb(r) for r in rows])


def _pb(m: ChatMessage) -> pb.ChatMessage:
    citations = [c for c in m.citations or [] if isinstance(c, dict)]
    uncited = 0
    if m.role == "assistant":
        by_kind = {k: {c["ref"]: c.get("target_id", "") for c in citations if c["kind"] == k}
                   for k in ("finding", "prior")}
        uncited = chat_prompt.parse_citations(m.text, by_kind["finding"], by_kind["prior"]
                                              ).uncited_sentences
    out = pb.ChatMessage(
        message_id=str(m.id), role=m.role, text=m.text, user_id=m.user_id,
        trace_id=str(m.trace_id or ""), uncited_sentences=uncited,
        citations=[pb.ChatCitation(ref=str(c["ref"]), kind=str(c["kind"]),
                                   target_id=str(c.get("target_id", ""))) for c in citations])
    if m.created_at is not None:
        out.created_at.FromDatetime(m.created_at.astimezone(UTC))
    return out
