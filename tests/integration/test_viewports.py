"""Viewports on demand through the real mesh: key slices known at ready_for_review, one render
per (series, preset, slice) even under concurrent first requests, scoped to the facility."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import func, select

from protos.sidecar.ingest.v1 import viewport_service_pb2 as vpb
from protos.sidecar.ingest.v1 import viewport_service_pb2_grpc as vgrpc
from sidecar_core.security import session_tokens
from sidecar_core.serving.grpc_server import error_info
from sidecar_core.store.models import Asset, Series
from sidecar_synth import generate
from tests.mesh import Mesh, isolated_mesh
from workflow_svc.identity.access import SYSTEM
from workflow_svc.review import decisions

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CHEST = {"slices": 48, "rows": 192, "cols": 192, "fov_mm": 280.0}


@pytest.fixture(scope="module")
async def mesh(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory
               ) -> AsyncIterator[Mesh]:
    async with isolated_mesh(pg_admin_url, tmp_path_factory.mktemp("mesh")) as m:
        yield m


async def _rows(mesh: Mesh, series_id: str, preset: str, z: int) -> int:
    async with mesh.db.read() as s:
        return int(await s.scalar(select(func.count()).select_from(Asset).where(
            Asset.series_id == series_id, Asset.kind == "viewport", Asset.preset == preset,
            Asset.slice_index == z)) or 0)


def _reason(exc: grpc.aio.AioRpcError) -> str:
    info = error_info(exc)
    return info.reason if info is not None else ""


async def test_viewports_on_demand(mesh: Mesh, tmp_path: Path) -> None:
    generate("chest-ct", tmp_path, seed=3, **CHEST)
    await mesh.add_facility("vp_north")
    await mesh.add_facility("vp_south")
    sent = await mesh.ingest_folder("vp_north", tmp_path)
    assert await mesh.wait_for_final_state(sent.study_id) == "ready_for_review"
    # the key slice of every finding is known at ready_for_review, before any viewport exists
    findings = await decisions.list_findings(mesh.db, str(sent.study_id), SYSTEM)
    boxed = [f.state for f in findings if f.finding.sop_instance_uid]
    assert boxed and all(st.slice_index >= 0 and st.series_id for st in boxed)

    await mesh.wait_for_audit(sent.study_id, "asset.series_rendered")
    async with mesh.db.read() as s:
        # the received CT series (its AI results' SR and SEG series may already stand beside it)
        [series] = (await s.scalars(select(Series).where(Series.study_id == sent.study_id,
                                                         Series.modality == "CT"))).all()
    assert series.windows and set(series.windows) == set(series.presets or [])
    marked = {st.slice_index for st in boxed}  # the overlay job makes viewports of these
    z0, z1 = [z for z in range(CHEST["slices"]) if z not in marked][:2]
    preset = series.presets[-1]
    channel = mesh.aio_channel("ingest", "gateway")
    stub = vgrpc.ViewportServiceStub(channel)
    keys = session_tokens.load_signing_key_set(mesh.data_dir)  # the gateway's key

    def ask(z: int, facilities: tuple[str, ...] = ("vp_north",), name: str = preset,
            study: str = str(sent.study_id)) -> Any:
        """RenderViewport for a radiologist of `facilities` (their token, as the gateway
        forwards it)."""
        token = session_tokens.issue(keys, user_id=str(uuid.uuid4()), username="rad",
                                     role="radiologist", facilities=list(facilities), ttl_s=600)
        return stub.RenderViewport(vpb.RenderViewportRequest(
            study_id=study, series_id=str(series.id), slice_index=z, preset=name),
            metadata=session_tokens.metadata(token))

    # another facility's radiologist: NOT_FOUND, nothing rendered
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await ask(z0, ("vp_south",))
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    assert await _rows(mesh, str(series.id), preset, z0) == 0
    # an unknown preset: NOT_FOUND naming the series' presets
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await ask(z0, name="nonsense")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert _reason(unknown.value) == "PRESET_NOT_FOUND" and preset in unknown.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as beyond:
        await ask(CHEST["slices"])
    assert _reason(beyond.value) == "SLICE_NOT_FOUND"

    # first request renders and stores; the second finds the row
    first = await ask(z0)
    again = await ask(z0)
    assert first.rendered and not again.rendered
    assert (again.asset_id, again.sha256) == (first.asset_id, first.sha256)
    assert first.content_type == "image/png"
    assert mesh.object_path(first.object_key).read_bytes()[:4] == b"\x89PNG"
    assert await _rows(mesh, str(series.id), preset, z0) == 1

    # concurrent first requests: one row, one render, one answer
    replies = await asyncio.gather(*(ask(z1) for _ in range(8)))
    assert len({r.asset_id for r in replies}) == 1
    assert sum(r.rendered for r in replies) == 1
    assert await _rows(mesh, str(series.id), preset, z1) == 1
