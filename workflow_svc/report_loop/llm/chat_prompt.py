"""The versioned prompt of the study chat and the parsing of an answer's citations."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

CHAT_PROMPT_VERSION = "sidecar-chat-prompt/1"
SYSTEM = (
    "You answer a radiologist's questions about one imaging study. Use only the context "
    "given (reviewed findings, their review decisions, prior reports and the current draft); "
    "when the context does not answer the question, say so. End every factual sentence with "
    "the reference(s) it rests on: [F1] for a finding (its ref), [PRIOR-1] for a prior report "
    "(its ref). Answer in plain sentences, no JSON, no diagnosis that is not in the context."
)
HISTORY_TURNS = 10  # earlier turns of the conversation sent with a question
_CITE = re.compile(r"\[\s*(F|PRIOR)-?\s*(\d{1,4})\s*\]", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass(frozen=True)
class Cited:
    citations: list[dict[str, str]]  # unique, in order: {"ref", "kind", "target_id"}
    uncited_sentences: int
    unknown_refs: list[str]


def with_refs(content: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The context to send (prior reports given a PRIOR-n ref where they have none) and the
    refs' targets: finding refs come from the context builder, priors are numbered here."""
    out = dict(content)
    priors = []
    targets: dict[str, str] = {}
    for i, prior in enumerate(content.get("prior_reports") or []):
        item = dict(prior) if isinstance(prior, dict) else {"text": str(prior)}
        ref = str(item.get("ref") or f"PRIOR-{i + 1}").upper()
        item["ref"] = ref
        targets[ref] = str(item.get("id") or item.get("study_id") or item.get("accession") or "")
        priors.append(item)
    out["prior_reports"] = priors
    return out, targets


def messages(content: dict[str, Any], history: list[tuple[str, str]], question: str
             ) -> list[dict[str, str]]:
    """The exact chat messages (stored as the trace's prompt); every text is de-identified."""
    chat = [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Context (JSON): " + json.dumps(content, sort_keys=True)}]
    chat += [{"role": role, "content": text} for role, text in history[-HISTORY_TURNS:]]
    chat.append({"role": "user", "content": question})
    return chat


def _norm(kind: str, number: str) -> str:
    return f"F{int(number)}" if kind.upper() == "F" else f"PRIOR-{int(number)}"


def parse_citations(answer: str, findings: dict[str, str], priors: dict[str, str]) -> Cited:
    """The refs an answer cites that name a finding or prior of the context, how many of its
    sentences cite none of them, and the refs it cites that do not exist."""
    seen: dict[str, dict[str, str]] = {}
    unknown: list[str] = []
    uncited = 0
    for sentence in (x.strip() for x in _SENTENCE.split(answer)):
        if not sentence or not re.search(r"\w", _CITE.sub("", sentence)):
            continue  # a bare citation split off its sentence counts with none
        found = False
        for m in _CITE.finditer(sentence):
            ref = _norm(m.group(1), m.group(2))
            if ref in findings:
                seen.setdefault(ref, {"ref": ref, "kind": "finding", "target_id": findings[ref]})
                found = True
            elif ref in priors:
                seen.setdefault(ref, {"ref": ref, "kind": "prior", "target_id": priors[ref]})
                found = True
            elif ref not in unknown:
                unknown.append(ref)
        uncited += 0 if found else 1
    return Cited(list(seen.values()), uncited, unknown)
