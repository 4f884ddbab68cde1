"""The HL7 listener's TLS and bounds settings: which certificate the MLLP/TLS port serves, client
certificates, the limits, and the open-files limit the connection cap needs."""

from __future__ import annotations

import resource
import ssl
from pathlib import Path

import pytest

from sidecar_core.security.edge_tls import EdgeConfigError
from tests import pki as test_pki
from workflow_svc.report_loop.hl7.main import Hl7Settings, raise_open_files_limit
from workflow_svc.report_loop.hl7.mllp import MllpLimits


@pytest.fixture()
def web(tmp_path: Path) -> tuple[Path, Path, Path]:
    return test_pki.web_certificate(tmp_path, "Unit CA")


def test_no_certificate_no_tls_port(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SIDECAR_HTTPS_CERT", "SIDECAR_HTTPS_KEY", "SIDECAR_HL7_TLS_CERT",
                 "SIDECAR_HL7_TLS_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = Hl7Settings()
    assert settings.tls_context() is None
    assert settings.limits() == MllpLimits(1024 * 1024, 64, 60.0)
    assert settings.hl7_tls_port == 2576


def test_the_https_certificate_is_used_unless_hl7_names_its_own(
        monkeypatch: pytest.MonkeyPatch, web: tuple[Path, Path, Path], tmp_path: Path) -> None:
    monkeypatch.setenv("SIDECAR_HTTPS_CERT", str(web[1]))
    monkeypatch.setenv("SIDECAR_HTTPS_KEY", str(web[2]))
    assert Hl7Settings().tls_files() == (web[1], web[2])
    (tmp_path / "other").mkdir()
    other = test_pki.web_certificate(tmp_path / "other", "RIS link CA")
    monkeypatch.setenv("SIDECAR_HL7_TLS_CERT", str(other[1]))
    monkeypatch.setenv("SIDECAR_HL7_TLS_KEY", str(other[2]))
    settings = Hl7Settings()
    assert settings.tls_files() == (other[1], other[2])
    context = settings.tls_context()
    assert context is not None and context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE


def test_cert_without_key_and_a_bad_client_ca_are_refused(
        monkeypatch: pytest.MonkeyPatch, web: tuple[Path, Path, Path], tmp_path: Path) -> None:
    monkeypatch.setenv("SIDECAR_HL7_TLS_CERT", str(web[1]))
    with pytest.raises(ValueError, match="go together"):
        Hl7Settings()
    monkeypatch.setenv("SIDECAR_HL7_TLS_KEY", str(web[2]))
    monkeypatch.setenv("SIDECAR_HL7_TLS_CLIENT_CA", str(tmp_path / "missing.crt"))
    with pytest.raises(EdgeConfigError, match="SIDECAR_HL7_TLS_CLIENT_CA.* client CA"):
        Hl7Settings().tls_context()
    monkeypatch.setenv("SIDECAR_HL7_TLS_CLIENT_CA", str(web[0]))
    context = Hl7Settings().tls_context()
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_HL7_MAX_CONNECTIONS", "8")
    monkeypatch.setenv("SIDECAR_HL7_IDLE_TIMEOUT", "2.5")
    monkeypatch.setenv("SIDECAR_HL7_MAX_MESSAGE_BYTES", "65536")
    assert Hl7Settings().limits() == MllpLimits(65536, 8, 2.5)
    monkeypatch.setenv("SIDECAR_HL7_MAX_CONNECTIONS", "0")
    with pytest.raises(ValueError):
        Hl7Settings()


def test_open_files_limit_is_raised_and_a_cap_beyond_it_is_refused() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        assert raise_open_files_limit(128) == hard
        if hard != resource.RLIM_INFINITY:
            with pytest.raises(SystemExit, match="SIDECAR_HL7_MAX_CONNECTIONS"):
                raise_open_files_limit(hard + 1)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
