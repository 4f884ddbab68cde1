"""`make image-test`: the image `make image` builds (localhost/radiology-sidecar:dev) serves the
product. Its `sidecar up` runs with `buildah run --isolation chroot` (podman run cannot start
containers on these machines, PLATFORM.md), sharing this machine's loopback, against PostgreSQL,
NATS and Triton started beside it as processes, as deploy/compose.yaml has them outside the
sidecar's containers. A study goes in, its findings come out of the review API, and the OHIF
viewer of the image serves its page.

No skip: a machine without buildah fails here (`make test` installs it, SYSTEM_PACKAGES)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import bench.stack
from sidecar_app.runtime.embedded import start_triton
from sidecar_app.runtime.supervisor import DEFAULT_PORTS
from sidecar_synth import generate
from tests.acceptance.stack import PASSWORD, Stack, ae_title, stack_root
from tests.servers import NatsServer, free_port, postgres_server

pytestmark = [pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(3000)]

REPO = Path(__file__).resolve().parents[2]
TAG = os.environ.get("IMAGE_TAG", "localhost/radiology-sidecar:dev")
MODELS = REPO / "deploy" / "triton" / "models"
IMAGE_UID = 10001


@pytest.fixture(scope="module")
def image() -> str:
    assert shutil.which("buildah"), "buildah missing: `make system-deps` installs it"
    done = subprocess.run(["bash", str(REPO / "scripts" / "image.sh")], capture_output=True,
                          text=True, timeout=2700, env={**os.environ, "IMAGE_TAG": TAG})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return TAG


def _processes_in(rootfs: str) -> list[int]:
    """The processes running chrooted in a container's root file system (what `buildah run`
    started there), to stop any its SIGTERM left behind."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "root") == rootfs:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.fixture(scope="module")
def stack(image: str) -> Iterator[Stack]:
    with stack_root("sidecar-image-") as root, postgres_server() as pg_url:
        os.chmod(root, 0o755)
        nats = NatsServer()
        nats.start()
        triton_ports = [free_port() for _ in range(3)]
        triton = start_triton(MODELS, *triton_ports, root / "triton.log")
        container = subprocess.run(["buildah", "from", "--quiet", image], capture_output=True,
                                   text=True, check=True).stdout.strip()
        data = root / "data"
        data.mkdir()
        rootfs = subprocess.run(["buildah", "mount", container], capture_output=True,
                                text=True, check=True).stdout.strip()
        NatsServer.install(data)  # the mesh CA and the NATS seeds the external server knows
        env = {"SIDECAR_DATABASE_URL": pg_url, "SIDECAR_NATS_URL": nats.url,
               "SIDECAR_TRITON_URL": f"127.0.0.1:{triton_ports[0]}"}
        pg_socket = pg_url.split("host=")[-1].split("&")[0] if "host=" in pg_url else ""
        volumes = ["-v", f"{root}:{root}"]
        if pg_socket:  # PostgreSQL's socket: reachable (traverse only) by the image's user
            for folder in (Path(pg_socket), Path(pg_socket).parent):
                folder.chmod(folder.stat().st_mode | 0o011)
            volumes += ["-v", f"{pg_socket}:{pg_socket}"]
        run = ["buildah", "run", "--isolation", "chroot", *volumes,
               *[a for k, v in env.items() for a in ("--env", f"{k}={v}")], container, "--",
               "sidecar"]
        stack = Stack(data, ports={name: free_port() for name in DEFAULT_PORTS}, env=env)
        original = bench.stack.SIDECAR
        bench.stack.SIDECAR = run  # Stack.start runs `sidecar up` in the image
        try:
            done = stack.cli("migrate")
            assert done.returncode == 0, done.stderr
            for name in (stack.north, stack.south):
                done = stack.cli("facility", "add", name, "--ae-title", ae_title(name))
                assert done.returncode == 0, done.stderr
            done = stack.cli("user", "add", stack.admin, "--role", "admin", "--password-stdin",
                             stdin=PASSWORD + "\n")
            assert done.returncode == 0, done.stderr
            # The image runs as its user 10001: the data dir (made above as root) is its own.
            subprocess.run(["chown", "-R", f"{IMAGE_UID}:{IMAGE_UID}", str(root)], check=True)
            stack.start(timeout=600)
            yield stack
        finally:
            bench.stack.SIDECAR = original
            stack.stop()
            for pid in _processes_in(rootfs):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            time.sleep(2)
            subprocess.run(["buildah", "rm", container], capture_output=True)
            triton.terminate()
            triton.wait(30)
            nats.close()


def _wait(what: str, probe, timeout: float = 300.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"no {what} in {timeout:.0f} s")


def test_the_image_serves_a_study_from_c_store_to_findings_and_ohif(
        stack: Stack, tmp_path: Path) -> None:
    import pydicom

    folder = tmp_path / "chest"
    generate("chest-ct", folder, 24, slices=48, nodules=2)
    files = sorted(str(p) for p in folder.rglob("*.dcm"))
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    # C-STORE from dcmtk, as a modality or PACS sends, to the image's DICOM port.
    sent = subprocess.run(["storescu", "-aet", ae_title(stack.north), "-aec", "SIDECAR",
                           "127.0.0.1", str(stack.ports["dicom"]), *files],
                          capture_output=True, text=True, timeout=300)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    client = stack.client()

    def with_findings():  # type: ignore[no-untyped-def]
        rows = client.get("/api/v1/studies").json()["studies"]
        row = next((r for r in rows if r["study_instance_uid"] == first.StudyInstanceUID), None)
        return row if row and row["ai_status"] == "findings" else None

    row = _wait("AI findings", with_findings, timeout=600)
    findings = client.get(f"/api/v1/studies/{row['id']}/findings").json()["findings"]
    assert findings and findings[0]["confidence"] > 0
    page = httpx.get(f"{stack.viewer_url}/", timeout=30)
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert "app-config.js" in page.text or "app.bundle" in page.text, page.text[:500]
    app = httpx.get(f"{stack.base_url}/", timeout=30)  # the review app built in the image
    assert app.status_code == 200 and "/static/app/" in app.text, app.text[:500]
