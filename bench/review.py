"""Benchmarks the review app in Debian's Chromium on `sidecar up` holding many studies:
worklist first paint, click on a study → first image drawn, frames/s scrolling a 300-slice CT.

Prints each figure with its goal (issues 11 and 22, on a 2-core machine), the ratio to the goal
and the baseline measured before issue 22.
Times are taken inside the page (performance.now() at the click and when the row / image
appeared), so Playwright's own round trips are not counted.

`sidecar up` is started as a user starts it (bench/stack.py: fresh data dir, free loopback
ports), or the one running on `--stack DATA_DIR` is used; the studies go to a facility of this
bench, seen by a radiologist of its own. `--smoke`: 3 studies, a 10 × 64² CT, one run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.stack import PASSWORD, Stack, add_arguments, sidecar_up  # noqa: E402
from sidecar_synth import generate  # noqa: E402
from tests.acceptance import browser as b  # noqa: E402

# Page-side probes: when the first worklist row appeared and when the viewer drew its first
# image after the last click (the viewport's data-rendered is set on every Cornerstone render).
PROBE = """
window.__bench = {click: 0, firstRow: 0, firstImage: 0};
document.addEventListener('click', () => { window.__bench.click = performance.now();
  window.__bench.firstImage = 0; }, true);
new MutationObserver(() => {
  const B = window.__bench;
  if (!B.firstRow && document.querySelector('tr[data-study-id]')) B.firstRow = performance.now();
  const vp = document.querySelector('[data-testid=viewport][data-rendered]');
  if (vp && B.click && !B.firstImage) B.firstImage = performance.now();
}).observe(document, {subtree: true, childList: true, attributes: true,
                      attributeFilter: ['data-rendered']});
"""
# Scrolls through the whole stack as fast as it draws: the next key (ArrowDown, as a user
# presses it) as soon as the previous slice was rendered; returns slices drawn per second.
SCROLL = """async () => {
  const vp = document.querySelector('[data-testid=viewport]');
  const total = Number(document.querySelector('[data-testid=viewer-info]').textContent
    .split(' ')[1].split('/')[1]);
  const t0 = performance.now();
  for (let i = Number(vp.dataset.rendered); i < total; i++) {
    const drawn = new Promise((done) => { const mo = new MutationObserver(() => {
      if (Number(vp.dataset.rendered) === i + 1) { mo.disconnect(); done(); } });
      mo.observe(vp, {attributes: true}); });
    document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowDown', bubbles: true}));
    await drawn;
  }
  return {fps: (total - 1) / ((performance.now() - t0) / 1000), path: vp.dataset.renderPath};
}"""
# The viewer's own User Timing entries (review_gateway/frontend/src/viewer/timing.ts) since the
# last click: its first-image marks (ms after the click), the first frame's load, and every
# frame loaded since (the prefetch: its rate and where each frame's time went).
FIRST = """() => {
  const click = window.__bench.click, marks = {};
  for (const m of performance.getEntriesByType('mark'))
    if (m.name.startsWith('sidecar:') && m.startTime >= click)
      marks[m.name.slice(8)] = m.startTime - click;
  const f = performance.getEntriesByName('sidecar:frame', 'measure')
    .find((m) => m.startTime >= click);
  return {marks, frame: f ? {start: f.startTime - click, total: f.duration, ...f.detail} : null};
}"""
FRAMES = """() => {
  const click = window.__bench.click;
  const frames = performance.getEntriesByName('sidecar:frame', 'measure')
    .filter((m) => m.startTime >= click);
  const end = Math.max(...frames.map((m) => m.startTime + m.duration));
  return {count: frames.length, span: end - Math.min(...frames.map((m) => m.startTime)),
          last: end - click, frames: frames.map((m) => ({total: m.duration, ...m.detail}))};
}"""
# The `sidecar:slice` measures of one scroll through the stack.
SLICES = """() => performance.getEntriesByName('sidecar:slice', 'measure').map((m) =>
  ({total: m.duration, ...m.detail}))"""

# The longest the click waits for the worklist to have warmed the viewer (`sidecar:warm`).
WARM_S = 3.0

# The first-image steps in order (marks of the viewer), named as the breakdown prints them.
STEPS = [("chunk", "study chunk loaded (route)"), ("study", "study fetched (API)"),
         ("findings", "findings fetched (API)"), ("init", "Cornerstone initialised"),
         ("metadata", "series metadata fetched"), ("first-frame", "first frame loaded"),
         ("first-render", "first image drawn")]


def tiny_studies(out: Path, count: int) -> None:
    """`count` one-image secondary-capture studies (no model takes them: cheap to process)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(count):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(out / f"s{i:05d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.PatientName, ds.PatientID = f"BENCH^PATIENT{i:04d}", f"BP{i:06d}"
        ds.AccessionNumber, ds.Modality = f"BENCH{i:06d}", "OT"
        ds.StudyDate, ds.StudyTime = f"2024{1 + i % 12:02d}{1 + i % 28:02d}", "120000"
        ds.StudyDescription, ds.SeriesNumber, ds.InstanceNumber = "BENCH FILLER", 1, 1
        ds.Rows = ds.Columns = 32
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = rng.integers(0, 4095, (32, 32), dtype=np.uint16).tobytes()
        ds.save_as(ds.filename, enforce_file_format=True)


def send(stack: Stack, folder: Path, facility: str) -> None:
    stack.cli("ingest", str(folder), "--facility", facility, "--target",
              stack.address("ingest"), "--complete", timeout=1800)


def wait_for(http: httpx.Client, accession: str, states: set[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = http.get("/api/v1/studies", params={"accession": accession}).json()["studies"]
        if rows and rows[0]["state"] in states:
            return str(rows[0]["id"])
        time.sleep(2)
    raise SystemExit(f"study {accession} not in {states} after {timeout:.0f} s")


def count_studies(http: httpx.Client) -> int:
    total, token = 0, ""
    while True:
        reply = http.get("/api/v1/studies", params={"page_size": 500, "page_token": token}).json()
        total += len(reply["studies"])
        token = reply["next_page_token"]
        if not token:
            return total


def measure(stack: Stack, user: str, ct_id: str,
            repeat: int) -> tuple[dict[str, list[float]], dict[str, list[float]], str]:
    """The figures of `repeat` runs, each in a fresh browser context; where their time went
    (the viewer's User Timing entries); and the render path."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright

    path = "?"
    figures: dict[str, list[float]] = {"worklist_ms": [], "first_image_ms": [],
                                       "scroll_fps_cold": [], "scroll_fps_warm": []}
    breakdown: dict[str, list[float]] = {}

    def note(name: str, value: float | None) -> None:
        if value is not None:
            breakdown.setdefault(name, []).append(float(value))
    with sync_playwright() as playwright:
        chromium = b.launch(playwright)
        for _ in range(repeat):
            context = chromium.new_context(viewport={"width": 1400, "height": 900})
            context.add_init_script(PROBE)
            page = context.new_page()
            b.login(page, stack.base_url, user, PASSWORD)
            page.reload()  # first paint of a signed-in worklist, the app already cached
            page.wait_for_selector("tr[data-study-id]")
            bench = page.evaluate("() => window.__bench")
            nav = page.evaluate("() => performance.getEntriesByType('navigation')[0].startTime")
            figures["worklist_ms"].append(bench["firstRow"] - nav)
            # A radiologist reads the worklist before clicking: the click waits (at most
            # WARM_S) for the app to have warmed the viewer while the list is shown.
            t_warm = time.monotonic()
            with contextlib.suppress(PlaywrightTimeout):
                page.wait_for_function(
                    "() => performance.getEntriesByName('sidecar:warm').length > 0",
                    timeout=WARM_S * 1000)
            note("warmed", 1000 * (time.monotonic() - t_warm))
            page.click(f"tr[data-study-id='{ct_id}']")
            info = page.locator("[data-testid=viewer-info]")
            expect(info).to_have_text(re.compile(r"^Slice 1/"), timeout=60_000)
            # the slice label can come before the viewport's first render: wait for that
            page.wait_for_function("() => window.__bench.firstImage > 0", timeout=60_000)
            bench = page.evaluate("() => window.__bench")
            figures["first_image_ms"].append(bench["firstImage"] - bench["click"])
            first = page.evaluate(FIRST)
            for step, _ in STEPS:
                note(f"mark {step}", first["marks"].get(step))
            for part in ("queued", "fetch", "decode", "bake", "total"):
                note(f"first frame {part}", (first["frame"] or {}).get(part))
            for kind in ("scroll_fps_cold", "scroll_fps_warm"):
                page.evaluate("() => performance.clearMeasures('sidecar:slice')")
                result = page.evaluate(SCROLL)
                figures[kind].append(result["fps"])
                path = result["path"]
                slices = page.evaluate(SLICES)
                scroll = kind.removeprefix("scroll_fps_")
                if slices:
                    note(f"{scroll} cached", 100 * sum(s["cached"] for s in slices) / len(slices))
                    for part in ("wait", "render", "draw", "total"):
                        note(f"{scroll} slice {part}",
                             statistics.median(s[part] for s in slices))
                        note(f"{scroll} slice {part} p90",
                             percentile([s[part] for s in slices], 90))
                if scroll == "cold":
                    loaded = page.evaluate(FRAMES)
                    if loaded["count"] > 1:
                        note("prefetch frames/s", loaded["count"] / (loaded["span"] / 1000))
                        note("prefetch done after click", loaded["last"])
                        for part in ("queued", "fetch", "decode", "bake", "total"):
                            note(f"frame {part}",
                                 statistics.median(f[part] for f in loaded["frames"]))
                page.keyboard.press("Home")
                expect(page.locator("[data-testid=viewport]")).to_have_attribute(
                    "data-rendered", "1")
            context.close()
        chromium.close()
    return figures, breakdown, path


def gateway_frames(http: httpx.Client, study_uid: str, series_uid: str,
                   concurrency: int) -> tuple[float, float]:
    """The gateway alone, no browser: every frame of the series fetched as the viewer asks
    for it (WADO-RS, transfer-syntax=*), `concurrency` at a time from Python. Returns
    frames/s and the median request in ms."""
    from concurrent.futures import ThreadPoolExecutor

    base = f"/dicomweb/studies/{study_uid}/series/{series_uid}"
    instances = http.get(f"{base}/metadata", headers={"Accept": "application/dicom+json"}).json()
    urls = [f"{base}/instances/{ds['00080018']['Value'][0]}/frames/1" for ds in instances]
    accept = "multipart/related; type=application/octet-stream; transfer-syntax=*"

    def one(url: str) -> float:
        t = time.perf_counter()
        reply = http.get(url, headers={"Accept": accept})
        reply.raise_for_status()
        return 1000 * (time.perf_counter() - t)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        times = list(pool.map(one, urls))
    return len(urls) / (time.perf_counter() - t0), statistics.median(times)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def print_breakdown(breakdown: dict[str, list[float]]) -> None:
    """Where the time went: medians over the runs (each run's own median for per-slice and
    per-frame figures), with the runs' spread."""
    def row(label: str, name: str, unit: str = "ms") -> None:
        values = breakdown.get(name)
        if not values:
            return
        spread = f"{min(values):.1f}–{max(values):.1f}" if len(values) > 1 else ""
        print(f"  {label:44s} {statistics.median(values):8.1f} {unit:4s} {spread}")

    print()
    row("worklist shown → viewer warmed (the click waits)", "warmed")
    print("click → first image, ms after the click (the viewer's marks):")
    for step, label in STEPS:
        row(label, f"mark {step}")
    print("the first frame (its request → baked):")
    for part, label in (("queued", "queued before its HTTP request"), ("fetch", "HTTP exchange"),
                        ("decode", "reading + decoding after the response"),
                        ("bake", "baking display values"), ("total", "in all")):
        row(label, f"first frame {part}")
    print("the stack's frames (prefetch), median frame:")
    for part, label in (("queued", "queued before its HTTP request"), ("fetch", "HTTP exchange"),
                        ("decode", "decoding after the response"),
                        ("bake", "baking display values"), ("total", "request → baked")):
        row(label, f"frame {part}")
    row("frames loaded per second", "prefetch frames/s", "/s")
    for concurrency in (1, 4):
        row(f"the gateway alone, {concurrency} at a time (Python)",
            f"gateway frames/s {concurrency}", "/s")
        row("  its median request", f"gateway frame ms {concurrency}")
    row("whole stack loaded, after the click", "prefetch done after click")
    for scroll in ("cold", "warm"):
        print(f"{scroll} scroll, per slice (median; p90):")
        row("slices already in the cache when asked", f"{scroll} cached", "%")
        for part, label in (("wait", "asked → image available"), ("render", "available → drawn"),
                            ("draw", "inside the frame that drew it"), ("total", "asked → drawn")):
            row(label, f"{scroll} slice {part}")
            row("  p90", f"{scroll} slice {part} p90")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=1000, help="studies in the worklist")
    parser.add_argument("--slices", type=int, default=300, help="slices of the CT scrolled")
    parser.add_argument("--size", type=int, default=512, help="rows and columns of the CT")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the data dir")
    add_arguments(parser)
    args = parser.parse_args()
    if args.smoke:
        args.studies, args.slices, args.size, args.repeat = 3, 10, 64, 1
    assert b.BUILT_APP.is_file(), "the review app is not built: run `make install`"
    root = Path(tempfile.mkdtemp(prefix="bench-review-"))
    try:
        with sidecar_up(args.stack, keep=args.keep) as stack:
            # No model for the CT: on a shared 2-core machine, inference on a 300×512² volume
            # would compete with the browser for the CPU during the measurement (and the
            # viewer never waits for AI anyway).
            facility = stack.add_facility("review", "--models", "mammo_masses")
            user = stack.add_user("radiologist", facility, prefix="rad")
            token = stack.login(user)
            ct = generate("chest-ct", root / "ct", 3, slices=args.slices, rows=args.size,
                          cols=args.size)
            tiny_studies(root / "filler", max(0, args.studies - 1))
            t0 = time.monotonic()
            if args.studies > 1:
                send(stack, root / "filler", facility)
            send(stack, root / "ct", facility)
            with httpx.Client(base_url=stack.base_url, timeout=60,
                              headers={"Authorization": f"Bearer {token}"}) as http:
                ct_id = wait_for(http, ct.accession_number,
                                 {"ready_for_review", "ai_failed", "ineligible"}, 1800)
                total = count_studies(http)
            print(f"{total} studies loaded in {time.monotonic() - t0:.0f} s "
                  f"(CT {args.slices}×{args.size}²)", flush=True)
            time.sleep(5)  # let the last background work settle
            figures, breakdown, path = measure(stack, user, ct_id, args.repeat)
            try:
                with httpx.Client(base_url=stack.base_url, timeout=60,
                                  limits=httpx.Limits(max_connections=8),
                                  headers={"Authorization": f"Bearer {token}"}) as http:
                    for concurrency in (1, 4):
                        for _ in range(2):  # the second pass: the gateway's caches warm
                            rate, ms = gateway_frames(http, ct.study_instance_uid,
                                                      ct.series_instance_uids[0], concurrency)
                        breakdown[f"gateway frames/s {concurrency}"] = [rate]
                        breakdown[f"gateway frame ms {concurrency}"] = [ms]
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                print(f"the gateway's frame rate alone: not measured ({exc})", file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    # Goals of issue 11 (worklist, warm scroll) and issue 22 item 4 (first image, cold scroll);
    # baselines: issue 22's measurement before the stack was prefetched and the app split and
    # precompressed (1,000 studies, 300 × 512² CT, 2 cores).
    goals = {"worklist_ms": (1000, "≤"), "first_image_ms": (250, "≤"),
             "scroll_fps_cold": (60, "≥"), "scroll_fps_warm": (20, "≥")}
    baselines = {"first_image_ms": 377.0, "scroll_fps_cold": 42.0, "scroll_fps_warm": 60.0}
    print(f"\nreview app, {total} studies, median of {args.repeat} (all runs); "
          f"Cornerstone3D render path: {path}")
    for name, values in figures.items():
        goal, sense = goals[name]
        median = statistics.median(values)
        ratio = median / goal
        ok = ratio <= 1 if sense == "≤" else ratio >= 1
        runs = ", ".join(f"{v:.0f}" if v >= 10 else f"{v:.1f}" for v in values)
        baseline = baselines.get(name)
        before = f"{baseline:6.0f}" if baseline is not None else "     -"
        print(f"  {name:16s} {median:8.1f}   goal {sense} {goal:<5} ratio {ratio:5.2f} "
              f"{'ok' if ok else 'MISSED':6s} baseline {before}   ({runs})")
    print_breakdown(breakdown)
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
