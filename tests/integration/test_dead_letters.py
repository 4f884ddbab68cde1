"""Dead letters through the mesh: an AI job that exhausted its deliveries is listed with its
error, re-driven by an operator over OperationsService once the cause is fixed, and moves its
study on; another one is discarded; both actions are audited with the operator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from protos.sidecar.workflow.v1 import operations_service_pb2 as pb
from protos.sidecar.workflow.v1 import operations_service_pb2_grpc as pb_grpc
from sidecar_synth import generate
from tests import pki as test_pki
from tests.mesh import Mesh, isolated_mesh

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHEST = {"slices": 48, "rows": 192, "cols": 192, "fov_mm": 280.0}


@pytest.fixture(scope="module")
async def mesh(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory
               ) -> AsyncIterator[Mesh]:
    async with isolated_mesh(pg_admin_url, tmp_path_factory.mktemp("mesh")) as m:
        yield m


async def _fail_ai(mesh: Mesh, facility: str, folder: Path, seed: int):
    """A chest CT whose AI run exhausts its deliveries while Triton is stopped."""
    assert mesh.triton is not None
    await mesh.add_facility(facility)
    generate("chest-ct", folder, seed=seed, **CHEST)
    await asyncio.to_thread(mesh.triton.stop)
    try:
        sent = await mesh.ingest_folder(facility, folder)
        assert await mesh.wait_for_final_state(sent.study_id, timeout=120) == "ai_failed"
    finally:
        await asyncio.to_thread(mesh.triton.start)
    return sent


async def _letters(ops: pb_grpc.OperationsServiceStub, **where: str) -> list[pb.DeadLetter]:
    for _ in range(100):  # the dead letter is published right after the failure is stored
        reply = await ops.ListDeadLetters(pb.ListDeadLettersRequest(
            filter=pb.DeadLetterFilter(**where)))
        if reply.dead_letters:
            return list(reply.dead_letters)
        await asyncio.sleep(0.1)
    return []


async def test_redrive_after_the_cause_is_fixed_moves_the_study_on(mesh: Mesh,
                                                                  tmp_path: Path) -> None:
    sent = await _fail_ai(mesh, "dlq_north", tmp_path / "a", seed=21)
    async with test_pki.aio_channel(f"127.0.0.1:{mesh.ports['workflow']}", "gateway") as channel:
        ops = pb_grpc.OperationsServiceStub(channel)
        [letter] = await _letters(ops, facility="dlq_north")
        assert letter.kind == "ai_run" and letter.consumer == "ai-run-worker"
        assert letter.study_id == str(sent.study_id) and letter.facility == "dlq_north"
        assert letter.deliveries == mesh.topology.ai_run_jobs().max_deliver
        assert "gave up after" in letter.error_message
        assert (await _letters(ops, facility="dlq_north", kind="preprocess")) == []

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ops.RedriveDeadLetters(pb.RedriveDeadLettersRequest(operator="alice"))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "name dead letters" in (refused.value.details() or "")

        # Triton is back (the cause is fixed): re-drive by filter.
        done = await ops.RedriveDeadLetters(pb.RedriveDeadLettersRequest(
            filter=pb.DeadLetterFilter(facility="dlq_north", kind="ai_run"), operator="alice"))
        assert list(done.redriven) == [letter.sequence]
        assert await mesh.wait_for_final_state(sent.study_id, timeout=120) == "ready_for_review"
        assert (await ops.ListDeadLetters(pb.ListDeadLettersRequest(
            filter=pb.DeadLetterFilter(facility="dlq_north")))).dead_letters == []
        # Re-driving the same sequence again changes nothing.
        again = await ops.RedriveDeadLetters(pb.RedriveDeadLettersRequest(
            filter=pb.DeadLetterFilter(sequences=[letter.sequence]), operator="alice"))
        assert list(again.redriven) == []

    history = await mesh.state_history(sent.study_id)
    assert history == ["received", "processed", "ai_failed", "processed", "ai_complete",
                       "ready_for_review"]
    runs = await mesh.ai_runs(sent.study_id)
    assert sorted(r["status"] for r in runs) == ["completed", "redriven"]
    assert await mesh.findings(sent.study_id)
    [event] = await mesh.audit_events(sent.study_id, "job.redriven")
    assert event["actor"] == "operator:alice"
    assert event["context"]["sequence"] == letter.sequence
    assert event["context"]["kind"] == "ai_run"


async def test_discard_is_audited_and_leaves_the_study_reviewable(mesh: Mesh,
                                                                  tmp_path: Path) -> None:
    sent = await _fail_ai(mesh, "dlq_south", tmp_path / "b", seed=22)
    async with test_pki.aio_channel(f"127.0.0.1:{mesh.ports['workflow']}", "gateway") as channel:
        ops = pb_grpc.OperationsServiceStub(channel)
        [letter] = await _letters(ops, facility="dlq_south")
        done = await ops.DiscardDeadLetters(pb.DiscardDeadLettersRequest(
            filter=pb.DeadLetterFilter(sequences=[letter.sequence]), operator="bob",
            reason="model retired"))
        assert list(done.discarded) == [letter.sequence]
        assert (await ops.ListDeadLetters(pb.ListDeadLettersRequest(
            filter=pb.DeadLetterFilter(facility="dlq_south")))).dead_letters == []
    assert (await mesh.state_history(sent.study_id))[-1] == "ai_failed"
    [event] = await mesh.audit_events(sent.study_id, "job.discarded")
    assert event["actor"] == "operator:bob" and event["context"]["reason"] == "model retired"
