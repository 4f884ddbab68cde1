"""Debian's Chromium driven by Playwright for Python (headless, no sandbox, no GPU, no side
traffic) for the review app."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
ARTIFACTS = REPO / "test-artifacts"
BUILT_APP = REPO / "review_gateway" / "static" / "app" / "index.html"
# Records Content-Security-Policy violations where the test can read them.
CSP_PROBE = ("window.__cspViolations = [];"
             "document.addEventListener('securitypolicyviolation', e =>"
             " window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));")


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def login(page: Any, base_url: str, username: str, password: str) -> None:
    """Opens the app and signs in through the login form."""
    page.goto(base_url + "/")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("form.login button[type=submit]")
    page.wait_for_selector("table.worklist")


def gray(png: bytes) -> np.ndarray:
    """A screenshot as a float grey-level array."""
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)


def box_contrast(png: bytes, origin: dict[str, float], box: dict[str, float]) -> float:
    """Mean grey inside `box` (page coordinates) minus the mean of a ring around it, on a
    screenshot of the element at `origin`."""
    img = gray(png)
    x0, y0 = box["x"] - origin["x"], box["y"] - origin["y"]
    x1, y1 = x0 + box["width"], y0 + box["height"]
    w, h = x1 - x0, y1 - y0
    inner = img[int(y0 + h * .25):int(y1 - h * .25) + 1, int(x0 + w * .25):int(x1 - w * .25) + 1]
    oy0, oy1 = max(0, int(y0 - h)), min(img.shape[0], int(y1 + h))
    ox0, ox1 = max(0, int(x0 - w)), min(img.shape[1], int(x1 + w))
    outer = img[oy0:oy1, ox0:ox1].copy()
    mask = np.ones(outer.shape, dtype=bool)
    mask[int(y0) - oy0:int(y1) - oy0 + 1, int(x0) - ox0:int(x1) - ox0 + 1] = False
    return float(inner.mean() - outer[mask].mean())
