"""The assistive draft panel of the review app in Debian's Chromium against `sidecar up`:
generate, sentences linked to findings, edit with versions, 409, accept; an unreachable LLM."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest

from sidecar_synth import generate
from tests.acceptance import browser as b
from tests.acceptance.stack import Stack
from tests.acceptance.test_review_ui import _send, _wait_ready, chromium, page  # noqa: F401

pytest.importorskip("playwright")
from playwright.sync_api import expect  # noqa: E402

pytestmark = [pytest.mark.browser]

RAD = "rad_draft"


@dataclass
class Case:
    stack: Stack
    study_id: str
    findings: list[dict[str, Any]]


@pytest.fixture(scope="module")
def case(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Case:
    assert b.BUILT_APP.is_file(), "the review app is not built: run `make install`"
    done = stack.cli("user", "add", RAD, "--role", "radiologist", "--facility", stack.north,
                     "--password-stdin", stdin=stack.password + "\n")
    assert done.returncode == 0, done.stderr
    folder = tmp_path_factory.mktemp("draft-ui") / "ct"
    truth = generate("chest-ct", folder, 11)
    _send(stack, folder, stack.north)
    with stack.client() as http:
        row = _wait_ready(http, truth.accession_number)
        findings = http.get(f"/api/v1/studies/{row['id']}/findings").json()["findings"]
    assert len(findings) >= 2, findings
    return Case(stack, row["id"], findings)


def _open(page: Any, case: Case) -> Any:  # noqa: F811
    b.login(page, case.stack.base_url, RAD, case.stack.password)
    page.click(f"tr[data-study-id='{case.study_id}']")
    expect(page.locator("[data-testid=viewer-info]")).to_have_text(re.compile(r"^Slice \d+/"),
                                                                     timeout=60_000)
    return page.locator("[data-testid=draft-panel]")


def test_generate_edit_accept_the_draft_in_the_study_view(case: Case, page: Any  # noqa: F811
                                                           ) -> None:
    panel = _open(page, case)
    expect(panel.get_by_test_id("draft-assistive")).to_contain_text(
        "never sent anywhere as a report")
    expect(panel).to_have_attribute("data-state", "none")
    expect(panel.locator("[data-action=draft-save]")).to_be_hidden()
    accepted = case.findings[0]
    page.click(f".finding-item[data-finding-id='{accepted['id']}']")
    page.keyboard.press("a")
    expect(page.locator(".findings .message")).to_contain_text("Accepted")

    # Generate with the T shortcut: one sentence per accepted finding, linked to it.
    page.keyboard.press("t")
    expect(panel).to_have_attribute("data-state", "generated", timeout=60_000)
    expect(panel.get_by_test_id("draft-generator")).to_contain_text(
        "Template drafter (deterministic template, no language model)")
    expect(panel.get_by_test_id("draft-generator")).to_contain_text("version 1")
    sentences = panel.locator(".draft-sentence")
    expect(sentences).to_have_count(1)
    ref = sentences.first.locator(f".finding-ref[data-finding-id='{accepted['id']}']")
    expect(ref).to_have_text(accepted["label"])
    first_sentence = sentences.first.locator(".stext").text_content()
    assert first_sentence and first_sentence.endswith(".")
    # The sentence's finding reference selects that finding in the list.
    page.click(f".finding-item[data-finding-id='{case.findings[1]['id']}']")
    ref.click()
    expect(page.locator(".finding-item.selected")).to_have_attribute("data-finding-id",
                                                                      accepted["id"])

    # Edit and save: version 2; the sentence kept verbatim keeps its link, the new one has none.
    panel.locator("[data-action=draft-edit]").click()
    textarea = panel.locator("textarea.draft-text")
    expect(textarea).to_have_value(first_sentence)
    extra = "No pleural effusion <b>seen</b>."
    textarea.fill(f"{first_sentence} {extra}")
    panel.locator("[data-action=draft-save]").click()
    expect(panel.get_by_test_id("draft-message")).to_contain_text("Saved as version 2")
    expect(panel).to_have_attribute("data-state", "edited")
    expect(sentences).to_have_count(2)
    expect(sentences.nth(0).locator(".finding-ref")).to_have_count(1)
    expect(sentences.nth(1).locator(".stext")).to_have_text(extra)
    expect(sentences.nth(1).locator(".ref.none")).to_have_text("no finding")
    expect(panel.locator(".draft-versions li")).to_have_count(2)
    b.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(b.ARTIFACTS / "draft-panel-edited.png"))

    # Someone else saves version 3 meanwhile: our save is refused with the current version shown.
    with case.stack.client() as http:
        other = http.put(f"/api/v1/studies/{case.study_id}/draft",
                         json={"expected_version": 2, "text": "Changed elsewhere."})
        assert other.status_code == 200 and other.json()["version"] == 3, other.text
    panel.locator("[data-action=draft-edit]").click()
    textarea.fill("My stale edit.")
    panel.locator("[data-action=draft-save]").click()
    expect(panel.get_by_test_id("draft-message")).to_contain_text("draft is at version 3")
    expect(panel.get_by_test_id("draft-generator")).to_contain_text("version 3 (edited)")
    expect(textarea).to_have_value("My stale edit.")
    panel.locator("[data-action=draft-cancel]").click()
    expect(sentences.first.locator(".stext")).to_have_text("Changed elsewhere.")
    for hidden in ("textarea.draft-text", "[data-action=draft-save]",
                   "[data-action=draft-cancel]"):
        expect(panel.locator(hidden)).to_be_hidden()

    panel.locator("[data-action=draft-accept]").click()
    expect(panel.get_by_test_id("draft-message")).to_contain_text("Draft accepted (version 4)")
    expect(panel).to_have_attribute("data-state", "accepted")
    expect(panel.locator("[data-action=draft-accept]")).to_be_disabled()
    page.screenshot(path=str(b.ARTIFACTS / "draft-panel.png"))

    # After a reload the accepted version and the history are there; still marked assistive.
    page.reload()
    expect(panel).to_have_attribute("data-state", "accepted", timeout=60_000)
    expect(panel.get_by_test_id("draft-generator")).to_contain_text("version 4 (accepted)")
    expect(panel.get_by_test_id("draft-assistive")).to_be_visible()
    expect(panel.locator(".draft-versions li")).to_have_text(
        [re.compile(rf"^v{n} · {s} · ") for n, s in
         ((4, "accepted"), (3, "edited"), (2, "edited"), (1, "generated"))])
    with case.stack.client() as http:
        state = http.get(f"/api/v1/studies/{case.study_id}/draft").json()
    assert [v["status"] for v in state["versions"]] == ["generated", "edited", "edited",
                                                         "accepted"]
    assert state["versions"][1]["text"] == f"{first_sentence} {extra}"
    assert state["llm_error"] == ""
    assert page.evaluate("() => window.__cspViolations") == []
    assert page.locator(".draft b").count() == 0


def test_unreachable_llm_disables_the_panel_not_the_findings(case: Case, page: Any  # noqa: F811
                                                              ) -> None:
    done = case.stack.cli("facility", "set", case.stack.north, "--llm-url",
                          "http://127.0.0.1:9/v1", "--llm-model", "m", "--llm-timeout", "2")
    assert done.returncode == 0, done.stderr
    panel = _open(page, case)
    panel.locator("[data-action=draft-generate]").click()
    expect(panel).to_have_attribute("data-state", "failed", timeout=60_000)
    reason = panel.get_by_test_id("draft-reason")
    expect(reason).to_be_visible()
    expect(reason).to_contain_text("Draft unavailable: the last attempt failed")
    expect(panel).to_have_attribute("aria-disabled", "true")
    for action in ("draft-edit", "draft-accept"):
        expect(panel.locator(f"[data-action={action}]")).to_be_disabled()
    # The findings and their controls keep working.
    other = case.findings[1]
    page.click(f".finding-item[data-finding-id='{other['id']}']")
    page.keyboard.press("a")
    expect(page.locator(".findings .message")).to_contain_text("Accepted")
    b.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(b.ARTIFACTS / "draft-panel-llm-failed.png"))
    # A reload still shows why (GET carries llm_error); the decision stays.
    page.reload()
    expect(panel).to_have_attribute("data-state", "failed", timeout=60_000)
    expect(panel.get_by_test_id("draft-reason")).to_be_visible()
    expect(page.locator(f".finding-item[data-finding-id='{other['id']}'] .decision")
           ).to_have_text("Accepted")
    with case.stack.client() as http:
        state = http.get(f"/api/v1/studies/{case.study_id}/draft").json()
        after = {f["id"]: f for f in
                 http.get(f"/api/v1/studies/{case.study_id}/findings").json()["findings"]}
    assert state["llm_error"], state
    assert after[other["id"]]["decision"]["action"] == "accept"
