"""`make image-test`: the image `make image` builds (localhost/radiology-sidecar:dev) serves the
product. Its `sidecar up` runs with `buildah run --isolation chroot` (podman run cannot start
containers on these build machines: its runtimes cannot set their rlimits there), sharing this
machine's loopback, against PostgreSQL, NATS and Triton started beside it as processes, as
deploy/compose.yaml has them outside the sidecar's containers, and set up as an operator does
(docs/deployment.md, "The image"): the image's `sidecar tls init` makes the mesh (the NATS
server's certificate among it), its `nats_auth keys` the users' seeds, nats-server runs
compose's command, and the image's own `sidecar` adds the facilities and the admin. A study goes
in by C-STORE, its findings come out of the review API, the OHIF viewer of the image serves its
page and the gateway the review app's brotli assets.

No skip: a machine without buildah fails here (`make test` installs it, SYSTEM_PACKAGES)."""

from __future__ import annotations

import contextlib
import os
import re
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
from sidecar_core.messaging import permissions
from sidecar_synth import generate
from tests.acceptance.stack import PASSWORD, Stack, ae_title, stack_root
from tests.servers import free_port, nats_server_binary, postgres_server, wait_port

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


class ImageRun:
    """`buildah run --isolation chroot` of one working container of the image: the data dir and
    PostgreSQL's socket mounted at their own paths, the settings given as --env (the container
    does not inherit this machine's environment)."""

    def __init__(self, image: str, root: Path, env: dict[str, str], pg_socket: str) -> None:
        self.container = subprocess.run(["buildah", "from", "--quiet", image],
                                         capture_output=True, text=True,
                                         check=True).stdout.strip()
        self.rootfs = subprocess.run(["buildah", "mount", self.container], capture_output=True,
                                     text=True, check=True).stdout.strip()
        volumes = ["-v", f"{root}:{root}"]
        if pg_socket:
            volumes += ["-v", f"{pg_socket}:{pg_socket}"]
        self.prefix = ["buildah", "run", "--isolation", "chroot", *volumes,
                       *[a for k, v in env.items() for a in ("--env", f"{k}={v}")],
                       self.container, "--"]

    def __call__(self, *argv: str, stdin: str | None = None) -> str:
        """ARGV run in the image; its output (the test fails with it on a non-zero exit)."""
        done = subprocess.run([*self.prefix, *argv], input=stdin, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, f"{argv}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        return done.stdout

    def close(self) -> None:
        for pid in _processes_in(self.rootfs):  # what the container's SIGTERM left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        time.sleep(2)
        subprocess.run(["buildah", "rm", self.container], capture_output=True)


def external_nats(data: Path, nkeys: dict[str, str], store: Path, log: Path
                  ) -> tuple[subprocess.Popen[bytes], str]:
    """nats-server as deploy/compose.yaml runs it: the generated users' table
    (deploy/nats/sidecar-users.conf) with the users' public keys in its environment, TLS with
    the mesh's `nats` certificate and a client certificate of the mesh CA required, JetStream."""
    port = free_port()
    tls = data / "tls"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(REPO / "deploy" / "nats" / "sidecar-users.conf"),
             "--tlsverify", "--tlscert", str(tls / "nats.crt"), "--tlskey", str(tls / "nats.key"),
             "--tlscacert", str(tls / "ca.crt"), "-js", "-sd", str(store),
             "-a", "127.0.0.1", "-p", str(port)],
            env={"PATH": os.environ.get("PATH", ""), **nkeys}, stdout=out,
            stderr=subprocess.STDOUT)
    wait_port(port)
    return proc, f"nats://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def stack(image: str) -> Iterator[Stack]:
    """The image's `sidecar up` on an external PostgreSQL, NATS and Triton, set up with the
    operator's commands of docs/deployment.md ("The image"), run in the image itself."""
    with stack_root("sidecar-image-") as root, postgres_server() as pg_url:
        os.chmod(root, 0o755)
        data = root / "data"
        data.mkdir()
        # The image runs as its user 10001: the data dir is its own.
        os.chown(data, IMAGE_UID, IMAGE_UID)
        pg_socket = pg_url.split("host=")[-1].split("&")[0] if "host=" in pg_url else ""
        if pg_socket:  # PostgreSQL's socket: reachable (traverse only) by the image's user
            for folder in (Path(pg_socket), Path(pg_socket).parent):
                folder.chmod(folder.stat().st_mode | 0o011)
        triton_ports = [free_port() for _ in range(3)]
        triton = start_triton(MODELS, *triton_ports, root / "triton.log")
        env = {"SIDECAR_DATABASE_URL": pg_url,
               "SIDECAR_TRITON_URL": f"127.0.0.1:{triton_ports[0]}"}
        setup = ImageRun(image, root, env, pg_socket)
        nats = None
        run = None
        try:
            # The mesh CA and every certificate (the NATS server's among them), then each
            # process's nkey seed where `sidecar up` reads them (DATA_DIR/nats-auth).
            setup("sidecar", "tls", "init", "--data-dir", str(data))
            printed = setup("python", "-m", "sidecar_core.messaging.nats_auth", "keys",
                            str(data / "nats-auth"))
            nkeys = dict(line.split("=", 1) for line in printed.split() if "=" in line)
            assert set(nkeys) == {f"SIDECAR_NKEY_{u.upper()}" for u in permissions.USERS}
            store = root / "nats"
            store.mkdir()
            nats, nats_url = external_nats(data, nkeys, store, root / "nats.log")
            env["SIDECAR_NATS_URL"] = nats_url
            run = ImageRun(image, root, env, pg_socket)
            # The README's admin commands, by the image's own `sidecar`.
            run("sidecar", "migrate", "--data-dir", str(data))
            for name in ("acc_north", "acc_south"):
                run("sidecar", "facility", "add", name, "--ae-title", ae_title(name),
                    "--data-dir", str(data))
            stack = Stack(data, ports={name: free_port() for name in DEFAULT_PORTS}, env=env)
            run("sidecar", "user", "add", stack.admin, "--role", "admin", "--password-stdin",
                "--data-dir", str(data), stdin=PASSWORD + "\n")
            original = bench.stack.SIDECAR
            bench.stack.SIDECAR = [*run.prefix, "sidecar"]  # Stack.start: `sidecar up` in it
            try:
                stack.start(timeout=600)
                yield stack
            finally:
                bench.stack.SIDECAR = original
                stack.stop()
        finally:
            for container in (run, setup):
                if container is not None:
                    container.close()
            triton.terminate()
            triton.wait(30)
            if nats is not None:
                nats.terminate()
                nats.wait(30)


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
    page = httpx.get(f"http://127.0.0.1:{stack.ports['viewer']}/", timeout=30)
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert "app-config.js" in page.text or "app.bundle" in page.text, page.text[:500]
    app = httpx.get(f"{stack.base_url}/", timeout=30)  # the review app built in the image
    assert app.status_code == 200 and "/static/app/" in app.text, app.text[:500]
    # Its build's precompressed assets are in the image: brotli to a client that takes it.
    script = re.search(r'src="(/static/app/assets/[^"]+\.js)"', app.text)
    assert script, app.text[:500]
    raw = httpx.get(f"{stack.base_url}{script[1]}", timeout=30,
                    headers={"Accept-Encoding": "identity"})
    packed = httpx.get(f"{stack.base_url}{script[1]}", timeout=30,
                       headers={"Accept-Encoding": "br"})
    assert packed.headers.get("content-encoding") == "br", packed.headers
    assert packed.content == raw.content  # decoded by httpx (brotli installed)
    assert int(packed.headers["content-length"]) < len(raw.content) / 2
