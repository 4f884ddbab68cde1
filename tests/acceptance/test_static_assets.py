"""The review app's files as `sidecar up` serves them (issue 22 item 4): precompressed brotli and
gzip by Accept-Encoding with Vary, the right Content-Type, hashed assets immutable for a year,
the page revalidated, and the JavaScript a first visit loads within its budget."""

from __future__ import annotations

import gzip
import re

import brotli
import httpx
import pytest

from tests.acceptance.stack import Stack

IMMUTABLE = "public, max-age=31536000, immutable"
# The initial JavaScript (the page's entry module and what it imports statically), compressed.
INITIAL_JS_BUDGET = 1_000_000
ENTRY = re.compile(r'<script type="module"[^>]* src="(/static/app/assets/[^"]+\.js)"')
STYLE = re.compile(r'<link rel="stylesheet"[^>]* href="(/static/app/assets/[^"]+\.css)"')
# `import{a as b}from"./chunk-x.js"` or `import"./chunk-x.js"`, never `import("./study-x.js")`
STATIC_IMPORT = re.compile(r'(?:\bfrom|\bimport)\s*"\./([\w.-]+\.js)"')
DYNAMIC_IMPORT = re.compile(r'\bimport\(\s*"\./([\w.-]+\.js)"\s*\)')


def raw(http: httpx.Client, path: str, accept_encoding: str,
        **headers: str) -> tuple[httpx.Response, bytes]:
    """The response and its body as sent (not decoded)."""
    with http.stream("GET", path, headers={"Accept-Encoding": accept_encoding,
                                           **headers}) as reply:
        return reply, b"".join(reply.iter_raw())


def varies(reply: httpx.Response) -> bool:
    """The response names Accept-Encoding in Vary (beside what other layers add: Origin)."""
    return "accept-encoding" in {v.strip().lower() for v in reply.headers["vary"].split(",")}


@pytest.fixture(scope="module")
def http(stack: Stack) -> httpx.Client:
    with httpx.Client(base_url=stack.base_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def page(http: httpx.Client) -> httpx.Response:
    reply = http.get("/")
    assert reply.status_code == 200, reply.text
    return reply


@pytest.fixture(scope="module")
def entry(page: httpx.Response) -> str:
    found = ENTRY.search(page.text)
    assert found, f"no entry module in the built page: {page.text[:500]}"
    return found.group(1)


def test_the_page_revalidates(page: httpx.Response) -> None:
    assert page.headers["cache-control"] == "no-cache"
    assert page.headers["content-type"].startswith("text/html")


def test_brotli_gzip_or_identity_by_accept_encoding(http: httpx.Client, entry: str) -> None:
    plain, body = raw(http, entry, "identity")
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    assert plain.headers["content-type"].startswith("text/javascript")
    assert varies(plain)
    assert plain.headers["cache-control"] == IMMUTABLE

    br, br_body = raw(http, entry, "gzip, deflate, br, zstd")  # as Chromium asks
    assert br.headers["content-encoding"] == "br"
    assert br.headers["content-type"] == plain.headers["content-type"]
    assert varies(br)
    assert br.headers["cache-control"] == IMMUTABLE
    assert int(br.headers["content-length"]) == len(br_body) < len(body)
    assert brotli.decompress(br_body) == body

    gz, gz_body = raw(http, entry, "gzip")
    assert gz.headers["content-encoding"] == "gzip"
    assert varies(gz)
    assert gzip.decompress(gz_body) == body

    weighed, weighed_body = raw(http, entry, "br;q=0, gzip;q=0.5")  # br refused
    assert weighed.headers["content-encoding"] == "gzip"
    assert gzip.decompress(weighed_body) == body

    nothing, nothing_body = raw(http, entry, "")
    assert "content-encoding" not in nothing.headers and nothing_body == body


def test_a_compressed_asset_answers_304_to_its_own_etag(http: httpx.Client, entry: str) -> None:
    first, _ = raw(http, entry, "br")
    again, body = raw(http, entry, "br", **{"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and body == b""
    assert again.headers["cache-control"] == IMMUTABLE
    identity, _ = raw(http, entry, "identity")
    assert identity.headers["etag"] != first.headers["etag"], "one ETag per representation"


def test_stylesheet_and_wasm_are_precompressed_with_their_types(
        http: httpx.Client, page: httpx.Response, entry: str) -> None:
    style = STYLE.search(page.text)
    assert style, "no stylesheet in the built page"
    css, _ = raw(http, style.group(1), "br")
    assert css.headers["content-type"].startswith("text/css")
    assert css.headers["content-encoding"] == "br"
    # the codecs of the image loader: WebAssembly must keep its type to be compiled streaming
    wasm = [name for name in _chunk_names(http, entry) if name.endswith(".wasm")]
    assert wasm, "the study chunk names its WASM codecs"
    reply, _ = raw(http, f"/static/app/assets/{wasm[0]}", "gzip, br")
    assert reply.headers["content-type"] == "application/wasm"
    assert reply.headers["content-encoding"] == "br"
    assert reply.headers["cache-control"] == IMMUTABLE


def test_the_initial_javascript_is_within_budget(http: httpx.Client, entry: str) -> None:
    """A first visit loads the entry module and its static imports; the viewer (Cornerstone3D,
    the image loader) comes in a chunk of its own when a study is opened."""
    initial = _static_closure(http, entry)
    sizes = {path: len(raw(http, path, "br")[1]) for path in initial}
    total = sum(sizes.values())
    print(f"initial JavaScript: {len(initial)} file(s), {total / 1024:.0f} KiB with brotli "
          f"(budget {INITIAL_JS_BUDGET / 1e6:.0f} MB): {sizes}")
    assert total <= INITIAL_JS_BUDGET
    _, body = raw(http, entry, "identity")
    lazy = DYNAMIC_IMPORT.findall(body.decode())
    assert lazy, "the study view is loaded on demand"
    for name in lazy:
        assert f"/static/app/assets/{name}" not in initial
        viewer, _ = raw(http, f"/static/app/assets/{name}", "identity")
        assert viewer.status_code == 200


def test_files_that_are_not_hashed_revalidate(http: httpx.Client) -> None:
    reply, _ = raw(http, "/static/admin/admin.css", "gzip, br")
    assert reply.status_code == 200
    assert reply.headers["cache-control"] == "no-cache"


def _static_closure(http: httpx.Client, entry: str) -> set[str]:
    seen: set[str] = set()
    todo = [entry]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        _, body = raw(http, path, "identity")
        todo += [f"/static/app/assets/{n}" for n in STATIC_IMPORT.findall(body.decode())]
    return seen


def _chunk_names(http: httpx.Client, entry: str) -> list[str]:
    """The asset file names the lazily loaded chunks refer to."""
    _, body = raw(http, entry, "identity")
    names: list[str] = []
    for chunk in DYNAMIC_IMPORT.findall(body.decode()):
        _, text = raw(http, f"/static/app/assets/{chunk}", "identity")
        names += re.findall(r'/static/app/assets/([\w.-]+\.wasm)', text.decode())
    return names
