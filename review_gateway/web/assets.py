"""Static files served precompressed (the build's .br and .gz beside each file), with caching
by kind: the front end's hashed assets are immutable for a year, everything else revalidates."""

from __future__ import annotations

import mimetypes
import os
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Scope

# vite names every file under this folder of /static after a hash of its content (index-<hash>.js)
HASHED_PREFIX = "app/assets/"
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# Preferred first when a client takes both with the same weight.
ENCODINGS = (("br", ".br"), ("gzip", ".gz"))
MAX_ACCEPT_ENCODING = 1024


def accepted_encodings(header: str) -> dict[str, float]:
    """Accept-Encoding as coding → q (RFC 9110 §12.5.3); `*` stands for any coding not named.
    A malformed weight counts as 0, a header longer than any browser sends as none at all."""
    if len(header) > MAX_ACCEPT_ENCODING:
        return {}
    out: dict[str, float] = {}
    for item in header.split(","):
        coding, _, params = item.strip().partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        out[coding] = q
    return out


def choose_encoding(header: str, available: set[str]) -> str:
    """The content coding to answer with among `available` ("" for the file as it is)."""
    accepted = accepted_encodings(header)
    best, best_q = "", 0.0
    for coding, _ in ENCODINGS:
        if coding not in available:
            continue
        q = accepted.get(coding, accepted.get("*", 0.0))
        if q > best_q:
            best, best_q = coding, q
    return best


class PrecompressedStaticFiles(StaticFiles):
    """StaticFiles that answers with `FILE.br` or `FILE.gz` when the client accepts it (never
    compressing on the fly: the build made them), with `Vary: Accept-Encoding`, the original's
    Content-Type and a Cache-Control by kind."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The assets do not change while the gateway runs (a new build restarts it): which
        # compressed variants exist is looked up once per file.
        self._variants: dict[str, set[str]] = {}

    def _available(self, full_path: str) -> set[str]:
        found = self._variants.get(full_path)
        if found is None:
            found = {coding for coding, suffix in ENCODINGS
                     if os.path.isfile(full_path + suffix)}
            self._variants[full_path] = found
        return found

    def file_response(self, full_path: os.PathLike[str] | str, stat_result: os.stat_result,
                      scope: Scope, status_code: int = 200) -> Response:
        request_headers = Headers(scope=scope)
        path = os.fspath(full_path)
        relative = os.path.relpath(path, os.fspath(self.directory or ".")).replace(os.sep, "/")
        media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        available = self._available(path)
        coding = choose_encoding(request_headers.get("accept-encoding", ""), available)
        headers = {"Cache-Control": IMMUTABLE if relative.startswith(HASHED_PREFIX)
                   else REVALIDATE}
        if available:
            headers["Vary"] = "Accept-Encoding"
        if coding:
            suffix = dict(ENCODINGS)[coding]
            headers["Content-Encoding"] = coding
            response: Response = FileResponse(path + suffix, status_code=status_code,
                                              stat_result=os.stat(path + suffix),
                                              headers=headers, media_type=media_type)
        else:
            response = FileResponse(path, status_code=status_code, stat_result=stat_result,
                                    headers=headers, media_type=media_type)
        if self.is_not_modified(response.headers, request_headers):
            return NotModifiedResponse(response.headers)
        return response
