"""The assistive chat panel of the review app in Debian's Chromium against `sidecar up`:
keyboard first (C focuses, Enter sends), labelled assistive; with no LLM it says the assistant
is unavailable, keeps the (scrubbed) question, and the review's keys go on working."""

from __future__ import annotations

import re
from typing import Any

import pytest

from sidecar_synth import generate
from tests.acceptance import browser as b
from tests.acceptance.stack import Stack
from tests.acceptance.test_review_ui import _send, _wait_ready, chromium, page  # noqa: F401

pytest.importorskip("playwright")
from playwright.sync_api import expect  # noqa: E402

pytestmark = [pytest.mark.browser]

RAD = "rad_chat"


def test_chat_panel_keyboard_first_and_unavailable(stack: Stack, tmp_path: Any,
                                                    page: Any) -> None:  # noqa: F811
    assert b.BUILT_APP.is_file(), "the review app is not built: run `make install`"
    done = stack.cli("user", "add", RAD, "--role", "radiologist", "--facility", stack.north,
                     "--password-stdin", stdin=stack.password + "\n")
    assert done.returncode == 0, done.stderr
    truth = generate("chest-ct", tmp_path / "ct", 12)
    _send(stack, tmp_path / "ct", stack.north)
    with stack.client() as http:
        row = _wait_ready(http, truth.accession_number)
        findings = http.get(f"/api/v1/studies/{row['id']}/findings").json()["findings"]
    assert findings
    b.login(page, stack.base_url, RAD, stack.password)
    page.click(f"tr[data-study-id='{row['id']}']")
    expect(page.locator("[data-testid=viewer-info]")).to_have_text(re.compile(r"^Slice \d+/"),
                                                                     timeout=60_000)
    panel = page.locator("[data-testid=chat-panel]")
    expect(panel.get_by_test_id("chat-assistive")).to_have_text(
        "Assistive — not part of the report")
    page.keyboard.press("c")
    box = panel.get_by_test_id("chat-input")
    expect(box).to_be_focused()
    page.keyboard.type(f"Is the nodule of {truth.accession_number} new?")
    page.keyboard.press("Enter")
    expect(panel.get_by_test_id("chat-message")).to_contain_text(
        "The assistant is unavailable", timeout=60_000)
    expect(panel).to_have_attribute("data-state", "unavailable")
    turns = panel.get_by_test_id("chat-turn")
    expect(turns).to_have_count(1)
    expect(turns.first).to_have_attribute("data-role", "user")
    text = turns.first.text_content() or ""
    assert truth.accession_number not in text and "[REMOVED]" in text, text
    expect(box).to_be_focused()
    # the review goes on: select a finding (the box loses the focus), accept it with its key
    page.click(f".finding-item[data-finding-id='{findings[0]['id']}']")
    page.keyboard.press("a")
    expect(page.locator(".findings .message")).to_contain_text("Accepted")
    b.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(b.ARTIFACTS / "chat-panel-unavailable.png"))
    assert page.evaluate("() => window.__cspViolations") == []
