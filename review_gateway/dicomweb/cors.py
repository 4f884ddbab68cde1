"""Cross-origin access for DICOMweb viewers served from another origin (e.g. OHIF)."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

# Listed explicitly: OHIF sends Authorization, and a wildcard does not cover it (Fetch spec).
ALLOWED_HEADERS = ["Authorization", "Accept", "Content-Type", "If-None-Match", "Cache-Control",
                   "X-Requested-With"]
EXPOSED_HEADERS = ["ETag", "Content-Type", "Content-Length", "Content-Location", "Warning"]


def origins(setting: str) -> list[str]:
    """Origins from a comma-separated setting (`*` allows any origin)."""
    return [o.strip().rstrip("/") for o in setting.split(",") if o.strip()]


def install(app: FastAPI, setting: str) -> None:
    """Answers preflight requests and adds CORS headers for the configured origins."""
    allowed = origins(setting)
    if allowed:
        app.add_middleware(CORSMiddleware, allow_origins=allowed,
                           allow_methods=["GET", "POST", "OPTIONS"],
                           allow_headers=ALLOWED_HEADERS, expose_headers=EXPOSED_HEADERS,
                           allow_credentials=False, max_age=600)
