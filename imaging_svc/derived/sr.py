"""An AI run's findings as a Comprehensive 3D SR, TID 1500 (highdicom), one measurement group each.

Per finding: Tracking Identifier (label and number) and Tracking Unique Identifier (from the
finding id), the finding type (its code), the algorithm (TID 4019: model name and version),
the finding site where the model's anatomy is known, its region as SCOORD on the referenced
image (POLYLINE for a box or polygon, POINT for a point) or, for a classification, no region;
the confidence and the model's measurements as numbers; the review status as an evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import highdicom as hd
import numpy as np
from highdicom.sr import (
    AlgorithmIdentification,
    CodedConcept,
    CoordinatesForMeasurement,
    DeviceObserverIdentifyingAttributes,
    FindingSite,
    ImageRegion,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    PlanarROIMeasurementsAndQualitativeEvaluations,
    QualitativeEvaluation,
    SourceImageForMeasurementGroup,
    SourceImageForRegion,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from imaging_svc.derived.content import (
    CONFIDENCE,
    FINDING_SITES,
    MANUFACTURER,
    REVIEW_STATUS,
    SCHEME,
    UNITLESS,
    DerivedFinding,
    RunInfo,
    finding_type,
    measurement_concept,
    tracking_uid,
    uid_of,
)

SR_SERIES_NUMBER = 9100


def _geometry(f: DerivedFinding) -> tuple[str, np.ndarray] | None:
    """(graphic type, points) of the finding on its key image, or None without geometry."""
    if f.kind == "point" and f.points_px and len(f.points_px) >= 2:
        return "POINT", np.array([f.points_px[:2]], dtype=float)
    if f.kind == "polygon" and f.points_px and len(f.points_px) >= 6:
        points = np.array(f.points_px, dtype=float).reshape(-1, 2)
        return "POLYLINE", np.vstack([points, points[:1]])
    if f.bbox_px and len(f.bbox_px) == 4:
        x0, y0, x1, y1 = f.bbox_px
        corners = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        return "POLYLINE", np.array(corners, dtype=float)
    return None


def _source(f: DerivedFinding, source: Dataset) -> SourceImageForRegion:
    frames = [f.frame] if int(getattr(source, "NumberOfFrames", 1) or 1) > 1 else None
    return SourceImageForRegion(source.SOPClassUID, source.SOPInstanceUID, frames)


def _infer_first_measurement_from(group: Dataset, coordinates: Dataset) -> None:
    """Gives the group's first NUM its region as INFERRED FROM coordinates (TID 300 row 11).

    Cornerstone's SR adapters, which OHIF uses to restore SR measurements into its
    measurement panel, read the region from inside the first NUM (the form OHIF writes);
    the group-level Image Region (TID 1410) stays for every other reader. highdicom's
    PlanarROI template does not offer this, so it is added to the built content item.
    """
    first = next(item for item in group.ContentSequence if item.ValueType == "NUM")
    if "ContentSequence" not in first:
        first.ContentSequence = []
    first.ContentSequence.append(coordinates)


def _measurements(f: DerivedFinding, algorithm: AlgorithmIdentification) -> list[Measurement]:
    found = [Measurement(CONFIDENCE, round(float(f.confidence), 6), UNITLESS,
                         algorithm_id=algorithm)]
    for name, value in sorted(f.measurements.items()):
        if value is None or not np.isfinite(value):
            continue
        concept, unit = measurement_concept(name)
        found.append(Measurement(concept, float(value), unit, algorithm_id=algorithm))
    return found


def _group(f: DerivedFinding, number: int, run: RunInfo, sources: Mapping[str, Dataset]
           ) -> PlanarROIMeasurementsAndQualitativeEvaluations | \
        MeasurementsAndQualitativeEvaluations:
    algorithm = AlgorithmIdentification(run.model_name, run.version_text)
    site = FINDING_SITES.get(run.model_name)
    source = sources.get(f.sop_instance_uid)
    geometry = _geometry(f) if source is not None else None
    region = None
    if geometry is not None and source is not None:
        region = ImageRegion(geometry[0], geometry[1], _source(f, source))
    common: dict[str, Any] = {
        "tracking_identifier": TrackingIdentifier(tracking_uid(f.finding_id),
                                                  f"{f.label[:52]} #{number}"),
        "finding_type": finding_type(f.label, f.code),
        "algorithm_id": algorithm,
        "finding_sites": [FindingSite(site)] if site is not None else None,
        "measurements": _measurements(f, algorithm),
        "qualitative_evaluations": [QualitativeEvaluation(
            REVIEW_STATUS, CodedConcept(f.review_status[:16] or "pending", SCHEME,
                                        f.review_status or "pending"))],
    }
    if region is not None:
        group = PlanarROIMeasurementsAndQualitativeEvaluations(referenced_region=region, **common)
        _infer_first_measurement_from(group[0], CoordinatesForMeasurement(
            geometry[0], geometry[1], _source(f, source)))  # type: ignore[index, arg-type]
        return group
    images = ([SourceImageForMeasurementGroup(source.SOPClassUID, source.SOPInstanceUID)]
              if source is not None else None)
    return MeasurementsAndQualitativeEvaluations(source_images=images, **common)


def _nothing_left(run: RunInfo) -> MeasurementsAndQualitativeEvaluations:
    """TID 1500 needs one group: a version where review rejected every finding says so."""
    text = "No accepted or pending AI findings"
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid_of(run.ai_run_id, "none"), text),
        finding_type=CodedConcept("no-findings", SCHEME, text),
        algorithm_id=AlgorithmIdentification(run.model_name, run.version_text))


def build_sr(run: RunInfo, findings: Sequence[DerivedFinding], sources: Mapping[str, Dataset],
             *, series_instance_uid: str, sop_instance_uid: str, version: int,
             previous: Sequence[Dataset] = ()) -> hd.sr.Comprehensive3DSR:
    """The SR of `findings` (already filtered); `sources` maps SOPInstanceUID → the referenced
    received instance's header (the evidence). `previous` are earlier versions' SRs."""
    if not sources:
        raise ValueError("an SR needs at least one referenced image of the study")
    device = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name=run.model_name[:64], manufacturer_name=MANUFACTURER,
            model_name=f"{run.model_name} {run.version_text}"[:64]))
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=device),
        procedure_reported=CodedConcept("363679005", "SCT", "Imaging"),
        imaging_measurements=[_group(f, i, run, sources) for i, f in enumerate(findings, 1)]
        or [_nothing_left(run)],
    )
    evidence = list(sources.values())
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=series_instance_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid,
        instance_number=version,
        manufacturer=MANUFACTURER,
        series_description=f"AI findings {run.model_name} {run.version_text}"[:64],
        previous_versions=list(previous) or None,
        is_complete=True,
    )
