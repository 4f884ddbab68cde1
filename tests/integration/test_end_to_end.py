"""The whole mesh from `sidecar up`: a synthetic chest CT in, its nodule seen through the gateway.

Also: SIGTERM leaves no child process behind, and a restart on the same data dir keeps the data.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from sidecar_app.runtime.supervisor import DEFAULT_PORTS
from tests.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SIDECAR = [sys.executable, "-m", "sidecar_app.cli"]
# Every port `sidecar up` opens gets a free one (the metrics and HL7 ports too): the test
# never binds a default port that something else on the machine may hold.
PORT_NAMES = tuple(DEFAULT_PORTS)


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = set(), [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Up:
    def __init__(self, data_dir: Path, ports: dict[str, int]) -> None:
        self.data_dir = data_dir
        self.ports = ports
        flags = [f"--{n}-port={p}" for n, p in ports.items()]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
        self.log = (data_dir.parent / f"up-{time.time_ns()}.log").open("wb")
        self.proc = subprocess.Popen(
            [*SIDECAR, "up", "--data-dir", str(data_dir), *flags],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    "sidecar up exited: " + Path(self.log.name).read_text()[-3000:]
                )
            if "Review UI: http://127.0.0.1" in Path(self.log.name).read_text():
                return
            time.sleep(0.5)
        raise AssertionError("sidecar up not ready: " + Path(self.log.name).read_text()[-3000:])

    def terminate(self) -> set[int]:
        tree = _descendants(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(90)
        return tree


def _login(base: str, user: str, password: str) -> dict[str, str]:
    r = httpx.post(f"{base}/api/v1/auth/login", json={"username": user, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_chest_ct_end_to_end(tmp_path: Path) -> None:
    from sidecar_synth import generate

    truth = generate("chest-ct", tmp_path / "study", seed=11)
    assert truth.lesions, "the synthetic study must contain a nodule"
    ports = {name: free_port() for name in PORT_NAMES}
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    admin = ["--data-dir", str(data_dir)]
    subprocess.run(
        [*SIDECAR, "facility", "add", "general", "--ae-title", "GENERAL", *admin],
        check=True,
        env=env,
    )
    subprocess.run(
        [
            *SIDECAR,
            "user",
            "add",
            "rad",
            "--role",
            "radiologist",
            "--facility",
            "general",
            "--password-stdin",
            *admin,
        ],
        input=b"correct horse battery\n",
        check=True,
        env=env,
    )

    up = Up(data_dir, ports)
    try:
        up.wait_ready()
        assert httpx.get(f"{up.base}/healthz").status_code == 200
        headers = _login(up.base, "rad", "correct horse battery")
        assert httpx.get(f"{up.base}/api/v1/studies").status_code == 401
        sent = subprocess.run(
            [
                *SIDECAR,
                "ingest",
                str(tmp_path / "study"),
                "--facility",
                "general",
                "--target",
                f"127.0.0.1:{ports['ingest']}",
                "--complete",
                *admin,  # the operator credential `sidecar up` made in that data dir
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        acknowledged = time.monotonic()

        study = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            r = httpx.get(
                f"{up.base}/api/v1/studies",
                params={"accession": truth.accession_number},
                headers=headers,
            )
            assert r.status_code == 200, r.text
            studies = r.json()["studies"]
            if studies and studies[0]["state"] in (
                "ready_for_review",
                "ai_failed",
                "ineligible",
                "preprocess_failed",
            ):
                study = studies[0]
                break
            time.sleep(0.5)
        visible_after = time.monotonic() - acknowledged
        assert study is not None, "study never became ready"
        assert study["state"] == "ready_for_review", study
        assert study["eligibility"]["eligible"] is True
        detail = httpx.get(f"{up.base}/api/v1/studies/{study['id']}", headers=headers).json()
        states = [h["state"] for h in detail["state_history"]]
        assert states == ["received", "processed", "ai_complete", "ready_for_review"]
        for _ in range(120):  # display assets follow the model input, off the critical path
            if detail["series"][0]["thumbnail_url"]:
                break
            time.sleep(0.5)
            detail = httpx.get(f"{up.base}/api/v1/studies/{study['id']}",
                               headers=headers).json()
        assert detail["series"][0]["thumbnail_url"]
        thumb = httpx.get(up.base + detail["series"][0]["thumbnail_url"], headers=headers)
        assert thumb.status_code == 200 and thumb.content[:4] == b"\x89PNG"

        findings = httpx.get(
            f"{up.base}/api/v1/studies/{study['id']}/findings", headers=headers
        ).json()["findings"]
        lesion = truth.lesions[0]
        near = [
            f
            for f in findings
            if f["center_mm"]
            and np.linalg.norm(np.array(f["center_mm"]) - np.array(lesion.center_mm))
            <= max(lesion.diameter_mm, 5)
        ]
        assert near, f"no finding near the nodule at {lesion.center_mm}: {findings}"
        best = near[0]
        assert best["sop_instance_uid"] == lesion.sop_instance_uid
        assert best["model"]["name"] == "chest_ct_nodules" and best["model"]["version"]
        x0, y0, x1, y1 = best["bbox_px"]
        assert x0 <= lesion.center_voxel[0] <= x1 and y0 <= lesion.center_voxel[1] <= y1
        assert abs(best["slice_index"] - lesion.center_voxel[2]) <= 1.0
        series = next(s for s in detail["series"] if s["id"] == best["series_id"])
        overlay_url = series["overlay_url_template"].format(slice=best["slice_index"],
                                                            preset="lung")
        for _ in range(60):  # overlays are drawn by a job after ready_for_review
            overlay = httpx.get(up.base + overlay_url, headers=headers)
            if overlay.status_code == 200:
                break
            time.sleep(0.5)
        assert overlay.status_code == 200 and overlay.content[:4] == b"\x89PNG"
        audit = httpx.get(f"{up.base}/api/v1/studies/{study['id']}/audit", headers=headers).json()[
            "events"
        ]
        types = {e["type"] for e in audit}
        assert {"study.received", "study.state_changed", "ai_run.completed"} <= types
        (tmp_path / "e2e-latency.json").write_text(json.dumps({"seconds": visible_after}))
    finally:
        tree = up.terminate()
    assert up.proc.returncode == 0
    time.sleep(1.0)
    assert tree, "sidecar up had no children?"
    assert not [p for p in tree if _alive(p)], "children left behind after SIGTERM"

    again = Up(data_dir, ports)
    try:
        again.wait_ready()
        headers = _login(again.base, "rad", "correct horse battery")
        r = httpx.get(
            f"{again.base}/api/v1/studies",
            params={"accession": truth.accession_number},
            headers=headers,
        )
        assert [s["id"] for s in r.json()["studies"]] == [study["id"]]
    finally:
        again.terminate()
