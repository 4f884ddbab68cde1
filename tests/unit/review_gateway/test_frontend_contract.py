"""The review front end's API client calls only routes the gateway's OpenAPI document has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from review_gateway.app import create_app
from review_gateway.settings import GatewaySettings

CLIENT = Path(__file__).resolve().parents[3] / "review_gateway" / "frontend" / "src" / "api.ts"
CALL = re.compile(r"call<[^>]*>\('(GET|POST|PUT|PATCH|DELETE)', [`'](/[^`']*)[`']")
ROUTE = re.compile(r"\['(GET|POST|PUT|PATCH|DELETE)', '(/api/v1/[^']*)'\]")
# the path parameter that follows a collection segment, as the gateway names it
PARAMS = {"studies": "{study_id}", "findings": "{finding_id}", "priors": "{prior_id}"}


def _calls(source: str) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every call(): each `${enc(...)}` is the path parameter of the
    collection segment before it."""
    out = set()
    for method, path in CALL.findall(source):
        parts = re.split(r"\$\{enc\([^)]*\)\}", path)
        templated = parts[0]
        for part in parts[1:]:
            templated += PARAMS[templated.rstrip("/").rsplit("/", 1)[-1]] + part
        out.add((method, "/api/v1" + templated))
    return out


def test_every_client_call_is_in_the_openapi_document(tmp_path: Path) -> None:
    source = CLIENT.read_text()
    paths = create_app(GatewaySettings(data_dir=tmp_path, token_secret="x" * 32)).openapi()["paths"]
    served = {(method.upper(), path) for path, ops in paths.items() for method in ops}
    calls = _calls(source)
    declared = set(ROUTE.findall(source))
    assert len(calls) >= 12, calls
    assert calls - {("GET", "/api/v1/events")} <= declared, calls - declared
    assert declared <= served, sorted(declared - served)
    assert calls <= served, sorted(calls - served)
    assert ("GET", "/api/v1/events") in served


def test_the_page_carries_a_strict_csp_and_the_viewer_link(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    app = create_app(GatewaySettings(data_dir=tmp_path, token_secret="x" * 32, viewer_port=8099))
    reply = TestClient(app).get("/", headers={"Host": "review.example:8080"})
    assert reply.status_code == 200
    csp = reply.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "style-src 'self'" in csp
    assert '<meta name="sidecar-ohif-url" content="http://review.example:8099/">' in reply.text
    assert "<script>" not in reply.text and " style=" not in reply.text
    off = create_app(GatewaySettings(data_dir=tmp_path, token_secret="x" * 32, viewer_port=0))
    assert "sidecar-ohif-url" not in TestClient(off).get("/").text


def test_the_viewer_link_behind_an_ingress_is_the_viewers_own_host(tmp_path: Path) -> None:
    """Behind an Ingress the viewer has a host of its own: the link is exactly
    SIDECAR_VIEWER_PUBLIC_URL, never the gateway's host with the viewer's port."""
    from fastapi.testclient import TestClient
    from pydantic import ValidationError

    app = create_app(GatewaySettings(
        data_dir=tmp_path, token_secret="x" * 32, viewer_port=8081,
        viewer_public_url="https://viewer.hospital.example"))
    reply = TestClient(app).get("/", headers={"Host": "sidecar.hospital.example"})
    assert '<meta name="sidecar-ohif-url" content="https://viewer.hospital.example/">' \
        in reply.text
    assert "sidecar.hospital.example:8081" not in reply.text
    for bad in ("viewer.hospital.example", "javascript:alert(1)", "https://a b/"):
        with pytest.raises(ValidationError):
            GatewaySettings(data_dir=tmp_path, token_secret="x" * 32, viewer_public_url=bad)
