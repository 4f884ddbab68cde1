"""A real OpenAI-compatible chat-completions server (FastAPI) with switchable faults."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

MODES = ("ok", "slow", "http500", "malformed", "unknown_ref")


@dataclass
class FakeLlm:
    """`mode` decides the next replies; every request body is kept in `requests`."""

    mode: str = "ok"
    delay_s: float = 3.0
    requests: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def complete(request: Request) -> Response:
            body = await request.json()
            self.requests.append(body)
            if self.mode == "slow":
                await asyncio.sleep(self.delay_s)
            if self.mode == "http500":
                return JSONResponse({"error": {"message": "model crashed"}}, status_code=500)
            if self.mode == "malformed":
                return Response(b'{"id": "x", "choices": [{"message": ', status_code=200,
                                media_type="application/json")
            if body["messages"][0]["content"].startswith("You answer a radiologist"):
                return self._reply(body, self._chat(body))
            context = json.loads(body["messages"][-1]["content"])
            refs = [f["ref"] for f in context["findings"]]
            if self.mode == "unknown_ref":
                refs = ["F99"]
            sentences = [{"text": f"There is a finding {r}.", "findings": [r]} for r in refs]
            return self._reply(body, json.dumps({"sentences": sentences}))

        return app

    def _chat(self, body: dict[str, Any]) -> str:
        """A study-chat answer: one cited sentence per finding and prior, one uncited."""
        context = json.loads(body["messages"][1]["content"].split(":", 1)[1])
        refs = [f["ref"] for f in context["findings"]]
        refs += [p["ref"] for p in context.get("prior_reports", [])]
        if self.mode == "unknown_ref":
            refs = ["F99"]
        cited = " ".join(f"The context has {r} [{r}]." for r in refs)
        return f"{cited} Ask me about the findings."

    @staticmethod
    def _reply(body: dict[str, Any], content: str) -> Response:
        return JSONResponse({
            "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "test"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
