"""Through `sidecar up`: the study chat's bounds, roles and its failure without an LLM, which
leaves the rest of the review working; the conversation is kept and its read access-audited."""

from __future__ import annotations

import time
from pathlib import Path

from tests.acceptance.stack import Stack
from tests.acceptance.test_report_loop import _ingest, _study


def test_chat_through_the_gateway_without_an_llm(stack: Stack, tmp_path: Path) -> None:
    _ingest(stack, tmp_path, "ACC-CHAT-UP")
    study = _study(stack, "ACC-CHAT-UP", "ineligible")
    url = f"/api/v1/studies/{study['id']}/chat"
    with stack.client() as http:
        too_long = http.post(url, json={"message": "x" * 2001})
        assert too_long.status_code == 400, too_long.text
        assert too_long.json()["error"]["reason"] == "INVALID_CHAT_MESSAGE"
        assert http.post(url, json={"message": ""}).status_code == 400
        down = http.post(url, json={"message": "Anything new on ACC-CHAT-UP?"})
        assert down.status_code == 503, down.text
        error = down.json()["error"]
        assert error["reason"] == "LLM_UNAVAILABLE"
        assert error["message"].startswith("The assistant is unavailable")
        # everything else keeps working
        assert http.get(f"/api/v1/studies/{study['id']}/findings").status_code == 200
        assert http.post(f"/api/v1/studies/{study['id']}/draft").status_code == 200
        kept = http.get(url)
        assert kept.status_code == 200, kept.text
        [asked] = kept.json()["messages"]
        assert asked["role"] == "user" and "ACC-CHAT-UP" not in asked["text"]  # scrubbed
        assert "[REMOVED]" in asked["text"]
    done = stack.cli("user", "add", "chat_auditor", "--role", "auditor", "--password-stdin",
                     stdin="chat auditor password 1\n")
    assert done.returncode == 0, done.stderr
    with stack.client(stack.login("chat_auditor", "chat auditor password 1")) as http:
        refused = http.post(url, json={"message": "hello"})
        assert refused.status_code == 403, refused.text
        assert http.get(url).status_code == 200
    failed = stack.sql("select context from audit_events where type='llm_assist.failed' "
                       "and context->>'purpose' = 'chat' and accession = 'ACC-CHAT-UP'")
    assert failed and failed[0][0]["user"] == stack.admin
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        reads = [str(r[0]) for r in stack.sql(
            "select row_to_json(a)::text from audit_events a where type='phi.accessed'")]
        if any('"chat"' in r and study["id"] in r for r in reads):
            break
        time.sleep(0.5)
    else:
        seen = [r[-700:] for r in reads if "chat" in r or "findings" in r]
        raise AssertionError(f"the conversation's read was not access-audited: {seen}")
