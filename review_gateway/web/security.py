"""Security headers: a strict Content-Security-Policy on HTML, no referrer, no framing, and
Strict-Transport-Security on HTTPS responses."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from sidecar_core.security.edge_tls import HstsMiddleware

# No inline script or style anywhere; workers and WASM of the viewer come from our origin.
CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; "
       "img-src 'self' data: blob:; worker-src 'self' blob:; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")


def install(app: FastAPI) -> None:
    """Adds the headers to every response (the CSP to HTML ones, HSTS to HTTPS ones)."""
    app.add_middleware(HstsMiddleware)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        if response.headers.get("content-type", "").startswith("text/html"):
            response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response
