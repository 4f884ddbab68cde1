"""The review app's priors panel in Debian's Chromium against `sidecar up`: a real Orthanc holds
an earlier mammogram of the same patient; the study view lists it, "Open beside" retrieves it
by C-MOVE and draws its images in a second viewport labelled with its date; closing it returns
to one viewport. A PACS that is down shows the failure line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pydicom
import pytest

from sidecar_synth import generate
from tests.acceptance import browser as b
from tests.acceptance.stack import Stack
from tests.acceptance.test_priors_up import MOVE_PORT, _prior_of, _send, _study_id
from tests.acceptance.test_review_ui import chromium, page  # noqa: F401
from tests.orthanc_peer import available as orthanc_available
from tests.orthanc_peer import orthanc_in_thread
from tests.servers import free_port

pytest.importorskip("playwright")
from playwright.sync_api import expect  # noqa: E402

pytestmark = [pytest.mark.browser]

RAD_NORTH, RAD_SOUTH = "rad_priors_ui_north", "rad_priors_ui_south"


@pytest.fixture(scope="module")
def rads(stack: Stack) -> dict[str, str]:
    """A radiologist of each of this module's two facilities, by facility."""
    assert b.BUILT_APP.is_file(), "the review app is not built: run `make install`"
    users = {stack.north: RAD_NORTH, stack.south: RAD_SOUTH}
    for facility, name in users.items():
        done = stack.cli("user", "add", name, "--role", "radiologist", "--facility", facility,
                         "--password-stdin", stdin=stack.password + "\n")
        assert done.returncode == 0, done.stderr
    return users


def _open_study(page: Any, stack: Stack, user: str, study_id: str) -> None:  # noqa: F811
    b.login(page, stack.base_url, user, stack.password)
    page.click(f"tr[data-study-id='{study_id}']")
    expect(page.get_by_test_id("viewer-info")).to_have_text(re.compile(r"^Slice \d+/"),
                                                            timeout=60_000)


def _series_uids(folder: Path) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID)
            for p in folder.rglob("*.dcm")}


def test_open_a_prior_beside_the_current_study(stack: Stack, rads: dict[str, str], tmp_path: Path,
                                                page: Any) -> None:  # noqa: F811
    if not orthanc_available():
        pytest.skip("needs root, unshare and Orthanc")
    truth = generate("mammo", tmp_path / "now", seed=151)
    prior_uid, prior = _prior_of(truth.patient_id, tmp_path / "prior")
    prior_series = _series_uids(tmp_path / "prior")
    assert not prior_series & _series_uids(tmp_path / "now")
    with orthanc_in_thread(tmp_path / "pacs", aet=stack.north_ae,
                           back=(MOVE_PORT, stack.ports["dicom"]), files=prior,
                           DicomModalities={"sidecar": ["SIDECAR", "127.0.0.1", MOVE_PORT]}
                           ) as (pacs, _):
        done = stack.cli("facility", "set", stack.north, "--pacs",
                         f"{stack.north_ae}@127.0.0.1:{pacs.dicom_port}")
        assert done.returncode == 0, done.stderr
        _send(stack, tmp_path / "now", stack.north)
        with stack.client() as http:
            sid = _study_id(http, truth.accession_number)
        _open_study(page, stack, rads[stack.north], sid)

        panel = page.get_by_role("region", name="Prior studies")
        item = panel.locator(".prior-item")
        expect(item).to_have_count(1, timeout=120_000)  # the panel polls a pending lookup
        expect(panel).to_have_attribute("data-lookup", "found")
        with stack.client() as http:
            listed = http.get(f"/api/v1/studies/{sid}/priors").json()["priors"]
        assert [p["study_instance_uid"] for p in listed] == [prior_uid]
        expect(item.locator(".prior-date")).to_have_text("2022-03-14")
        expect(item).to_contain_text("Screening mammogram 2022")
        expect(item).to_contain_text("MG")
        expect(item).to_contain_text(f"{len(prior)} images")
        expect(item.get_by_test_id("prior-state")).to_have_text("found")
        main = page.get_by_test_id("viewport")
        alone = main.bounding_box()
        assert alone is not None

        # Keyboard: P focuses the prior's button, Enter opens it beside the current study.
        main.focus()
        page.keyboard.press("p")
        opener = item.get_by_role("button", name="Open beside: prior of 2022-03-14")
        expect(opener).to_be_focused()
        page.keyboard.press("Enter")
        prior_vp = page.get_by_test_id("prior-viewport")
        expect(prior_vp).to_have_attribute("data-rendered", re.compile(r"^\d+$"),
                                           timeout=180_000)
        expect(item.get_by_test_id("prior-state")).to_have_text(
            re.compile(rf"^retrieved \({len(prior)}\)$"))
        expect(page.get_by_test_id("prior-label")).to_have_text(
            "Prior · 2022-03-14 · Screening mammogram 2022")
        assert prior_vp.get_attribute("data-series") in prior_series  # the prior's own images
        drawn = b.gray(bytes(prior_vp.screenshot()))
        assert drawn.std() > 10, "the prior's viewport drew nothing"
        expect(page.get_by_test_id("prior-info")).to_have_text(re.compile(r"^Slice \d+/"))
        beside = main.bounding_box()
        right = prior_vp.bounding_box()
        assert beside and right and beside["width"] < alone["width"] * 0.6
        assert right["x"] >= beside["x"] + beside["width"] - 1  # side by side, prior right
        # the current study is fitted again to its narrower viewport, and still drawn
        expect(page.get_by_test_id("viewer-info")).to_contain_text("zoom 100%")
        assert b.gray(bytes(main.screenshot())).std() > 10
        b.ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(b.ARTIFACTS / "priors-open-beside.png"))

        # Close: back to one viewport.
        page.get_by_role("button", name="Close the prior").click()
        expect(page.get_by_test_id("prior-stage")).to_be_hidden()
        page.wait_for_function(
            "w => document.querySelector('[data-testid=viewport]')"
            ".getBoundingClientRect().width > w", arg=alone["width"] - 2)
        expect(page.get_by_test_id("viewer-info")).to_contain_text("zoom 100%")
        # Opened again: already retrieved, it shows at once, and X closes it.
        opener.click()
        expect(prior_vp).to_have_attribute("data-rendered", re.compile(r"^\d+$"),
                                           timeout=60_000)
        page.keyboard.press("x")
        expect(page.get_by_test_id("prior-stage")).to_be_hidden()
    with stack.client() as http:
        events = [e["type"] for e in http.get(f"/api/v1/studies/{sid}/audit").json()["events"]]
    assert {"priors.found", "priors.retrieve_queued", "priors.retrieved"} <= set(events)
    assert not page.evaluate("window.__cspViolations")


def test_a_pacs_that_is_down_shows_the_failure_line(stack: Stack, rads: dict[str, str],
                                                     tmp_path: Path,
                                                     page: Any) -> None:  # noqa: F811
    done = stack.cli("facility", "set", stack.south, "--pacs",
                     f"{stack.south_ae}@127.0.0.1:{free_port()}")  # nothing listens there
    assert done.returncode == 0, done.stderr
    truth = generate("mammo", tmp_path / "now", seed=152)
    _send(stack, tmp_path / "now", stack.south)
    with stack.client() as http:
        sid = _study_id(http, truth.accession_number)
    _open_study(page, stack, rads[stack.south], sid)
    panel = page.get_by_role("region", name="Prior studies")
    expect(panel).to_have_attribute("data-lookup", "failed", timeout=120_000)
    line = panel.get_by_test_id("priors-line")
    expect(line).to_contain_text("The prior lookup at the PACS failed")
    expect(line).to_be_visible()
    expect(panel.locator(".prior-item")).to_have_count(0)
    # the study stays reviewable: the viewer drew it
    assert b.gray(bytes(page.get_by_test_id("viewport").screenshot())).std() > 10
    b.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(b.ARTIFACTS / "priors-lookup-failed.png"))
