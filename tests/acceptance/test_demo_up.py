"""`sidecar demo`, the README's first command: the mesh, the three synthetic studies through to
findings, the review URL and a login; Ctrl-C stops everything; a restart keeps the data."""

from __future__ import annotations

import re
import signal
import socket

import pytest

from tests.acceptance.stack import DemoStack, Stack, run_cli

LOGIN = re.compile(r"Log in as '(\w+)' with password '([^']+)'")
STUDY = re.compile(r"^\s+(\w+) study ([\d.]+): (\w+), (\d+) findings$", re.M)


@pytest.fixture(scope="module")
def demo(shared_demo: DemoStack) -> DemoStack:
    """The `sidecar demo` this module shares with test_ohif (conftest.py)."""
    return shared_demo


def login_of(demo: Stack) -> tuple[str, str]:
    found = LOGIN.search(demo.output())
    assert found, demo.output()[-2000:]
    return found.group(1), found.group(2)


def test_demo_loads_three_studies_to_findings(demo: Stack) -> None:
    out = demo.output()
    for kind in ("chest-ct", "mammo", "brain-mr"):
        assert f"loaded {kind}:" in out
    studies = STUDY.findall(out)
    assert sorted(m for m, *_ in studies) == ["CT", "MG", "MR"], out[-2000:]
    for modality, _uid, state, findings in studies:
        assert state == "ready_for_review" and int(findings) > 0, (modality, state, findings)


def test_demo_prints_the_review_url_and_a_login_that_works(demo: Stack) -> None:
    assert f"Review UI: {demo.base_url}/" in demo.output()
    username, password = login_of(demo)
    token = demo.login(username, password)
    with demo.client(token) as http:
        studies = http.get("/api/v1/studies").json()["studies"]
        page = http.get("/")
    assert sorted(s["modality"] for s in studies) == ["CT", "MG", "MR"]
    assert all(s["state"] == "ready_for_review" for s in studies)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]


def test_a_second_demo_on_the_same_ports_is_refused_in_one_line(demo: Stack) -> None:
    flags = [f"--{name}-port={port}" for name, port in demo.ports.items()]
    done = run_cli("demo", "--data-dir", str(demo.data_dir.parent / "other"), *flags, timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "already in use" in lines[0], done.stderr


def test_ctrl_c_stops_everything_and_a_restart_keeps_the_data(demo: Stack) -> None:
    """Last in the module: it stops the demo and starts it again on the same data dir."""
    username, password = login_of(demo)
    assert demo.proc is not None
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(120) == 0
    for name, port in demo.ports.items():
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"{name} still listens"
    demo.start(command="demo", timeout=540)
    assert login_of(demo) == (username, password)
    with demo.client(demo.login(username, password)) as http:
        studies = http.get("/api/v1/studies").json()["studies"]
    assert len(studies) == 3 and all(s["state"] == "ready_for_review" for s in studies)
