"""DICOM TLS as `sidecar up --tls-cert --tls-key` serves it (PS3.15 Annex B on the dicom-tls port),
driven by dcmtk: a synthetic study stored over TLS, plaintext refused on the TLS port, a facility
that requires a client certificate, and a facility's allowed peer addresses on both ports."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from sidecar_core.security.dicom_tls import scu_context
from tests.acceptance.stack import run_cli
from tests.acceptance.test_ports_up import listening
from tests.security.conftest import EdgeStack

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]
ECHOSCU, STORESCU = "/usr/bin/echoscu", "/usr/bin/storescu"  # dcmtk's, not the venv's


@pytest.fixture(scope="module")
def stack(edge_stack: EdgeStack) -> EdgeStack:
    if not Path(STORESCU).exists():
        pytest.fail("dcmtk is required: apt-get install -y dcmtk")
    return edge_stack


def dcmtk(stack: EdgeStack, tool: str, calling: str, *options: str, port: str = "dicom-tls",
          files: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool, *options, "-aet", calling, "-aec", "SIDECAR", "127.0.0.1",
                           str(stack.ports[port]), *files], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "TCP_NODELAY": "1"})


def anonymous(stack: EdgeStack) -> tuple[str, ...]:
    return ("+tla", "+cf", str(stack.web_ca))


def with_certificate(stack: EdgeStack) -> tuple[str, ...]:
    return ("+tls", str(stack.dicom_client_key), str(stack.dicom_client_cert),
            "+cf", str(stack.web_ca))


def eventually(check: Callable[[], bool], within_s: float = 20.0) -> bool:
    """A facility's changed rule reaches the SCP within its directory's cache time (5 s)."""
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def test_synthetic_study_stored_over_dicom_tls(stack: EdgeStack, tmp_path: Path) -> None:
    echo = dcmtk(stack, ECHOSCU, stack.north_ae, *anonymous(stack))
    assert echo.returncode == 0, echo.stdout + echo.stderr
    made = run_cli("synth", str(tmp_path / "study"), "--kind", "brain-mr", "--seed", "7")
    assert made.returncode == 0, made.stderr
    files = sorted((tmp_path / "study").rglob("*.dcm"))
    study = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    sent = dcmtk(stack, STORESCU, stack.north_ae, *with_certificate(stack),
                 files=tuple(map(str, files)))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert stack.sql("select count(*) from instances i join studies s on s.id = i.study_id "
                     "where s.study_instance_uid = %s and i.source = 'dimse'",
                     study) == [(len(files),)]


def test_tls_port_listens_on_loopback_only(stack: EdgeStack) -> None:
    sockets = listening()
    assert sockets[stack.ports["dicom-tls"]] == {"0100007F"}  # 127.0.0.1
    assert "DICOM TLS SCP listening on 127.0.0.1:" in (
        stack.data_dir / "logs" / "ingest.log").read_text()


def test_plaintext_on_the_tls_port_fails_without_hanging(stack: EdgeStack) -> None:
    started = time.monotonic()
    plain = dcmtk(stack, ECHOSCU, stack.north_ae)
    assert plain.returncode != 0 and time.monotonic() - started < 15
    # the TLS port and the plain port still answer
    assert dcmtk(stack, ECHOSCU, stack.north_ae, *anonymous(stack)).returncode == 0
    assert dcmtk(stack, ECHOSCU, stack.north_ae, port="dicom").returncode == 0


def test_facility_requiring_a_client_certificate(stack: EdgeStack) -> None:
    done = stack.cli("facility", "set", stack.south, "--dicom-require-client-cert", "on")
    assert done.returncode == 0, done.stderr
    assert "dicom_require_client_cert=on" in done.stdout
    assert eventually(lambda: dcmtk(stack, ECHOSCU, stack.south_ae,
                                    *anonymous(stack)).returncode != 0)
    refused = dcmtk(stack, ECHOSCU, stack.south_ae, *anonymous(stack))
    assert "association rejected" in (refused.stdout + refused.stderr).lower()
    assert dcmtk(stack, ECHOSCU, stack.south_ae, *with_certificate(stack)).returncode == 0
    assert dcmtk(stack, ECHOSCU, stack.south_ae, port="dicom").returncode != 0
    rows = stack.sql("select context->>'peer', context->>'calling_ae' from audit_events "
                     "where type = 'association.rejected' and context->>'reason' = "
                     "'client certificate required' and context->>'calling_ae' = %s",
                     stack.south_ae)
    assert rows and rows[0][0].startswith("127.0.0.1:")
    off = stack.cli("facility", "set", stack.south, "--dicom-require-client-cert", "off")
    assert off.returncode == 0, off.stderr
    assert eventually(lambda: dcmtk(stack, ECHOSCU, stack.south_ae,
                                    *anonymous(stack)).returncode == 0)


def _associate(stack: EdgeStack, port: str, calling: str, source: str) -> bool | tuple[int, ...]:
    """True when established from `source`, else the A-ASSOCIATE-RJ's (result, source,
    reason)."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    tls = (scu_context(stack.web_ca), "127.0.0.1") if port == "dicom-tls" else None
    assoc = ae.associate("127.0.0.1", stack.ports[port], ae_title="SIDECAR",
                         bind_address=(source, 0), tls_args=tls)
    if assoc.is_established:
        assoc.release()
        return True
    rj = assoc.acceptor.primitive
    assert assoc.is_rejected and rj is not None
    return int(rj.result), int(rj.result_source), int(rj.diagnostic)


def test_allowed_hosts_on_both_ports(stack: EdgeStack) -> None:
    bad = stack.cli("facility", "set", stack.north, "--dicom-allowed-hosts", "127.0.0.1/8")
    assert bad.returncode != 0 and "dicom_allowed_hosts" in bad.stderr
    fence = stack.north.replace("north", "fence")
    added = stack.cli("facility", "add", fence, "--ae-title", fence.upper())
    assert added.returncode == 0, added.stderr
    done = stack.cli("facility", "set", fence, "--dicom-allowed-hosts", "127.0.0.1, 10.0.0.0/8")
    assert done.returncode == 0, done.stderr
    assert "dicom_allowed_hosts=127.0.0.1/32,10.0.0.0/8" in done.stdout
    for port in ("dicom", "dicom-tls"):
        assert _associate(stack, port, fence.upper(), "127.0.0.1") is True
        assert _associate(stack, port, fence.upper(), "127.0.0.2") == (1, 1, 3)
    assert _associate(stack, "dicom", stack.north_ae, "127.0.0.2") is True  # no list: any
    rows = stack.sql("select context->>'peer' from audit_events where type = "
                     "'association.rejected' and context->>'reason' = 'peer address not "
                     "allowed' and context->>'calling_ae' = %s", fence.upper())
    assert len(rows) == 1 and rows[0][0].startswith("127.0.0.2:")  # the second coalesced
