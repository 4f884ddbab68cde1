"""An AI run's mask findings as a DICOM SEG (highdicom): one binary segment per finding, over
every image of the analysed series (`omit_empty_frames=False`, which OHIF displays reliably)."""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from imaging_svc.derived.content import (
    FINDING_SITES,
    MANUFACTURER,
    DerivedFinding,
    RunInfo,
    finding_type,
    tracking_uid,
)

SEG_SERIES_NUMBER = 9200


def build_seg(run: RunInfo, masks: Sequence[tuple[DerivedFinding, np.ndarray]],
              sources: Sequence[Dataset], *, series_instance_uid: str, sop_instance_uid: str,
              version: int) -> hd.seg.Segmentation:
    """`sources` are the analysed series' images (headers suffice) in the masks' slice order;
    each mask is bool/uint8 [len(sources), Rows, Columns] (or [Rows, Columns] for one image)."""
    if not masks:
        raise ValueError("a SEG needs at least one mask finding")
    algorithm = hd.AlgorithmIdentificationSequence(
        name=run.model_name[:64], family=codes.cid7162.ArtificialIntelligence,
        version=run.version_text[:64], source=MANUFACTURER)
    site = FINDING_SITES.get(run.model_name)
    descriptions, planes = [], []
    for number, (finding, mask) in enumerate(masks, 1):
        array = np.asarray(mask).astype(bool)
        if array.ndim == 2:
            array = array[None]
        if array.shape[0] != len(sources):
            raise ValueError(f"mask of finding {finding.finding_id} has {array.shape[0]} slices; "
                             f"the series has {len(sources)} images")
        planes.append(array)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=f"{finding.label[:52]} #{number}",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=finding_type(finding.label, finding.code),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=tracking_uid(finding.finding_id),
            tracking_id=f"{finding.label[:52]} #{number}",
            anatomic_regions=[site] if site is not None else None,
        ))
    pixels = np.stack(planes, axis=-1).astype(np.uint8)  # [frames, rows, columns, segments]
    return hd.seg.Segmentation(
        source_images=list(sources),
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid,
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid,
        instance_number=version,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=run.model_name[:64],
        software_versions=run.version_text[:64],
        device_serial_number="sidecar",
        content_label="AI_MASKS",
        content_description=f"AI masks {run.model_name} {run.version_text}"[:64],
        series_description=f"AI masks {run.model_name} {run.version_text}"[:64],
        omit_empty_frames=False,
    )
