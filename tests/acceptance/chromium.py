"""Debian's Chromium under Playwright, as PLATFORM.md verified it (never `playwright install`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Screenshots kept as test artifacts (git-ignored).
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
