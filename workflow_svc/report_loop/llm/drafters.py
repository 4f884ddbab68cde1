"""Drafters: the deterministic template drafter (default) and any OpenAI-compatible server."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import openai

from sidecar_core.circuit import CircuitBreakers
from sidecar_core.egress import EgressPolicy, pinned_client
from workflow_svc.report_loop.llm.breaker import ENDPOINT
from workflow_svc.report_loop.llm.context import DraftContext
from workflow_svc.report_loop.llm.prompt import InvalidDraftReply, Sentence, messages, parse_reply

TEMPLATE_GENERATOR = "template-drafter/1 (deterministic template, no language model)"


@dataclass
class Drafted:
    sentences: list[Sentence]
    response: str
    latency_ms: float


class Drafter(Protocol):
    generator: str
    endpoint: str

    async def draft(self, ctx: DraftContext) -> Drafted: ...


class TemplateDrafter:
    """One sentence per finding from its label, the radiologist's text and measurements."""

    generator = TEMPLATE_GENERATOR
    endpoint = ""

    async def draft(self, ctx: DraftContext) -> Drafted:
        start = time.perf_counter()
        sentences = []
        for f in ctx.findings:
            sizes = ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in
                              sorted(f.measurements.items()))
            text = f.label[:1].upper() + f.label[1:]
            if sizes:
                text += f" ({sizes})"
            if f.text:
                text += f": {f.text.rstrip('.')}"
            sentences.append(Sentence(text + ".", (f.ref,)))
        if not sentences:
            sentences.append(Sentence("No AI finding was accepted on review.", ()))
        reply = "\n".join(s.text for s in sentences)
        return Drafted(sentences, reply, (time.perf_counter() - start) * 1000)


class OpenAiDrafter:
    """Chat completions through the `openai` client: timeout and retries per call, a circuit
    breaker per endpoint; the reply must follow the prompt's JSON contract. The endpoint passes
    the egress policy at each draft and the client connects to the address that was checked
    (EgressRefused otherwise)."""

    def __init__(self, base_url: str, model: str, api_key: str, timeout_s: float,
                 breakers: CircuitBreakers, egress: EgressPolicy, max_retries: int = 1
                 ) -> None:
        self.endpoint = base_url
        self.model = model
        self.generator = f"llm:{model}"
        self.breaker = breakers.get(base_url, ENDPOINT)
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.egress = egress

    async def draft(self, ctx: DraftContext) -> Drafted:
        text, latency = await self.ask(messages(ctx))
        try:
            return Drafted(parse_reply(text, ctx), text, latency)
        except InvalidDraftReply as exc:
            exc.response = text
            raise

    async def ask(self, chat: list[dict[str, str]]) -> tuple[str, float]:
        """The model's reply to these messages and the call's latency (ms); drafts and the
        study chat (chat.py) both ask through here: one egress check, one breaker."""
        start = time.perf_counter()
        destination = await self.egress.check_url(self.endpoint)  # EgressRefused
        self.client = openai.AsyncOpenAI(
            base_url=self.endpoint, api_key=self.api_key or "none", timeout=self.timeout_s,
            max_retries=self.max_retries,
            # openai takes an httpx.AsyncClient as well as its httpx2 one (typed httpx2 only)
            http_client=pinned_client(destination, self.timeout_s))  # type: ignore[arg-type]
        try:
            # any failure of the request counts; a reply that breaks the contract does not
            text = await self.breaker.call(lambda: self._complete(chat))
        finally:
            await self.client.close()
        return text, (time.perf_counter() - start) * 1000

    async def _complete(self, chat: list[dict[str, str]]) -> str:
        reply = await self.client.chat.completions.create(
            model=self.model, messages=chat,  # type: ignore[arg-type]
            temperature=0)
        return reply.choices[0].message.content or ""


def failure_text(exc: BaseException) -> str:
    """How a failed draft is recorded: the error's class and, for an HTTP error, the status and
    size of the reply, never its body (the server's error page is not ours to keep)."""
    if isinstance(exc, openai.APIStatusError):
        return (f"{type(exc).__name__}: HTTP {exc.status_code} "
                f"({len(exc.response.content)} bytes)")
    return f"{type(exc).__name__}: {exc}"[:2000]
