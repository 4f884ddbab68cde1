"""The versioned, structured prompt of a draft and the reply's contract."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from workflow_svc.report_loop.llm.context import DraftContext

PROMPT_VERSION = "sidecar-draft-prompt/2"  # /2: prior reports, cited as [PRIOR-n]
SYSTEM = (
    "You draft the findings section of a radiology report for a radiologist to edit. "
    "Use only the findings given; never add a finding, a diagnosis or a recommendation that "
    "is not in them; keep the radiologist's wording where given. Answer with JSON only: "
    '{"sentences": [{"text": "...", "findings": ["F1"]}]}. Every sentence cites the ref(s) '
    "of the finding(s) it is based on. The patient's prior reports (prior_reports) are for "
    "comparison only: a sentence that compares with a prior cites its ref as well "
    '(e.g. "findings": ["F1", "PRIOR-1"]) and names it in the text as [PRIOR-1]; never '
    "take a finding from a prior report into the current findings."
)


class InvalidDraftReply(ValueError):
    """The drafter's reply breaks the contract (not JSON, empty, or cites unknown findings)."""

    response: str = ""


@dataclass(frozen=True)
class Sentence:
    text: str
    refs: tuple[str, ...]


def messages(ctx: DraftContext) -> list[dict[str, str]]:
    """The exact chat messages (stored as the trace's prompt)."""
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": json.dumps(ctx.content, sort_keys=True)}]


def parse_reply(text: str, ctx: DraftContext) -> list[Sentence]:
    """Sentences of a reply; every ref must name a finding or a prior report of the
    context, and every sentence cites a finding or a prior."""
    body = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip())
    try:
        data: Any = json.loads(body)
    except ValueError as exc:
        raise InvalidDraftReply(f"reply is not JSON: {exc}") from exc
    items = data.get("sentences") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise InvalidDraftReply("reply has no 'sentences' list")
    known = {f.ref for f in ctx.findings} | set(ctx.prior_refs)
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("text"), str) \
                or not item["text"].strip():
            raise InvalidDraftReply(f"sentence {i + 1} has no text")
        refs = item.get("findings")
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            raise InvalidDraftReply(f"sentence {i + 1} cites no finding")
        unknown = sorted(set(refs) - known)
        if unknown:
            raise InvalidDraftReply(f"sentence {i + 1} cites findings that do not exist: "
                                    f"{', '.join(unknown)}")
        out.append(Sentence(item["text"].strip(), tuple(refs)))
    return out
