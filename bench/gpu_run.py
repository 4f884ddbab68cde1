"""GPU run of the end-to-end benchmark: Triton with KIND_GPU instances, then bench.end_to_end.

Run through ``bench/gpu.sh`` (it checks for a GPU first). Copies the model repository with
``deploy/triton/select_kind.py --kind gpu``, starts the embedded tritonserver on it (free
loopback ports), waits until the three reference models are ready, runs
``python -m bench.end_to_end --triton-url ...`` against it and stops Triton again.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = ("chest_ct_nodules", "mammo_masses", "brain_mr_lesions")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--modes", default="complete")
    args = parser.parse_args()

    import tritonclient.grpc as grpcclient

    from sidecar_app.runtime.embedded import start_triton, stop_process
    from tests.servers import free_port

    work = Path(tempfile.mkdtemp(prefix="sidecar-gpu-"))
    subprocess.run([sys.executable, str(REPO / "deploy/triton/select_kind.py"), "--kind", "gpu",
                    "--out", str(work / "models")], check=True)
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    log = work / "tritonserver.log"
    t0 = time.monotonic()
    triton = start_triton(work / "models", grpc_port, http_port, metrics_port, log, timeout=180)
    try:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        deadline = time.monotonic() + 180
        while not all(client.is_model_ready(m) for m in MODELS):
            if time.monotonic() > deadline or triton.poll() is not None:
                print(log.read_text(errors="replace")[-4000:])
                raise SystemExit("the KIND_GPU models did not become ready (log above)")
            time.sleep(1)
        client.close()
        print(f"triton with KIND_GPU instances ready in {time.monotonic() - t0:.1f} s "
              f"(log {log})", flush=True)
        return subprocess.run([sys.executable, "-m", "bench.end_to_end", "--slices",
                               str(args.slices), "--repeat", str(args.repeat), "--modes",
                               args.modes, "--triton-url", f"127.0.0.1:{grpc_port}"],
                              cwd=REPO).returncode
    finally:
        stop_process(triton)


if __name__ == "__main__":
    raise SystemExit(main())
