"""Findings fast, through `sidecar up`: a study completes when its DIMSE association is released."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from sidecar_synth import generate
from tests.acceptance.stack import Stack

STORESCU = "/usr/bin/storescu"  # dcmtk's (the venv's pynetdicom scripts shadow the name)
CHEST = {"slices": 48, "rows": 192, "cols": 192, "fov_mm": 280.0}


def _wait(http: httpx.Client, check: Any, what: str, timeout: float = 180.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check(http)
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_association_release_completes_the_study(stack: Stack, tmp_path: Path) -> None:
    done = stack.cli("facility", "set", stack.north, "--completion", "association",
                     "--settle", "0.5", "--quiet-period", "3600")
    assert done.returncode == 0, done.stderr
    assert "completion=association settle=0.5s" in done.stdout
    bad = stack.cli("facility", "set", stack.north, "--settle", "-3")
    assert bad.returncode != 0
    assert "INVALID_FACILITY_SETTING: association_settle_s: must be between 0 and 60" in bad.stderr

    truth = generate("chest-ct", tmp_path / "study", 26, **CHEST)
    (tmp_path / "study" / "ground_truth.json").unlink()  # storescu sends DICOM files only
    sent = subprocess.run(
        [STORESCU, "+sd", "+r", "-aet", stack.north_ae, "-aec", "SIDECAR", "127.0.0.1",
         str(stack.ports["dicom"]), str(tmp_path / "study")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TCP_NODELAY": "1"})
    assert sent.returncode == 0, sent.stderr

    with stack.client() as http:
        def study_id(h: httpx.Client) -> str:
            found = h.get("/api/v1/studies", params={"accession": truth.accession_number})
            return str(found.json()["studies"][0]["id"]) if found.json()["studies"] else ""

        sid = _wait(http, study_id, "the study to be indexed")

        def findings(h: httpx.Client) -> list[dict[str, Any]]:
            return list(h.get(f"/api/v1/studies/{sid}/findings").json()["findings"])

        # the quiet period is an hour: only the association release can have completed it
        assert _wait(http, findings, "findings after the association release")
        events = http.get(f"/api/v1/studies/{sid}/audit").json()["events"]
        [received] = [e for e in events if e["type"] == "study.received"]
        assert received["context"]["reason"] == "association released"
        assert received["context"]["instance_count"] == CHEST["slices"]
        runs = [e for e in events if e["type"] == "ai_run.completed"]
        assert runs and runs[0]["context"]["operating_threshold"] == 0.5
        states = [h["state"] for h in http.get(f"/api/v1/studies/{sid}").json()["state_history"]]
        assert states[:4] == ["received", "processed", "ai_complete", "ready_for_review"]


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").partition("=")[::2] for item in raw if item)


def _descendants(pid: int) -> dict[int, str]:
    """pid → command line of every process below `pid`."""
    out: dict[int, str] = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        kids = {int(c) for task in Path(f"/proc/{parent}/task").glob("*")
                for c in (task / "children").read_text().split()}
        for child in kids:
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            out[child] = cmdline.replace(b"\0", b" ").decode(errors="replace")
            todo.append(child)
    return out


def test_volume_processes_keep_freed_memory(stack: Stack) -> None:
    """`sidecar up` starts the processes that handle whole volumes (preprocess worker,
    normalizer, tritonserver) with glibc told to keep freed memory, and no others."""
    assert stack.proc is not None
    procs = _descendants(stack.proc.pid)
    found = set()
    for pid, cmd in procs.items():
        name = next((n for n, marker in (("preprocess", "imaging_svc.main"),
                                         ("normalizer", "normalizer_svc.main"),
                                         ("triton", "bin/tritonserver"),
                                         ("gateway", "review_gateway.main"),
                                         ("ingest", "ingest_svc.main")) if marker in cmd), None)
        if name is None:
            continue
        found.add(name)
        env = _environ(pid)
        keeps = env.get("MALLOC_MMAP_MAX_") == "0" and "MALLOC_TRIM_THRESHOLD_" in env
        assert keeps == (name in ("preprocess", "normalizer", "triton")), (name, cmd)
        one_arena = env.get("MALLOC_ARENA_MAX") == "1"  # tritonserver's threads keep theirs
        assert one_arena == (name in ("preprocess", "normalizer")), (name, cmd)
    assert found == {"preprocess", "normalizer", "triton", "gateway", "ingest"}
