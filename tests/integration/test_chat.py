"""The study chat against a real OpenAI-compatible server: cited answers from the de-identified
context, the user's message scrubbed before it leaves, the conversation kept, traced, audited;
a down or slow LLM fails the chat alone."""

from __future__ import annotations

import json
import uuid

import pytest

from protos.sidecar.workflow.v1 import report_service_pb2
from sidecar_core.errors import InvalidArgument, PermissionDenied
from tests.fake_llm import FakeLlm
from tests.http_peers import serve
from tests.integration import test_drafts
from tests.integration.test_drafts import ADMIN, LOOPBACK, PHI, TOPOLOGY, Seeded, _use_llm
from workflow_svc.identity.access import Caller
from workflow_svc.report_loop import chat, drafts
from workflow_svc.report_loop.llm.chat_prompt import CHAT_PROMPT_VERSION, parse_citations
from workflow_svc.review.decisions import list_findings

pytestmark = pytest.mark.integration
seeded = test_drafts.seeded  # the drafts' study: findings accepted, edited and rejected
AUDITOR = Caller(str(uuid.uuid4()), "aud", "auditor", all_facilities=True)
QUESTION = "Has Jane Doe's nodule (MRN123456, ACC-777) grown since 20240305?"


async def _ask(seeded: Seeded, message: str = QUESTION, caller: Caller = ADMIN
               ) -> report_service_pb2.ChatResponse:
    return await chat.ask(seeded.db, TOPOLOGY, caller, str(seeded.study_id), message, LOOPBACK)


async def test_answer_cites_findings_and_no_phi_leaves(seeded: Seeded) -> None:
    await drafts.generate(seeded.db, TOPOLOGY, ADMIN, str(seeded.study_id), LOOPBACK)
    llm = FakeLlm()
    with serve(llm.app()) as port:
        await _use_llm(seeded, port)
        reply = await _ask(seeded)
        second = await _ask(seeded, "And the ground-glass one?")
    assert not reply.llm_failed, reply.llm_error
    answer = reply.answer
    assert answer.role == "assistant" and "[F1]" in answer.text
    refs = {c.ref: c.target_id for c in answer.citations if c.kind == "finding"}
    assert sorted(refs) == ["F1", "F2"] and len(answer.citations) == 2
    assert set(refs.values()) == {str(seeded.accepted), str(seeded.edited)}
    assert answer.uncited_sentences == 1  # "Ask me about the findings."
    first, again = llm.requests
    sent = json.dumps(first)
    assert not [p for p in PHI if p in sent], sent  # the typed name, MRN, accession, date
    question = first["messages"][-1]["content"]
    assert "[REMOVED]" in question and "grown since" in question
    context = json.loads(first["messages"][1]["content"].split(":", 1)[1])
    assert context["draft"]  # the template draft goes with the findings
    # the second question carries the conversation so far
    assert [m["role"] for m in again["messages"][2:]] == ["user", "assistant", "user"]
    assert not second.llm_failed
    kept = (await chat.history(seeded.db, AUDITOR, str(seeded.study_id))).messages
    assert [m.role for m in kept] == ["user", "assistant", "user", "assistant"]
    assert kept[0].text == question and kept[1].text == answer.text
    assert [c.ref for c in kept[1].citations] == ["F1", "F2"] and kept[1].uncited_sentences == 1
    rows = await seeded.rows("select text, user_id, trace_id from chat_messages")
    assert not [p for p in PHI if p in json.dumps([r["text"] for r in rows])]
    traces = await seeded.rows(f"select * from llm_traces where prompt_version="
                               f"'{CHAT_PROMPT_VERSION}' order by created_at")
    assert len(traces) == 2 and traces[0]["status"] == "ok"
    prompt = traces[0]["prompt"]
    assert prompt["model"] == "test-model" and prompt["context_version"].startswith(
        "sidecar-draft-context/") and prompt["deid_profile"] == traces[0]["deid_profile"]
    assert prompt["finding_refs"] == refs  # each cited ref names its finding
    assert prompt["messages"] == first["messages"] and traces[0]["response"] == answer.text
    assert str(traces[0]["id"]) == answer.trace_id
    events = await seeded.rows("select * from audit_events where type='llm_chat.answered'")
    assert len(events) == 2 and events[0]["context"]["citations"] == ["F1", "F2"]
    assert events[0]["context"]["trace_id"] in {str(t["id"]) for t in traces}


@pytest.mark.parametrize(("mode", "timed_out", "error"), [
    ("slow", True, "APITimeoutError"), ("http500", False, "InternalServerError")])
async def test_llm_down_or_slow_fails_the_chat_alone(seeded: Seeded, mode: str,
                                                      timed_out: bool, error: str) -> None:
    llm = FakeLlm(mode=mode, delay_s=3.0)
    with serve(llm.app()) as port:
        await _use_llm(seeded, port, timeout_s=1.0)
        reply = await _ask(seeded)
    assert reply.llm_failed and not reply.HasField("answer")
    assert reply.timed_out is timed_out and error in reply.llm_error
    [failed] = await seeded.rows("select * from audit_events where type='llm_assist.failed'")
    assert failed["context"]["purpose"] == "chat" and failed["error_message"] == reply.llm_error
    # the question is kept (scrubbed), unanswered; the study and its review go on
    kept = (await chat.history(seeded.db, ADMIN, str(seeded.study_id))).messages
    assert [m.role for m in kept] == ["user"]
    assert await seeded.state() == "in_review"
    findings = await list_findings(seeded.db, str(seeded.study_id), ADMIN)
    assert {f.finding.finding_id for f in findings} >= {str(seeded.accepted), str(seeded.edited)}


async def test_no_llm_configured_is_unavailable(seeded: Seeded) -> None:
    reply = await _ask(seeded)
    assert reply.llm_failed and reply.llm_error.startswith("LlmNotConfigured")
    assert not reply.timed_out


async def test_bounds_and_roles(seeded: Seeded) -> None:
    for bad in ("", "   ", "x" * 2001):
        with pytest.raises(InvalidArgument) as exc:
            await _ask(seeded, bad)
        assert exc.value.reason == "INVALID_CHAT_MESSAGE"
    with pytest.raises(PermissionDenied):
        await _ask(seeded, caller=AUDITOR)
    assert not await seeded.rows("select id from chat_messages")


def test_citation_parsing() -> None:
    cited = parse_citations(
        "A nodule [F1]. It was seen before [PRIOR-2][F-1]! Unsure. Nothing [F9].\n[F2]",
        {"F1": "a", "F2": "b"}, {"PRIOR-2": "p"})
    assert [c["ref"] for c in cited.citations] == ["F1", "PRIOR-2"]
    assert cited.uncited_sentences == 2 and cited.unknown_refs == ["F9"]
