"""The review app in Debian's Chromium against `sidecar up`: the worklist's patient search box
(name with accents and in any order, patient ID, accession), the sidecar's AI result series
listed apart from the image thumbnails, and a study opening on its first finding's key slice."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest

from sidecar_synth import generate
from tests.acceptance import browser as b
from tests.acceptance.stack import Stack
from tests.acceptance.test_review_ui import (  # noqa: F401  (fixtures)
    _send,
    _slice_numbers,
    _wait_ready,
    chromium,
    page,
)
from tests.helpers import ct_slice, to_bytes

pytest.importorskip("playwright")
from playwright.sync_api import expect  # noqa: E402

pytestmark = [pytest.mark.browser]

RAD = "rad_search"
# The chest CT's patient (ISO_IR 100: Latin-1 with accents); the other study's patient.
CT_NAME, CT_ID = "Núñez García^José María", "SRCH-CT-1"
OTHER_NAME, OTHER_ID, OTHER_ACCESSION = "Okoye^Ada", "SRCH-KNEE-2", "SRCHKNEE2"


@dataclass
class Case:
    stack: Stack
    ct_id: str
    ct_accession: str
    other_id: str
    ct_dir: Path
    findings: list[dict[str, Any]]
    series: list[dict[str, Any]]


def _wait_results(stack: Stack, study_id: str, timeout: float = 180) -> list[dict[str, Any]]:
    """The study's series, once the AI SR is written."""
    deadline = time.monotonic() + timeout
    series: list[dict[str, Any]] = []
    with stack.client() as http:
        while time.monotonic() < deadline:
            series = http.get(f"/api/v1/studies/{study_id}").json()["series"]
            derived = [s for s in series if s["derived"]]
            if any(s["modality"] == "SR" for s in derived):
                return list(series)
            time.sleep(1)
    raise AssertionError(f"no AI SR series in {series}")


@pytest.fixture(scope="module")
def case(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Case:
    assert b.BUILT_APP.is_file(), "the review app is not built: run `make install`"
    done = stack.cli("user", "add", RAD, "--role", "radiologist", "--facility", stack.north,
                     "--password-stdin", stdin=stack.password + "\n")
    assert done.returncode == 0, done.stderr
    root = tmp_path_factory.mktemp("review-search")
    ct_dir, other_dir = root / "ct", root / "other"
    truth = generate("chest-ct", ct_dir, 23)
    for path in ct_dir.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.PatientName, ds.PatientID = CT_NAME, CT_ID
        ds.save_as(path)
    other_dir.mkdir()
    knee = ct_slice(accession=OTHER_ACCESSION)  # an ineligible study: no AI run
    knee.PatientName, knee.PatientID, knee.BodyPartExamined = OTHER_NAME, OTHER_ID, "KNEE"
    (other_dir / "knee.dcm").write_bytes(to_bytes(knee))
    _send(stack, ct_dir, stack.north)
    _send(stack, other_dir, stack.north)
    with stack.client() as http:
        row = _wait_ready(http, truth.accession_number)
        findings = http.get(f"/api/v1/studies/{row['id']}/findings").json()["findings"]
        [other] = http.get("/api/v1/studies", params={"accession": OTHER_ACCESSION}
                           ).json()["studies"]
    assert len(findings) >= 2, findings
    return Case(stack, row["id"], truth.accession_number, other["id"], ct_dir, findings,
                _wait_results(stack, row["id"]))


def _rows(tab: Any) -> Any:
    return tab.locator("table.worklist tbody tr[data-study-id]")


def _search(tab: Any, text: str) -> None:
    box = tab.get_by_role("searchbox", name="Search patient name, patient ID or accession")
    box.fill(text)
    box.press("Enter")


def test_search_box_finds_by_name_id_and_accession(case: Case, page: Any  # noqa: F811
                                                   ) -> None:
    b.login(page, case.stack.base_url, RAD, case.stack.password)
    expect(_rows(page)).to_have_count(2, timeout=30_000)
    ct = f"tr[data-study-id='{case.ct_id}']"
    other = f"tr[data-study-id='{case.other_id}']"
    for text, shown in (("jose nunez", ct), ("GARCÍA", ct), ("Núñez^José", ct),
                        (CT_ID.lower(), ct), (case.ct_accession, ct), ("okoye", other),
                        (OTHER_ID, other), (OTHER_ACCESSION.lower(), other)):
        _search(page, text)
        expect(_rows(page)).to_have_count(1)
        expect(page.locator(shown)).to_be_visible()
    _search(page, "Smith")
    expect(_rows(page)).to_have_count(0)
    expect(page.locator("td.empty")).to_have_text("No studies match.")
    b.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(b.ARTIFACTS / "worklist-search.png"))
    # The / shortcut focuses the box; clearing it brings every study back.
    page.locator("p.hints").click()
    page.keyboard.press("/")
    expect(page.get_by_role("searchbox")).to_be_focused()
    _search(page, "")
    expect(_rows(page)).to_have_count(2)
    # Each search the radiologist ran is a query audit event naming them and the text.
    rows = case.stack.sql("select context->>'patient_query' from audit_events "
                          "where type = 'worklist.queried' and context->>'user' = %s", RAD)
    assert {r[0] for r in rows} >= {"jose nunez", CT_ID.lower(), "Smith"}


def test_study_opens_on_the_first_finding_with_results_apart(case: Case, page: Any  # noqa: F811
                                                             ) -> None:
    b.login(page, case.stack.base_url, RAD, case.stack.password)
    page.click(f"tr[data-study-id='{case.ct_id}']")
    first = next(f for f in case.findings if f["sop_instance_uid"])
    key = _slice_numbers(case.ct_dir)[first["sop_instance_uid"]]
    assert key != 1, "the test needs a finding off the first slice"
    info = page.locator("[data-testid=viewer-info]")
    expect(info).to_have_text(re.compile(rf"^Slice {key}/100"), timeout=60_000)
    expect(page.locator(".finding-item.selected")).to_have_attribute("data-finding-id",
                                                                      first["id"])
    expect(page.locator(f"svg.overlay rect.box[data-finding='{first['id']}']")).to_have_count(1)

    # The AI SR is a result, listed apart; no image thumbnail stands for it.
    series = page.get_by_role("navigation", name="Series")
    results = series.get_by_role("region", name="AI results")
    derived = [s for s in case.series if s["derived"]]
    for s in derived:
        item = results.locator(f"li.result-item[data-series-id='{s['id']}']")
        expect(item).to_be_visible()
        expect(series.locator(f"button.series-item[data-series-id='{s['id']}']")).to_have_count(0)
    expect(results.locator("li.result-item[data-modality=SR]")).to_contain_text(
        "Structured report")
    thumbs = series.locator("button.series-item")
    expect(thumbs).to_have_count(len(case.series) - len(derived))
    for i in range(thumbs.count()):
        expect(thumbs.nth(i).locator(".sdesc")).not_to_have_text(re.compile("^(SR|AI )"))
    b.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(b.ARTIFACTS / "study-opens-on-finding.png"))
    assert page.evaluate("() => window.__cspViolations") == []
