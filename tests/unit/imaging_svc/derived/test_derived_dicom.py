"""SR (TID 1500) and SEG written with highdicom from findings, then re-read with highdicom and
pydicom: tracking identifiers, geometry, algorithm, finding site, segments, references."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from imaging_svc.derived.content import (
    DerivedFinding,
    RunInfo,
    fingerprint,
    included,
    tracking_uid,
    uid_of,
)
from imaging_svc.derived.seg import build_seg
from imaging_svc.derived.sr import build_sr
from sidecar_synth import generate

# Synthetic studies (sidecar_synth): a small chest CT and a small brain MR.
CHEST = {"slices": 12, "rows": 64, "cols": 64}
BRAIN = {"slices": 8, "rows": 64, "cols": 64, "lesions": 1}


def _headers(kind: str, folder: Path, **opts: object) -> list[Dataset]:
    generate(kind, folder, seed=1, **opts)
    found = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.rglob("*.dcm"))]
    return sorted(found, key=lambda d: float(d.ImagePositionPatient[2]))


def _bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def chest(tmp_path_factory: pytest.TempPathFactory) -> list[Dataset]:
    return _headers("chest-ct", tmp_path_factory.mktemp("chest"), **CHEST)


@pytest.fixture(scope="module")
def brain(tmp_path_factory: pytest.TempPathFactory) -> list[Dataset]:
    return _headers("brain-mr", tmp_path_factory.mktemp("brain"), **BRAIN)


def _box(source: Dataset, **extra: object) -> DerivedFinding:
    fields: dict = {"finding_id": str(uuid.uuid4()), "label": "Lung nodule candidate",
                    "code": "SCT:27925004", "confidence": 0.83, "kind": "box",
                    "series_instance_uid": source.SeriesInstanceUID,
                    "sop_instance_uid": source.SOPInstanceUID, "bbox_px": (10.0, 12.0, 20.0, 24.0),
                    "center_mm": (1.0, 2.0, 3.0),
                    "measurements": {"diameter_mm": 6.5, "volume_ml": 0.14, "extent_x_mm": 6.1}}
    fields.update(extra)
    return DerivedFinding(**fields)


def test_sr_round_trip(chest: list[Dataset]) -> None:
    src = chest[5]
    box = _box(src)
    summary = _box(src, kind="classification", label="Overall suspicion", code="", bbox_px=None,
                   confidence=0.4, measurements={})
    run = RunInfo(str(uuid.uuid4()), "chest_ct_nodules", "1", src.SeriesInstanceUID)
    sr = build_sr(run, [box, summary], {src.SOPInstanceUID: src}, version=1,
                  series_instance_uid=uid_of(run.ai_run_id, "sr"),
                  sop_instance_uid=uid_of(run.ai_run_id, "sr", 1))
    data = _bytes(sr)

    plain = pydicom.dcmread(io.BytesIO(data))
    assert plain.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert plain.Modality == "SR" and plain.StudyInstanceUID == src.StudyInstanceUID
    assert plain.SeriesInstanceUID != src.SeriesInstanceUID
    assert plain.ConceptNameCodeSequence[0].CodeValue == "126000"  # TID 1500 root
    assert plain.PatientID == src.PatientID

    report = hd.sr.srread(io.BytesIO(data))
    groups = report.content.get_planar_roi_measurement_groups()
    assert len(groups) == 1
    group = groups[0]
    assert group.tracking_uid == tracking_uid(box.finding_id)
    assert group.tracking_identifier == "Lung nodule candidate #1"
    assert group.finding_type.value == "27925004" and group.finding_type.scheme_designator == "SCT"
    assert group.roi.GraphicType == "POLYLINE" and group.roi.ValueType == "SCOORD"
    assert group.roi.value[0].tolist() == [10.0, 12.0]
    ref = group.roi.ContentSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID
    # OHIF's restore path reads the region from the group's first NUM (INFERRED FROM).
    first_num = next(i for i in group[0].ContentSequence if i.ValueType == "NUM")
    inferred = first_num.ContentSequence[-1]
    assert inferred.ValueType == "SCOORD" and inferred.RelationshipType == "INFERRED FROM"
    assert list(inferred.GraphicData) == list(group.roi.GraphicData)
    names = {m.name.meaning: m.value for m in group.get_measurements()}
    assert names["AI confidence"] == pytest.approx(0.83)
    assert names["Diameter"] == pytest.approx(6.5)
    algorithm = {i.ConceptNameCodeSequence[0].CodeValue: i.TextValue
                 for i in group[0].ContentSequence if i.ValueType == "TEXT"}
    assert algorithm["111001"] == "chest_ct_nodules" and algorithm["111003"] == "1"  # TID 4019
    assert [s.value.value for s in group.finding_sites] == ["39607008"]  # lung
    evaluations = group.get_qualitative_evaluations()
    assert evaluations[0].value.value == "pending"
    # The classification (no geometry) is a measurement group of its own, without a region.
    imaging = next(i for i in plain.ContentSequence
                   if i.ConceptNameCodeSequence[0].CodeValue == "126010")
    assert [g.ConceptNameCodeSequence[0].CodeValue for g in imaging.ContentSequence] \
        == ["125007", "125007"]


def test_sr_version_references_its_predecessor(chest: list[Dataset]) -> None:
    src = chest[3]
    run = RunInfo(str(uuid.uuid4()), "chest_ct_nodules", "1", src.SeriesInstanceUID)
    first = build_sr(run, [_box(src)], {src.SOPInstanceUID: src}, version=1,
                     series_instance_uid=uid_of(run.ai_run_id, "sr"),
                     sop_instance_uid=uid_of(run.ai_run_id, "sr", 1))
    second = build_sr(run, [], {src.SOPInstanceUID: src}, version=2,
                      series_instance_uid=uid_of(run.ai_run_id, "sr"),
                      sop_instance_uid=uid_of(run.ai_run_id, "sr", 2),
                      previous=[pydicom.dcmread(io.BytesIO(_bytes(first)))])
    again = pydicom.dcmread(io.BytesIO(_bytes(second)))
    assert again.InstanceNumber == 2 and again.SeriesInstanceUID == first.SeriesInstanceUID
    previous = again.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert previous.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID
    content = hd.sr.srread(io.BytesIO(_bytes(second))).content
    assert content.get_planar_roi_measurement_groups() == []
    imaging = next(i for i in again.ContentSequence
                   if i.ConceptNameCodeSequence[0].CodeValue == "126010")
    texts = [i.TextValue for i in imaging.ContentSequence[0].ContentSequence
             if i.ValueType == "TEXT"]
    assert "No accepted or pending AI findings" in texts


def test_seg_round_trip(brain: list[Dataset]) -> None:
    rows, cols = brain[0].Rows, brain[0].Columns
    masks = []
    for n, (z0, z1) in enumerate([(1, 3), (4, 6)]):
        m = np.zeros((len(brain), rows, cols), dtype=bool)
        m[z0:z1, 10 + n * 20:20 + n * 20, 10:20] = True
        finding = DerivedFinding(str(uuid.uuid4()), "Hyperintense brain lesion", "SCT:52988006",
                                 0.5, "mask", brain[0].SeriesInstanceUID,
                                 brain[z0].SOPInstanceUID, mask_object_key=f"k{n}")
        masks.append((finding, m))
    run = RunInfo(str(uuid.uuid4()), "brain_mr_lesions", "1", brain[0].SeriesInstanceUID)
    seg = build_seg(run, masks, brain, version=1,
                    series_instance_uid=uid_of(run.ai_run_id, "seg"),
                    sop_instance_uid=uid_of(run.ai_run_id, "seg", 1))
    data = _bytes(seg)

    plain = pydicom.dcmread(io.BytesIO(data))
    assert plain.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and plain.Modality == "SEG"
    assert plain.ReferencedSeriesSequence[0].SeriesInstanceUID == brain[0].SeriesInstanceUID
    assert int(plain.NumberOfFrames) == 2 * len(brain)  # no empty frame omitted
    assert plain.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    algo = plain.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmName == "brain_mr_lesions" and algo.AlgorithmVersion == "1"

    back = hd.seg.segread(io.BytesIO(data))
    assert back.number_of_segments == 2
    for number, (finding, mask) in enumerate(masks, 1):
        description = back.get_segment_description(number)
        assert description.tracking_uid == tracking_uid(finding.finding_id)
        assert description.segment_label == f"Hyperintense brain lesion #{number}"
        uids = [d.SOPInstanceUID for d in brain]
        pixels = back.get_pixels_by_source_instance(uids, segment_numbers=[number])
        assert np.array_equal(pixels[..., 0].astype(bool), mask)


def test_seg_refuses_a_mask_of_another_shape(brain: list[Dataset]) -> None:
    finding = DerivedFinding(str(uuid.uuid4()), "Lesion", "", 0.5, "mask", "1.2", "1.2.3")
    run = RunInfo(str(uuid.uuid4()), "brain_mr_lesions", "1", "1.2")
    with pytest.raises(ValueError, match="slices"):
        build_seg(run, [(finding, np.zeros((len(brain) + 1, 4, 4), bool))], brain, version=1,
                  series_instance_uid="1.2.3.4", sop_instance_uid="1.2.3.4.5")


def test_versions_follow_review_decisions() -> None:
    a = DerivedFinding("00000000-0000-0000-0000-000000000001", "A", "", 0.5, "box", "1.2", "1.2.3")
    b = DerivedFinding("00000000-0000-0000-0000-000000000002", "B", "", 0.5, "box", "1.2", "1.2.3")
    rejected = DerivedFinding(**{**a.__dict__, "review_status": "rejected"})
    accepted = DerivedFinding(**{**a.__dict__, "review_status": "accepted"})
    assert included([b, a]) == [a, b]
    assert included([rejected, b]) == [b]
    assert fingerprint(included([a, b])) != fingerprint(included([accepted, b]))
    assert fingerprint(included([a, b])) == fingerprint(included([b, a]))
