"""DICOM TLS settings and contexts: allowed-host lists, the SCP's and the SCU's TLS contexts, and
which certificate a process takes."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from sidecar_core.security import dicom_tls
from sidecar_core.security.dicom_tls import (
    DicomTlsError,
    DicomTlsSettings,
    host_allowed,
    normalized_hosts,
    parse_allowed_hosts,
)
from tests import pki as test_pki


def test_allowed_hosts_are_addresses_and_networks() -> None:
    assert normalized_hosts(" 127.0.0.1, 10.0.0.0/8,,::1 ") == "127.0.0.1/32,10.0.0.0/8,::1/128"
    assert normalized_hosts("") is None and normalized_hosts(None) is None
    for bad in ("127.0.0.1/8", "pacs.example", "10.0.0.0/33", "1.2.3"):
        with pytest.raises(ValueError, match=bad.split("/")[0]):
            parse_allowed_hosts(bad)


def test_host_allowed() -> None:
    nets = parse_allowed_hosts("127.0.0.1,10.1.0.0/16")
    assert host_allowed("127.0.0.1", nets) and host_allowed("10.1.2.3", nets)
    assert not host_allowed("127.0.0.2", nets) and not host_allowed("10.2.0.1", nets)
    assert host_allowed("::ffff:10.1.0.9", nets)  # an IPv4-mapped peer is its IPv4 address
    assert not host_allowed("?", nets)
    assert host_allowed("192.0.2.1", ())  # no list: any address


def test_scp_context_profile_and_client_ca(tmp_path: Path) -> None:
    ca, cert, key = test_pki.web_certificate(tmp_path)
    plain = dicom_tls.scp_context(cert, key)
    assert plain.minimum_version == ssl.TLSVersion.TLSv1_2
    assert plain.verify_mode == ssl.CERT_NONE
    asking = dicom_tls.scp_context(cert, key, ca)
    assert asking.verify_mode == ssl.CERT_OPTIONAL  # asked for; the facility decides
    ciphers = {c["name"] for c in asking.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert ciphers and all("ECDHE" in c and ("GCM" in c or "CHACHA20" in c) for c in ciphers)
    with pytest.raises(DicomTlsError, match="DICOM TLS client CA"):
        dicom_tls.scp_context(cert, key, tmp_path / "missing.crt")
    with pytest.raises(DicomTlsError, match="DICOM TLS certificate"):
        dicom_tls.scp_context(cert, tmp_path / "missing.key")


def test_scu_context_verifies_the_peer(tmp_path: Path) -> None:
    ca, cert, key = test_pki.web_certificate(tmp_path)
    ctx = dicom_tls.scu_context(ca, cert, key)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    with pytest.raises(DicomTlsError, match="PACS TLS CA"):
        dicom_tls.scu_context(tmp_path / "missing.crt")


def test_certificate_defaults_to_the_edge_one(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    for name in ("DICOM_TLS_CERT", "DICOM_TLS_KEY", "HTTPS_CERT", "HTTPS_KEY",
                 "DICOM_TLS_PORT"):
        monkeypatch.delenv(f"SIDECAR_{name}", raising=False)
    assert DicomTlsSettings().certificate() is None
    assert DicomTlsSettings().dicom_tls_port == 2762
    assert DicomTlsSettings().scp_context() is None
    monkeypatch.setenv("SIDECAR_HTTPS_CERT", str(tmp_path / "web.crt"))
    monkeypatch.setenv("SIDECAR_HTTPS_KEY", str(tmp_path / "web.key"))
    assert DicomTlsSettings().certificate() == (tmp_path / "web.crt", tmp_path / "web.key")
    monkeypatch.setenv("SIDECAR_DICOM_TLS_CERT", str(tmp_path / "dicom.crt"))
    monkeypatch.setenv("SIDECAR_DICOM_TLS_KEY", str(tmp_path / "dicom.key"))
    assert DicomTlsSettings().certificate() == (tmp_path / "dicom.crt", tmp_path / "dicom.key")
    monkeypatch.delenv("SIDECAR_DICOM_TLS_KEY")
    with pytest.raises(ValueError, match="go together"):
        DicomTlsSettings()
