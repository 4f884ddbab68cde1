"""Accept-Encoding negotiation and caching of the precompressed static files, on a folder of
files made here, through Starlette's test client (review_gateway/web/assets.py)."""

from __future__ import annotations

import gzip
from pathlib import Path

import brotli
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from review_gateway.web.assets import (
    IMMUTABLE,
    PrecompressedStaticFiles,
    accepted_encodings,
    choose_encoding,
)

BODY = b"export const answer = 42;\n" * 200


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    assets = tmp_path / "app" / "assets"
    assets.mkdir(parents=True)
    (assets / "index-abc123.js").write_bytes(BODY)
    (assets / "index-abc123.js.br").write_bytes(brotli.compress(BODY))
    (assets / "index-abc123.js.gz").write_bytes(gzip.compress(BODY))
    (assets / "only-gzip-def456.wasm").write_bytes(b"\0asm" + BODY)
    (assets / "only-gzip-def456.wasm.gz").write_bytes(gzip.compress(b"\0asm" + BODY))
    (tmp_path / "plain.css").write_text("body { color: black }")
    app = Starlette(routes=[Mount("/static", PrecompressedStaticFiles(directory=tmp_path))])
    return TestClient(app)


@pytest.mark.parametrize(("header", "available", "chosen"), [
    ("gzip, deflate, br, zstd", {"br", "gzip"}, "br"),
    ("gzip, deflate, br", {"gzip"}, "gzip"),
    ("gzip;q=1, br;q=0.5", {"br", "gzip"}, "gzip"),
    ("br;q=0, gzip", {"br", "gzip"}, "gzip"),
    ("br;q=0, gzip;q=0", {"br", "gzip"}, ""),
    ("*", {"br", "gzip"}, "br"),
    ("*;q=0.1, br;q=0", {"br", "gzip"}, "gzip"),
    ("identity", {"br", "gzip"}, ""),
    ("", {"br", "gzip"}, ""),
    ("br;q=nonsense", {"br"}, ""),
    ("br" + ", x" * 600, {"br"}, ""),  # longer than any browser's header: ignored
])
def test_choose_encoding(header: str, available: set[str], chosen: str) -> None:
    assert choose_encoding(header, available) == chosen


def test_weights_are_clamped() -> None:
    assert accepted_encodings("GZIP;Q=7, br;q=-1") == {"gzip": 1.0, "br": 0.0}


def _raw(client: TestClient, path: str, accept: str, **headers: str) -> tuple[dict, bytes]:
    with client.stream("GET", path, headers={"Accept-Encoding": accept, **headers}) as reply:
        return {"status": reply.status_code, **reply.headers}, b"".join(reply.iter_raw())


def test_brotli_then_gzip_then_identity(client: TestClient) -> None:
    headers, body = _raw(client, "/static/app/assets/index-abc123.js", "gzip, br")
    assert headers["content-encoding"] == "br" and brotli.decompress(body) == BODY
    assert headers["content-type"].startswith("text/javascript")
    assert headers["vary"] == "Accept-Encoding" and headers["cache-control"] == IMMUTABLE
    headers, body = _raw(client, "/static/app/assets/index-abc123.js", "gzip")
    assert headers["content-encoding"] == "gzip" and gzip.decompress(body) == BODY
    headers, body = _raw(client, "/static/app/assets/index-abc123.js", "identity")
    assert "content-encoding" not in headers and body == BODY
    assert headers["vary"] == "Accept-Encoding"


def test_only_the_variants_that_exist(client: TestClient) -> None:
    headers, body = _raw(client, "/static/app/assets/only-gzip-def456.wasm", "br, gzip")
    assert headers["content-encoding"] == "gzip"
    assert headers["content-type"] == "application/wasm"
    assert gzip.decompress(body).startswith(b"\0asm")


def test_not_modified_per_representation(client: TestClient) -> None:
    first, _ = _raw(client, "/static/app/assets/index-abc123.js", "br")
    again, body = _raw(client, "/static/app/assets/index-abc123.js", "br",
                       **{"If-None-Match": first["etag"]})
    assert again["status"] == 304 and body == b""
    other, _ = _raw(client, "/static/app/assets/index-abc123.js", "gzip",
                    **{"If-None-Match": first["etag"]})
    assert other["status"] == 200, "the br ETag does not validate the gzip representation"


def test_unhashed_files_revalidate_and_have_no_vary(client: TestClient) -> None:
    headers, body = _raw(client, "/static/plain.css", "br, gzip")
    assert headers["cache-control"] == "no-cache" and "vary" not in headers
    assert "content-encoding" not in headers and body == b"body { color: black }"


def test_paths_outside_the_folder_are_404(client: TestClient) -> None:
    assert client.get("/static/../../etc/passwd").status_code == 404
