"""`sidecar up --tls-cert --tls-key --insecure-http`: the options, what the gateway and viewer
processes are given, and what is refused before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar_app.cli import _up_options, build_parser
from sidecar_app.runtime.supervisor import UpOptions, viewer_line, viewer_origins
from sidecar_core.security import pki
from sidecar_core.security.identity import Identity


def certificate(folder: Path) -> tuple[Path, Path]:
    issued = pki.Authority.create().issue(Identity("service", "gateway"), hosts=("127.0.0.1",))
    (folder / "edge.crt").write_bytes(issued.cert_pem)
    (folder / "edge.key").write_bytes(issued.key_pem)
    return folder / "edge.crt", folder / "edge.key"


@pytest.fixture(autouse=True)
def _no_edge_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SIDECAR_HTTPS_CERT", "SIDECAR_HTTPS_KEY", "SIDECAR_INSECURE_HTTP",
                 "SIDECAR_GATEWAY_HOST", "SIDECAR_VIEWER_HOST"):
        monkeypatch.delenv(name, raising=False)


def test_flags_reach_the_options(tmp_path: Path) -> None:
    args = build_parser().parse_args(["up", "--tls-cert", "a.crt", "--tls-key", "a.key",
                                      "--insecure-http", "--data-dir", str(tmp_path)])
    opts = _up_options(args)
    assert (opts.https_cert, opts.https_key, opts.insecure_http) == (
        Path("a.crt"), Path("a.key"), True)
    assert opts.scheme == "https"
    demo = _up_options(build_parser().parse_args(["demo"]))
    assert demo.https_cert is None and not demo.insecure_http and demo.scheme == "http"


def test_flags_default_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_HTTPS_CERT", "/etc/edge.crt")
    monkeypatch.setenv("SIDECAR_HTTPS_KEY", "/etc/edge.key")
    opts = _up_options(build_parser().parse_args(["up"]))
    assert opts.https_cert == Path("/etc/edge.crt") and opts.https_key == Path("/etc/edge.key")


def test_the_edge_processes_get_absolute_certificate_paths(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    certificate(tmp_path)
    env = UpOptions(tmp_path, https_cert=Path("edge.crt"), https_key=Path("edge.key")).edge_env()
    assert env["SIDECAR_HTTPS_CERT"] == str(tmp_path / "edge.crt")
    assert env["SIDECAR_HTTPS_KEY"] == str(tmp_path / "edge.key")
    assert env["SIDECAR_INSECURE_HTTP"] == "0"
    assert "SIDECAR_HTTPS_CERT" not in UpOptions(tmp_path).edge_env()


def test_good_certificate_and_loopback_hosts_pass(tmp_path: Path) -> None:
    cert, key = certificate(tmp_path)
    assert UpOptions(tmp_path).edge_problem() is None
    assert UpOptions(tmp_path, https_cert=cert, https_key=key).edge_problem() is None


def test_cert_without_key_is_refused(tmp_path: Path) -> None:
    cert, _key = certificate(tmp_path)
    assert "go together" in (UpOptions(tmp_path, https_cert=cert).edge_problem() or "")


def test_unreadable_certificate_is_refused(tmp_path: Path) -> None:
    problem = UpOptions(tmp_path, https_cert=tmp_path / "no.crt",
                        https_key=tmp_path / "no.key").edge_problem()
    assert problem and "cannot load the HTTPS certificate" in problem


@pytest.mark.parametrize("variable", ["SIDECAR_GATEWAY_HOST", "SIDECAR_VIEWER_HOST"])
def test_plain_http_off_loopback_needs_insecure_http(tmp_path: Path, variable: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, "0.0.0.0")
    problem = UpOptions(tmp_path).edge_problem()
    assert problem and "0.0.0.0" in problem and "--insecure-http" in problem
    assert UpOptions(tmp_path, insecure_http=True).edge_problem() is None
    cert, key = certificate(tmp_path)
    assert UpOptions(tmp_path, https_cert=cert, https_key=key).edge_problem() is None


def test_urls_follow_the_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    assert viewer_origins(8081, "https") == ["https://127.0.0.1:8081", "https://localhost:8081"]
    monkeypatch.setattr("sidecar_app.runtime.ohif_fetch.installed_version", lambda _d: "3.9")
    line = viewer_line({"viewer": 8081, "gateway": 8080}, "https")
    assert line.startswith("OHIF viewer: https://127.0.0.1:8081/")
    assert "https://127.0.0.1:8080/dicomweb" in line
