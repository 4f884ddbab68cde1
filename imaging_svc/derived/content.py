"""What an AI run's DICOM results say: findings as records, codes, UIDs and the site table."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

MANUFACTURER = "Radiology AI Sidecar"
# Private coding scheme (PS3.16: designators starting with "99") for what no standard names.
SCHEME = "99SIDECAR"
CONFIDENCE = CodedConcept("confidence", SCHEME, "AI confidence")
REVIEW_STATUS = CodedConcept("review-status", SCHEME, "Radiologist review status")
GENERIC_FINDING = CodedConcept("ai-finding", SCHEME, "AI finding")
# Review states whose findings stay out of the DICOM results ("accepted and pending" go in).
EXCLUDED_REVIEW = frozenset({"rejected", "ignored"})
# Finding site per reference model ("where known"): SNOMED CT anatomic structures.
FINDING_SITES: dict[str, Any] = {
    "chest_ct_nodules": codes.SCT.Lung,
    "mammo_masses": codes.SCT.Breast,
    "brain_mr_lesions": codes.SCT.Brain,
}
# Named measurements → (concept, UCUM unit); anything else is written under SCHEME, unit "1".
MEASUREMENTS: dict[str, tuple[CodedConcept, CodedConcept]] = {
    "diameter_mm": (CodedConcept("81827009", "SCT", "Diameter"),
                    CodedConcept("mm", "UCUM", "millimeter")),
    "volume_ml": (CodedConcept("118565006", "SCT", "Volume"),
                  CodedConcept("ml", "UCUM", "milliliter")),
}
UNITLESS = CodedConcept("1", "UCUM", "no units")
MM = CodedConcept("mm", "UCUM", "millimeter")


def uid_of(*parts: object) -> str:
    """A stable UID (2.25 form) from a name: the same run and version give the same UIDs."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, ':'.join(map(str, parts))).int}"


def tracking_uid(finding_id: str) -> str:
    """A finding's Tracking Unique Identifier: its id as a 2.25 UID."""
    return f"2.25.{uuid.UUID(finding_id).int}"


def finding_type(label: str, code: str) -> CodedConcept:
    """The finding's code ("SCT:27925004") with its label as meaning; a private one without."""
    scheme, _, value = code.partition(":")
    if scheme and value:
        return CodedConcept(value, scheme, label[:64] or value)
    return CodedConcept(
        "ai-" + hashlib.sha256(label.encode()).hexdigest()[:12], SCHEME, label[:64] or "AI finding")


def measurement_concept(name: str) -> tuple[CodedConcept, CodedConcept]:
    if name in MEASUREMENTS:
        return MEASUREMENTS[name]
    unit = MM if name.endswith("_mm") else UNITLESS
    return CodedConcept(name[:16], SCHEME, name.replace("_", " ")[:64]), unit


@dataclass(frozen=True)
class DerivedFinding:
    """One finding as the DICOM results carry it (a findings row, transport-free)."""

    finding_id: str
    label: str
    code: str
    confidence: float
    kind: str
    series_instance_uid: str
    sop_instance_uid: str
    frame: int = 1
    bbox_px: tuple[float, ...] | None = None
    points_px: tuple[float, ...] | None = None
    center_mm: tuple[float, ...] | None = None
    measurements: dict[str, float] = field(default_factory=dict)
    review_status: str = "pending"
    mask_object_key: str = ""


@dataclass(frozen=True)
class RunInfo:
    """The AI run the results belong to."""

    ai_run_id: str
    model_name: str
    model_version: str
    series_instance_uid: str  # the analysed (received) series

    @property
    def version_text(self) -> str:
        return self.model_version or "unknown"


def included(findings: list[DerivedFinding]) -> list[DerivedFinding]:
    """Accepted and pending findings (and edited ones), in a stable order."""
    kept = [f for f in findings if f.review_status not in EXCLUDED_REVIEW]
    return sorted(kept, key=lambda f: f.finding_id)


def fingerprint(findings: list[DerivedFinding]) -> str:
    """Changes exactly when what the SR or SEG would say changes (a new version is due)."""
    payload = json.dumps([asdict(f) for f in findings], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()
