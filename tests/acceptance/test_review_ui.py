"""The review web app in Debian's Chromium against `sidecar up`: worklist, live updates, the
Cornerstone3D viewer, overlays, per-finding decisions, facility scoping and escaping."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest

from sidecar_synth import generate
from tests.acceptance import browser as b
from tests.acceptance.stack import Stack

pytest.importorskip("playwright")
from playwright.sync_api import expect, sync_playwright  # noqa: E402

pytestmark = [pytest.mark.browser]

XSS_NAME = "<img src=x onerror=alert(1)>"
NORTH, SOUTH = "rad_north", "rad_south"


@dataclass
class Site:
    stack: Stack
    ct_id: str
    ct_uid: str
    ct_accession: str
    ct_dir: Path
    mr_dir: Path
    findings: list[dict[str, Any]]


def _send(stack: Stack, folder: Path, facility: str) -> None:
    done = stack.cli("ingest", str(folder), "--facility", facility,
                     "--target", stack.address("ingest"), "--complete")
    assert done.returncode == 0, done.stderr


def _wait_ready(http: httpx.Client, accession: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = http.get("/api/v1/studies", params={"accession": accession}).json()["studies"]
        if rows and rows[0]["state"] == "ready_for_review" and rows[0]["ai_status"] == "findings":
            return rows[0]
        time.sleep(1)
    raise AssertionError(f"study {accession} not ready with findings: {rows}")


def _slice_numbers(folder: Path) -> dict[str, int]:
    """SOP Instance UID → 1-based slice number in anatomical order (along the normal)."""
    positions = []
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        iop = np.array(ds.ImageOrientationPatient, dtype=float)
        normal = np.cross(iop[:3], iop[3:])
        positions.append((float(np.dot(normal, np.array(ds.ImagePositionPatient, float))),
                          ds.SOPInstanceUID))
    return {sop: i + 1 for i, (_, sop) in enumerate(sorted(positions))}


@pytest.fixture(scope="module")
def site(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Site:
    assert b.BUILT_APP.is_file(), "the review app is not built: run `make install`"
    for name, facility in ((NORTH, stack.north), (SOUTH, stack.south)):
        done = stack.cli("user", "add", name, "--role", "radiologist", "--facility", facility,
                         "--password-stdin", stdin=stack.password + "\n")
        assert done.returncode == 0, done.stderr
    root = tmp_path_factory.mktemp("review-ui")
    ct_dir, mr_dir = root / "ct", root / "mr"
    truth = generate("chest-ct", ct_dir, 7)
    generate("brain-mr", mr_dir, 5)
    for path in mr_dir.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.PatientName = XSS_NAME
        ds.save_as(path)
    _send(stack, ct_dir, stack.north)
    with stack.client() as http:
        row = _wait_ready(http, truth.accession_number)
        findings = http.get(f"/api/v1/studies/{row['id']}/findings").json()["findings"]
    assert len(findings) >= 2, findings
    return Site(stack, row["id"], truth.study_instance_uid, truth.accession_number, ct_dir,
                mr_dir, findings)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with sync_playwright() as playwright:
        browser = b.launch(playwright)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(b.CSP_PROBE)
    tab = context.new_page()
    tab.dialogs = []
    tab.on("dialog", lambda d: (tab.dialogs.append(d.message), d.dismiss()))
    try:
        yield tab
    finally:
        context.close()


def _info(page: Any) -> Any:
    return page.locator("[data-testid=viewer-info]")


def _viewport_png(page: Any) -> bytes:
    return bytes(page.locator("[data-testid=viewport]").screenshot())


def test_worklist_live_update_and_escaped_patient_name(site: Site, page: Any) -> None:
    reply = httpx.get(site.stack.base_url + "/", timeout=30)
    csp = reply.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    b.login(page, site.stack.base_url, NORTH, site.stack.password)
    ct_row = page.locator(f"tr[data-study-id='{site.ct_id}']")
    expect(ct_row.locator("td.findings")).to_have_text(str(len(site.findings)))
    expect(ct_row).to_contain_text(site.ct_accession)
    # A study sent while the worklist is open appears without a reload.
    _send(site.stack, site.mr_dir, site.stack.north)
    named = page.locator("tr[data-study-id] .name", has_text=XSS_NAME)
    expect(named).to_have_count(1, timeout=120_000)
    assert page.locator("img[src='x']").count() == 0
    assert page.dialogs == []
    assert XSS_NAME not in page.title() and XSS_NAME not in page.url
    b.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(b.ARTIFACTS / "review-worklist.png"))
    # Claim and release from the row; a modality filter narrows the list.
    ct_row.get_by_role("button", name="Claim").click()
    expect(ct_row).to_contain_text(NORTH)
    ct_row.get_by_role("button", name="Release").click()
    expect(ct_row.get_by_role("button", name="Claim")).to_be_enabled()
    page.select_option("#f-modality", "MR")
    expect(page.locator(f"tr[data-study-id='{site.ct_id}']")).to_have_count(0)
    expect(named).to_have_count(1)
    assert page.evaluate("() => window.__cspViolations") == []


def _settled_box(locator: Any) -> dict[str, float]:
    """The element's box once the overlay has redrawn it: two equal readings in a row (a zoom
    re-renders the SVG, and a reading in between finds no element)."""
    last = None
    for _ in range(100):
        rect = locator.bounding_box()
        if rect is not None and rect == last:
            return rect
        last = rect
        time.sleep(0.05)
    raise AssertionError(f"the finding's box never settled on screen (last reading {last})")


def test_study_view_viewer_overlays_and_decisions(site: Site, page: Any) -> None:
    b.login(page, site.stack.base_url, NORTH, site.stack.password)
    page.click(f"tr[data-study-id='{site.ct_id}']")
    expect(_info(page)).to_have_text(re.compile(r"^Slice \d+/100"), timeout=60_000)
    # The OHIF hand-over is a button (a one-time code on click), never a link with a token.
    expect(page.get_by_role("button", name="Open in OHIF")).to_be_visible()
    assert not page.get_by_role("link", name="Open in OHIF").count()
    first = _viewport_png(page)
    assert b.gray(first).std() > 10, "the viewer drew nothing"

    # Where the viewer's time goes is recorded as User Timing entries (bench/review.py prints
    # them): the first-image marks in order, a measure per frame loaded and per slice shown.
    shown = int(re.match(r"Slice (\d+)/", _info(page).text_content() or "").group(1))
    step, now = ("ArrowDown", shown + 1) if shown < 100 else ("ArrowUp", shown - 1)
    page.keyboard.press(step)
    expect(_info(page)).to_have_text(re.compile(rf"^Slice {now}/100"))
    timing = page.evaluate("""() => ({
      marks: Object.fromEntries(performance.getEntriesByType('mark')
        .filter((m) => m.name.startsWith('sidecar:')).map((m) => [m.name.slice(8), m.startTime])),
      frames: performance.getEntriesByName('sidecar:frame', 'measure').map((m) => m.detail),
      slices: performance.getEntriesByName('sidecar:slice', 'measure').map((m) => m.detail)})""")
    marks = timing["marks"]
    order = ["chunk", "study", "metadata", "first-frame", "first-render"]
    assert [marks[m] for m in order] == sorted(marks[m] for m in order), marks
    assert timing["frames"], "no frame load was measured"
    assert all(f["fetch"] > 0 and f["decode"] >= 0 and f["bake"] >= 0 for f in timing["frames"])
    assert [s["index"] for s in timing["slices"]] == [now - 1], timing["slices"]

    # Selecting a finding jumps to its key slice and centres its box.
    numbers = _slice_numbers(site.ct_dir)
    target = site.findings[0]
    expected = numbers[target["sop_instance_uid"]]
    assert expected == target["slice_index"] + 1
    page.click(f".finding-item[data-finding-id='{target['id']}']")
    expect(_info(page)).to_have_text(re.compile(rf"^Slice {expected}/100"))
    box = page.locator(f"svg.overlay rect.box[data-finding='{target['id']}']")
    expect(box).to_have_count(1)
    area = page.locator("[data-testid=viewport]").bounding_box()
    rect = _settled_box(box)
    centre = rect["x"] + rect["width"] / 2
    assert abs(centre - (area["x"] + area["width"] / 2)) < 0.05 * area["width"]

    # The box sits on the nodule's bright pixels at two zoom levels (overlays hidden to measure).
    for zoom_keys in ("", "+++"):
        shown = _info(page).text_content()
        for key in zoom_keys:
            page.keyboard.press(key)
        if zoom_keys:
            expect(_info(page)).not_to_have_text(shown)
        rect = _settled_box(box)
        page.keyboard.press("o")
        expect(box).to_have_count(0)
        assert b.box_contrast(_viewport_png(page), area, rect) > 40
        page.keyboard.press("o")
        expect(box).to_have_count(1)

    # A window/level drag changes the window in HU and the pixels on screen.
    before = _viewport_png(page)
    win = _info(page).text_content()
    cx, cy = area["x"] + area["width"] * .3, area["y"] + area["height"] * .3
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 120, cy + 60, steps=6)
    page.mouse.up()
    expect(_info(page)).not_to_have_text(win)
    assert np.abs(b.gray(_viewport_png(page)) - b.gray(before)).mean() > 2
    page.keyboard.press(" ")
    expect(_info(page)).to_contain_text("W 1500 L -600")

    # Scrolling: arrow keys and the wheel move through the stack.
    page.keyboard.press("ArrowDown")
    expect(_info(page)).to_have_text(re.compile(rf"^Slice {expected + 1}/100"))
    page.mouse.move(area["x"] + 50, area["y"] + 50)
    page.mouse.wheel(0, -120)
    expect(_info(page)).to_have_text(re.compile(rf"^Slice {expected}/100"))

    # Overlay toggled for one finding.
    page.keyboard.press("v")
    expect(box).to_have_count(0)
    page.keyboard.press("v")
    expect(box).to_have_count(1)

    # Decisions: accept one, reject one with a reason, drag a box edge, add an own finding.
    a, r = site.findings[0], site.findings[1]
    g = site.findings[2] if len(site.findings) > 2 else a
    page.keyboard.press("a")
    expect(page.locator(".findings .message")).to_contain_text("Accepted")
    page.click(f".finding-item[data-finding-id='{r['id']}']")
    page.keyboard.press("r")
    page.select_option(".form-reject select[name=reason]", "false_positive")
    page.fill(".form-reject textarea[name=note]", "vessel in cross-section")
    page.click(".form-reject button[type=submit]")
    expect(page.locator(".findings .message")).to_contain_text("Rejected")
    page.click(f".finding-item[data-finding-id='{g['id']}']")
    handle = page.locator(f"svg.overlay .h-e[data-finding='{g['id']}']")
    spot = _settled_box(handle)  # selecting a finding on another slice redraws the overlay
    page.mouse.move(spot["x"] + spot["width"] / 2, spot["y"] + spot["height"] / 2)
    page.mouse.down()
    page.mouse.move(spot["x"] + 40, spot["y"] + spot["height"] / 2, steps=5)
    page.mouse.up()
    expect(page.locator(".findings .message")).to_contain_text("Box edited")
    page.keyboard.press("n")
    mx, my = area["x"] + area["width"] / 2 + 40, area["y"] + area["height"] / 2 + 40
    page.mouse.move(mx, my)
    page.mouse.down()
    page.mouse.move(mx + 60, my + 50, steps=5)
    page.mouse.up()
    page.fill(".form-own input[name=label]", "Missed nodule")
    page.click(".form-own button[type=submit]")
    expect(page.locator(".findings .message")).to_contain_text("Added: Missed nodule")
    # Relabel and reword (the own finding is selected after adding it).
    page.keyboard.press("l")
    page.fill(".form-relabel input[name=label]", "Missed nodule, right upper lobe")
    page.click(".form-relabel button[type=submit]")
    expect(page.locator(".findings .message")).to_contain_text("Relabelled")
    page.keyboard.press("e")
    page.fill(".form-edit_text textarea[name=text]", "6 mm solid nodule <b>not</b> flagged by AI")
    page.click(".form-edit_text button[type=submit]")
    expect(page.locator(".findings .message")).to_contain_text("Wording edited")

    # A stale version is refused with the current one shown (another reviewer acted first).
    with site.stack.client() as http:
        now = http.get(f"/api/v1/studies/{site.ct_id}/findings").json()["findings"]
        fresh = next(f for f in now if f["id"] == a["id"])
        done = http.post(f"/api/v1/studies/{site.ct_id}/findings/{a['id']}/decisions",
                         json={"action": "include_in_draft", "expected_version": fresh["version"]})
        assert done.status_code == 200, done.text
    page.click(f".finding-item[data-finding-id='{a['id']}']")
    page.keyboard.press("g")
    expect(page.locator(".findings .message.conflict")).to_contain_text(
        f"now version {fresh['version'] + 1}")

    b.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(b.ARTIFACTS / "review-study.png"))

    # After a reload every decision is still there.
    page.reload()
    expect(_info(page)).to_have_text(re.compile(r"^Slice \d+/100"), timeout=60_000)
    item = page.locator(".finding-item")
    rejected = page.locator(f".finding-item[data-finding-id='{r['id']}']")
    expect(rejected.locator(".decision")).to_have_text("Rejected")
    expect(rejected).to_contain_text("false positive")
    own = item.filter(has_text="Missed nodule, right upper lobe")
    expect(own).to_have_count(1)
    expect(own.locator(".text")).to_have_text("6 mm solid nodule <b>not</b> flagged by AI")
    page.click(f".finding-item[data-finding-id='{r['id']}']")
    expect(_info(page)).to_have_text(re.compile(rf"^Slice {numbers[r['sop_instance_uid']]}/100"))
    page.screenshot(path=str(b.ARTIFACTS / "review-study-reloaded.png"))
    with site.stack.client() as http:
        base = f"/api/v1/studies/{site.ct_id}"
        after = {f["id"]: f for f in http.get(f"{base}/findings").json()["findings"]}
        history = http.get(f"{base}/findings/{a['id']}/history").json()["events"]
        audit = http.get(f"{base}/audit", params={"page_size": 500}).json()["events"]
    assert after[g["id"]]["current"]["bbox_px"][2] > g["bbox_px"][2]
    assert after[g["id"]]["bbox_px"] == g["bbox_px"], "the AI's own box stays"
    assert after[r["id"]]["decision"]["reason"] == "false_positive"
    assert "accept" in [e["action"] for e in history]
    types = {e["type"] for e in audit}
    assert {"review.study_opened", "review.finding_selected", "review.overlay_toggled"} <= types
    assert page.evaluate("() => window.__cspViolations") == []


def _stream(token: str, base_url: str, seen: list[str], stop: threading.Event) -> None:
    with httpx.Client(base_url=base_url, timeout=httpx.Timeout(30, read=2)) as http:
        try:
            with http.stream("GET", "/api/v1/events",
                             headers={"Authorization": f"Bearer {token}"}) as reply:
                for line in reply.iter_lines():
                    if line.startswith("data:"):
                        seen.append(line)
                    if stop.is_set():
                        return
        except httpx.ReadTimeout:
            if not stop.is_set():
                _stream(token, base_url, seen, stop)


def test_another_facility_sees_none_of_it(site: Site, page: Any) -> None:
    stack = site.stack
    seen_north: list[str] = []
    seen_south: list[str] = []
    stop = threading.Event()
    north_token = stack.login(NORTH)
    threads = [threading.Thread(target=_stream, args=(tok, stack.base_url, seen, stop))
               for tok, seen in ((north_token, seen_north), (stack.login(SOUTH), seen_south))]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        with stack.client(north_token) as http:
            assert http.post(f"/api/v1/studies/{site.ct_id}/claim").status_code == 200
            assert http.post(f"/api/v1/studies/{site.ct_id}/release").status_code == 200
        deadline = time.monotonic() + 30
        while not any(site.ct_id in s for s in seen_north) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert any(site.ct_id in s for s in seen_north), "north's stream saw no change"
    assert not any(site.ct_id in s for s in seen_south)

    b.login(page, stack.base_url, SOUTH, stack.password)
    expect(page.locator(".paging .status")).to_contain_text("studies")
    assert page.locator(f"tr[data-study-id='{site.ct_id}']").count() == 0
    assert site.ct_accession not in page.content()
    page.goto(f"{stack.base_url}/#/study/{site.ct_id}")
    expect(page.locator(".page-study .status")).to_have_text("No such study.")
    series = json.loads(httpx.get(f"{stack.base_url}/api/v1/studies/{site.ct_id}",
                                  headers={"Authorization": f"Bearer {north_token}"},
                                  timeout=30).text)["series"][0]["series_instance_uid"]
    sop = site.findings[0]["sop_instance_uid"]
    frame = page.request.get(f"{stack.base_url}/dicomweb/studies/{site.ct_uid}/series/{series}"
                             f"/instances/{sop}/frames/1")
    assert frame.status == 404
    for path in ("findings", "audit"):
        url = f"{stack.base_url}/api/v1/studies/{site.ct_id}/{path}"
        assert page.request.get(url).status == 404


def test_review_complete(site: Site, page: Any) -> None:
    b.login(page, site.stack.base_url, NORTH, site.stack.password)
    page.click(f"tr[data-study-id='{site.ct_id}']")
    expect(_info(page)).to_have_text(re.compile(r"^Slice \d+/100"), timeout=60_000)
    page.get_by_role("button", name="Review complete").click()
    expect(page.locator(".page-study .status")).to_contain_text("Review complete")
    with site.stack.client() as http:
        audit = http.get(f"/api/v1/studies/{site.ct_id}/audit", params={"page_size": 500})
    assert "review.completed" in {e["type"] for e in audit.json()["events"]}
