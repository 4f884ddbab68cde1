"""The review web app's page: the built front end at / (its CSP comes from security.py)."""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

META_AT = "<head>"


def webapp_router(static_dir: Path, viewer_port: int = 0, viewer_url: str = "") -> APIRouter:
    """GET /: the built app (static/app/index.html from `make install`), else the placeholder;
    the OHIF viewer's URL (`viewer_url` where the operator names it, else the same host on
    `viewer_port`) goes into a meta tag for its link."""
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def index(request: Request) -> HTMLResponse:
        built = static_dir / "app" / "index.html"
        page = (built if built.is_file() else static_dir / "index.html").read_text()
        url = viewer_url.rstrip("/") + "/" if viewer_url else ""
        if not url and viewer_port:
            host = request.url.hostname or "127.0.0.1"
            url = f"{request.url.scheme}://{host}:{viewer_port}/"
        if url:
            meta = f'<meta name="sidecar-ohif-url" content="{html.escape(url)}">'
            page = page.replace(META_AT, f"{META_AT}\n  {meta}", 1)
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    return router
