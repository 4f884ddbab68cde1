"""The embedded CA: certificates that name their identity, private files, renewal rules."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509

from sidecar_core.security import pki
from sidecar_core.security.identity import (
    SERVICES,
    Identity,
    IdentityError,
    of_certificate,
    service,
)
from sidecar_core.security.mesh_tls import MissingCredentials, from_folder


def test_ensure_mesh_makes_every_certificate_once_and_keeps_them(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    assert set(pki.ensure_mesh(tls)) == {*SERVICES, "operator"}
    assert stat.S_IMODE(os.stat(tls).st_mode) == 0o700
    for key in tls.glob("*.key"):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600, key
    before = {p.name: p.read_bytes() for p in tls.glob("*.crt")}
    assert pki.ensure_mesh(tls) == []
    assert {p.name: p.read_bytes() for p in tls.glob("*.crt")} == before


def test_a_service_certificate_names_its_service_and_its_hosts(tmp_path: Path) -> None:
    pki.ensure_mesh(tmp_path, services=("workflow",), extra_hosts=("wf.hospital.example",))
    cert = x509.load_pem_x509_certificate((tmp_path / "workflow.crt").read_bytes())
    assert of_certificate(cert) == service("workflow")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"workflow", "localhost", "wf.hospital.example"} <= set(
        san.get_values_for_type(x509.DNSName))
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    assert cert.issuer == ca.subject
    assert cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=300)


def test_renewal_near_expiry_another_ca_or_a_missing_host(tmp_path: Path) -> None:
    pki.ensure_mesh(tmp_path, services=("ingest",))
    ca = pki.Authority.load(tmp_path)
    cert = tmp_path / "ingest.crt"
    hosts = ("ingest", *pki.DEFAULT_HOSTS)
    assert not pki.needs_renewal(cert, ca, service("ingest"), hosts)
    assert pki.needs_renewal(cert, ca, service("ingest"), (*hosts, "new-name"))
    assert pki.needs_renewal(cert, ca, service("workflow"), hosts)
    assert pki.needs_renewal(cert, pki.Authority.create(), service("ingest"), hosts)
    short = ca.issue(service("ingest"), hosts, days=10)
    pki.write_issued(tmp_path, "ingest", short)
    assert pki.needs_renewal(cert, ca, service("ingest"), hosts)
    assert pki.ensure_mesh(tmp_path, services=("ingest",)) == ["ingest"]
    assert not pki.needs_renewal(cert, ca, service("ingest"), hosts)


def test_identities_round_trip_and_refuse_what_is_not_one() -> None:
    adapter = Identity("adapter", "pacs-1", "north")
    assert adapter.uri == "spiffe://radiology-sidecar/adapter/north/pacs-1"
    assert Identity.parse(adapter.uri) == adapter
    assert adapter.principal == "adapter" and service("gateway").principal == "service:gateway"
    for bad in ("spiffe://other-domain/service/gateway",
                "spiffe://radiology-sidecar/service/a/b", "spiffe://radiology-sidecar/root/x",
                "https://radiology-sidecar/service/gateway"):
        with pytest.raises(IdentityError):
            Identity.parse(bad)
    with pytest.raises(IdentityError):
        Identity("adapter", "pacs-1")  # an adapter without its facility
    with pytest.raises(IdentityError):
        Identity("service", "../etc")


def test_credentials_folder_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(MissingCredentials, match="exactly one other certificate"):
        from_folder(tmp_path)
    pki.ensure_mesh(tmp_path, services=("gateway",))
    (tmp_path / "gateway.key").unlink()
    with pytest.raises(MissingCredentials, match="gateway.key"):
        from_folder(tmp_path, "gateway")
