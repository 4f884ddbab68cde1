"""FindingDraft: one normalised finding before ids, storage and validation by the service."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

FINDING_KINDS = ("classification", "box", "polygon", "point", "mask", "summary")


class InvalidModelOutput(ValueError):
    """The model's outputs break their contract (missing, empty where data is required,
    mis-shaped, NaN, out of range); the service records ai_result.invalid."""


@dataclass
class FindingDraft:
    """A generic, model-agnostic finding from a normaliser (docs/architecture.md, "Findings")."""

    label: str
    code: str  # "SCHEME:value", e.g. "SCT:27925004"; "" when no code exists
    confidence: float  # 0..1
    kind: str  # one of FINDING_KINDS
    model_name: str
    model_version: str
    sop_instance_uid: str | None = None
    frame: int | None = None  # 1-based frame in the referenced instance
    bbox_px: list[float] | None = None  # [x_min, y_min, x_max, y_max] on the key slice
    center_mm: list[float] | None = None  # [x, y, z] patient LPS; None without geometry
    measurements: dict[str, float] = field(default_factory=dict)
    summary: str = ""
    mask: np.ndarray | None = field(default=None, repr=False)  # bool [Z, Y, X] or [Y, X]
    series_instance_uid: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)  # e.g. slice_index, view

    def __post_init__(self) -> None:
        if self.kind not in FINDING_KINDS:
            raise ValueError(f"kind must be one of {FINDING_KINDS}, not {self.kind!r}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be within 0..1, not {self.confidence}")
