"""The review web app's page: the built front end at / (its CSP comes from security.py)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse


def webapp_router(static_dir: Path) -> APIRouter:
    """GET /: the built app (static/app/index.html from `make install`), else the placeholder."""
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def index() -> FileResponse:
        built = static_dir / "app" / "index.html"
        page = built if built.is_file() else static_dir / "index.html"
        return FileResponse(page, headers={"Cache-Control": "no-cache"})

    return router
