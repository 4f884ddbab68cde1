"""The review web app's page: the built front end at / with a strict Content-Security-Policy."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

# No inline script or style anywhere; WebAssembly (the viewer's image codecs) may compile.
CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; "
       "img-src 'self' data: blob:; connect-src 'self'; worker-src 'self' blob:; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
PAGE_HEADERS = {"Cache-Control": "no-cache", "Content-Security-Policy": CSP,
                "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}


def webapp_router(static_dir: Path) -> APIRouter:
    """GET /: the built app (static/app/index.html from `make install`), else the placeholder."""
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def index() -> FileResponse:
        built = static_dir / "app" / "index.html"
        page = built if built.is_file() else static_dir / "index.html"
        return FileResponse(page, headers=PAGE_HEADERS)

    return router
