"""Outbound rules and secrets at rest through `sidecar up` (no SIDECAR_EGRESS_ALLOW): a metadata
or loopback destination is refused when it is saved (CLI and admin API) and, stored anyway, when
the handoff calls it; secret settings are sealed in the database under DATA_DIR/keys and no
door shows them; a webhook's reply never reaches the audit."""

from __future__ import annotations

import socket
import stat
import time
from pathlib import Path

import pytest
from fastapi import FastAPI, Request, Response

from tests.acceptance.stack import clean_env, run_cli
from tests.helpers import ct_slice, to_bytes
from tests.http_peers import serve
from tests.security.conftest import EdgeStack
from tests.servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]

MARKER = "EGRESS-MARKER-5d0c"
SENDER = "EGRESS_RIS"


def _refused(done: object, *words: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr  # type: ignore[attr-defined]
    err = done.stderr  # type: ignore[attr-defined]
    assert "INVALID_FACILITY_SETTING" in err, err
    for word in words:
        assert word in err, err


def test_metadata_and_loopback_destinations_are_refused_when_saved(
        edge_stack: EdgeStack) -> None:
    s = edge_stack
    _refused(s.cli("facility", "set", s.north, "--handoff-url", "http://169.254.169.254/x"),
             "handoff_url", "cloud metadata", "SIDECAR_EGRESS_ALLOW")
    port = free_port()
    _refused(s.cli("facility", "set", s.north, "--llm-url", f"https://127.0.0.1:{port}/v1"),
             "llm_base_url", "loopback")
    _refused(s.cli("facility", "set", s.north, "--handoff-url", f"https://localhost:{port}/h"),
             "localhost resolves to")
    _refused(s.cli("facility", "set", s.north, "--pacs", f"PACS@127.0.0.1:{port}"),
             "pacs_host", "loopback")
    with s.client() as http:
        reply = http.patch(f"/api/v1/admin/facilities/{s.north}",
                           json={"settings": {"handoff_url": "https://[fe80::1]/hook"}})
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert error["reason"] == "INVALID_FACILITY_SETTING"
        assert "link-local" in error["message"]
    stored = s.sql("select handoff_url, llm_base_url, pacs_host from facilities where name=%s",
                   s.north)
    assert stored == [(None, None, None)], "nothing refused was stored"


def test_secrets_are_sealed_at_rest_and_never_shown(edge_stack: EdgeStack) -> None:
    s = edge_stack
    handoff_secret, api_key = f"{MARKER}-handoff", f"{MARKER}-llm-key"
    done = s.cli("facility", "set", s.south, "--handoff-secret-stdin",
                 stdin=handoff_secret + "\n")
    assert done.returncode == 0, done.stderr
    assert MARKER not in done.stdout + done.stderr
    with s.client() as http:
        reply = http.patch(f"/api/v1/admin/facilities/{s.south}",
                           json={"settings": {"llm_api_key": api_key}})
        assert reply.status_code == 200, reply.text
        assert MARKER not in reply.text
        listed = http.get("/api/v1/admin/facilities")
        assert listed.status_code == 200 and MARKER not in listed.text
        assert "sealed:v1" not in listed.text
        mine = next(f for f in listed.json()["facilities"] if f["name"] == s.south)
        assert mine["handoff_secret"] is True and mine["llm_api_key"] is True
    shown = s.cli("facility", "list")
    assert shown.returncode == 0 and s.south in shown.stdout and MARKER not in shown.stdout
    [(secret, key)] = s.sql("select handoff_secret, llm_api_key from facilities where name=%s",
                            s.south)
    assert secret.startswith("sealed:v1:") and key.startswith("sealed:v1:")
    # no plaintext anywhere in the facilities table or the audit
    assert s.sql("select count(*) from facilities where handoff_secret like %s or "
                 "llm_api_key like %s", f"%{MARKER}%", f"%{MARKER}%") == [(0,)]
    assert s.sql("select count(*) from audit_events where context::text like %s",
                 f"%{MARKER}%") == [(0,)]
    key_file = s.data_dir / "keys" / "secrets.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    old_id = secret.split(":")[2]

    # `sidecar secrets rotate`: a new key file, every sealed value re-sealed with it, the old
    # key kept aside (0600) so that nothing becomes unreadable
    before = key_file.read_bytes()
    done = s.cli("secrets", "rotate")
    assert done.returncode == 0, done.stdout + done.stderr
    assert key_file.read_bytes() != before
    assert (s.data_dir / "keys" / "previous" / f"{old_id}.key").read_bytes() == before
    [(secret2, key2)] = s.sql("select handoff_secret, llm_api_key from facilities "
                              "where name=%s", s.south)
    new_id = secret2.split(":")[2]
    assert new_id != old_id and key2.split(":")[2] == new_id and secret2 != secret
    assert not s.sql("select name from facilities where handoff_secret like %s or "
                     "llm_api_key like %s", f"sealed:v1:{old_id}:%", f"sealed:v1:{old_id}:%")


def _mllp(port: int, message: bytes) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(b"\x0b" + message + b"\x1c\x0d")
        data = b""
        while not data.endswith(b"\x1c\x0d"):
            chunk = conn.recv(4096)
            assert chunk, "connection closed before the ACK"
            data += chunk
    return data[1:-2].decode()


def _oru(control_id: str, accession: str) -> bytes:
    return ("\r".join([
        f"MSH|^~\\&|RIS|{SENDER}|SIDECAR|SIDECAR|20240305113005||ORU^R01^ORU_R01|{control_id}"
        "|P|2.5.1",
        "PID|1||MRN-1^^^HOSP^MR||Doe^Jane",
        f"OBR|1||{accession}^RIS|71250^CT CHEST|||20240305101500|||||||||||||"
        f"RPT-{accession}||20240305113000|||F",
    ]) + "\r").encode()


def _ingest(s: EdgeStack, folder: Path, accession: str) -> None:
    folder.mkdir()
    study_uid = None
    for z in range(2):
        ds = ct_slice(study_uid=study_uid, z=float(z), accession=accession)
        study_uid = ds.StudyInstanceUID
        (folder / f"{z}.dcm").write_bytes(to_bytes(ds))
    done = run_cli("ingest", "--data-dir", str(s.data_dir), str(folder), "--facility", s.north,
                   "--target", s.address("ingest"), "--complete")
    assert done.returncode == 0, done.stdout + done.stderr


def _wait_rows(s: EdgeStack, query: str, *params: object, timeout: float = 120.0
               ) -> list[tuple[object, ...]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rows := s.sql(query, *params):
            return rows
        time.sleep(0.5)
    raise AssertionError(f"nothing for {query} {params}")


def test_a_loopback_https_webhook_stored_anyway_is_refused_at_call_time(
        edge_stack: EdgeStack, tmp_path: Path) -> None:
    """A destination that passed when it was saved may not pass now (its name resolves
    elsewhere, or the row predates the rules): the handoff checks again, sends nothing, fails
    the job and audits `security.egress_refused`."""
    s = edge_stack
    received: list[bytes] = []
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request) -> Response:
        received.append(await request.body())
        return Response(f"{MARKER} echoed", status_code=500)

    assert s.cli("facility", "set", s.north, "--hl7-sending-facility", SENDER).returncode == 0
    with serve(app, ssl_certfile=str(s.web_cert), ssl_keyfile=str(s.web_key)) as port:
        # as if saved before the rules, or resolved elsewhere when it was saved
        s.sql("update facilities set handoff_url=%s where name=%s returning name",
              f"https://localhost:{port}/hook", s.north)
        _ingest(s, tmp_path / "study", "ACC-EGRESS-1")
        _wait_rows(s, "select id from studies where accession=%s", "ACC-EGRESS-1")
        ack = _mllp(s.ports["hl7"], _oru("EGRESS-1", "ACC-EGRESS-1"))
        assert "MSA|AA|EGRESS-1" in ack, ack
        [(reason, message, context)] = _wait_rows(
            s, "select error_class, error_message, context from audit_events where "
            "type='security.egress_refused' and facility=%s", s.north)
        [(failed,)] = _wait_rows(s, "select error_message from audit_events where "
                                 "type='handoff.sync_failed' and facility=%s", s.north)
    assert reason == "EGRESS_ADDRESS_REFUSED" and "localhost resolves to" in message
    assert context["setting"] == "handoff_url"  # type: ignore[index]
    assert "refused by the egress policy" in failed
    assert not received, "nothing was sent"
    assert s.sql("select count(*) from audit_events where context::text like %s or "
                 "error_message like %s", f"%{MARKER}%", f"%{MARKER}%") == [(0,)]


@pytest.mark.parametrize("variable, value, words", [
    ("SIDECAR_EGRESS_ALLOW", "127.0.0.1,10.0.0.0/33", "SIDECAR_EGRESS_ALLOW: '10.0.0.0/33'"),
    ("SIDECAR_SECRET_KEY", "c2hvcnQ=", "SIDECAR_SECRET_KEY: 5 bytes, want 32"),
])
def test_a_bad_outbound_setting_stops_sidecar_up_in_one_line(
        edge_stack: EdgeStack, tmp_path: Path, variable: str, value: str, words: str) -> None:
    ports = [f"--{name}-port={port}" for name, port in edge_stack.ports.items()]
    refused = run_cli("up", "--data-dir", str(tmp_path / "data"), *ports,
                      env=clean_env(**{variable: value}), timeout=60)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.startswith("sidecar up: error: ") and words in refused.stderr
    assert refused.stderr.count("\n") == 1
    assert not (tmp_path / "data").exists()  # refused before anything was made
