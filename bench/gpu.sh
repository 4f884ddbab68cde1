#!/usr/bin/env bash
# One prepared GPU check: Triton with KIND_GPU instances (deploy/triton/select_kind.py --kind gpu)
# and the end-to-end benchmark against it, figures printed within a few minutes.
#   bench/gpu.sh [--slices 300] [--repeat 2] [--modes complete]
# Needs an NVIDIA GPU with its driver (nvidia-smi) and this repository's .venv (make install).
#   bench/gpu.sh --smoke    the same path with KIND_CPU instances, smallest size, no GPU needed
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
if [[ " $* " == *" --smoke "* ]]; then
    exec "$PYTHON" -m bench.gpu_run "$@"
fi
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "bench/gpu.sh: no NVIDIA GPU visible (nvidia-smi -L failed)" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "CPUs: $(nproc); load: $(cut -d' ' -f1-3 /proc/loadavg)"
exec "$PYTHON" -m bench.gpu_run "$@"
