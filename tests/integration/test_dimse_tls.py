"""The DIMSE SCP's DICOM TLS port (PS3.15 Annex B) and the per-facility peer rules of both DICOM
ports, against dcmtk (echoscu/storescu +tla/+tls) and pynetdicom, with real PG and NATS."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from sidecar_core.security import dicom_tls, pki
from sidecar_core.security.identity import Identity
from tests import pki as test_pki
from tests.helpers import add_facility, ct_slice, to_bytes
from tests.integration.test_dimse import (
    ECHOSCU,
    STORESCU,
    Ingest,
    require_dcmtk,
    running_ingest,
    wait_for,
)
from tests.servers import free_port

pytestmark = pytest.mark.integration
OPEN, STRICT, FENCED = "OPEN_PACS", "STRICT_PACS", "FENCED_PACS"


def _client(folder: Path, ca_name: str) -> tuple[Path, Path, Path]:
    """(CA, client certificate, key) of a client CA of its own."""
    ca = pki.Authority.create(ca_name)
    issued = ca.issue(Identity("adapter", "pacs", "north"), server=False)
    paths = (folder / f"{ca_name}.crt", folder / f"{ca_name}-client.crt",
             folder / f"{ca_name}-client.key")
    for path, pem in zip(paths, (ca.cert_pem, issued.cert_pem, issued.key_pem), strict=True):
        path.write_bytes(pem)
    return paths


class Tls:
    """The running ingest with its TLS port, the SCP's CA, a client CA it trusts (and a
    certificate from it) and a certificate from a CA it does not trust."""

    ingest: Ingest
    port: int
    web_ca: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path

    def dcmtk(self, tool: str, calling: str, *args: str, port: int | None = None,
              files: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        return subprocess.run([tool, *args, "-aet", calling, "-aec", "SIDECAR", "127.0.0.1",
                               str(port or self.port), *files], capture_output=True, text=True,
                              timeout=60, env={**os.environ, "TCP_NODELAY": "1"})

    def echo(self, calling: str, *tls: str, port: int | None = None) -> int:
        return self.dcmtk(ECHOSCU, calling, *tls, port=port).returncode


@pytest.fixture()
async def tls(database_url: str, nats: Any, tmp_path: Path) -> AsyncIterator[Tls]:
    require_dcmtk()
    for ae in (OPEN, STRICT, FENCED):
        add_facility(database_url, ae.lower(), ae_title=ae, quiet_period_s=0.5)
    with psycopg.connect(database_url) as conn:  # the rules of two of them
        conn.execute("update facilities set dicom_require_client_cert = true where "
                     "ae_title = %s", (STRICT,))
        conn.execute("update facilities set dicom_allowed_hosts = '127.0.0.1/32,10.0.0.0/8' "
                     "where ae_title = %s", (FENCED,))
    folder = tmp_path / "pki"
    folder.mkdir()
    holder = Tls()
    web_ca, cert, key = test_pki.web_certificate(folder)
    client_ca, _, _ = _client(folder, "clients")
    port = free_port()
    async with running_ingest(database_url, nats, tmp_path / "data", dicom_tls_port=port,
                              dicom_tls_cert=cert, dicom_tls_key=key,
                              dicom_tls_client_ca=client_ca) as ingest:
        holder.ingest = ingest
        holder.web_ca = web_ca
        holder.client_cert = folder / "clients-client.crt"
        holder.client_key = folder / "clients-client.key"
        _, holder.stranger_cert, holder.stranger_key = _client(folder, "strangers")
        holder.port = port
        yield holder


def _rejections(ingest: Ingest) -> list[tuple[Any, ...]]:
    return ingest.rows("select context->>'calling_ae', context->>'reason', context->>'peer', "
                       "context->'coalesced' from audit_events where type = "
                       "'association.rejected' order by seq")


async def test_dcmtk_echo_and_store_over_tls(tls: Tls, tmp_path: Path) -> None:
    anonymous = ("+tla", "+cf", str(tls.web_ca))
    assert await asyncio.to_thread(tls.echo, OPEN, *anonymous) == 0
    study, series = generate_uid(), generate_uid()
    folder = tmp_path / "in"
    folder.mkdir()
    for z in range(3):
        (folder / f"ct{z}.dcm").write_bytes(to_bytes(ct_slice(study, series, z=float(z))))
    sent = await asyncio.to_thread(lambda: tls.dcmtk(STORESCU, OPEN, *anonymous, "+sd", "+r",
                                                     files=(str(folder),)))
    assert sent.returncode == 0, sent.stderr
    assert tls.ingest.rows("select count(*) from instances i join studies s on "
                           "s.id = i.study_id where s.study_instance_uid = %s",
                           study) == [(3,)]
    # The SCP is verified by the client: a client trusting another CA refuses it.
    other_ca, _, _ = test_pki.web_certificate(tmp_path, "Another CA")
    assert await asyncio.to_thread(tls.echo, OPEN, "+tla", "+cf", str(other_ca)) != 0


async def test_plaintext_on_the_tls_port_fails_at_once_and_the_port_stays_up(tls: Tls) -> None:
    started = time.monotonic()
    plain = await asyncio.to_thread(tls.dcmtk, ECHOSCU, OPEN)
    assert plain.returncode != 0
    assert time.monotonic() - started < 10  # refused, not left hanging until a timeout
    # TLS 1.1 is not offered.
    import socket
    import ssl
    import warnings

    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(cafile=str(tls.web_ca))
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection(("127.0.0.1", tls.port), timeout=10) as raw, \
            pytest.raises(ssl.SSLError):
        old.wrap_socket(raw, server_hostname="127.0.0.1")
    assert await asyncio.to_thread(tls.echo, OPEN, "+tla", "+cf", str(tls.web_ca)) == 0
    assert await asyncio.to_thread(tls.echo, OPEN, port=tls.ingest.dicom_port) == 0
    reasons = [r[1] for r in _rejections(tls.ingest)]
    assert reasons and all(r.startswith("TLS handshake failed") for r in reasons)


async def test_facility_requiring_a_client_certificate(tls: Tls) -> None:
    anonymous = ("+tla", "+cf", str(tls.web_ca))
    with_cert = ("+tls", str(tls.client_key), str(tls.client_cert), "+cf", str(tls.web_ca))
    refused = await asyncio.to_thread(tls.dcmtk, ECHOSCU, STRICT, *anonymous)
    assert refused.returncode != 0
    assert "rejected" in (refused.stdout + refused.stderr).lower()
    assert await asyncio.to_thread(tls.echo, STRICT, *with_cert) == 0
    # the plain port never has a client certificate
    assert await asyncio.to_thread(tls.echo, STRICT, port=tls.ingest.dicom_port) != 0
    # a certificate from a CA the SCP does not trust fails the handshake
    stranger = ("+tls", str(tls.stranger_key), str(tls.stranger_cert), "+cf", str(tls.web_ca))
    assert await asyncio.to_thread(tls.echo, STRICT, *stranger) != 0
    # a facility that does not require one takes a client certificate too
    assert await asyncio.to_thread(tls.echo, OPEN, *with_cert) == 0
    # the SCP audits a failed handshake after the client has seen the alert and exited
    expected = [("", "TLS handshake failed: client certificate"),
                (STRICT, "client certificate required")]
    for _ in range(100):  # 20 s at most
        if len(rows := _rejections(tls.ingest)) >= 2:
            break
        await asyncio.sleep(0.2)
    # the second refusal of the same peer and AE within the minute is coalesced into the first
    assert sorted((r[0], r[1][:40]) for r in rows) == expected
    assert all(r[2].startswith("127.0.0.1:") for r in rows)


def _associate(port: int, calling: str, source: str,
               tls: Any = None) -> tuple[bool, tuple[int, int, int] | None]:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="SIDECAR", bind_address=(source, 0),
                         tls_args=(tls, "127.0.0.1") if tls else None)
    if assoc.is_established:
        assoc.release()
        return True, None
    rj = assoc.acceptor.primitive
    return False, ((int(rj.result), int(rj.result_source), int(rj.diagnostic))
                   if assoc.is_rejected and rj is not None else None)


async def test_allowed_hosts_on_both_ports_with_coalesced_audit(tls: Tls) -> None:
    client = dicom_tls.scu_context(tls.web_ca)
    for port, context in ((tls.ingest.dicom_port, None), (tls.port, client)):
        assert await asyncio.to_thread(_associate, port, FENCED, "127.0.0.1", context) == (
            True, None)
        assert await asyncio.to_thread(_associate, port, FENCED, "127.0.0.2", context) == (
            False, (1, 1, 3))
    # another facility without a list takes any address
    assert await asyncio.to_thread(_associate, tls.ingest.dicom_port, OPEN, "127.0.0.2") == (
        True, None)
    # a flood from one address is one audit row per window, not one per association
    for _ in range(20):
        assert (await asyncio.to_thread(_associate, tls.ingest.dicom_port, FENCED,
                                        "127.0.0.2"))[0] is False
    rows = [r for r in _rejections(tls.ingest) if r[1] == "peer address not allowed"]
    assert len(rows) == 1 and rows[0][0] == FENCED and rows[0][2].startswith("127.0.0.2:")


async def test_a_flood_of_plaintext_on_the_tls_port_is_refused_and_coalesced(tls: Tls) -> None:
    import socket

    def flood(n: int) -> None:
        for _ in range(n):
            with socket.create_connection(("127.0.0.1", tls.port), timeout=10) as s:
                s.sendall(b"\x01\x00\x00\x00\x00\x44" + b"\x00" * 68)  # an A-ASSOCIATE-RQ start
                s.settimeout(10)
                reply = s.recv(100)  # closed at once: nothing, or at most a TLS alert
                assert reply == b"" or reply[0] == 0x15

    started = time.monotonic()
    await asyncio.to_thread(flood, 50)
    assert time.monotonic() - started < 30
    assert await asyncio.to_thread(tls.echo, OPEN, "+tla", "+cf", str(tls.web_ca)) == 0
    rows = [r for r in _rejections(tls.ingest) if r[1].startswith("TLS handshake failed")]
    assert len(rows) == 1  # one row for the minute, the rest coalesced into the next


async def test_stop_aborts_an_idle_tls_association_promptly(database_url: str, nats: Any,
                                                            tmp_path: Path) -> None:
    add_facility(database_url, "open_pacs", ae_title=OPEN)
    web_ca, cert, key = test_pki.web_certificate(tmp_path)
    port = free_port()
    ae = AE(ae_title=OPEN)
    ae.add_requested_context(Verification)
    async with running_ingest(database_url, nats, tmp_path / "data", dicom_tls_port=port,
                              dicom_tls_cert=cert, dicom_tls_key=key):
        assoc = await asyncio.to_thread(
            ae.associate, "127.0.0.1", port, ae_title="SIDECAR",
            tls_args=(dicom_tls.scu_context(web_ca), "127.0.0.1"))
        assert assoc.is_established
        status = await asyncio.to_thread(assoc.send_c_echo)
        assert status.Status == 0x0000
        started = time.monotonic()
    assert time.monotonic() - started < 10  # the idle TLS association did not hold the stop
    await wait_for(lambda: not assoc.is_established, 10)  # the peer saw the abort
    ae.shutdown()
