"""AI results as DICOM through the whole in-process mesh: a brain MR's run gives an SR and a
SEG, derived series listed by QIDO and apart from the received ones, written when the workflow
says the findings are stored (at the first delivery of that event); a review change writes a
new SR version and keeps the old; a change that alters nothing writes nothing."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import highdicom as hd
import nats
import numpy as np
import pydicom
import pytest

from protos.sidecar.events.v1 import review_events_pb2
from protos.sidecar.ingest.v1 import ingest_service_pb2 as ingest_pb
from sidecar_core.messaging.subjects import AI_RUN_FINDINGS_STORED, REVIEW_CHANGED
from sidecar_synth import generate
from tests.mesh import Mesh, isolated_mesh
from tests.servers import nats_options

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# A small synthetic brain MR with two lesions (the reference model gives one mask each).
BRAIN = {"slices": 20, "rows": 160, "cols": 160, "lesions": 2}


@pytest.fixture(scope="module")
async def mesh(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory
               ) -> AsyncIterator[Mesh]:
    async with isolated_mesh(pg_admin_url, tmp_path_factory.mktemp("mesh")) as m:
        yield m


async def _derived(mesh: Mesh, study_id: uuid.UUID) -> list[dict[str, Any]]:
    return await mesh._all(
        "select d.kind, d.version, d.fingerprint, d.finding_count, d.reason, "
        "d.sop_instance_uid, d.series_instance_uid, i.object_key, i.source, i.series_id "
        "from derived_objects d join instances i on i.id = d.instance_id "
        "where d.study_id = :id order by d.kind, d.version", id=study_id)


async def _wait_versions(mesh: Mesh, study_id: uuid.UUID, kind: str, count: int
                         ) -> list[dict[str, Any]]:
    async def enough() -> list[dict[str, Any]] | None:
        rows = [r for r in await _derived(mesh, study_id) if r["kind"] == kind]
        return rows if len(rows) >= count else None

    return list(await mesh.wait_for(enough, f"{count} {kind} version(s)", timeout=120))


def _read(mesh: Mesh, key: str) -> bytes:
    return mesh.object_path(key).read_bytes()


async def _review_changed(mesh: Mesh, study_id: uuid.UUID, action: str) -> None:
    """What the review API publishes after a decision (a fresh id per decision); returns once
    the writer has acknowledged it."""
    event_id = str(uuid.uuid4())
    change = review_events_pb2.ReviewChanged(study_id=str(study_id), action=action,
                                             review_event_id=event_id)
    nc = await nats.connect(mesh.nats_url, **nats_options())
    try:
        js = nc.jetstream()
        ack = await js.publish(mesh.topology.subject(REVIEW_CHANGED),
                               change.SerializeToString(), headers={"Nats-Msg-Id": event_id})
        spec = mesh.topology.derived_results_reviews()

        async def handled() -> bool:
            info = await js.consumer_info(spec.stream, spec.durable)
            return int(info.ack_floor.stream_seq or 0) >= ack.seq

        await mesh.wait_for(handled, f"review change {action} handled", timeout=120)
    finally:
        await nc.close()


async def _each_delivered_once(mesh: Mesh) -> None:
    """The writer's durable for new runs takes the workflow's findings-stored event alone, and
    every message it took was handled at its first delivery (none waited for the findings)."""
    spec = mesh.topology.derived_results_runs()
    assert spec.filter_subject == mesh.topology.subject(AI_RUN_FINDINGS_STORED)
    nc = await nats.connect(mesh.nats_url, **nats_options())
    try:
        js = nc.jetstream()

        async def settled() -> Any:
            info = await js.consumer_info(spec.stream, spec.durable)
            return info if not info.num_pending and not info.num_ack_pending else None

        info = await mesh.wait_for(settled, "findings-stored events handled", timeout=120)
        assert info.config.filter_subject == spec.filter_subject
        stream = await js.stream_info(spec.stream, subjects_filter=spec.filter_subject)
        published = sum((stream.state.subjects or {}).values())
        assert published >= 1
        assert info.delivered.consumer_seq == published, "a findings-stored event was retried"
        assert not info.num_redelivered
    finally:
        await nc.close()


async def test_brain_mr_results_as_sr_and_seg_with_versions(mesh: Mesh, tmp_path: Path
                                                            ) -> None:
    generate("brain-mr", tmp_path, seed=5, **BRAIN)
    await mesh.add_facility("derived")
    sent = await mesh.ingest_folder("derived", tmp_path)
    assert await mesh.wait_for_final_state(sent.study_id) == "ready_for_review"
    findings = await mesh.findings(sent.study_id)
    masks = [f for f in findings if f["mask_object_key"]]
    assert len(masks) >= 1

    sr_rows = await _wait_versions(mesh, sent.study_id, "sr", 1)
    seg_rows = await _wait_versions(mesh, sent.study_id, "seg", 1)
    assert {sr_rows[0]["reason"], seg_rows[0]["reason"]} == {"ai_run.findings_stored"}
    await _each_delivered_once(mesh)
    analysed = findings[0]["series_instance_uid"]

    # The SR: one measurement group per finding, tracked by the finding's id.
    sr_bytes = _read(mesh, sr_rows[0]["object_key"])
    report = hd.sr.srread(io.BytesIO(sr_bytes))
    groups = report.content.get_planar_roi_measurement_groups()
    assert sorted(g.tracking_uid for g in groups) == sorted(
        f"2.25.{f['id'].int}" for f in findings)
    plain = pydicom.dcmread(io.BytesIO(sr_bytes))
    assert plain.StudyInstanceUID == sent.study_instance_uid
    assert plain.SeriesInstanceUID not in (analysed,) and plain.Modality == "SR"

    # The SEG: one segment per mask finding, over every image of the analysed series.
    seg_bytes = _read(mesh, seg_rows[0]["object_key"])
    seg = hd.seg.segread(io.BytesIO(seg_bytes))
    assert seg.number_of_segments == len(masks)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == analysed
    assert int(seg.NumberOfFrames) == len(masks) * BRAIN["slices"]
    tracked = {seg.get_segment_description(n).tracking_uid
               for n in range(1, seg.number_of_segments + 1)}
    assert tracked == {f"2.25.{f['id'].int}" for f in masks}
    first_mask = masks[0]
    n = sorted(f"2.25.{f['id'].int}" for f in masks).index(f"2.25.{first_mask['id'].int}")
    with np.load(mesh.object_path(first_mask["mask_object_key"])) as npz:
        expected = npz["mask"].astype(bool)
    assert int(seg.get_segment_description(n + 1).segment_number) == n + 1
    assert expected.sum() > 0

    # Derived series: indexed apart (source 'derived', series of their own), listed by QIDO.
    assert {r["source"] for r in sr_rows + seg_rows} == {"derived"}
    series = await mesh.ingest.SearchSeries(ingest_pb.SearchSeriesRequest(
        study_instance_uid=sent.study_instance_uid))
    modalities = sorted(pydicom.Dataset.from_json(s).Modality for s in series.dicom_json)
    assert modalities == ["MR", "SEG", "SR"]
    received = await mesh._all("select count(*) as n from instances where series_id in "
                               "(select id from series where series_instance_uid = :uid)",
                               uid=analysed)
    assert received[0]["n"] == BRAIN["slices"]
    written = await mesh.audit_events(sent.study_id, "ai_result.dicom_written")
    assert sorted(e["context"]["kind"] for e in written) == ["seg", "sr"]

    # A decision that changes nothing the SR says writes nothing; the next real one does.
    await _review_changed(mesh, sent.study_id, "viewed")
    assert [r["version"] for r in await _derived(mesh, sent.study_id)] == [1, 1]
    rejected = masks[0]["id"]
    async with mesh.db.unit_of_work() as s:
        from sqlalchemy import text

        await s.execute(text("update findings set review_status = 'rejected' where id = :id"),
                        {"id": rejected})
    await _review_changed(mesh, sent.study_id, "rejected")
    sr_rows = await _wait_versions(mesh, sent.study_id, "sr", 2)
    assert [r["version"] for r in sr_rows] == [1, 2]
    assert sr_rows[1]["reason"] == "review.rejected"
    assert sr_rows[0]["object_key"] != sr_rows[1]["object_key"]
    assert mesh.object_path(sr_rows[0]["object_key"]).exists()  # the old version is kept
    v2 = pydicom.dcmread(io.BytesIO(_read(mesh, sr_rows[1]["object_key"])))
    assert v2.SeriesInstanceUID == plain.SeriesInstanceUID and v2.InstanceNumber == 2
    assert v2.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0] \
        .ReferencedSOPSequence[0].ReferencedSOPInstanceUID == plain.SOPInstanceUID
    kept = hd.sr.srread(io.BytesIO(_read(mesh, sr_rows[1]["object_key"]))).content
    assert f"2.25.{rejected.int}" not in {
        g.tracking_uid for g in kept.get_planar_roi_measurement_groups()}
    if len(masks) > 1:  # the rejected lesion leaves the SEG too
        seg_rows = await _wait_versions(mesh, sent.study_id, "seg", 2)
        seg2 = hd.seg.segread(io.BytesIO(_read(mesh, seg_rows[1]["object_key"])))
        assert seg2.number_of_segments == len(masks) - 1
    instances = await mesh.ingest.SearchInstances(ingest_pb.SearchInstancesRequest(
        study_instance_uid=sent.study_instance_uid,
        series_instance_uid=plain.SeriesInstanceUID))
    assert len(instances.dicom_json) == 2  # both SR versions stay listed
