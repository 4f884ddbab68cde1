"""Synthetic studies through the whole in-process mesh (tests/mesh.py): states, audit, findings."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian, generate_uid
from sqlalchemy import select

from protos.sidecar.events.v1 import events_pb2
from protos.sidecar.workflow.v1 import review_service_pb2 as rpb
from sidecar_core.messaging.subjects import AI_RUN_FINDINGS_STORED
from sidecar_core.store.models import Series
from sidecar_synth import generate
from tests.mesh import Mesh, isolated_mesh
from tests.model_fixtures import GARBAGE_MODEL
from workflow_svc.identity.access import SYSTEM
from workflow_svc.review import decisions, worklist

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Small synthetic studies (fast to render and infer) that the reference models still find.
CHEST = {"slices": 48, "rows": 192, "cols": 192, "fov_mm": 280.0}
BRAIN = {"slices": 20, "rows": 160, "cols": 160, "lesions": 1}
MAMMO = {"masses": 1}
HAPPY_PATH = ["received", "processed", "ai_complete", "ready_for_review"]


@pytest.fixture(scope="module")
async def mesh(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory
               ) -> AsyncIterator[Mesh]:
    """One mesh for the module; every test uses its own facility and study."""
    async with isolated_mesh(pg_admin_url, tmp_path_factory.mktemp("mesh")) as m:
        yield m


def _near(finding: dict, lesion_mm: list[float], tolerance_mm: float) -> bool:
    return finding["center_mm"] is not None and float(
        np.linalg.norm(np.subtract(finding["center_mm"], lesion_mm))) <= tolerance_mm


async def test_chest_ct_reaches_ready_for_review(mesh: Mesh, tmp_path: Path) -> None:
    truth = generate("chest-ct", tmp_path, seed=3, **CHEST)
    assert truth.lesions
    await mesh.add_facility("chest")
    sent = await mesh.ingest_folder("chest", tmp_path)
    assert sent.response.stored_count == CHEST["slices"]

    assert await mesh.wait_for_final_state(sent.study_id) == "ready_for_review"
    assert await mesh.state_history(sent.study_id) == HAPPY_PATH
    study = await mesh.study(sent.study_id)
    assert study["eligible"] is True and "chest_ct_nodules" in study["eligibility_reason"]
    assert study["ai_status"] == "completed" and study["partial"] is False

    findings = await mesh.findings(sent.study_id)
    assert findings and all(f["kind"] == "box" and f["visible"] for f in findings)
    for lesion in truth.lesions:
        near = [f for f in findings if _near(f, lesion.center_mm, max(lesion.diameter_mm, 5.0))]
        assert near, f"no finding near {lesion}: {[f['center_mm'] for f in findings]}"
        best = near[0]
        x0, y0, x1, y1 = best["bbox_px"]
        x, y, _ = lesion.center_voxel
        assert x0 - 1 <= x <= x1 + 1 and y0 - 1 <= y <= y1 + 1, (best["bbox_px"], lesion)
        assert best["measurements"]["diameter_mm"] == pytest.approx(lesion.diameter_mm, rel=0.3)
        assert best["series_instance_uid"] == lesion.series_instance_uid
        assert best["model_name"] == "chest_ct_nodules" and best["model_version"]

    events = await mesh.audit_events(sent.study_id)
    types = [e["type"] for e in events]
    for expected in ("study.received", "study.eligible", "ai_run.queued", "ai_run.started",
                     "ai_run.completed"):
        assert types.count(expected) == 1, (expected, types)
    assert types.index("study.received") < types.index("study.eligible") \
        < types.index("ai_run.queued") < types.index("ai_run.started") \
        < types.index("ai_run.completed")
    changes = [e["context"]["to"] for e in events if e["type"] == "study.state_changed"]
    assert changes == HAPPY_PATH
    completed = next(e for e in events if e["type"] == "ai_run.completed")
    assert completed["context"]["findings"] == len(findings)
    assert completed["context"]["shadow_mode"] is False
    # what follows the stored findings (the SR/SEG writer) is told through the outbox
    [run] = await mesh.ai_runs(sent.study_id)
    [stored] = await _findings_stored(mesh, run["id"])
    assert stored.study_id == str(sent.study_id) and stored.model_name == "chest_ct_nodules"
    assert stored.finding_count == len(findings) and stored.study.accession


async def _findings_stored(mesh: Mesh, run_id: object) -> list[events_pb2.AiRunFindingsStored]:
    """The workflow's findings-stored events of a run (its outbox keeps published rows)."""
    rows = await mesh._all("select subject, payload from outbox where msg_id = :id",
                           id=f"ai_run.findings_stored:{run_id}")
    assert all(r["subject"] == mesh.topology.subject(AI_RUN_FINDINGS_STORED) for r in rows)
    return [events_pb2.AiRunFindingsStored.FromString(r["payload"]) for r in rows]


def _cr_image() -> bytes:
    """A small Computed Radiography chest image: covered by no model (modality CR)."""
    meta = FileMetaDataset()
    sop = generate_uid()
    meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = ComputedRadiographyImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.AccessionNumber = "CR0001"
    ds.Modality = "CR"
    ds.BodyPartExamined = "CHEST"
    ds.PatientID = "SYNTH-CR"
    ds.PatientName = "Synthetic^Radiograph"
    ds.ImagerPixelSpacing = [0.2, 0.2]
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.full((64, 64), 800, "<u2").tobytes()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _as_knee(folder: Path) -> None:
    """Turns a synthetic brain MR into a knee MR in place (BodyPartExamined, descriptions)."""
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.BodyPartExamined = "KNEE"
        ds.StudyDescription = "MR KNEE RIGHT"
        ds.SeriesDescription = "PD FS sagittal"
        ds.save_as(path, enforce_file_format=True)


async def test_ineligible_studies_stop_with_a_reason(mesh: Mesh, tmp_path: Path) -> None:
    await mesh.add_facility("ortho")
    generate("brain-mr", tmp_path, seed=1, **BRAIN)
    _as_knee(tmp_path)
    cr = await mesh.ingest_files("ortho", [_cr_image()])
    knee = await mesh.ingest_folder("ortho", tmp_path)

    for sent, reason in ((cr, "unsupported modality CR"),
                         (knee, "unsupported body part KNEE for MR")):
        assert await mesh.wait_for_final_state(sent.study_id) == "ineligible"
        assert await mesh.state_history(sent.study_id) == ["received", "ineligible"]
        study = await mesh.study(sent.study_id)
        assert study["eligible"] is False
        assert reason in study["eligibility_reason"]
        [event] = await mesh.audit_events(sent.study_id, "study.ineligible")
        assert event["context"]["reason"] == study["eligibility_reason"]
        types = await mesh.audit_types(sent.study_id)
        assert "study.eligible" not in types and "ai_run.queued" not in types
        assert await mesh.assets(sent.study_id) == []


async def test_mammography_and_brain_mr_findings(mesh: Mesh, tmp_path: Path) -> None:
    await mesh.add_facility("women_and_neuro")
    mammo_truth = generate("mammo", tmp_path / "mammo", seed=4, **MAMMO)
    brain_truth = generate("brain-mr", tmp_path / "brain", seed=4, **BRAIN)
    mammo = await mesh.ingest_folder("women_and_neuro", tmp_path / "mammo")
    brain = await mesh.ingest_folder("women_and_neuro", tmp_path / "brain")

    assert await mesh.wait_for_final_state(mammo.study_id) == "ready_for_review"
    findings = await mesh.findings(mammo.study_id)
    assert {f["kind"] for f in findings} == {"box", "classification"}
    assert all(f["model_name"] == "mammo_masses" for f in findings)
    [summary] = [f for f in findings if f["kind"] == "classification"]
    assert 0.0 <= summary["confidence"] <= 1.0
    [mass] = mammo_truth.lesions
    boxes = [f for f in findings if f["kind"] == "box"]
    on_view = [f for f in boxes if f["sop_instance_uid"] == mass.sop_instance_uid]
    assert on_view, f"no box on the view of the mass ({mass.view}): {boxes}"
    x, y, _ = mass.center_voxel
    assert any(b[0] <= x <= b[2] and b[1] <= y <= b[3]
               for b in (f["bbox_px"] for f in on_view)), (on_view, mass)

    assert await mesh.wait_for_final_state(brain.study_id) == "ready_for_review"
    findings = await mesh.findings(brain.study_id)
    masks = [f for f in findings if f["kind"] == "mask"]
    assert masks and all(f["model_name"] == "brain_mr_lesions" for f in findings)
    [lesion] = brain_truth.lesions
    best = min(masks, key=lambda f: np.linalg.norm(np.subtract(f["center_mm"],
                                                               lesion.center_mm)))
    assert _near(best, lesion.center_mm, max(lesion.diameter_mm / 2, 5.0)), (best, lesion)
    assert best["measurements"]["volume_ml"] == pytest.approx(lesion.volume_ml, rel=0.5)
    key = best["mask_object_key"]
    assert key.startswith("sha256/")
    with np.load(mesh.object_path(key)) as stored:
        mask = stored["mask"]
    assert mask.shape == (BRAIN["slices"], BRAIN["rows"], BRAIN["cols"])
    assert mask.dtype == np.uint8 and mask.any()


async def test_findings_below_the_operating_threshold_are_stored_hidden(
        mesh: Mesh, tmp_path: Path) -> None:
    """deploy/models.yaml gives mammo_masses an operating threshold of 0.55: a negative study's
    image-level suspicion (0.02) is stored but not shown; the threshold is kept with the run."""
    threshold = 0.55
    await mesh.add_facility("thresholds")
    generate("mammo", tmp_path / "neg", seed=7, negative=True)  # other UIDs than seed 4
    generate("mammo", tmp_path / "pos", seed=4, **MAMMO)
    negative = await mesh.ingest_folder("thresholds", tmp_path / "neg")
    positive = await mesh.ingest_folder("thresholds", tmp_path / "pos")
    for sent in (negative, positive):
        assert await mesh.wait_for_final_state(sent.study_id) == "ready_for_review"
        stored = await mesh.findings(sent.study_id)
        assert stored, "every finding is stored"
        for f in stored:
            assert f["visible"] is (f["confidence"] >= threshold), f
        shown = await decisions.list_findings(mesh.db, str(sent.study_id), SYSTEM)
        assert {f.finding.finding_id for f in shown} == {
            str(f["id"]) for f in stored if f["confidence"] >= threshold}
        everything = await decisions.list_findings(mesh.db, str(sent.study_id), SYSTEM,
                                                   include_hidden=True)
        assert len(everything) == len(stored)
        [run] = await mesh.ai_runs(sent.study_id)
        assert run["operating_threshold"] == pytest.approx(threshold)
        [completed] = await mesh.audit_events(sent.study_id, "ai_run.completed")
        assert completed["context"]["operating_threshold"] == pytest.approx(threshold)
        assert completed["context"]["below_threshold"] == sum(
            f["confidence"] < threshold for f in stored)
    [summary] = await mesh.findings(negative.study_id)
    assert summary["kind"] == "classification" and summary["visible"] is False
    assert any(f["visible"] for f in await mesh.findings(positive.study_id)), "the mass shows"


async def test_shadow_mode_hides_findings_from_reviewers(mesh: Mesh, tmp_path: Path) -> None:
    await mesh.add_facility("shadow", shadow_mode=True)
    generate("chest-ct", tmp_path, seed=5, **CHEST)
    sent = await mesh.ingest_folder("shadow", tmp_path)
    assert await mesh.wait_for_final_state(sent.study_id) == "ready_for_review"

    stored = await mesh.findings(sent.study_id)
    assert stored and not any(f["visible"] for f in stored)
    visible = await decisions.list_findings(mesh.db, str(sent.study_id), SYSTEM)
    assert visible == []
    hidden = await decisions.list_findings(mesh.db, str(sent.study_id), SYSTEM,
                                           include_hidden=True)
    assert {f.finding.finding_id for f in hidden} == {str(f["id"]) for f in stored}
    assert not any(f.state.visible for f in hidden)
    [completed] = await mesh.audit_events(sent.study_id, "ai_run.completed")
    assert completed["context"]["shadow_mode"] is True


async def test_invalid_model_output_fails_the_run_not_the_study(mesh: Mesh,
                                                                tmp_path: Path) -> None:
    await mesh.add_facility("garbage", enabled_models=[GARBAGE_MODEL])
    generate("chest-ct", tmp_path, seed=6, **CHEST)
    sent = await mesh.ingest_folder("garbage", tmp_path)

    assert await mesh.wait_for_final_state(sent.study_id) == "ai_failed"
    assert await mesh.state_history(sent.study_id) == ["received", "processed", "ai_failed"]
    [invalid] = await mesh.audit_events(sent.study_id, "ai_result.invalid")
    assert invalid["error_class"] == "InvalidResult"
    assert "output BOXES of chest_ct_garbage has shape [3, 5], expected [N, 6]" \
        in invalid["error_message"]
    assert invalid["context"]["model"] == GARBAGE_MODEL
    [run] = await mesh.ai_runs(sent.study_id)
    assert run["status"] == "invalid" and run["attempts"] == 1, "an invalid result is not retried"
    assert await mesh.findings(sent.study_id) == []
    assert await _findings_stored(mesh, run["id"]) == []  # no findings, no SR/SEG to write
    listed = await worklist.list_worklist(mesh.db, rpb.ListWorklistRequest(facility="garbage"),
                                          SYSTEM)
    assert [(s.study.study_id, s.study.state) for s in listed.studies] == [
        (str(sent.study_id), "ai_failed")]


def _truncate_lowest_slice(folder: Path) -> str:
    """Cuts the pixel data of the most caudal slice in half; returns its SOPInstanceUID."""
    datasets = {p: pydicom.dcmread(p) for p in folder.glob("*.dcm")}
    path = min(datasets, key=lambda p: float(datasets[p].ImagePositionPatient[2]))
    ds = datasets[path]
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


async def test_truncated_slice_gives_a_partial_study(mesh: Mesh, tmp_path: Path) -> None:
    await mesh.add_facility("truncated")
    truth = generate("chest-ct", tmp_path, seed=8, **CHEST)
    broken = _truncate_lowest_slice(tmp_path)
    sent = await mesh.ingest_folder("truncated", tmp_path)
    assert sent.response.stored_count == CHEST["slices"]

    assert await mesh.wait_for_final_state(sent.study_id) == "ready_for_review"
    assert await mesh.state_history(sent.study_id) == HAPPY_PATH
    # display assets follow the model input, off the critical path
    await mesh.wait_for_audit(sent.study_id, "asset.series_rendered")
    study = await mesh.study(sent.study_id)
    assert study["partial"] is True
    # the received CT series (the SR and SEG series of its AI results may already stand beside it)
    [series] = [row for row in await mesh.series(sent.study_id) if row["modality"] == "CT"]
    assert series["preprocess_status"] == "partial"
    assert series["slice_count"] == CHEST["slices"] - 1
    [failed] = await mesh.audit_events(sent.study_id, "asset.preprocess_failed")
    assert failed["error_class"] == "TruncatedPixelData"
    assert "PixelData holds" in failed["error_message"]
    assert failed["context"]["sop_instance_uid"] == broken
    assets = await mesh.assets(sent.study_id)
    async with mesh.db.read() as s:
        # the received CT series (the AI results' SR and SEG series may already exist beside it)
        [refs] = (await s.scalars(select(Series.slice_refs)
                                  .where(Series.study_id == sent.study_id,
                                         Series.modality == "CT"))).all()
    ordered = {sop for sop, _ in refs}  # what viewports (rendered on demand) can show
    assert len(ordered) == CHEST["slices"] - 1 and broken not in ordered
    # viewports are made on demand: only the overlay job's slices (those with findings) have any
    shown = {a["slice_index"] for a in assets if a["kind"] == "viewport"}
    assert len(shown) < len(ordered) // 2, shown
    assert sum(a["kind"] == "model_input" for a in assets) == 1
    findings = await mesh.findings(sent.study_id)
    for lesion in truth.lesions:
        assert any(_near(f, lesion.center_mm, max(lesion.diameter_mm, 5.0)) for f in findings)


async def test_preprocess_worker_killed_mid_job_is_redelivered(mesh: Mesh,
                                                               tmp_path: Path) -> None:
    await mesh.add_facility("crashy")
    generate("chest-ct", tmp_path, seed=9, slices=96, rows=256, cols=256)

    async def in_hand() -> bool:
        return (await mesh.consumer_pending("preprocess-worker"))[1] == 1

    sent = await mesh.ingest_folder("crashy", tmp_path)
    await mesh.wait_for(in_hand, "the preprocess job to be delivered", 30, interval=0.02)
    assert await mesh.kill("preprocess") >= 2  # its run task, relay and consumer at least
    assert await mesh.state(sent.study_id) == "received", "killed before it finished"
    assert await in_hand(), "a killed worker acknowledges nothing"
    mesh.start_service("preprocess")

    assert await mesh.wait_for_final_state(sent.study_id, timeout=90) == "ready_for_review"
    assert await mesh.state_history(sent.study_id) == HAPPY_PATH
    await mesh.wait_for_audit(sent.study_id, "asset.series_rendered")
    events = await mesh.audit_events(sent.study_id)
    changes = [e["context"]["to"] for e in events if e["type"] == "study.state_changed"]
    assert changes == HAPPY_PATH, "one study.state_changed per transition"
    rendered = [e for e in events if e["type"] == "asset.series_rendered"]
    assert rendered and rendered[-1]["attempt"] >= 2, "the job was redelivered"
    assets = await mesh.assets(sent.study_id)
    keys = [(a["kind"], a["preset"], a["slice_index"]) for a in assets]
    assert len(keys) == len(set(keys)), "one set of assets"
    assert sum(a["kind"] == "model_input" for a in assets) == 1
    assert len(await mesh.ai_runs(sent.study_id)) == 1
    assert (await mesh.consumer_pending("preprocess-worker")) == (0, 0)


async def test_triton_outage_within_the_retry_budget(mesh: Mesh, tmp_path: Path) -> None:
    assert mesh.triton is not None
    await mesh.add_facility("outage")
    generate("chest-ct", tmp_path, seed=10, **CHEST)
    await asyncio.to_thread(mesh.triton.stop)
    try:
        sent = await mesh.ingest_folder("outage", tmp_path)
        await mesh.wait_for_audit(sent.study_id, "ai_run.retry_scheduled", timeout=60)
    finally:
        await asyncio.to_thread(mesh.triton.start)

    assert await mesh.wait_for_final_state(sent.study_id) == "ready_for_review"
    assert await mesh.state_history(sent.study_id) == HAPPY_PATH
    [run] = await mesh.ai_runs(sent.study_id)
    assert run["status"] == "completed" and run["attempts"] >= 2
    types = await mesh.audit_types(sent.study_id)
    assert types.count("ai_run.started") == run["attempts"]
    assert "ai_run.failed" not in types
    assert await mesh.findings(sent.study_id)


async def test_triton_outage_past_the_retry_budget(mesh: Mesh, tmp_path: Path) -> None:
    assert mesh.triton is not None
    await mesh.add_facility("blackout")
    generate("chest-ct", tmp_path, seed=12, **CHEST)
    await asyncio.to_thread(mesh.triton.stop)
    try:
        sent = await mesh.ingest_folder("blackout", tmp_path)
        assert await mesh.wait_for_final_state(sent.study_id, timeout=120) == "ai_failed"
    finally:
        await asyncio.to_thread(mesh.triton.start)

    max_deliver = mesh.topology.ai_run_jobs().max_deliver
    assert await mesh.state_history(sent.study_id) == ["received", "processed", "ai_failed"]
    [failed] = await mesh.audit_events(sent.study_id, "ai_run.failed")
    # run_model re-raises a plain TransientError once its own retries are spent
    assert failed["error_class"] in ("TransientError", "TritonTransientError", "CircuitOpen")
    assert "gave up after" in failed["error_message"]
    assert "UNAVAILABLE" in failed["error_message"] or "circuit open" in failed["error_message"]
    assert failed["attempt"] == max_deliver
    retries = await mesh.audit_events(sent.study_id, "ai_run.retry_scheduled")
    assert [e["attempt"] for e in retries] == list(range(1, max_deliver))
    [run] = await mesh.ai_runs(sent.study_id)
    assert run["status"] == "failed" and run["attempts"] == max_deliver
    listed = await worklist.list_worklist(mesh.db, rpb.ListWorklistRequest(facility="blackout"),
                                          SYSTEM)
    assert [s.study.state for s in listed.studies] == ["ai_failed"]
