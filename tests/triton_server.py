"""Starts and stops a real tritonserver (from the nvidia-pytriton wheel) on free loopback ports.

How the python backend finds numpy: its stub embeds the system libpython3.11 and runs in
isolated mode (PYTHONPATH and PYTHONHOME are ignored). Its interpreter locates itself by
searching PATH for ``python3``; when that is a venv's ``bin/python3``, the venv's pyvenv.cfg
makes the venv's site-packages (numpy<2) the stub's. So the server is started with this
interpreter's venv ``bin`` first on PATH. Without it the stub
gets whatever python3 comes first (here: one without numpy, so no model loads); a venv with
numpy 2 would load but return empty outputs. tests/triton_repo/python_env_probe reports what
the stub really imports.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from bench.stack import free_port
from sidecar_app.runtime.embedded import prepare_triton, triton_env

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_MODELS = REPO_ROOT / "deploy" / "triton" / "models"
TEST_MODELS = REPO_ROOT / "tests" / "triton_repo"
_LIVE: set[TritonServer] = set()


def server_environment() -> dict[str, str]:
    """Environment in which the python backend stub imports this venv's packages."""
    return triton_env()


def build_model_repository(
    dest: Path, include_test_models: bool = True, models: Iterable[str] | None = None
) -> Path:
    """Copies the reference models (and the test-only ones) into a fresh repository at dest."""
    dest.mkdir(parents=True, exist_ok=True)
    sources = [REFERENCE_MODELS] + ([TEST_MODELS] if include_test_models else [])
    wanted = set(models) if models is not None else None
    for root in sources:
        for model_dir in sorted(p for p in root.iterdir() if (p / "config.pbtxt").exists()):
            if wanted is None or model_dir.name in wanted:
                shutil.copytree(
                    model_dir,
                    dest / model_dir.name,
                    ignore=shutil.ignore_patterns("__pycache__"),
                    dirs_exist_ok=True,
                )
    return dest




# Exec'd through a tiny launcher that asks the kernel to SIGKILL the server when the test
# process dies, even by SIGKILL (PR_SET_PDEATHSIG survives exec; preexec_fn is thread-unsafe).
_LAUNCHER = (
    "import ctypes, os, sys; ctypes.CDLL(None).prctl(1, 9); os.execv(sys.argv[1], sys.argv[1:])"
)


class TritonServer:
    """A tritonserver process: `with TritonServer(repo) as server: server.grpc_url`.

    stop() and start() keep the same ports, so a test can take Triton away mid-run and bring
    it back. The process (and its python stubs) is killed at interpreter exit at the latest.
    """

    def __init__(
        self,
        model_repository: Path | str,
        startup_timeout: float = 90.0,
        log_path: Path | str | None = None,
        extra_args: Iterable[str] = (),
    ) -> None:
        self.model_repository = Path(model_repository)
        self.startup_timeout = startup_timeout
        self._own_log = log_path is None  # a temporary log, removed after a clean exit
        if log_path is None:
            handle, log_path = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(handle)
        self.log_path = Path(log_path)
        self.extra_args = list(extra_args)
        self.grpc_port = self.http_port = self.metrics_port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def client(self):  # -> tritonclient.grpc.InferenceServerClient
        import tritonclient.grpc as grpcclient

        return grpcclient.InferenceServerClient(self.grpc_url)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def start(self) -> None:
        if self.running:
            return
        home = prepare_triton()  # the runtime's: copies the python backend stub once
        if not self.grpc_port:
            self.grpc_port, self.http_port, self.metrics_port = (free_port() for _ in range(3))
        command = [
            sys.executable,
            "-I",
            "-S",
            "-c",
            _LAUNCHER,
            str(home / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={home / 'backends'}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--exit-timeout-secs=5",
            *self.extra_args,
        ]
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=server_environment(),
                start_new_session=True,
            )
        _LIVE.add(self)
        try:
            self._wait_ready()
        except Exception:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"tritonserver exited during startup:\n{self.log_tail()}")
            with contextlib.suppress(Exception):
                with socket.create_connection(("127.0.0.1", self.grpc_port), timeout=0.5):
                    pass
                client = self.client()  # a fresh channel: no reconnect back-off
                try:
                    if client.is_server_ready():
                        return
                finally:
                    client.close()
            time.sleep(0.2)
        raise TimeoutError(f"tritonserver not ready in {self.startup_timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        process, self._process = self._process, None
        _LIVE.discard(self)
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # stubs left behind in the group
            os.killpg(process.pid, signal.SIGKILL)

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        self.stop()
        if self._own_log and exc_type is None:
            self.log_path.unlink(missing_ok=True)


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop(timeout=5)


def infer_reference_model(client, model_name: str, model_input) -> dict:
    """Runs a reference model on a ModelInput as the dispatcher does; returns its outputs.

    chest_ct_nodules / brain_mr_lesions get the whole volume; mammo_masses gets one request per
    image, merged with normalizer_svc.builtin.mammo_masses.merge_view_outputs.
    """
    import numpy as np
    import tritonclient.grpc as grpcclient

    from normalizer_svc.builtin.mammo_masses import merge_view_outputs

    def call(inputs: dict, names: list[str]) -> dict:
        tensors = []
        for name, array in inputs.items():
            tensor = grpcclient.InferInput(name, list(array.shape), "FP32")
            tensor.set_data_from_numpy(np.ascontiguousarray(array, dtype=np.float32))
            tensors.append(tensor)
        outputs = [grpcclient.InferRequestedOutput(name) for name in names]
        result = client.infer(model_name, tensors, outputs=outputs)
        return {name: result.as_numpy(name) for name in names}

    spacing = model_input.spacing_zyx
    if model_name == "chest_ct_nodules":
        return call({"VOLUME": model_input.volume, "SPACING": spacing}, ["BOXES", "SCORES"])
    if model_name == "brain_mr_lesions":
        return call({"VOLUME": model_input.volume, "SPACING": spacing}, ["MASK"])
    if model_name == "mammo_masses":
        return merge_view_outputs(
            [
                call({"IMAGE": image, "SPACING": spacing[1:]}, ["BOXES", "SCORES", "SUSPICION"])
                for image in model_input.volume
            ]
        )
    raise ValueError(f"no reference model named {model_name!r}")
