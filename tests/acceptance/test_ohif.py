"""OHIF v3 served by `sidecar demo`, in real Chromium: "Open in OHIF" in the review app hands the
study over with a one-time code (no session token in any URL; the viewer's token reads that
study only, under the viewer's Content-Security-Policy), the chest CT's viewport has real
pixels, the CT's AI SR measurements appear in the measurement panel and the brain MR's AI SEG
in the segmentation panel. Screenshots go to test-artifacts/."""

from __future__ import annotations

import io
import re
import shutil
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sidecar_app.runtime.embedded import REPO_ROOT
from sidecar_app.runtime.ohif_fetch import DEFAULT_DIR, installed_version
from tests.acceptance import browser as b
from tests.acceptance.stack import DemoStack

# `sidecar demo` loads and analyses three studies before the first test (minutes on 2 cores).
pytestmark = [pytest.mark.browser, pytest.mark.timeout(1500)]

ARTIFACTS = REPO_ROOT / "test-artifacts" / "ohif"
README_SHOT = REPO_ROOT / "docs" / "img" / "ohif-sr.png"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
UI_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def demo(shared_demo: DemoStack) -> DemoStack:
    """The `sidecar demo` this module shares with test_demo_up (conftest.py)."""
    if not installed_version(DEFAULT_DIR):
        pytest.fail("OHIF is not installed: run `make install` (fetches @ohif/app into .ohif/)")
    return shared_demo


@pytest.fixture(scope="module")
def studies(demo: DemoStack) -> dict[str, dict[str, Any]]:
    """The demo studies by modality, as the gateway's QIDO-RS lists them once every AI result
    is stored as DICOM (an SR per study, and the brain MR's SEG), which may come a moment
    after the demo says it is ready."""
    deadline = time.monotonic() + 120
    while True:
        with demo.client() as http:
            found = http.get("/dicomweb/studies", params={"includefield": "all"})
            assert found.status_code == 200, found.text
        by_modality = {}
        for study in found.json():
            modalities = study["00080061"]["Value"]
            primary = next(m for m in modalities if m not in ("SR", "SEG"))
            by_modality[primary] = {"uid": study["0020000D"]["Value"][0],
                                    "accession": study["00080050"]["Value"][0],
                                    "modalities": modalities}
        complete = (all("SR" in s["modalities"] for s in by_modality.values())
                    and "SEG" in by_modality.get("MR", {}).get("modalities", []))
        if complete or time.monotonic() > deadline:
            return by_modality
        time.sleep(0.5)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    # Whatever the viewer's Content-Security-Policy blocks shows up here.
    page.on("console", lambda msg: errors.append(msg.text)
            if "Content Security Policy" in msg.text else None)
    try:
        yield page
    finally:
        context.close()


def _dismiss_intro(page: Any) -> None:
    """OHIF's first-visit tour and its investigational-use notice."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.get_by_text("Skip all").wait_for(timeout=15_000)
        page.get_by_text("Skip all").click()
    except PlaywrightTimeout:
        pass
    notice = page.get_by_role("button", name="Confirm and hide")
    if notice.count():
        notice.click()


def _findings(demo: DemoStack, uid: str) -> list[dict[str, Any]]:
    """The study's findings through the review API (what the SR and SEG must carry)."""
    with demo.client() as http:
        listed = http.get("/api/v1/studies").json()["studies"]
        study_id = next(s["id"] for s in listed if s["study_instance_uid"] == uid)
        return list(http.get(f"/api/v1/studies/{study_id}/findings").json()["findings"])


def _study_id(demo: DemoStack, uid: str) -> str:
    with demo.client() as http:
        listed = http.get("/api/v1/studies").json()["studies"]
    return str(next(s["id"] for s in listed if s["study_instance_uid"] == uid))


def _open_study(page: Any, demo: DemoStack, uid: str) -> None:
    """As "Open in OHIF" does it: a one-time code in the viewer's URL, never a token."""
    with demo.client() as http:
        handover = http.post("/api/v1/viewer/handover", json={"study_id": _study_id(demo, uid)})
        assert handover.status_code == 200, handover.text
    page.goto(f"{demo.viewer_url}/viewer?StudyInstanceUIDs={uid}&code={handover.json()['code']}")
    page.locator("[data-cy=studyBrowser-panel]").wait_for(timeout=UI_TIMEOUT_MS)
    _dismiss_intro(page)


def _draws_pixels(canvas: Any) -> np.ndarray:
    """The viewport as grey levels once the first frames streamed in over WADO-RS."""
    deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
    while True:
        shot = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("L"), float)
        if shot.std() > 20 or time.monotonic() > deadline:
            return shot
        time.sleep(1.0)


def _open_derived_series(page: Any, description: str) -> None:
    page.get_by_text(description).first.dblclick()
    page.get_by_role("button", name="Yes").click(timeout=UI_TIMEOUT_MS)


def test_open_in_ohif_hands_the_study_over_without_the_session_token(
        demo: DemoStack, studies: dict[str, dict[str, Any]], browser: Any) -> None:
    """Clicking "Open in OHIF" in the review app opens the viewer on the study with real
    pixels; no URL the browser visits carries the session token (nor, once exchanged, the
    code); the viewer's DICOMweb token reads that study only and cannot store."""
    import httpx

    ct = studies["CT"]["uid"]
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    urls: list[str] = []
    bearers: list[tuple[str, str]] = []
    errors: list[str] = []

    def seen(request: Any) -> None:
        urls.append(request.url)
        auth = request.headers.get("authorization", "")
        if auth and "/dicomweb/" in request.url:
            bearers.append((request.url, auth.removeprefix("Bearer ")))

    context.on("request", seen)
    context.on("page", lambda p: p.on("console", lambda msg: errors.append(msg.text)
                                      if "Content Security Policy" in msg.text else None))
    try:
        app = context.new_page()
        app.on("pageerror", lambda exc: errors.append(str(exc)))
        b.login(app, demo.base_url, demo.admin, demo.password)
        app.click(f"tr[data-study-id='{_study_id(demo, ct)}']")
        with context.expect_page(timeout=UI_TIMEOUT_MS) as opened:
            app.get_by_role("button", name="Open in OHIF").click()
        viewer = opened.value
        viewer.on("pageerror", lambda exc: errors.append(str(exc)))
        viewer.locator("[data-cy=studyBrowser-panel]").wait_for(timeout=UI_TIMEOUT_MS)
        _dismiss_intro(viewer)
        canvas = viewer.locator("canvas.cornerstone-canvas").first
        canvas.wait_for(timeout=UI_TIMEOUT_MS)
        shot = _draws_pixels(canvas)
        viewer.screenshot(path=str(ARTIFACTS / "open-in-ohif.png"))
        assert shot.std() > 20, f"viewport looks blank: std {shot.std():.1f}"
        assert viewer.url.startswith(f"{demo.viewer_url}/viewer")
        assert ct in viewer.url and "code=" not in viewer.url and "token" not in viewer.url
        # The viewer's CSP (with frame-ancestors) and no referrer; nothing it blocked.
        headers = viewer.evaluate("() => fetch(location.href).then(r => ["
                                  "r.headers.get('content-security-policy'),"
                                  "r.headers.get('referrer-policy')])")
        assert "frame-ancestors 'none'" in headers[0] and headers[1] == "no-referrer"
        session_token = context.cookies(demo.base_url)
        session = next(c["value"] for c in session_token if c["name"] == "sidecar_session")
    finally:
        context.close()
    assert not errors, errors
    codes = [u for u in urls if "code=" in u]
    assert len(codes) == 1 and codes[0].startswith(f"{demo.viewer_url}/viewer?"), codes
    assert not [u for u in urls if session in u or "token=" in u], urls
    assert bearers, "OHIF sent no Authorization header to the gateway"
    tokens = {token for _, token in bearers}
    assert session not in tokens and len(tokens) == 1
    (viewer_token,) = tokens
    with httpx.Client(base_url=demo.base_url, timeout=60,
                      headers={"Authorization": f"Bearer {viewer_token}"}) as http:
        listed = http.get("/dicomweb/studies")
        assert listed.status_code == 200
        assert [s["0020000D"]["Value"][0] for s in listed.json()] == [ct]
        other = studies["MR"]["uid"]
        assert http.get(f"/dicomweb/studies/{other}/series").status_code == 403
        stow = http.post("/dicomweb/studies", content=b"--x--", headers={
            "Content-Type": "multipart/related; type=application/dicom; boundary=x"})
        assert stow.status_code == 403
        assert http.get("/api/v1/studies").status_code == 403


def test_study_list_shows_only_the_handed_over_study(
        demo: DemoStack, studies: dict[str, dict[str, Any]], page: Any) -> None:
    """OHIF's study list, one click away from a handed-over study, lists that study alone:
    the viewer's token reads one study (QIDO-RS is narrowed to it)."""
    assert set(studies) == {"CT", "MG", "MR"}
    assert f"OHIF viewer: {demo.viewer_url}/" in demo.output()
    _open_study(page, demo, studies["CT"]["uid"])
    page.locator("[data-cy=return-to-work-list]").click()
    page.get_by_text(studies["CT"]["accession"]).wait_for(timeout=UI_TIMEOUT_MS)
    page.screenshot(path=str(ARTIFACTS / "study-list.png"))
    text = page.inner_text("body")
    assert "Study List" in text and re.search(r"\b1-1 of 1\b", text), text
    assert "\\".join(studies["CT"]["modalities"]) in text  # e.g. CT\SR
    for other in ("MG", "MR"):
        assert studies[other]["accession"] not in text
    assert "Data Source Connection Error" not in text
    assert not page.errors, page.errors


def test_chest_ct_viewport_draws_pixels(demo: DemoStack, studies: dict[str, dict[str, Any]],
                                        page: Any) -> None:
    _open_study(page, demo, studies["CT"]["uid"])
    canvas = page.locator("canvas.cornerstone-canvas").first
    canvas.wait_for(timeout=UI_TIMEOUT_MS)
    page.wait_for_function(
        "() => [...document.querySelectorAll('canvas.cornerstone-canvas')].some(c => {"
        " const g = c.getContext('2d', {willReadFrequently: true}) || null;"
        " return c.width > 0 && c.height > 0; })", timeout=UI_TIMEOUT_MS)
    shot = _draws_pixels(canvas)
    Image.fromarray(shot.astype(np.uint8)).save(ARTIFACTS / "chest-ct-viewport.png")
    page.screenshot(path=str(ARTIFACTS / "chest-ct.png"))
    assert shot.std() > 20, f"viewport looks blank: mean {shot.mean():.1f}, std {shot.std():.1f}"
    assert (shot > 200).mean() > 0.05 and (shot < 60).mean() > 0.05  # body and air


def test_chest_ct_sr_measurements_in_the_panel(demo: DemoStack,
                                               studies: dict[str, dict[str, Any]],
                                               page: Any) -> None:
    findings = _findings(demo, studies["CT"]["uid"])
    assert findings
    _open_study(page, demo, studies["CT"]["uid"])
    _open_derived_series(page, "AI findings chest_ct_nodules")
    page.locator("[data-cy=trackedMeasurements-btn]").click()
    page.get_by_text("Lung nodule candidate").first.wait_for(timeout=UI_TIMEOUT_MS)
    page.wait_for_timeout(2000)
    page.screenshot(path=str(ARTIFACTS / "chest-ct-sr.png"))
    shutil.copyfile(ARTIFACTS / "chest-ct-sr.png", ARTIFACTS / "ohif-sr.png")
    panel = page.locator("[data-cy=trackedMeasurements-panel], [data-cy=measurements-panel]")
    text = panel.first.inner_text() if panel.count() else page.inner_text("body")
    assert f"Measurements ({len(findings)})" in text, text
    assert text.count("Lung nodule candidate") == len(findings), text
    assert "Lung" in text  # the finding site
    assert not page.errors, page.errors


def test_brain_mr_seg_in_the_segmentation_panel(demo: DemoStack,
                                                studies: dict[str, dict[str, Any]],
                                                page: Any) -> None:
    masks = [f for f in _findings(demo, studies["MR"]["uid"]) if f["kind"] == "mask"]
    assert masks
    _open_study(page, demo, studies["MR"]["uid"])
    _open_derived_series(page, "AI masks brain_mr_lesions")
    segmentation_tab = page.locator("[data-cy=panelSegmentation-btn]")
    if segmentation_tab.count():
        segmentation_tab.click()
    page.get_by_text("Hyperintense brain lesion #1").first.wait_for(timeout=UI_TIMEOUT_MS)
    page.wait_for_timeout(2000)
    page.screenshot(path=str(ARTIFACTS / "brain-mr-seg.png"))
    text = page.inner_text("body")
    assert "AI masks brain_mr_lesions" in text and "Segmentations" in text
    for number in range(1, len(masks) + 1):
        assert f"Hyperintense brain lesion #{number}" in text, text
    assert not page.errors, page.errors


def test_readme_screenshot_is_a_sidecar_study(demo: DemoStack) -> None:
    """docs/img/ohif-sr.png is a screenshot this test module took (copied by hand on change)."""
    assert README_SHOT.exists()
    assert Image.open(README_SHOT).size == Image.open(ARTIFACTS / "ohif-sr.png").size
