"""`sidecar up --tls-cert --tls-key` as a user starts it: the review UI and the OHIF viewer answer
over HTTPS only (TLS 1.2+, HSTS, Secure cookies), the URLs it prints and wires say https, and a
non-loopback address without a certificate is refused unless `--insecure-http`."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from bench.stack import clean_env
from sidecar_core.security.edge_tls import HSTS
from tests.acceptance.stack import Stack, run_cli
from tests.acceptance.test_ports_up import TLS_ONLY, listening
from tests.security.conftest import EdgeStack

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]


@pytest.fixture(scope="module")
def stack(edge_stack: EdgeStack) -> EdgeStack:
    return edge_stack


@pytest.fixture(scope="module")
def edge(edge_stack: EdgeStack) -> tuple[Path, Path, Path]:
    """(CA, certificate, key) the shared HTTPS stack was started with: a certificate for
    127.0.0.1 and localhost from a CA of its own (not the mesh's)."""
    return edge_stack.web_ca, edge_stack.web_cert, edge_stack.web_key


def test_review_ui_answers_over_https_with_hsts_and_secure_cookies(
        stack: EdgeStack) -> None:
    gateway = f"https://127.0.0.1:{stack.ports['gateway']}"
    assert f"Review UI: {gateway}/ (API: {gateway}/api/v1" in stack.output()
    with httpx.Client(base_url=gateway, verify=stack.trusting(), timeout=30) as http:
        page = http.get("/")
        assert page.status_code == 200 and page.headers["strict-transport-security"] == HSTS
        login = http.post("/api/v1/auth/login",
                          json={"username": stack.admin, "password": stack.password})
        assert login.status_code == 200, login.text
        cookies = login.headers.get_list("set-cookie")
        assert len(cookies) == 2 and all("; secure" in c.lower() for c in cookies)
        # The OHIF link of the review app points at the viewer over https.
        assert f"https://127.0.0.1:{stack.ports['viewer']}/" in page.text
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{stack.ports['gateway']}/healthz", timeout=10)


def test_ohif_viewer_answers_over_https_and_reads_dicomweb_over_https(
        stack: EdgeStack) -> None:
    viewer = f"https://127.0.0.1:{stack.ports['viewer']}"
    with httpx.Client(base_url=viewer, verify=stack.trusting(), timeout=30) as http:
        config = http.get("/app-config.js")
        assert config.status_code == 200
        assert config.headers["strict-transport-security"] == HSTS
        assert f"https://127.0.0.1:{stack.ports['gateway']}/dicomweb" in config.text
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{stack.ports['viewer']}/app-config.js", timeout=10)
    # The gateway lets the https viewer origin call DICOMweb from the browser.
    with httpx.Client(verify=stack.trusting(), timeout=30) as http:
        preflight = http.options(
            f"https://127.0.0.1:{stack.ports['gateway']}/dicomweb/studies",
            headers={"Origin": viewer, "Access-Control-Request-Method": "GET",
                     "Access-Control-Request-Headers": "authorization"})
        assert preflight.headers.get("access-control-allow-origin") == viewer


def test_tls11_is_refused(stack: Stack, edge: tuple[Path, Path, Path]) -> None:
    import socket
    import warnings

    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(cafile=str(edge[0]))
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    for port in ("gateway", "viewer"):
        with socket.create_connection(("127.0.0.1", stack.ports[port]), timeout=10) as raw, \
                pytest.raises(ssl.SSLError):
            old.wrap_socket(raw, server_hostname="127.0.0.1")


def test_plain_http_off_loopback_is_refused_unless_insecure_http(stack: Stack,
                                                                 tmp_path: Path) -> None:
    ports = [f"--{name}-port={port}" for name, port in stack.ports.items()]
    for variable in ("SIDECAR_GATEWAY_HOST", "SIDECAR_VIEWER_HOST"):
        refused = run_cli("up", "--data-dir", str(tmp_path / "data"), *ports,
                          env=clean_env(**{variable: "0.0.0.0"}), timeout=60)
        assert refused.returncode == 2
        assert refused.stderr.startswith("sidecar up: error: refusing to serve the ")
        assert "0.0.0.0" in refused.stderr and "--insecure-http" in refused.stderr
        assert refused.stderr.count("\n") == 1
    # With --insecure-http it goes on, to the next check: the running stack's ports are taken.
    allowed = run_cli("up", "--data-dir", str(tmp_path / "data"), *ports, "--insecure-http",
                      env=clean_env(SIDECAR_GATEWAY_HOST="0.0.0.0"), timeout=60)
    assert allowed.returncode == 2 and "already in use" in allowed.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was made


def test_with_a_certificate_every_port_listens_on_loopback_only(stack: EdgeStack) -> None:
    """The TLS listeners that the certificate turns on (DICOM TLS, MLLP over TLS) bind where
    every other port does: loopback only."""
    loopback = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}
    sockets = listening()
    for name in (*TLS_ONLY, "gateway", "viewer", "dicom", "hl7"):
        port = stack.ports[name]
        assert port in sockets, f"{name} port {port} does not listen"
        assert sockets[port] <= loopback, (name, port, sockets[port])
