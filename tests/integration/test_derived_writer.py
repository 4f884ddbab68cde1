"""The DICOM results writer against a real PostgreSQL and object store (no bus): versions only
on change, it acts on the workflow's findings-stored event at its first delivery and never on
ai_run.finished, a run that is not completed gets nothing, content highdicom refuses is a
permanent, audited failure."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from sqlalchemy import select, update

from imaging_svc.derived.writer import DerivedResultsWriter
from protos.sidecar.events.v1 import events_pb2
from sidecar_core.errors import PermanentError
from sidecar_core.messaging.bus import Delivery
from sidecar_core.messaging.subjects import AI_RUN_FINDINGS_STORED, AI_RUN_FINISHED, Topology
from sidecar_core.model_input import FORMAT
from sidecar_core.storage.objectstore import ObjectStore
from sidecar_core.store.models import (
    AiRun,
    Asset,
    AuditEvent,
    DerivedObject,
    Facility,
    Finding,
    Instance,
    Series,
    Study,
)
from sidecar_synth import generate

pytestmark = [pytest.mark.integration]

# A small synthetic brain MR (sidecar_synth), indexed by hand as ingest would.
BRAIN = {"slices": 6, "rows": 48, "cols": 48, "lesions": 1}


def _npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


async def _study(db: Any, objects: ObjectStore, folder: Path) -> dict[str, Any]:
    generate("brain-mr", folder, seed=2, **BRAIN)
    datasets = sorted(((p.read_bytes(), pydicom.dcmread(p, stop_before_pixels=True))
                       for p in folder.rglob("*.dcm")),
                      key=lambda item: float(item[1].ImagePositionPatient[2]))
    first = datasets[0][1]
    ids = {k: uuid.uuid4() for k in ("facility", "study", "series", "run")}
    uids = [ds.SOPInstanceUID for _, ds in datasets]
    model_input = _npz(format=np.array(FORMAT), volume=np.zeros((len(uids), 1, 1), np.float32),
                       positions=np.zeros((len(uids), 3)), orientation=np.zeros(6),
                       pixel_spacing=np.ones(2), slice_spacing=np.array(1.0),
                       sop_instance_uids=np.array(uids), frames=np.ones(len(uids), np.int32),
                       modality=np.array("MR"), laterality=np.array([""] * len(uids)),
                       view_position=np.array([""] * len(uids)))
    async with db.unit_of_work() as s:
        s.add(Facility(id=ids["facility"], name=f"w{ids['facility'].hex[:8]}"))
        await s.flush()
        s.add(Study(id=ids["study"], facility_id=ids["facility"], accession="ACC1",
                    study_instance_uid=first.StudyInstanceUID, modality="MR"))
        await s.flush()
        s.add(Series(id=ids["series"], study_id=ids["study"],
                     series_instance_uid=first.SeriesInstanceUID, modality="MR"))
        await s.flush()
        for n, (data, ds) in enumerate(datasets, 1):
            s.add(Instance(series_id=ids["series"], study_id=ids["study"],
                           sop_instance_uid=ds.SOPInstanceUID, sop_class_uid=ds.SOPClassUID,
                           instance_number=n, object_key=objects.put(data),
                           size_bytes=len(data), source="grpc"))
        s.add(Asset(study_id=ids["study"], series_id=ids["series"], kind="model_input",
                    object_key=objects.put(model_input), content_type="application/x-npz",
                    sha256="0" * 64))
        s.add(AiRun(id=ids["run"], study_id=ids["study"], series_id=ids["series"],
                    model_name="brain_mr_lesions", model_version="1", status="running"))
    return {**ids, "uids": uids, "shape": (len(uids), first.Rows, first.Columns)}


async def _finding(db: Any, objects: ObjectStore, study: dict[str, Any], slices: slice,
                   shape: tuple[int, ...] | None = None) -> uuid.UUID:
    mask = np.zeros(shape or study["shape"], np.uint8)
    mask[slices, 10:20, 10:20] = 1
    fid = uuid.uuid4()
    async with db.unit_of_work() as s:
        s.add(Finding(id=fid, ai_run_id=study["run"], study_id=study["study"],
                      model_name="brain_mr_lesions", model_version="1",
                      label="Hyperintense brain lesion", code="SCT:52988006", confidence=0.5,
                      kind="mask", sop_instance_uid=study["uids"][slices.start],
                      bbox_px=[10, 10, 19, 19], mask_object_key=objects.put(_npz(mask=mask))))
    return fid


async def _versions(db: Any, run: uuid.UUID) -> list[tuple[str, int]]:
    async with db.read() as s:
        rows = (await s.execute(select(DerivedObject.kind, DerivedObject.version).where(
            DerivedObject.ai_run_id == run).order_by(DerivedObject.kind,
                                                     DerivedObject.version))).all()
    return [(k, v) for k, v in rows]


async def _complete(db: Any, run: uuid.UUID) -> None:
    async with db.unit_of_work() as s:
        await s.execute(update(AiRun).where(AiRun.id == run).values(status="completed"))


async def test_versions_are_written_only_when_the_content_changes(db: Any,
                                                                  tmp_path: Path) -> None:
    objects = ObjectStore(tmp_path / "objects", fsync=False)
    writer = DerivedResultsWriter(db, objects, Topology("wtest", "WTEST"))
    study = await _study(db, objects, tmp_path / "study")
    first = await _finding(db, objects, study, slice(1, 3))
    await _finding(db, objects, study, slice(3, 5))
    # still running: its findings are not the run's result yet, nothing is written (and there is
    # nothing to wait for: the writer runs when the workflow says the findings are stored)
    assert await writer.write_run(study["run"], "ai_run.findings_stored") == []
    assert await _versions(db, study["run"]) == []
    await _complete(db, study["run"])

    written = await writer.write_run(study["run"], "ai_run.findings_stored")
    assert [(w.kind, w.version) for w in written] == [("sr", 1), ("seg", 1)]
    assert await writer.write_run(study["run"], "review.viewed") == []  # nothing changed

    async with db.unit_of_work() as s:
        await s.execute(update(Finding).where(Finding.id == first).values(
            review_status="rejected"))
    written = await writer.write_study(study["study"], [], "review.rejected")
    assert [(w.kind, w.version) for w in written] == [("sr", 2), ("seg", 2)]
    assert await _versions(db, study["run"]) == [("seg", 1), ("seg", 2), ("sr", 1), ("sr", 2)]
    async with db.read() as s:
        rows = (await s.execute(select(Instance).where(Instance.source == "derived"))).scalars()
        derived = {i.sop_instance_uid: i for i in rows}
    assert len(derived) == 4
    seg2 = pydicom.dcmread(io.BytesIO(objects.get(derived[written[1].sop_instance_uid]
                                                  .object_key)))
    assert len(seg2.SegmentSequence) == 1 and seg2.InstanceNumber == 2


async def test_a_mask_that_does_not_fit_the_series_is_a_permanent_audited_failure(
        db: Any, tmp_path: Path) -> None:
    objects = ObjectStore(tmp_path / "objects", fsync=False)
    writer = DerivedResultsWriter(db, objects, Topology("wtest", "WTEST"))
    study = await _study(db, objects, tmp_path / "study")
    await _finding(db, objects, study, slice(1, 3), shape=(BRAIN["slices"] + 2, 48, 48))
    await _complete(db, study["run"])
    with pytest.raises(PermanentError, match="seg of AI run"):
        await writer.write_run(study["run"], "ai_run.findings_stored")
    assert await _versions(db, study["run"]) == [("sr", 1)]  # the SR does not depend on it
    async with db.read() as s:
        failed = (await s.execute(select(AuditEvent).where(
            AuditEvent.type == "ai_result.dicom_failed"))).scalars().all()
    assert len(failed) == 1 and failed[0].context["kind"] == "seg"
    assert "slices" in failed[0].error_message


async def test_the_findings_stored_event_writes_at_its_first_delivery(db: Any,
                                                                      tmp_path: Path) -> None:
    """Order by events: the workflow emits ai_run.v1.findings_stored in the transaction that
    stores the findings, so the writer's first (and only) delivery writes; ai_run.finished,
    which may come before the findings are stored, is not the writer's to act on."""
    objects = ObjectStore(tmp_path / "objects", fsync=False)
    topology = Topology("wtest", "WTEST")
    writer = DerivedResultsWriter(db, objects, topology)
    study = await _study(db, objects, tmp_path / "study")
    await _finding(db, objects, study, slice(1, 3))
    run = str(study["run"])

    finished = events_pb2.AiRunFinished(ai_run_id=run, study_id=str(study["study"]),
                                        status="completed")
    await writer.handle(Delivery(topology.subject(AI_RUN_FINISHED), finished.SerializeToString(),
                                 1, f"ai_run.finished:{run}", 1))
    assert await _versions(db, study["run"]) == []  # ignored, not retried

    await _complete(db, study["run"])  # what the workflow commits with the event
    stored = events_pb2.AiRunFindingsStored(ai_run_id=run, study_id=str(study["study"]),
                                            model_name="brain_mr_lesions", finding_count=1)
    # attempt 1 of 1: a retry would have nowhere to go
    await writer.handle(Delivery(topology.subject(AI_RUN_FINDINGS_STORED),
                                 stored.SerializeToString(), 1,
                                 f"ai_run.findings_stored:{run}", 1))
    assert await _versions(db, study["run"]) == [("seg", 1), ("sr", 1)]
    async with db.read() as s:
        reasons = (await s.execute(select(DerivedObject.reason).where(
            DerivedObject.ai_run_id == study["run"]))).scalars().all()
    assert set(reasons) == {"ai_run.findings_stored"}

    # an event naming a run the store does not have is a permanent error, not a retry
    unknown = events_pb2.AiRunFindingsStored(ai_run_id=str(uuid.uuid4()),
                                             study_id=str(study["study"]))
    with pytest.raises(PermanentError, match="unknown AI run"):
        await writer.handle(Delivery(topology.subject(AI_RUN_FINDINGS_STORED),
                                     unknown.SerializeToString(), 1, "x", 8))
