"""`sidecar up --tls-cert --tls-key` and the RIS: MLLP over TLS on `--hl7-tls-port` with the web
certificate (python's ssl and openssl s_client), plaintext refused there, and 2,000 idle MLLP
connections on the plain port that leave the listener answering in bounded memory."""

from __future__ import annotations

import resource
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests import hl7_peer
from tests.security.conftest import EdgeStack

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]
SENDER = "EMLLP_RIS"
HL7_MODULE = "workflow_svc.report_loop.hl7.main"
FLOOD = 2000


def oru(control_id: str, accession: str) -> bytes:
    return hl7_peer.oru(control_id, accession, SENDER)


@pytest.fixture(scope="module")
def stack(edge_stack: EdgeStack) -> EdgeStack:
    done = edge_stack.cli("facility", "set", edge_stack.north, "--hl7-sending-facility", SENDER)
    assert done.returncode == 0, done.stderr
    return edge_stack


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def test_oru_over_tls_gets_aa_and_is_stored(stack: EdgeStack) -> None:
    assert (f"HL7 MLLP: 127.0.0.1:{stack.ports['hl7']}, MLLP over TLS: "
            f"127.0.0.1:{stack.ports['hl7-tls']}") in stack.output()
    context = stack.trusting()
    with socket.create_connection(("127.0.0.1", stack.ports["hl7-tls"]), timeout=30) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        ack = hl7_peer.exchange(tls, oru("EMLLP-TLS-1", "ACC-EMLLP-1"))
    assert "MSA|AA|EMLLP-TLS-1" in ack, ack
    stored = stack.sql("select status, sending_facility from hl7_messages where control_id=%s",
                       "EMLLP-TLS-1")
    assert stored == [("accepted", SENDER)]


def test_openssl_s_client_verifies_the_certificate_and_tls11_is_refused(stack: EdgeStack
                                                                        ) -> None:
    target = f"127.0.0.1:{stack.ports['hl7-tls']}"
    done = subprocess.run(["openssl", "s_client", "-connect", target, "-CAfile",
                           str(stack.web_ca), "-verify_return_error", "-brief"],
                          input=b"", capture_output=True, timeout=30)
    out = (done.stdout + done.stderr).decode()
    assert done.returncode == 0, out
    assert "Verification: OK" in out and "Protocol version: TLSv1.3" in out, out
    old = subprocess.run(["openssl", "s_client", "-connect", target, "-tls1_1", "-brief"],
                         input=b"", capture_output=True, timeout=30)
    assert old.returncode != 0


def test_plaintext_on_the_tls_port_is_refused(stack: EdgeStack) -> None:
    with socket.create_connection(("127.0.0.1", stack.ports["hl7-tls"]), timeout=30) as conn:
        conn.sendall(b"\x0b" + oru("EMLLP-PLAIN", "ACC-EMLLP-P") + b"\x1c\x0d")
        try:
            answer = conn.recv(4096)
        except ConnectionResetError:
            answer = b""
        assert b"MSA" not in answer
        while answer:  # a TLS alert at most, then the server closes
            try:
                answer = conn.recv(4096)
            except ConnectionResetError:
                break
    assert stack.sql("select id from hl7_messages where control_id=%s", "EMLLP-PLAIN") == []
    # audited, coalesced: one event per 10 s burst of failed handshakes, with the reason
    deadline = time.monotonic() + 30

    def plaintext_seen() -> bool:
        return any("WRONG_VERSION_NUMBER" in str(e[0]).upper() for e in events)

    events: list[tuple[object, ...]] = []
    while not plaintext_seen() and time.monotonic() < deadline:
        time.sleep(0.5)
        events = stack.sql("select error_message from audit_events "
                           "where type='hl7.tls_handshake_failed'")
    assert plaintext_seen(), events


def test_2000_idle_connections_leave_the_listener_answering_in_bounded_memory(
        stack: EdgeStack) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < FLOOD + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, FLOOD + 1024), hard))
    pid = stack.children()[HL7_MODULE]
    before = rss_kib(pid)
    flood: list[socket.socket] = []
    try:
        started = time.monotonic()
        for _ in range(FLOOD):
            flood.append(socket.create_connection(("127.0.0.1", stack.ports["hl7"]),
                                                  timeout=30))
        opened = time.monotonic() - started
        time.sleep(1.0)
        during = rss_kib(pid)
        # every flood connection is still open on this side; a RIS message still gets its ACK
        with socket.create_connection(("127.0.0.1", stack.ports["hl7"]), timeout=30) as ris:
            ack = hl7_peer.exchange(ris, oru("EMLLP-FLOOD-1", "ACC-EMLLP-F"))
        assert "MSA|AA|EMLLP-FLOOD-1" in ack, ack
        with socket.create_connection(("127.0.0.1", stack.ports["hl7-tls"]), timeout=30) as raw, \
                stack.trusting().wrap_socket(raw, server_hostname="localhost") as tls:
            ack = hl7_peer.exchange(tls, oru("EMLLP-FLOOD-2", "ACC-EMLLP-F"))
            assert "MSA|AA|EMLLP-FLOOD-2" in ack
    finally:
        for conn in flood:
            conn.close()
    print(f"{FLOOD} connections opened in {opened:.1f} s; listener RSS {before} KiB before, "
          f"{during} KiB during the flood")
    assert during - before < 32 * 1024, (before, during)
    assert stack.children().get(HL7_MODULE) == pid  # the same process, not restarted
    # counted: the listener's metrics port (`--hl7-metrics-port`)
    scraped = urllib.request.urlopen(  # noqa: S310 (a local http URL built here)
        f"http://127.0.0.1:{stack.ports['hl7-metrics']}/metrics", timeout=30).read().decode()
    evicted = next(float(line.split()[-1]) for line in scraped.splitlines()
                   if line.startswith('sidecar_hl7_refusals_total{reason="evicted"}'))
    assert evicted >= FLOOD - 64, scraped
    # one audit event for the burst (after its 10 s window), not one per connection
    deadline = time.monotonic() + 30
    counted = 0
    events: list[tuple[dict[str, int]]] = []
    while counted < FLOOD - 64 and time.monotonic() < deadline:
        time.sleep(0.5)
        events = stack.sql("select context from audit_events "  # type: ignore[assignment]
                           "where type='hl7.connections_refused'")
        counted = sum(e[0]["evicted"] + e[0]["refused"] for e in events)
    assert counted >= FLOOD - 64, events
    assert 1 <= len(events) <= 3, events  # a burst straddles at most a window or two
