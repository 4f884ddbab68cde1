"""Display fidelity: what the radiologist sees is what the DICOM says.

For a set of tricky objects the review app's viewport (Cornerstone3D in Debian's Chromium)
and the sidecar's own pictures (series thumbnail, GIF preview, WADO-RS `/rendered`) are
compared with a reference rendering of the same frame at the same window, computed from the
standard's grayscale pipeline (PS3.3 C.11) with pydicom: `apply_modality_lut`, then
`apply_windowing` (or `apply_voi` for a VOI LUT Sequence), normalised to its output range,
then the presentation (MONOCHROME1 inverted), resampled to the picture. The mean absolute
difference must stay under MAX_MAD grey levels, a sampled region of interest (the AI's
finding on the mammogram, a known disc elsewhere) must sit on the reference's side of its
surroundings, and the finding's box corners must be within one display pixel of where the
finding's image coordinates fall at 100 % and about 400 % zoom.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut
from pydicom.pixels.processing import apply_voi, apply_windowing
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from sidecar_synth import generate
from tests.acceptance import browser as b
from tests.acceptance.stack import Stack

pytest.importorskip("playwright")
from playwright.sync_api import expect, sync_playwright  # noqa: E402

pytestmark = [pytest.mark.browser]

# The objects, one series each in one study (the mammogram's, so that the mammography
# reference model finds its mass):
#   mammogram-cc            synthetic MG (sidecar_synth "mammo", one mass on a CC view):
#                           the two CC views, MONOCHROME1 (air 4028, mass ~1509 on 12 bits)
#   mammogram-mlo           the two MLO views of the same mammogram, MONOCHROME2 (a series of
#                           their own: the sidecar decodes a series as one colour model)
#   ct-signed-rescale       pydicom's CT_small.dcm: signed, RescaleIntercept -1024, no window
#                           (shown at the Mediastinum preset 40/400)
#   cr-monochrome1-signed   made here: CR, MONOCHROME1, signed 12 bits, slope 2, intercept -100
#   sigmoid                 made here: VOI LUT Function SIGMOID
#   lut-sequences           made here: a Modality LUT Sequence and a VOI LUT Sequence, no window
#   multiframe              made here: 3-frame grayscale word SC, LINEAR_EXACT, 10 of 16 bits
#   nonsquare               made here: Pixel Spacing 0.5 \ 1.0 (rows twice as dense)
#   rgb                     pydicom's examples_rgb_color.dcm (US, RGB)
#   ybr-full-422            pydicom's SC_ybr_full_422_uncompressed.dcm
PYDICOM_FILES = {"ct-signed-rescale": "CT_small.dcm", "rgb": "examples_rgb_color.dcm",
                 "ybr-full-422": "SC_ybr_full_422_uncompressed.dcm"}
MAX_MAD = 3.0  # grey levels of 255
RADIOLOGIST = "rad_fidelity"
# What is drawn over the image (hidden while the image is measured).
OVER_IMAGE = "svg.overlay, .info, .not-diagnostic"
SHOTS = b.ARTIFACTS / "display-fidelity"
_STUDY_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                   "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID",
                   "ReferringPhysicianName", "StudyDescription", "IssuerOfPatientID")


@dataclass
class Obj:
    name: str
    datasets: list[Dataset]
    # The viewer key pressed before comparing (a preset) and the window it means, or None
    # for the image's own VOI.
    key: str | None = None
    window: tuple[float, float] | None = None
    # A region of interest (x0, y0, x1, y1 in image pixels) whose display must sit on the
    # reference's side of its surroundings.
    region: tuple[int, int, int, int] | None = None
    series_id: str = ""
    series: dict[str, Any] = field(default_factory=dict)


# --- the reference pipeline ---------------------------------------------------------------

def _frames(ds: Dataset) -> np.ndarray:
    arr = ds.pixel_array
    return arr if int(ds.get("NumberOfFrames", 1) or 1) > 1 else arr[None]


def _is_colour(ds: Dataset) -> bool:
    return int(ds.SamplesPerPixel) == 3 or ds.PhotometricInterpretation == "PALETTE COLOR"


def reference(ds: Dataset, frame: int = 0, window: tuple[float, float] | None = None
              ) -> np.ndarray:
    """The frame (from 0) as the standard's pipeline displays it: float grey levels 0-255
    (``[Y, X]``), or RGB ``[Y, X, 3]`` for colour (pydicom converts YBR to RGB)."""
    pixels = _frames(ds)[frame]
    if _is_colour(ds):
        return pixels.astype(np.float64)
    modality = apply_modality_lut(pixels, ds)
    if window is None and "WindowCenter" not in ds and "VOILUTSequence" in ds:
        item = ds.VOILUTSequence[0]
        out = apply_voi(modality, ds)
        y = np.asarray(out, np.float64) / (2 ** int(item.LUTDescriptor[2]) - 1)
    else:
        if window is None and "WindowCenter" not in ds:
            raise AssertionError(f"{ds.SeriesDescription}: no window to compare at")
        view = ds.copy()
        if window is not None:
            view.WindowCenter, view.WindowWidth = window
        # pydicom's output range (apply_windowing): the stored range through the rescale.
        if view.get("ModalityLUTSequence"):
            y_min, y_max = 0.0, 2.0 ** int(view.ModalityLUTSequence[0].LUTDescriptor[2]) - 1
        elif view.PixelRepresentation == 0:
            y_min, y_max = 0.0, 2.0 ** int(view.BitsStored) - 1
        else:
            half = 2.0 ** (int(view.BitsStored) - 1)
            y_min, y_max = -half, half - 1
        if view.get("RescaleSlope") is not None and view.get("RescaleIntercept") is not None:
            y_min = y_min * float(view.RescaleSlope) + float(view.RescaleIntercept)
            y_max = y_max * float(view.RescaleSlope) + float(view.RescaleIntercept)
        out = apply_windowing(np.asarray(modality, np.float64), view)
        y = (np.asarray(out, np.float64) - y_min) / (y_max - y_min)
    shape = str(ds.get("PresentationLUTShape", "")).upper()
    inverse = shape == "INVERSE" or (shape != "IDENTITY"
                                     and ds.PhotometricInterpretation == "MONOCHROME1")
    y = np.clip(y, 0.0, 1.0)
    return np.round((1.0 - y if inverse else y) * 255.0)


def _aspect(ds: Dataset) -> float:
    """Physical height / width of a pixel."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing",
                    "PixelAspectRatio"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2 and min(float(v) for v in value) > 0:
            return float(value[0]) / float(value[1])
    return 1.0


def _sample(image: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``image`` at pixel-centre coordinates (edges clamped)."""
    h, w = image.shape[:2]
    xs = np.clip(xs, 0, w - 1)
    ys = np.clip(ys, 0, h - 1)
    x0 = np.floor(xs).astype(int)
    y0 = np.floor(ys).astype(int)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    fx = xs - x0
    fy = ys - y0
    if image.ndim == 3:
        fx, fy = fx[..., None], fy[..., None]
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def resample_to(ref: np.ndarray, rect: tuple[float, float, float, float], size: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray]:
    """The reference drawn into ``rect`` (left, top, right, bottom in screen pixels) of a
    ``size`` (width, height) picture, and the mask of screen pixels well inside the image
    (two pixels from its edges, where both renderers interpolate the same neighbours)."""
    left, top, right, bottom = rect
    h, w = ref.shape[:2]
    sx, sy = (right - left) / w, (bottom - top) / h
    gx, gy = np.meshgrid(np.arange(size[0]) + 0.5, np.arange(size[1]) + 0.5)
    u = (gx - left) / sx - 0.5
    v = (gy - top) / sy - 0.5
    inside = ((gx > left + 2 + sx) & (gx < right - 2 - sx)
              & (gy > top + 2 + sy) & (gy < bottom - 2 - sy))
    return _sample(ref, u, v), inside


def _pixels(png: bytes, colour: bool) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    return np.asarray(image.convert("RGB" if colour else "L"), dtype=np.float64)


def _region_contrast(picture: np.ndarray, to_screen: Callable[[float, float], tuple[float, float]],
                     region: tuple[int, int, int, int]) -> float:
    """Mean of the region's middle half minus the mean of a ring around it, in ``picture``."""
    x0, y0 = to_screen(region[0], region[1])
    x1, y1 = to_screen(region[2], region[3])
    w, h = x1 - x0, y1 - y0
    inner = picture[int(y0 + h * .25):int(y1 - h * .25) + 1,
                    int(x0 + w * .25):int(x1 - w * .25) + 1]
    oy0, oy1 = max(0, int(y0 - h)), min(picture.shape[0], int(y1 + h))
    ox0, ox1 = max(0, int(x0 - w)), min(picture.shape[1], int(x1 + w))
    outer = picture[oy0:oy1, ox0:ox1].copy()
    mask = np.ones(outer.shape[:2], dtype=bool)
    mask[max(0, int(y0) - oy0):int(y1) - oy0 + 1, max(0, int(x0) - ox0):int(x1) - ox0 + 1] = False
    return float(inner.mean() - outer[mask].mean())


# --- the objects ---------------------------------------------------------------------------

def _dataset(study: Dataset, name: str, number: int, sop_class: str, modality: str,
             pixels: np.ndarray, *, bits_stored: int, signed: bool, photometric: str,
             frames: int = 1) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = sop_class
    for keyword in _STUDY_KEYWORDS:
        if keyword in study:
            setattr(ds, keyword, study.data_element(keyword).value)  # type: ignore[union-attr]
    ds.Modality = modality
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = number
    ds.SeriesDescription = name
    ds.InstanceNumber = 1
    ds.ConversionType = "WSD"
    rows, cols = pixels.shape[-2:]
    ds.Rows, ds.Columns = rows, cols
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = pixels.astype("<i2" if signed else "<u2").tobytes()
    return ds


def _scene(rows: int, cols: int, lo: float, hi: float, disc: tuple[int, int, int],
           disc_value: float, seed: int) -> np.ndarray:
    """A gradient with texture from lo to hi and a disc (cx, cy, r) at disc_value."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    base = lo + (hi - lo) * (0.6 * xx / cols + 0.4 * yy / rows)
    base = base + (hi - lo) * 0.08 * np.sin(xx / 7.0) * np.cos(yy / 11.0)
    base = base + rng.normal(0, (hi - lo) * 0.01, base.shape)
    cx, cy, r = disc
    base = np.where(np.hypot(xx - cx, yy - cy) <= r, disc_value, base)
    return np.round(base)


def _lut_item(descriptor: list[int], data: np.ndarray) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = descriptor
    item.add(DataElement(0x00283006, "OW", data.astype("<u2").tobytes()))
    return item


def _objects(study: Dataset) -> list[Obj]:
    out: list[Obj] = []
    n = 10
    sc, cr = "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.1"

    stored = _scene(200, 240, -1800, 900, (160, 90, 22), 1400, 1)
    ds = _dataset(study, "cr-monochrome1-signed", n, cr, "CR", stored, bits_stored=12, signed=True,
                  photometric="MONOCHROME1")
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 2, -100, "US"
    ds.WindowCenter, ds.WindowWidth = -500, 6000
    ds.ImagerPixelSpacing = [0.2, 0.2]
    out.append(Obj("cr-monochrome1-signed", [ds], region=(138, 68, 182, 112)))

    stored = _scene(220, 220, 600, 2600, (70, 140, 20), 2300, 2)
    ds = _dataset(study, "sigmoid", n + 1, sc, "OT", stored, bits_stored=12, signed=False,
                  photometric="MONOCHROME2")
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 1500, 900, "SIGMOID"
    out.append(Obj("sigmoid", [ds], region=(50, 120, 90, 160)))

    stored = _scene(200, 200, 300, 2500, (120, 80, 18), 3600, 3)
    ds = _dataset(study, "lut-sequences", n + 2, sc, "OT", stored, bits_stored=12, signed=False,
                  photometric="MONOCHROME2")
    x = np.arange(4096)
    # (16-bit entries: pydicom's apply_modality_lut reads no other depth but 8.) The VOI LUT
    # has 2^16 entries, which its descriptor writes as 0.
    modality = _lut_item([4096, 0, 16], np.round(65535 * np.sqrt(x / 4095)))
    modality.ModalityLUTType = "US"
    ds.ModalityLUTSequence = [modality]
    y = np.arange(65536)
    ds.VOILUTSequence = [_lut_item([0, 0, 16], np.round(65535 * (y / 65535) ** 2.2))]
    out.append(Obj("lut-sequences", [ds], region=(102, 62, 138, 98)))

    frames = np.stack([_scene(128, 160, 100, 700, (40 + 35 * i, 64, 14), 950 - 300 * i, 4 + i)
                       for i in range(3)])
    ds = _dataset(study, "multiframe", n + 3, "1.2.840.10008.5.1.4.1.1.7.3", "OT", frames,
                  bits_stored=10, signed=False, photometric="MONOCHROME2", frames=3)
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 512, 1024, "LINEAR_EXACT"
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = 100
    out.append(Obj("multiframe", [ds], region=(61, 50, 89, 78)))

    stored = _scene(256, 128, 200, 1800, (64, 160, 16), 200, 7)
    ds = _dataset(study, "nonsquare", n + 4, sc, "OT", stored, bits_stored=12, signed=False,
                  photometric="MONOCHROME2")
    ds.PixelSpacing = [0.5, 1.0]
    ds.WindowCenter, ds.WindowWidth = 1000, 1800
    out.append(Obj("nonsquare", [ds], region=(48, 144, 80, 176)))

    for i, (name, file) in enumerate(PYDICOM_FILES.items()):
        ds = pydicom.dcmread(str(get_testdata_file(file)))
        for keyword in _STUDY_KEYWORDS:
            if keyword in study:
                setattr(ds, keyword, study.data_element(keyword).value)  # type: ignore[union-attr]
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesDescription = name
        ds.SeriesNumber = n + 5 + i
        if name == "ct-signed-rescale":
            out.append(Obj(name, [ds], key="2", window=(40.0, 400.0)))
        else:
            out.append(Obj(name, [ds]))
    return out


@dataclass
class Fidelity:
    stack: Stack
    study_id: str
    study_uid: str
    objects: list[Obj]
    finding: dict[str, Any]
    results: dict[str, dict[str, float]]


def _mammogram(root: Path) -> tuple[list[Dataset], list[Dataset], dict[str, Any]]:
    """The 4-view mammogram with one mass on a CC view: the CC views (MONOCHROME1) and the
    MLO views (MONOCHROME2, another series)."""
    for seed in range(1, 40):
        folder = root / f"mg-{seed}"
        truth = generate("mammo", folder, seed, masses=1, photometric="MONOCHROME1")
        if truth.lesions[0].view_position == "CC":
            break
    else:
        raise AssertionError("no seed puts the mass on a CC view")
    cc: list[Dataset] = []
    mlo: list[Dataset] = []
    mlo_series = generate_uid()
    for name in truth.files:
        ds = pydicom.dcmread(folder / name)
        if ds.ViewPosition == "MLO":
            pixels = ds.pixel_array
            ds.PixelData = ((1 << int(ds.BitsStored)) - 1 - pixels).astype("<u2").tobytes()
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.SeriesInstanceUID, ds.SeriesNumber = mlo_series, 2
            ds.SeriesDescription = "mammogram-mlo"
            mlo.append(ds)
        else:
            ds.SeriesDescription = "mammogram-cc"
            cc.append(ds)
    return cc, mlo, {"accession": truth.accession_number,
                     "sop": truth.lesions[0].sop_instance_uid}


def _wait_ready(stack: Stack, accession: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    with stack.client() as http:
        while time.monotonic() < deadline:
            rows = http.get("/api/v1/studies", params={"accession": accession}).json()["studies"]
            if rows and (rows[0]["state"], rows[0]["ai_status"]) == ("ready_for_review",
                                                                       "findings"):
                return rows[0]
            time.sleep(1)
    raise AssertionError(f"study {accession} not ready with findings: {rows}")


@pytest.fixture(scope="module")
def fidelity(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Fidelity:
    assert b.BUILT_APP.is_file(), "the review app is not built: run `make install`"
    done = stack.cli("user", "add", RADIOLOGIST, "--role", "radiologist", "--facility",
                     stack.north, "--password-stdin", stdin=stack.password + "\n")
    assert done.returncode == 0, done.stderr
    root = tmp_path_factory.mktemp("fidelity")
    cc, mlo, truth = _mammogram(root / "synth")
    objects = [Obj("mammogram-cc", cc), Obj("mammogram-mlo", mlo), *_objects(cc[0])]
    folder = root / "send"
    folder.mkdir()
    for obj in objects:
        for ds in obj.datasets:
            ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    done = stack.cli("ingest", str(folder), "--facility", stack.north,
                     "--target", stack.address("ingest"), "--complete")
    assert done.returncode == 0, done.stderr
    row = _wait_ready(stack, truth["accession"])
    with stack.client() as http:
        detail = http.get(f"/api/v1/studies/{row['id']}").json()
        findings = http.get(f"/api/v1/studies/{row['id']}/findings").json()["findings"]
    by_uid = {s["series_instance_uid"]: s for s in detail["series"]}
    for obj in objects:
        series = by_uid.get(obj.datasets[0].SeriesInstanceUID)
        stored = sorted(s["description"] for s in detail["series"])
        assert series, f"{obj.name}: series not stored ({stored})"
        obj.series, obj.series_id = series, series["id"]
    masses = [f for f in findings if f["sop_instance_uid"] == truth["sop"] and f["bbox_px"]]
    assert masses, f"no boxed finding on the mammogram's CC view with the mass: {findings}"
    return Fidelity(stack, row["id"], cc[0].StudyInstanceUID, objects, masses[0], {})


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with sync_playwright() as playwright:
        browser = b.launch(playwright)
        try:
            yield browser
        finally:
            browser.close()


def _open_study(chromium: Any, fidelity: Fidelity, render_path: str) -> Iterator[Any]:
    """A signed-in tab on the study, the viewer on Cornerstone's ``render_path``."""
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(f"localStorage.setItem('sidecar.renderPath', '{render_path}')")
    tab = context.new_page()
    try:
        b.login(tab, fidelity.stack.base_url, RADIOLOGIST, fidelity.stack.password)
        tab.click(f"tr[data-study-id='{fidelity.study_id}']")
        expect(tab.locator("[data-testid=viewer-info]")).to_have_text(re.compile(r"^Slice "),
                                                                      timeout=60_000)
        yield tab
    finally:
        context.close()


@pytest.fixture(scope="module")
def page(chromium: Any, fidelity: Fidelity) -> Iterator[Any]:
    """The CPU path (what headless Chromium, with software GL, uses by itself)."""
    yield from _open_study(chromium, fidelity, "cpu")


@pytest.fixture(scope="module")
def gpu_page(chromium: Any, fidelity: Fidelity) -> Iterator[Any]:
    """The GPU path (vtk.js on WebGL), forced onto headless Chromium's software GL."""
    yield from _open_study(chromium, fidelity, "gpu")


# --- the viewer ----------------------------------------------------------------------------

def _viewport(page: Any) -> Any:
    return page.locator("[data-testid=viewport]")


def _dataset_of(page: Any) -> dict[str, str]:
    return dict(page.evaluate(
        "() => ({...document.querySelector('[data-testid=viewport]').dataset})"))


def _settled(page: Any, action: Callable[[], None], **want: str) -> dict[str, str]:
    """Runs ``action`` and waits until the viewport has drawn what is asked for: the display
    state drawn is the one wanted, the slice drawn is the slice asked for, the attributes in
    ``want`` have their values, and three readings over 100 ms agree. Returns them."""
    action()
    last: dict[str, str] | None = None
    stable = 0
    for _ in range(400):
        data = _dataset_of(page)
        ready = (data.get("displayVersion") == data.get("displayWanted")
                 and data.get("rendered") == data.get("slice")
                 and all(data.get(k) == v for k, v in want.items()))
        stable = stable + 1 if ready and data == last else 0
        if stable >= 2:
            return data
        last = data
        time.sleep(0.05)
    raise AssertionError(f"the viewer did not settle on {want}: {last}")


def _open_series(page: Any, obj: Obj) -> dict[str, str]:
    button = f"button.series-item[data-series-id='{obj.series_id}']"
    return _settled(page, lambda: page.click(button),
                    series=str(obj.datasets[0].SeriesInstanceUID), slice="1")


def _rect(data: dict[str, str]) -> tuple[float, float, float, float]:
    left, top, right, bottom = (float(v) for v in data["imageRect"].split(","))
    return left, top, right, bottom


def _shot(page: Any, name: str | None = None) -> bytes:
    """The viewport without what is drawn over the image (saved under SHOTS when named)."""
    hide = "([sel, v]) => document.querySelectorAll(sel).forEach(e => { e.style.visibility = v; })"
    page.evaluate(hide, [OVER_IMAGE, "hidden"])
    try:
        png = bytes(_viewport(page).screenshot())
    finally:
        page.evaluate(hide, [OVER_IMAGE, ""])
    if name:
        SHOTS.mkdir(parents=True, exist_ok=True)
        (SHOTS / f"{name}.png").write_bytes(png)
    return png


def _compare(page: Any, ds: Dataset, frame: int, window: tuple[float, float] | None,
             data: dict[str, str], invert: bool = False) -> tuple[float, np.ndarray, Any]:
    """MAD of the viewport against the reference; also the screenshot and a screen mapping."""
    colour = _is_colour(ds)
    name = f"{ds.SeriesDescription}-{ds.SOPInstanceUID[-6:]}-{frame + 1}-{data.get('renderPath')}"
    name += "-inverted" if invert else ""
    picture = _pixels(_shot(page, name), colour)
    (SHOTS / f"{name}.json").write_text(json.dumps(data))
    ref = reference(ds, frame, window)
    if invert:
        ref = 255.0 - ref
    rect = _rect(data)
    expected, inside = resample_to(ref, rect, (picture.shape[1], picture.shape[0]))
    assert inside.sum() > 1000, f"{ds.SeriesDescription}: image not on screen ({rect})"
    diff = np.abs(picture - expected)
    mad = float(diff[inside].mean())

    def to_screen(x: float, y: float) -> tuple[float, float]:
        return (rect[0] + x * (rect[2] - rect[0]) / ds.Columns,
                rect[1] + y * (rect[3] - rect[1]) / ds.Rows)
    return mad, picture, to_screen


def _check_fit(ds: Dataset, data: dict[str, str], size: dict[str, float]) -> None:
    """At reset the image is fitted and centred with its physical proportions."""
    left, top, right, bottom = _rect(data)
    width, height = right - left, bottom - top
    physical = ds.Rows * _aspect(ds) / ds.Columns
    assert abs(height - width * physical) <= 1.0, (ds.SeriesDescription, width, height, physical)
    scale = min(size["width"] / ds.Columns, size["height"] / (ds.Rows * _aspect(ds)))
    assert (abs(width - ds.Columns * scale) <= 1.0
            or abs(height - ds.Rows * _aspect(ds) * scale) <= 1.0)
    assert abs((left + right) / 2 - size["width"] / 2) <= 1.0
    assert abs((top + bottom) / 2 - size["height"] / 2) <= 1.0


def _ref_contrast(ds: Dataset, frame: int, window: tuple[float, float] | None,
                  region: tuple[int, int, int, int]) -> float:
    ref = reference(ds, frame, window)
    return _region_contrast(ref, lambda x, y: (x, y), region)


def test_viewer_draws_the_standard_pipeline(fidelity: Fidelity, page: Any) -> None:
    _viewer_matches(fidelity, page, "cpu")


def test_viewer_gpu_path_draws_the_standard_pipeline(fidelity: Fidelity, gpu_page: Any) -> None:
    _viewer_matches(fidelity, gpu_page, "gpu")


def _viewer_matches(fidelity: Fidelity, page: Any, render_path: str) -> None:
    """Every object but the mammogram in the viewer on ``render_path``."""
    results = fidelity.results
    viewer = "viewer" if render_path == "cpu" else "viewer (GPU path)"
    size = _viewport(page).bounding_box()
    assert size is not None
    failures = []
    for obj in fidelity.objects:
        if obj.name.startswith("mammogram"):
            continue
        data = _open_series(page, obj)
        assert data.get("renderPath") == render_path
        if obj.key:
            data = _settled(page, partial(page.keyboard.press, obj.key))
        ds = obj.datasets[0]
        try:
            _check_fit(ds, data, size)
        except AssertionError as exc:
            failures.append(f"{obj.name}: not fitted and centred: {exc}")
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        for frame in range(frames):
            if frame:
                data = _settled(page, lambda: page.keyboard.press("ArrowDown"),
                                slice=str(frame + 1))
            mad, picture, to_screen = _compare(page, ds, frame, obj.window, data)
            label = obj.name if frames == 1 else f"{obj.name} frame {frame + 1}"
            results.setdefault(label, {})[viewer] = round(mad, 2)
            if mad >= MAX_MAD:
                failures.append(f"{label}: {viewer} MAD {mad:.2f}")
            if obj.region and frame == 0:
                want = _ref_contrast(ds, frame, obj.window, obj.region)
                got = _region_contrast(picture, to_screen, obj.region)
                assert abs(want) > 20, (label, want)
                assert np.sign(got) == np.sign(want) and abs(got) > abs(want) / 2, \
                    (label, want, got)
        # I inverts relative to the correct presentation (grey images).
        if not _is_colour(ds):
            data = _settled(page, lambda: page.keyboard.press("i"))
            mad, _, _ = _compare(page, ds, frames - 1, obj.window, data, invert=True)
            results.setdefault(obj.name if frames == 1 else f"{obj.name} frame {frames}",
                               {})[f"{viewer} inverted (I)"] = round(mad, 2)
            if mad >= MAX_MAD:
                failures.append(f"{obj.name}: inverted {viewer} MAD {mad:.2f}")
            _settled(page, lambda: page.keyboard.press("i"))
    _write(results)
    assert not failures, failures


def _mammo_slice(fidelity: Fidelity, page: Any) -> tuple[Dataset, dict[str, str]]:
    """The mammogram's view with the finding, reset (fitted, own window)."""
    mammo = fidelity.objects[0]
    _open_series(page, mammo)
    page.click(f".finding-item[data-finding-id='{fidelity.finding['id']}']")
    outline = page.locator(f"svg.overlay rect.box[data-finding='{fidelity.finding['id']}']")
    expect(outline).to_have_count(1)
    _box(outline)  # selecting centres the box: wait for that to be drawn
    data = _settled(page, lambda: page.keyboard.press(" "))
    ds = next(d for d in mammo.datasets if d.SOPInstanceUID == fidelity.finding["sop_instance_uid"])
    return ds, data


def test_monochrome1_mammogram_dark_air_bright_mass(fidelity: Fidelity, page: Any) -> None:
    ds, data = _mammo_slice(fidelity, page)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    size = _viewport(page).bounding_box()
    _check_fit(ds, data, size)
    mad, picture, to_screen = _compare(page, ds, 0, None, data)
    fidelity.results.setdefault("mammogram CC (MONOCHROME1)", {})["viewer"] = round(mad, 2)
    box = fidelity.finding["bbox_px"]
    region = (int(box[0]), int(box[1]), int(box[2]), int(box[3]))
    mass = _region_contrast(picture, to_screen, region)
    fidelity.results["mammogram CC (MONOCHROME1)"]["mass minus surroundings"] = round(mass, 1)
    # Air: the image corner away from the breast (the breast lies against one side).
    right, bottom = ds.Columns - 6, ds.Rows - 6
    corners = [picture[int(to_screen(x, y)[1]), int(to_screen(x, y)[0])]
               for x, y in ((5, 5), (right, 5), (5, bottom), (right, bottom))]
    b.ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(b.ARTIFACTS / "review-mammogram-monochrome1.png"))
    _write(fidelity.results)
    want = _region_contrast(reference(ds), lambda x, y: (x, y), region)
    assert mad < MAX_MAD, mad
    assert want > 10, f"the reference's mass is not brighter than its surroundings ({want})"
    assert mass > want / 2, f"the mass is not brighter than its surroundings ({mass} for {want})"
    assert min(corners) < 40, f"air is not dark: {corners}"
    # The other views (MLO, MONOCHROME2) are right too.
    data = _open_series(page, fidelity.objects[1])
    mlo = fidelity.objects[1].datasets[0]
    index = _slice_of(fidelity.objects[1].datasets, mlo)
    while int(data["slice"]) != index + 1:
        key = "ArrowDown" if int(data["slice"]) < index + 1 else "ArrowUp"
        data = _settled(page, partial(page.keyboard.press, key),
                        slice=str(int(data["slice"]) + (1 if key == "ArrowDown" else -1)))
    mad, _, _ = _compare(page, mlo, 0, None, data)
    fidelity.results.setdefault("mammogram MLO (MONOCHROME2)", {})["viewer"] = round(mad, 2)
    _write(fidelity.results)
    assert mad < MAX_MAD, mad


def _slice_of(datasets: list[Dataset], ds: Dataset) -> int:
    """The slice (from 0) the viewer shows ``ds`` at: no positions, so by Instance Number."""
    order = sorted(datasets, key=lambda d: int(d.InstanceNumber))
    return [d.SOPInstanceUID for d in order].index(ds.SOPInstanceUID)


def test_finding_box_corners_on_the_finding(fidelity: Fidelity, page: Any) -> None:
    ds, data = _mammo_slice(fidelity, page)
    size = _viewport(page).bounding_box()
    box = fidelity.finding["bbox_px"]
    outline = page.locator(f"svg.overlay rect.box[data-finding='{fidelity.finding['id']}']")
    expect(outline).to_have_count(1)
    fit = min(size["width"] / ds.Columns, size["height"] / (ds.Rows * _aspect(ds)))
    centre = (size["width"] / 2, size["height"] / 2)
    svg = page.locator("svg.overlay").bounding_box()
    offset = (svg["x"] - size["x"], svg["y"] - size["y"])  # SVG coordinates → viewport
    reference_contrast = _region_contrast(reference(ds), lambda x, y: (x, y), _region(box))
    assert reference_contrast > 10, reference_contrast
    for presses in (0, 6):
        zoom = 1.25 ** presses
        scale = fit * zoom
        if presses:
            # Zoom in (about the viewport's centre), then select the finding: it is centred.
            for _ in range(presses):
                data = _settled(page, lambda: page.keyboard.press("+"))
            item = f".finding-item[data-finding-id='{fidelity.finding['id']}']"
            data = _settled(page, partial(page.click, item))
            focus = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        else:
            focus = (ds.Columns / 2, ds.Rows / 2)  # reset: the image's centre is centred
        assert f"zoom {round(zoom * 100)}%" in str(
            page.locator("[data-testid=viewer-info]").text_content())
        # Where the box's image corners must be: the image point `focus` at the viewport's
        # centre, `scale` display pixels an image pixel (times the pixel aspect vertically).
        stretch = (1.0, _aspect(ds))
        want = tuple(centre[k % 2] + (box[k] - focus[k % 2]) * scale * stretch[k % 2]
                     for k in range(4))
        x0, y0, x1, y1 = _box(outline)
        got = (x0 + offset[0], y0 + offset[1], x1 + offset[0], y1 + offset[1])
        err = max(abs(a - c) for a, c in zip(want, got, strict=True))
        corners = fidelity.results.setdefault("mammogram box corners (px)", {})
        corners[f"{round(zoom * 100)}%"] = round(err, 2)
        assert err <= 1.0, (zoom, want, got)
        # And the box holds the mass's bright pixels.
        picture = _pixels(_shot(page, f"mammogram-box-{round(zoom * 100)}"), False)

        def to_screen(x: float, y: float, rect: tuple[float, ...] = _rect(data)
                      ) -> tuple[float, float]:
            return (rect[0] + x * (rect[2] - rect[0]) / ds.Columns,
                    rect[1] + y * (rect[3] - rect[1]) / ds.Rows)
        mass = _region_contrast(picture, to_screen, _region(box))
        assert mass > reference_contrast / 2, (zoom, mass, reference_contrast)
    _write(fidelity.results)


def _region(box: list[float]) -> tuple[int, int, int, int]:
    return (int(box[0]), int(box[1]), int(box[2]), int(box[3]))


def _box(outline: Any) -> tuple[float, float, float, float]:
    """The box the overlay drew (SVG coordinates), once it has stopped moving."""
    last = None
    for _ in range(100):
        rect = outline.bounding_box()
        if rect is not None and rect == last:
            break
        last = rect
        time.sleep(0.05)
    assert last is not None
    # The outline's stroke straddles the box: the SVG rect's own geometry is what it drew.
    x = float(outline.get_attribute("x"))
    y = float(outline.get_attribute("y"))
    w = float(outline.get_attribute("width"))
    h = float(outline.get_attribute("height"))
    return (x, y, x + w, y + h)


# --- the sidecar's own pictures -----------------------------------------------------------

def _get(page: Any, url: str, accept: str = "image/png") -> bytes:
    reply = page.request.get(url, headers={"Accept": accept})
    assert reply.ok, f"{url}: HTTP {reply.status}"
    return bytes(reply.body())


def _server_window(obj: Obj) -> tuple[float, float] | None:
    """The window the sidecar's own pictures use by default: the file's, else (CT) the
    mediastinum preset, which is the viewer's comparison window for CT_small too."""
    return obj.window


def _mad_fitted(picture: np.ndarray, ds: Dataset, frame: int, window: tuple[float, float] | None
                ) -> float:
    h, w = picture.shape[:2]
    ref = reference(ds, frame, window)
    expected, inside = resample_to(ref, (0.0, 0.0, float(w), float(h)), (w, h))
    if inside.sum() < 100:  # a small picture: compare all of it
        inside = np.ones(inside.shape, dtype=bool)
    return float(np.abs(picture - expected)[inside].mean())


def test_thumbnails_previews_and_rendered_agree(fidelity: Fidelity, page: Any) -> None:
    results = fidelity.results
    failures = []
    for obj in fidelity.objects:
        colour = _is_colour(obj.datasets[0])
        window = _server_window(obj)
        # /rendered: every frame at full size, or fitted to square pixels when they are not.
        for ds in obj.datasets:
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            for frame in range(frames):
                url = (f"{fidelity.stack.base_url}/dicomweb/studies/{fidelity.study_uid}"
                       f"/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
                       f"/frames/{frame + 1}/rendered")
                query = []
                if window:
                    query.append(f"window={window[0]},{window[1]}")
                if _aspect(ds) != 1.0:
                    query.append(f"viewport={ds.Columns},{round(ds.Rows * _aspect(ds))}")
                url += "?" + "&".join(query) if query else ""
                picture = _pixels(_get(page, url), colour)
                mad = _mad_fitted(picture, ds, frame, window)
                label = _label(obj, ds, frame, frames)
                results.setdefault(label, {})["/rendered"] = round(mad, 2)
                if mad >= MAX_MAD:
                    failures.append(f"{label}: /rendered MAD {mad:.2f}")
        # The thumbnail (the series' key slice) and the GIF preview (every slice or frame).
        candidates = [(ds, f) for ds in obj.datasets
                      for f in range(int(ds.get("NumberOfFrames", 1) or 1))]
        if obj.series.get("thumbnail_url"):
            thumbnail = _get(page, fidelity.stack.base_url + obj.series["thumbnail_url"])
            picture = _pixels(thumbnail, colour)
            mad = min(_mad_fitted(picture, ds, f, window) for ds, f in candidates)
            results.setdefault(obj.name, {})["thumbnail"] = round(mad, 2)
            if mad >= MAX_MAD:
                failures.append(f"{obj.name}: thumbnail MAD {mad:.2f}")
        if obj.series.get("preview_url") and not colour:
            preview = _get(page, fidelity.stack.base_url + obj.series["preview_url"], "image/gif")
            gif = Image.open(io.BytesIO(preview))
            worst = 0.0
            for index in range(getattr(gif, "n_frames", 1)):
                gif.seek(index)
                picture = np.asarray(gif.convert("L"), dtype=np.float64)
                worst = max(worst, min(_mad_fitted(picture, ds, f, window) for ds, f in candidates))
            results.setdefault(obj.name, {})["preview (worst frame)"] = round(worst, 2)
            if worst >= MAX_MAD:
                failures.append(f"{obj.name}: preview MAD {worst:.2f}")
    _write(results)
    assert not failures, failures


def _label(obj: Obj, ds: Dataset, frame: int, frames: int) -> str:
    if obj.name.startswith("mammogram"):
        return f"mammogram {ds.ViewPosition} {ds.ImageLaterality} ({ds.PhotometricInterpretation})"
    return obj.name if frames == 1 else f"{obj.name} frame {frame + 1}"


def _write(results: dict[str, dict[str, float]]) -> None:
    b.ARTIFACTS.mkdir(exist_ok=True)
    text = json.dumps(results, indent=1, sort_keys=True)
    (b.ARTIFACTS / "display-fidelity.json").write_text(text)
