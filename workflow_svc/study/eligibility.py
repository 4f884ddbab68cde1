"""Eligibility: does an enabled model cover this study, on which series, and if not, exactly why."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from sidecar_core.registry import ModelEntry, Registry, mm

MAX_REASONS = 4


class Stage(IntEnum):
    """Checks in order; the reason shown for an ineligible study comes from the deepest one."""

    MODALITY = 1
    BODY_PART = 2
    DESCRIPTION = 3
    IMAGE_TYPE = 4
    SLICES = 5
    PIXEL_SPACING = 6
    SLICE_SPACING = 7


@dataclass(frozen=True)
class StudyFacts:
    """Study-level index attributes eligibility looks at."""

    study_instance_uid: str = ""
    description: str = ""
    modalities: tuple[str, ...] = ()

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, Any]) -> StudyFacts:
        """From DICOM keywords (StudyInstanceUID, StudyDescription, ModalitiesInStudy)."""
        return cls(
            study_instance_uid=str(attributes.get("StudyInstanceUID") or ""),
            description=str(attributes.get("StudyDescription") or ""),
            modalities=tuple(v.upper() for v in _strings(attributes.get("ModalitiesInStudy"))),
        )


@dataclass(frozen=True)
class SeriesFacts:
    """Series-level index attributes eligibility looks at."""

    series_instance_uid: str
    modality: str
    body_part: str = ""
    description: str = ""
    slice_count: int = 0
    # PixelSpacing (row, column) mm; MG falls back to ImagerPixelSpacing.
    pixel_spacing_mm: tuple[float, float] | None = None
    slice_spacing_mm: float | None = None
    image_type: tuple[str, ...] = ()

    @classmethod
    def from_attributes(cls, series_instance_uid: str, attributes: Mapping[str, Any],
                        slice_count: int, slice_spacing_mm: float | None = None) -> SeriesFacts:
        """From DICOM keywords of a representative instance (values as pydicom's JSON or str).

        `slice_spacing_mm` is the distance between slice positions measured over the series;
        without it SpacingBetweenSlices is used (never SliceThickness).
        """
        spacing = _floats(attributes.get("PixelSpacing")) or \
            _floats(attributes.get("ImagerPixelSpacing"))
        if slice_spacing_mm is None:
            between = _floats(attributes.get("SpacingBetweenSlices"))
            slice_spacing_mm = abs(between[0]) if between else None
        return cls(
            series_instance_uid=series_instance_uid,
            modality=str(attributes.get("Modality") or "").upper(),
            body_part=str(attributes.get("BodyPartExamined") or ""),
            description=str(attributes.get("SeriesDescription") or ""),
            slice_count=slice_count,
            pixel_spacing_mm=(spacing[0], spacing[1]) if len(spacing) >= 2 else None,
            slice_spacing_mm=slice_spacing_mm,
            image_type=tuple(v.upper() for v in _strings(attributes.get("ImageType"))),
        )


@dataclass(frozen=True)
class PlannedRun:
    model_name: str
    series_uid: str


@dataclass(frozen=True)
class Rejection:
    """Why one model does not run on one series."""

    model_name: str
    series_uid: str
    stage: Stage
    reason: str


@dataclass(frozen=True)
class EligibilityDecision:
    eligible: bool
    reason: str
    runs: list[PlannedRun] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def model_names(self) -> list[str]:
        return sorted({r.model_name for r in self.runs})


def decide(study: StudyFacts, series: list[SeriesFacts], registry: Registry,
           enabled_models: list[str] | None) -> EligibilityDecision:
    """Plans one run per (model, covered series); says specifically why when there is none."""
    if not series:
        return EligibilityDecision(False, "study has no series")
    enabled = registry.enabled_for(enabled_models)
    runs: list[PlannedRun] = []
    rejections: list[Rejection] = []
    for model in enabled:
        covered = []
        for s in series:
            rejection = check_series(model, study, s)
            if rejection is None:
                covered.append(s)
            else:
                rejections.append(rejection)
        runs.extend(PlannedRun(model.name, s.series_instance_uid)
                    for s in _select(model, covered))
    if runs:
        by_model: dict[str, int] = {}
        for r in runs:
            by_model[r.model_name] = by_model.get(r.model_name, 0) + 1
        covered_text = ", ".join(f"{name} ({n} series)" for name, n in by_model.items())
        return EligibilityDecision(True, f"covered by {covered_text}", runs, rejections)
    return EligibilityDecision(False, _why_not(study, series, registry, enabled, rejections),
                               [], rejections)


def check_series(model: ModelEntry, study: StudyFacts, s: SeriesFacts) -> Rejection | None:
    """The first coverage rule of `model` that `s` breaks, or None when it is covered."""
    cov = model.coverage
    uid = s.series_instance_uid

    def no(stage: Stage, reason: str) -> Rejection:
        return Rejection(model.name, uid, stage, reason)

    modality = s.modality.upper()
    if modality not in cov.modalities:
        return no(Stage.MODALITY, f"unsupported modality {modality or '(none)'}")
    if cov.body_parts:
        part = s.body_part.strip().upper().replace(" ", "_")
        if part and part not in cov.body_parts:
            return no(Stage.BODY_PART, f"unsupported body part {part} for {modality}")
        if not part and not _names_body_part(cov.body_parts, s.description, study.description):
            return no(Stage.BODY_PART,
                      f"series {uid} has no body part and its description "
                      f"{s.description or study.description!r} names none of "
                      f"{', '.join(cov.body_parts)} for {modality}")
    excluded = cov.series_description.first_exclude(s.description)
    if excluded is not None:
        return no(Stage.DESCRIPTION, f"series {uid} description {s.description!r} is excluded "
                                     f"by {model.name} (pattern {excluded!r})")
    if not cov.series_description.included(s.description):
        return no(Stage.DESCRIPTION, f"series {uid} description {s.description!r} matches "
                                     f"none of the patterns {model.name} includes")
    bad_type = next((t for t in s.image_type if t in cov.image_type_exclude), None)
    if bad_type is not None:
        return no(Stage.IMAGE_TYPE, f"series {uid} is a {bad_type} image; "
                                    f"{model.name} does not take those")
    if s.slice_count < cov.min_slices:
        return no(Stage.SLICES, f"series {uid} has {s.slice_count} slices; {model.name} needs "
                                f"at least {cov.min_slices}")
    if cov.max_slices is not None and s.slice_count > cov.max_slices:
        return no(Stage.SLICES, f"series {uid} has {s.slice_count} slices; {model.name} takes "
                                f"at most {cov.max_slices}")
    if cov.pixel_spacing_mm is not None:
        rng = cov.pixel_spacing_mm
        if s.pixel_spacing_mm is None or not all(_finite(v) for v in s.pixel_spacing_mm):
            return no(Stage.PIXEL_SPACING, f"series {uid} has no pixel spacing; {model.name} "
                                           f"needs {rng.describe()}")
        bad = next((v for v in s.pixel_spacing_mm if not rng.contains(v)), None)
        if bad is not None:
            return no(Stage.PIXEL_SPACING, f"series {uid}: pixel spacing {mm(bad)} mm outside "
                                           f"{rng.describe()} for {model.name}")
    if cov.slice_spacing_mm is not None:
        rng = cov.slice_spacing_mm
        if s.slice_spacing_mm is None or not _finite(s.slice_spacing_mm):
            return no(Stage.SLICE_SPACING, f"series {uid} has no slice spacing; {model.name} "
                                           f"needs {rng.describe()}")
        if not rng.contains(s.slice_spacing_mm):
            return no(Stage.SLICE_SPACING, f"series {uid}: slice spacing "
                                           f"{mm(s.slice_spacing_mm)} mm outside "
                                           f"{rng.describe()} for {model.name}")
    return None


def _select(model: ModelEntry, covered: list[SeriesFacts]) -> list[SeriesFacts]:
    limit = model.coverage.max_series
    if limit is None:
        return covered
    rules = model.coverage.series_description
    ranked = sorted(covered, key=lambda s: (not rules.preferred(s.description), -s.slice_count,
                                            s.series_instance_uid))
    return ranked[:limit]


def _why_not(study: StudyFacts, series: list[SeriesFacts], registry: Registry,
             enabled: list[ModelEntry], rejections: list[Rejection]) -> str:
    enabled_names = {m.name for m in enabled}
    idle = [m for m in registry.models if m.name not in enabled_names
            and any(check_series(m, study, s) is None for s in series)]
    if idle:
        where = "for this facility" if idle[0].enabled else "in the model registry"
        return f"{idle[0].name} would cover this study but is not enabled {where}"
    if not enabled:
        return "no AI model is enabled for this facility"
    deepest = max(r.stage for r in rejections)
    if deepest == Stage.MODALITY:
        modalities = sorted({s.modality.upper() or "(none)" for s in series})
        return f"unsupported modality {', '.join(modalities)}"
    reasons = list(dict.fromkeys(r.reason for r in rejections if r.stage == deepest))
    more = len(reasons) - MAX_REASONS
    text = "; ".join(reasons[:MAX_REASONS])
    return text + (f"; and {more} more" if more > 0 else "")


def _names_body_part(parts: Iterable[str], *descriptions: str) -> bool:
    for part in parts:
        word = re.compile(r"(?<![A-Za-z])" + re.escape(part).replace("_", "[ _]") +
                          r"(?![A-Za-z])", re.IGNORECASE)
        if any(word.search(d) for d in descriptions if d):
            return True
    return False


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split("\\") if v.strip()]
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    return [str(value)]


def _floats(value: Any) -> list[float]:
    out = []
    for v in _strings(value):
        try:
            out.append(float(v))
        except ValueError:
            return []
    return out


def _finite(value: float) -> bool:
    return math.isfinite(value)
