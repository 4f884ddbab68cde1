"""The reference and test-only models in a real tritonserver, on synthetic studies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from normalizer_svc.builtin import BUILTIN_NORMALISERS, ModelInput
from sidecar_synth import generate
from sidecar_synth.readback import read_study, to_npz_bytes
from tests.triton_server import TritonServer, build_model_repository, infer_reference_model

pytestmark = pytest.mark.integration

CHEST = {"slices": 60, "rows": 256, "cols": 256, "slice_spacing": 2.0, "nodules": 2}
REFERENCE = ("chest_ct_nodules", "mammo_masses", "brain_mr_lesions")


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    repo = build_model_repository(tmp_path_factory.mktemp("triton") / "models")
    with TritonServer(repo) as server:
        yield server


@pytest.fixture(scope="module")
def client(triton: TritonServer) -> Iterator[grpcclient.InferenceServerClient]:
    client = triton.client()
    yield client
    client.close()


def study(tmp_path: Path, kind: str, seed: int, **opts: object):
    truth = generate(kind, tmp_path, seed, **opts)
    return truth, ModelInput.from_npz(to_npz_bytes(read_study(tmp_path)))


def test_stub_imports_the_venv_numpy_below_2(client: grpcclient.InferenceServerClient) -> None:
    result = client.infer(
        "python_env_probe",
        [],
        outputs=[
            grpcclient.InferRequestedOutput(n) for n in ("NUMPY_VERSION", "PREFIX", "ROUND_TRIP")
        ],
    )
    version = result.as_numpy("NUMPY_VERSION")[0].decode()
    assert int(version.split(".")[0]) < 2, version
    assert version == np.__version__
    assert result.as_numpy("ROUND_TRIP").tolist() == [0.5, 1.5, 2.5, 3.5]


def test_reference_models_are_ready_with_a_version(
    client: grpcclient.InferenceServerClient,
) -> None:
    for name in REFERENCE:
        assert client.is_model_ready(name, "1")
        config = client.get_model_config(name).config
        assert config.parameters["model_version"].string_value == "reference-1.0.0"
        assert config.backend == "python"


@pytest.mark.slow
def test_chest_ct_nodules_against_ground_truth(
    client: grpcclient.InferenceServerClient, tmp_path: Path
) -> None:
    truth, model_input = study(tmp_path, "chest-ct", 41, **CHEST)
    outputs = infer_reference_model(client, "chest_ct_nodules", model_input)
    boxes, scores = outputs["BOXES"], outputs["SCORES"]
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 6
    assert boxes.shape[0] == scores.shape[0] >= 1 and boxes.nbytes == boxes.shape[0] * 24
    assert np.isfinite(boxes).all() and ((scores > 0) & (scores <= 1)).all()
    findings = BUILTIN_NORMALISERS["chest_ct_nodules"](
        model_input, outputs, "chest_ct_nodules", "reference-1.0.0"
    )
    assert len(findings) == len(truth.lesions) == 2
    for lesion in truth.lesions:
        distances = [np.linalg.norm(np.subtract(f.center_mm, lesion.center_mm)) for f in findings]
        best = findings[int(np.argmin(distances))]
        assert min(distances) <= max(lesion.diameter_mm / 2, 5.0)
        # the key slice is the nodule's centre slice, found by position (files are shuffled)
        assert best.sop_instance_uid == lesion.sop_instance_uid
        z0, _, _, z1, _, _ = best.properties["box_zyx"]
        assert z0 <= lesion.center_voxel[2] <= z1


@pytest.mark.slow
def test_mammo_masses_per_view(client: grpcclient.InferenceServerClient, tmp_path: Path) -> None:
    truth, model_input = study(tmp_path, "mammo", 2010, masses=2)
    outputs = infer_reference_model(client, "mammo_masses", model_input)
    assert outputs["SUSPICION"].shape == (4,) and outputs["SUSPICION"].dtype == np.float32
    assert outputs["BOXES"].shape[1] == 4 and outputs["BOXES"].shape[0] >= 2
    findings = BUILTIN_NORMALISERS["mammo_masses"](model_input, outputs, "mammo_masses", "1")
    for lesion in truth.lesions:
        assert any(
            f.kind == "box"
            and f.sop_instance_uid == lesion.sop_instance_uid
            and f.bbox_px[0] <= lesion.center_voxel[0] <= f.bbox_px[2]
            and f.bbox_px[1] <= lesion.center_voxel[1] <= f.bbox_px[3]
            for f in findings
        )
    assert sum(f.kind == "classification" for f in findings) == 1


@pytest.mark.slow
def test_brain_mr_lesion_mask(client: grpcclient.InferenceServerClient, tmp_path: Path) -> None:
    truth, model_input = study(tmp_path, "brain-mr", 1004, lesions=2)
    outputs = infer_reference_model(client, "brain_mr_lesions", model_input)
    mask = outputs["MASK"]
    assert mask.dtype == np.uint8 and mask.shape == model_input.volume.shape
    assert mask.nbytes == model_input.volume.size and mask.any()  # not the numpy-2 empty output
    findings = BUILTIN_NORMALISERS["brain_mr_lesions"](model_input, outputs, "b", "1")
    assert len(findings) == 2
    for lesion in truth.lesions:
        [hit] = [
            f for f in findings if np.linalg.norm(np.subtract(f.center_mm, lesion.center_mm)) < 5.0
        ]
        assert hit.measurements["volume_ml"] == pytest.approx(lesion.volume_ml, rel=0.1)


def test_negative_control_gives_well_formed_empty_outputs(
    client: grpcclient.InferenceServerClient, tmp_path: Path
) -> None:
    _, model_input = study(tmp_path, "chest-ct", 5, negative=True, slices=30)
    outputs = infer_reference_model(client, "chest_ct_nodules", model_input)
    assert outputs["BOXES"].shape == (0, 6) and outputs["SCORES"].shape == (0,)


def test_bad_input_is_an_inference_error(client: grpcclient.InferenceServerClient) -> None:
    volume = grpcclient.InferInput("VOLUME", [1, 4, 4], "FP32")
    volume.set_data_from_numpy(np.zeros((1, 4, 4), np.float32))
    spacing = grpcclient.InferInput("SPACING", [3], "FP32")
    spacing.set_data_from_numpy(np.array([1, -1, np.nan], np.float32))
    with pytest.raises(InferenceServerException, match="SPACING must be"):
        client.infer("chest_ct_nodules", [volume, spacing])


@pytest.mark.parametrize(
    ("mode", "shape"), [("empty", (0, 6)), ("misshaped", (3, 5)), ("nan", (1, 6)), ("ok", (1, 6))]
)
def test_garbage_model_modes(
    client: grpcclient.InferenceServerClient, mode: str, shape: tuple[int, int]
) -> None:
    tensor = grpcclient.InferInput("MODE", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([mode.encode()], dtype=object))
    result = client.infer("garbage_model", [tensor])
    assert result.as_numpy("BOXES").shape == shape
    assert np.isnan(result.as_numpy("BOXES")).any() == (mode == "nan")


def test_slow_model_misses_a_client_deadline(client: grpcclient.InferenceServerClient) -> None:
    seconds = grpcclient.InferInput("SECONDS", [1], "FP32")
    seconds.set_data_from_numpy(np.array([2.0], np.float32))
    with pytest.raises(InferenceServerException, match="(?i)deadline"):
        client.infer("slow_model", [seconds], client_timeout=0.3)


def test_stop_and_start_keep_the_ports(triton: TritonServer) -> None:
    port = triton.grpc_port
    triton.stop()
    assert not triton.running
    probe = grpcclient.InferenceServerClient(triton.grpc_url)
    with pytest.raises(InferenceServerException):
        probe.is_server_ready()
    probe.close()
    triton.start()
    assert triton.grpc_port == port
    again = triton.client()
    assert again.is_server_ready() and again.is_model_ready("chest_ct_nodules")
    again.close()


async def test_large_inputs_travel_through_system_shared_memory(
    triton: TritonServer, client: grpcclient.InferenceServerClient, tmp_path: Path
) -> None:
    """The normalizer's client hands a volume to Triton through a system shared-memory region:
    same outputs as over the wire, one region kept registered for the next request while the
    client is open, and none left behind in Triton or in /dev/shm once it closes."""
    from normalizer_svc.triton import TritonClient

    truth, model_input = study(tmp_path, "chest-ct", 3, **CHEST)
    inputs = {"VOLUME": model_input.volume, "SPACING": model_input.spacing_zyx}
    url = f"127.0.0.1:{triton.grpc_port}"
    before = {p.name for p in Path("/dev/shm").glob("sidecar-*")}
    async with TritonClient(url, shared_memory_min_bytes=1) as shared, \
            TritonClient(url, shared_memory_min_bytes=0) as wire:
        via_shm = await shared.infer("chest_ct_nodules", inputs, ["BOXES", "SCORES"], 60)
        via_wire = await wire.infer("chest_ct_nodules", inputs, ["BOXES", "SCORES"], 60)
        assert (shared.shm_requests, wire.shm_requests) == (1, 0)
        # a BYTES input beside a large one stays in the request (length-prefixed strings)
        mixed = await shared.infer("garbage_model", {
            "MODE": np.array([b"misshaped"], dtype=object), "VOLUME": model_input.volume},
            ["BOXES", "SCORES"], 60)
        assert shared.shm_requests == 2 and mixed["BOXES"].shape == (3, 5)
        again = await shared.infer("chest_ct_nodules", inputs, ["BOXES", "SCORES"], 60)
        np.testing.assert_array_equal(again["BOXES"], via_shm["BOXES"])
        # the three requests went through one region, still registered for the next one
        assert [name.startswith("sidecar-") for name in
                client.get_system_shared_memory_status().regions] == [True]
        assert len({p.name for p in Path("/dev/shm").glob("sidecar-*")} - before) == 1
    assert via_shm["SCORES"].size == len(truth.lesions) > 0
    for name in ("BOXES", "SCORES"):
        np.testing.assert_array_equal(via_shm[name], via_wire[name])
    assert len(client.get_system_shared_memory_status().regions) == 0
    assert {p.name for p in Path("/dev/shm").glob("sidecar-*")} == before


async def test_a_kept_region_survives_a_triton_restart(
    triton: TritonServer, client: grpcclient.InferenceServerClient, tmp_path: Path
) -> None:
    """Triton forgets registered regions when it restarts: the next request notices, sends
    again through a new region, and the answer is the same."""
    from normalizer_svc.triton import TritonClient

    _, model_input = study(tmp_path, "chest-ct", 5, **CHEST)
    inputs = {"VOLUME": model_input.volume, "SPACING": model_input.spacing_zyx}
    async with TritonClient(triton.grpc_url, shared_memory_min_bytes=1) as shared:
        first = await shared.infer("chest_ct_nodules", inputs, ["BOXES", "SCORES"], 60)
        triton.stop()
        triton.start()
        second = await shared.infer("chest_ct_nodules", inputs, ["BOXES", "SCORES"], 120)
        assert shared.shm_requests == 3  # the first, the one Triton refused, the new one
        fresh = triton.client()
        assert len(fresh.get_system_shared_memory_status().regions) == 1
    for name in ("BOXES", "SCORES"):
        np.testing.assert_array_equal(first[name], second[name])
    assert len(fresh.get_system_shared_memory_status().regions) == 0
    fresh.close()


KILLED_HOLDER = """
import os, sys, time
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import shared_memory as shm
name = f"sidecar-{os.getpid()}-killedholder"
handle = shm.create_shared_memory_region(name, "/" + name, 1 << 20)
shm.set_shared_memory_region(handle, [np.ones(1000, np.float32)])
grpcclient.InferenceServerClient(sys.argv[1]).register_system_shared_memory(
    name, "/" + name, 1 << 20)
print(name, flush=True)
time.sleep(600)
"""


def _killed_holder(url: str) -> str:
    """Runs KILLED_HOLDER until its region is registered, SIGKILLs it; the region's name."""
    import signal
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", KILLED_HOLDER, url],
                              stdout=subprocess.PIPE, text=True)
    try:
        return holder.stdout.readline().strip() if holder.stdout else ""
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


async def test_regions_of_a_killed_process_are_freed(
    triton: TritonServer, client: grpcclient.InferenceServerClient, tmp_path: Path
) -> None:
    """A normalizer killed with a region registered leaves it in /dev/shm and in Triton; the
    next client's first shared-memory request frees both (and nobody else's)."""
    import asyncio

    from normalizer_svc.triton import TritonClient

    name = await asyncio.to_thread(_killed_holder, triton.grpc_url)
    assert name.startswith("sidecar-"), name
    assert (Path("/dev/shm") / name).exists()
    assert name in client.get_system_shared_memory_status().regions

    _, model_input = study(tmp_path, "chest-ct", 3, **CHEST)
    inputs = {"VOLUME": model_input.volume, "SPACING": model_input.spacing_zyx}
    async with TritonClient(triton.grpc_url, shared_memory_min_bytes=1) as shared:
        await shared.infer("chest_ct_nodules", inputs, ["BOXES", "SCORES"], 60)
        assert not (Path("/dev/shm") / name).exists()
        regions = list(client.get_system_shared_memory_status().regions)
        assert name not in regions and len(regions) == 1  # ours stays, kept for later


async def test_shared_memory_only_for_a_triton_on_this_machine() -> None:
    from normalizer_svc.triton import TritonClient

    for url, on in (("127.0.0.1:8001", True), ("localhost:8001", True),
                    ("triton.example:8001", False), ("10.0.0.7:8001", False)):
        async with TritonClient(url) as c:
            assert (c.shm_min_bytes > 0) is on, url
