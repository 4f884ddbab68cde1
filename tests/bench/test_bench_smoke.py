"""Every bench in bench/ at its smallest size (`--smoke`), as a subprocess: a bench that breaks
fails the suite. Each must exit 0 and print its figures.

The benches that measure `sidecar up` share one, started here the way a user starts it
(bench/stack.py: fresh data dir in a temp folder, free loopback ports) and handed to each with
`--stack DATA_DIR`; each bench adds facilities and users of its own on it. The in-process
benches and the GPU bench's CPU path (`bench/gpu.sh --smoke`: Triton with KIND_CPU instances
and a `sidecar up` of its own pointed at it) need no shared stack.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.stack import Stack, sidecar_up
from tests.orthanc_peer import available as orthanc_available

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"[0-9]+(?:\.[0-9]+)?"

# bench → (needs the shared stack, a line of its figures it must print)
BENCHES: dict[str, tuple[bool, str]] = {
    "parse_header": (False, rf"header reader +{NUMBER} us +ratio +{NUMBER}x"),
    "preprocess": (False, rf"model-ready input .*= {NUMBER}x the pydicom decode floor"),
    "critical_path": (False, rf"model-ready input / pydicom decode \(CPU\): {NUMBER}x"),
    "dicomweb": (True, rf"frames/s \(6 concurrent\) +{NUMBER} +{NUMBER} +{NUMBER}x"),
    "ingest_vs_orthanc": (True, rf"sidecar +{NUMBER}/s +orthanc +{NUMBER}/s +ratio "
                                rf"sidecar/orthanc {NUMBER}"),
    "hl7_mllp": (True, rf"sidecar up: store, match, complete, queue +{NUMBER} msg/s +"
                       rf"\({NUMBER}x baseline\)"),
    "review_worklist": (True, rf"ListWorklist as a radiologist +{NUMBER} ms +"
                              rf"\({NUMBER}x baseline\)"),
    "inference": (True, rf"chest-ct +100x256x256 +1 +{NUMBER}"),
    "accuracy": (True, rf"chest_ct_nodules +1 +\d+ +\d+ +{NUMBER}"),
    "end_to_end": (True, rf"baseline: raw Triton inference .*: {NUMBER} ms"),
    "load": (True, r"exactly once: 2/2 studies with one ready_for_review transition"),
    "review": (True, rf"first_image_ms +{NUMBER} +goal"),
}
ORTHANC_BASELINE = {"dicomweb", "ingest_vs_orthanc"}  # Orthanc in a network namespace of its own


def test_every_bench_has_a_smoke_run() -> None:
    scripts = {p.stem for p in (ROOT / "bench").glob("*.py")} - {"stack", "gpu_run"}
    assert scripts == set(BENCHES), "a bench in bench/ without a smoke run here, or gone"


def run_bench(*command: str, timeout: float = 540.0) -> str:
    env = {**os.environ, "PYTHON": sys.executable}  # bench/gpu.sh's interpreter: this one
    done = subprocess.run(list(command), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert "Traceback" not in output, output[-6000:]
    return output


@pytest.mark.parametrize("name", [n for n, (stack, _) in BENCHES.items() if not stack])
def test_bench_in_process(name: str) -> None:
    output = run_bench(sys.executable, "-m", f"bench.{name}", "--smoke")
    assert re.search(BENCHES[name][1], output), output[-4000:]


@pytest.mark.slow
def test_gpu_bench_on_its_cpu_path() -> None:
    """bench/gpu.sh as a GPU machine runs it, with KIND_CPU instances: Triton from the switched
    model repository, then the end-to-end bench's smoke against it (a GPU is not needed)."""
    output = run_bench("bash", "bench/gpu.sh", "--smoke")
    assert "triton with KIND_CPU instances ready" in output, output[-4000:]
    assert re.search(BENCHES["end_to_end"][1], output), output[-4000:]


# Last in the module: the shared stack is up only while these run.
@pytest.fixture(scope="module")
def shared() -> Iterator[Stack]:
    with sidecar_up() as stack:
        yield stack


@pytest.mark.slow
@pytest.mark.parametrize("name", [
    pytest.param(n, marks=[pytest.mark.browser] if n == "review" else [])
    for n, (stack, _) in BENCHES.items() if stack])
def test_bench_on_sidecar_up(name: str, shared: Stack) -> None:
    if name in ORTHANC_BASELINE and not orthanc_available():
        pytest.skip("its Orthanc baseline needs root, unshare and Orthanc")
    output = run_bench(sys.executable, f"bench/{name}.py", "--smoke", "--stack",
                       str(shared.data_dir))
    assert re.search(BENCHES[name][1], output), output[-4000:]
