"""The Normalizer contract over real gRPC: the example server and the built-ins pass the
conformance check; a broken normaliser fails it and its results are rejected as invalid."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from normalizer_svc import check_cli
from normalizer_svc.conformance import SERIES_UID, chest_ct_nodules, run_checks
from normalizer_svc.external import ExternalNormaliser, NormaliserRejected, NormaliserUnavailable
from normalizer_svc.inference import builtin_normaliser, normalise_checked
from normalizer_svc.servicer import NormalizerServicer, add_to_server
from normalizer_svc.validation import InvalidResult
from protos.sidecar.common.v1 import common_pb2
from protos.sidecar.normalizer.v1 import normalizer_service_pb2 as npb
from protos.sidecar.normalizer.v1 import normalizer_service_pb2_grpc as npb_grpc
from sidecar_core.errors import TransientError
from sidecar_core.registry import load_registry
from sidecar_core.serving.grpc_server import GrpcServer
from tests import pki as test_pki
from tests.servers import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "external_normalizer" / "server.py"
REFERENCE_MODELS = ["chest_ct_nodules", "mammo_masses", "brain_mr_lesions"]


@pytest.fixture(scope="module")
def example_target() -> Iterator[str]:
    """The example normaliser as its own process on 127.0.0.1:0 (it prints the port)."""
    proc = subprocess.Popen([sys.executable, str(EXAMPLE), "--address", "127.0.0.1:0"],
                            cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": ""},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(r"listening on (127\.0\.0\.1:\d+)\n", line)
        assert match, f"example server did not start: {line}{proc.stdout.read()}"
        yield match.group(1)
    finally:
        proc.terminate()
        proc.wait(10)


class BrokenNormalizer(npb_grpc.NormalizerServiceServicer):
    """Claims chest_ct_nodules, answers everything, and answers it wrongly."""

    async def DescribeNormalizer(self, request, context):
        return npb.DescribeNormalizerResponse(model_names=["chest_ct_nodules"],
                                              normalizer_version="broken-0")

    async def Normalize(self, request, context):
        g = request.context.geometry
        return npb.NormalizeResponse(findings=[common_pb2.Finding(
            model_name=request.model_name, model_version=request.model_version,
            label="nodule", confidence=0.9, kind=common_pb2.FINDING_KIND_BOX,
            sop_instance_uid=g.sop_instance_uids[0] if g.sop_instance_uids else "1.2.3",
            frame=1, bbox_px=[10, 10, g.columns + 50, 20], center_mm=[0, 0, 0])])


@pytest.fixture()
async def broken_target() -> AsyncIterator[str]:
    server = grpc.aio.server()
    npb_grpc.add_NormalizerServiceServicer_to_server(BrokenNormalizer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(1)


@pytest.fixture()
async def builtin_target() -> AsyncIterator[str]:
    """The built-in normalisers behind the same contract, on the sidecar's gRPC bootstrap."""
    registry = load_registry()
    servicer = NormalizerServicer(
        {name: builtin_normaliser(name) for name in REFERENCE_MODELS}, "builtin-test",
        {m.name: m.outputs for m in registry.models})
    server = GrpcServer("127.0.0.1:0", test_pki.service("normalizer"))
    add_to_server(server, servicer)
    port = await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(1)


def test_check_cli_passes_the_example(example_target: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert check_cli.main([example_target, "--model", "chest_ct_nodules"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("PASS describe: serves chest_ct_nodules")
    assert any(line.startswith("PASS rejects no outputs: INVALID_ARGUMENT") for line in lines)
    assert "FAIL" not in out
    assert re.search(r"^(\d+)/\1 checks passed", lines[-1], re.M)


def test_check_cli_fails_for_a_model_the_example_does_not_serve(
        example_target: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_cli.main([example_target, "--model", "mammo_masses"]) == 1
    assert "FAIL describe: serves ['chest_ct_nodules'], not mammo_masses" in capsys.readouterr().out


def test_check_cli_usage_and_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_cli.main(["127.0.0.1:1"]) == 2
    assert check_cli.main([f"127.0.0.1:{free_port()}", "--model", "chest_ct_nodules"]) == 1
    assert "FAIL describe:" in capsys.readouterr().out


async def test_example_findings_round_trip(example_target: str) -> None:
    case = chest_ct_nodules()
    async with ExternalNormaliser(example_target) as client:
        findings = await normalise_checked(
            client, case.model_input, case.valid, "chest_ct_nodules", "1",
            load_registry().get("chest_ct_nodules").outputs, series_uid=SERIES_UID)
        assert [f.kind for f in findings] == ["box", "box"]
        assert findings[0].sop_instance_uid == case.model_input.sop_instance_uids[43]
        assert findings[0].bbox_px == [150.0, 200.0, 162.0, 212.0]
        assert findings[0].measurements["diameter_mm"] == pytest.approx(13 * 0.7)
        with pytest.raises(NormaliserRejected, match="INVALID_ARGUMENT.*SCORES"):
            await client.normalise(case.model_input, {"BOXES": case.valid["BOXES"]},
                                   "chest_ct_nodules", "1")


@pytest.mark.parametrize("model", REFERENCE_MODELS)
async def test_builtin_normalisers_pass_the_check_over_grpc(builtin_target: str,
                                                            model: str) -> None:
    results = await run_checks(builtin_target, model, credentials=test_pki.operator())
    failed = [r.line() for r in results if not r.passed]
    assert not failed, failed
    assert len(results) >= 8


async def test_broken_normaliser_fails_the_check(broken_target: str) -> None:
    results = {r.name: r for r in await run_checks(broken_target, "chest_ct_nodules")}
    assert results["describe"].passed
    assert not results["valid outputs"].passed
    assert "bbox_px [10, 10, 562, 20] is not inside the 512×512 image" in \
        results["valid outputs"].detail
    assert not results["rejects no outputs"].passed
    assert results["rejects no outputs"].detail == ("expected INVALID_ARGUMENT, got 1 "
                                                    "finding(s)")


async def test_dispatch_rejects_broken_findings(broken_target: str) -> None:
    case = chest_ct_nodules()
    async with ExternalNormaliser(broken_target) as client:
        with pytest.raises(InvalidResult, match=r"finding 1 \(nodule\): bbox_px .* not inside"):
            await normalise_checked(client, case.model_input, case.valid, "chest_ct_nodules",
                                    "1", series_uid=SERIES_UID)
        # Garbage outputs are caught before the normaliser is even asked.
        with pytest.raises(InvalidResult, match="output SCORES of chest_ct_nodules contains"):
            await normalise_checked(
                client, case.model_input,
                {**case.valid, "SCORES": np.array([np.nan, 1], np.float32)},
                "chest_ct_nodules", "1", load_registry().get("chest_ct_nodules").outputs)


async def test_unreachable_normaliser_is_transient() -> None:
    case = chest_ct_nodules()
    async with ExternalNormaliser(f"127.0.0.1:{free_port()}", timeout_s=5) as client:
        with pytest.raises(NormaliserUnavailable, match="UNAVAILABLE") as err:
            await client.normalise(case.model_input, case.valid, "chest_ct_nodules", "1")
    assert isinstance(err.value, TransientError)
