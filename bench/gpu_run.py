"""GPU run of the end-to-end benchmark: Triton with KIND_GPU instances, then bench.end_to_end.

Run through ``bench/gpu.sh`` (it checks for a GPU first). Copies the model repository with
``deploy/triton/select_kind.py --kind gpu``, starts the embedded tritonserver on it (free
loopback ports), waits until the three reference models are ready, runs
``python -m bench.end_to_end --triton-url ...`` against it (`sidecar up` with
SIDECAR_TRITON_URL, as an operator with a GPU server runs it) and stops Triton again.

``--smoke`` (also ``bench/gpu.sh --smoke``, which then needs no GPU): the same path with
``--kind cpu`` instances and ``bench.end_to_end --smoke``, so a machine without a GPU checks
everything but the GPU itself.
"""

from __future__ import annotations

import argparse
import shutil
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
    parser.add_argument("--kind", choices=["gpu", "cpu"], default="gpu",
                        help="instance kind of the models (cpu: the path without a GPU)")
    parser.add_argument("--smoke", action="store_true",
                        help="--kind cpu and the end-to-end bench's smallest size")
    parser.add_argument("--keep", action="store_true",
                        help="keep the model repository copy and Triton's log")
    args = parser.parse_args()
    if args.smoke:
        args.kind = "cpu"

    import tritonclient.grpc as grpcclient

    from sidecar_app.runtime.embedded import start_triton, stop_process
    from tests.servers import free_port

    work = Path(tempfile.mkdtemp(prefix="sidecar-gpu-"))
    subprocess.run([sys.executable, str(REPO / "deploy/triton/select_kind.py"), "--kind", args.kind,
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
                print(log.read_text(errors="replace")[-4000:])  # the folder goes at the end
                raise SystemExit(f"the KIND_{args.kind.upper()} models did not become ready "
                                 "(log above)")
            time.sleep(1)
        client.close()
        print(f"triton with KIND_{args.kind.upper()} instances ready in "
              f"{time.monotonic() - t0:.1f} s (log {log}; --keep keeps it)", flush=True)
        size = ["--smoke"] if args.smoke else ["--slices", str(args.slices), "--repeat",
                                               str(args.repeat), "--modes", args.modes]
        return subprocess.run([sys.executable, "-m", "bench.end_to_end", *size,
                               "--triton-url", f"127.0.0.1:{grpc_port}"], cwd=REPO).returncode
    finally:
        stop_process(triton)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
