"""`sidecar up` sends its audit to the hospital's audit repository (IHE ATNA): the shared HTTPS
stack runs with SIDECAR_AUDIT_SYSLOG=tls://127.0.0.1:PORT (trusting its web CA), and this
module starts a real rsyslog there with TLS. Until then the repository is down, so everything
audited so far waited in the database; once it listens, the backlog and a new login and a
study's arrival (dcmtk's storescu) arrive as messages the PS3.15 A.5.1 schema accepts."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import httpx
import pydicom
import pytest

from tests import atna_schema, rsyslog
from tests.acceptance.stack import run_cli
from tests.security.conftest import EdgeStack

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]
STORESCU = "/usr/bin/storescu"  # dcmtk's, not the venv's
HEADER = re.compile(rb"^<85>1 \S+ \S+ sidecar \d+ IHE\+RFC-3881 - \xef\xbb\xbf")


def _messages(repo: rsyslog.Repository) -> list[atna_schema.ET.Element]:
    found = []
    for line in repo.lines():
        head = HEADER.match(line)
        assert head is not None, line[:160]
        found.append(atna_schema.validate(line[head.end():]))
    return found


def _has(messages: list[atna_schema.ET.Element], event_id: str, **attrs: str) -> bool:
    for m in messages:
        if m.find("EventIdentification/EventID").attrib["csd-code"] != event_id:  # type: ignore[union-attr]
            continue
        found = {a.attrib.get(k) for a in m.iter() for k in attrs}
        if all(v in found for v in attrs.values()):
            return True
    return False


def test_login_and_study_arrival_reach_the_repository_over_tls(edge_stack: EdgeStack,
                                                               tmp_path: Path) -> None:
    stack = edge_stack
    with rsyslog.rsyslog(tmp_path / "repo", port=stack.audit_syslog_port,
                         tls=(stack.web_ca, stack.web_cert, stack.web_key)) as repo:
        stack.login()
        made = run_cli("synth", str(tmp_path / "study"), "--kind", "brain-mr", "--seed", "11")
        assert made.returncode == 0, made.stderr
        files = sorted((tmp_path / "study").rglob("*.dcm"))
        study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        sent = subprocess.run([STORESCU, "-aet", stack.north_ae, "-aec", "SIDECAR",
                               "127.0.0.1", str(stack.ports["dicom"]), *map(str, files)],
                              capture_output=True, text=True, timeout=120)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        deadline, messages = time.monotonic() + 120, []
        while time.monotonic() < deadline:
            messages = _messages(repo)
            if _has(messages, "110104", ParticipantObjectID=study) \
                    and _has(messages, "110114", UserID=stack.admin):
                break
            time.sleep(1)
        assert _has(messages, "110114", UserID=stack.admin), len(messages)
        assert _has(messages, "110104", ParticipantObjectID=study), len(messages)
        # the whole history went, once each: the lines received are the events the cursor
        # passed (read when the sender is idle: backlog 0 on the workflow metrics port)
        url = f"http://127.0.0.1:{stack.ports['workflow-metrics']}/metrics"
        received = delivered = -1
        for _ in range(60):
            if re.search(r"^sidecar_audit_syslog_backlog 0\.0$", httpx.get(url).text,
                         re.MULTILINE):
                delivered = stack.sql("SELECT coalesce(sum(pos), 0) FROM atna_cursor")[0][0]
                received = len(_messages(repo))
                if received == delivered:
                    break
            time.sleep(1)
        assert received == delivered > 0
        assert delivered <= stack.sql("SELECT count(*) FROM audit_events")[0][0]
