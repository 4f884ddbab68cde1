"""Study chat API (docs/report-loop.md "Chat"): ask the assistive chat, read the conversation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from typing import Any

import grpc
from fastapi import APIRouter, Depends
from pydantic import Field

from protos.sidecar.workflow.v1 import report_service_pb2 as pb
from protos.sidecar.workflow.v1 import report_service_pb2_grpc as pb_grpc
from review_gateway.auth.tokens import Principal
from review_gateway.clients.review import ReviewClient
from review_gateway.errors import ERROR_RESPONSES, ApiError, ApiModel
from review_gateway.review.drafts import GENERATE_TIMEOUT_S

CHAT_NOTICE = "Assistive — not part of the report."
UNAVAILABLE = "The assistant is unavailable"


MAX_MESSAGE = 2000


class ChatBody(ApiModel):
    # 1 to MAX_MESSAGE characters, checked in the route (400 INVALID_CHAT_MESSAGE); the schema's
    # bound only stops a body far too large for any question
    message: str = Field(max_length=10 * MAX_MESSAGE)


class ChatCitation(ApiModel):
    ref: str
    kind: str  # finding | prior
    target_id: str


class ChatTurn(ApiModel):
    id: str
    role: str  # user | assistant
    text: str  # a user's message as sent to the LLM: de-identified
    citations: list[ChatCitation]
    uncited_sentences: int
    trace_id: str
    created_at: str | None


class ChatAnswer(ApiModel):
    answer: str
    citations: list[ChatCitation]
    uncited_sentences: int
    message: ChatTurn
    assistive: bool
    notice: str


class ChatConversation(ApiModel):
    messages: list[ChatTurn]
    assistive: bool
    notice: str


def turn_json(m: pb.ChatMessage) -> ChatTurn:
    return ChatTurn(
        id=m.message_id, role=m.role, text=m.text, trace_id=m.trace_id,
        uncited_sentences=m.uncited_sentences,
        citations=[ChatCitation(ref=c.ref, kind=c.kind, target_id=c.target_id)
                   for c in m.citations],
        created_at=m.created_at.ToDatetime(tzinfo=UTC).isoformat()
        if m.HasField("created_at") else None)


def chat_router(principal: Callable[..., Any], channel: Callable[[], grpc.aio.Channel],
                timeout_s: float) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["chat"], responses=ERROR_RESPONSES)
    me_dep = Depends(principal)

    def client(timeout: float = timeout_s) -> tuple[ReviewClient, pb_grpc.ReportServiceStub]:
        ch = channel()
        return ReviewClient(ch, timeout), pb_grpc.ReportServiceStub(ch)

    @router.post("/studies/{study_id}/chat")
    async def ask(study_id: str, body: ChatBody, me: Principal = me_dep) -> ChatAnswer:
        """Answers from the study's de-identified context, each sentence citing [F1] findings
        or [PRIOR-1] prior reports. 503 when the LLM is down or not configured, 504 when it
        did not answer in time: nothing else of the study is affected."""
        if not body.message.strip() or len(body.message) > MAX_MESSAGE:
            raise ApiError(400, "INVALID_ARGUMENT", "INVALID_CHAT_MESSAGE",
                           f"message must be 1 to {MAX_MESSAGE} characters "
                           f"(got {len(body.message)})")
        rpc, stub = client(GENERATE_TIMEOUT_S)
        reply = await rpc.call(stub.Chat, pb.ChatRequest(study_id=study_id,
                                                         message=body.message))
        if reply.llm_failed:
            if reply.timed_out:
                raise ApiError(504, "DEADLINE_EXCEEDED", "LLM_TIMEOUT",
                               f"{UNAVAILABLE}: the language model did not answer in time "
                               f"({reply.llm_error})")
            raise ApiError(503, "UNAVAILABLE", "LLM_UNAVAILABLE",
                           f"{UNAVAILABLE}: {reply.llm_error}")
        turn = turn_json(reply.answer)
        return ChatAnswer(answer=turn.text, citations=turn.citations,
                          uncited_sentences=turn.uncited_sentences, message=turn,
                          assistive=True, notice=CHAT_NOTICE)

    @router.get("/studies/{study_id}/chat")
    async def conversation(study_id: str, me: Principal = me_dep) -> ChatConversation:
        rpc, stub = client()
        reply = await rpc.call(stub.GetChat, pb.GetChatRequest(study_id=study_id))
        return ChatConversation(messages=[turn_json(m) for m in reply.messages],
                                assistive=True, notice=CHAT_NOTICE)

    return router
