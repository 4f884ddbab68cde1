"""Overlay images: findings (boxes, masks) drawn on the matching viewport images of a series."""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from sidecar_core.display.render import Box, overlay_png


@dataclass
class FindingMarks:
    """What one finding draws: a box on its key slice and/or a mask over slices."""

    label: str
    sop_instance_uid: str
    frame: int
    bbox_px: Sequence[float] | None = None
    mask: np.ndarray | None = None  # [Z, Y, X] in the series' anatomical order, or [Y, X]


@dataclass
class SliceMarks:
    boxes: list[Box] = field(default_factory=list)
    mask: np.ndarray | None = None


def marks_by_slice(
    findings: Sequence[FindingMarks], slice_of: Callable[[str, int], int | None]
) -> dict[int, SliceMarks]:
    """Groups the marks of every finding by slice index (masks may cover many slices)."""
    out: dict[int, SliceMarks] = defaultdict(SliceMarks)
    for f in findings:
        if f.bbox_px is not None and len(f.bbox_px) == 4:
            z = slice_of(f.sop_instance_uid, f.frame)
            if z is not None:
                x0, y0, x1, y1 = (float(v) for v in f.bbox_px)
                out[z].boxes.append((x0, y0, x1, y1, f.label))
        if f.mask is not None:
            volume = f.mask if f.mask.ndim == 3 else f.mask[None]
            key = slice_of(f.sop_instance_uid, f.frame) if f.mask.ndim == 2 else None
            for z in np.flatnonzero(volume.reshape(volume.shape[0], -1).any(axis=1)):
                target = int(key if key is not None else z)
                marks = out[target]
                layer = volume[z].astype(bool)
                marks.mask = layer if marks.mask is None else (marks.mask | layer)
    return dict(out)


def render_overlay(viewport_png: bytes, marks: SliceMarks) -> bytes:
    """The viewport image with the slice's marks drawn on it (PNG)."""
    base = np.asarray(Image.open(io.BytesIO(viewport_png)))
    return overlay_png(base, boxes=marks.boxes, mask=marks.mask)
