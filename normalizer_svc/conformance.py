"""Conformance checks of a NormalizerService: realistic outputs must give valid findings, garbage
must be answered with INVALID_ARGUMENT."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from normalizer_svc.builtin.findings import FindingDraft
from normalizer_svc.builtin.model_input import ModelInput
from normalizer_svc.convert import ConversionError, finding_from_proto, tensor_to_proto
from normalizer_svc.external import ExternalNormaliser, NormaliserRejected, build_request
from normalizer_svc.geometry import has_geometry, patient_to_voxel
from normalizer_svc.validation import InvalidResult, validate_findings
from protos.sidecar.common.v1 import common_pb2
from protos.sidecar.normalizer.v1 import normalizer_service_pb2 as npb
from sidecar_core.security.mesh_tls import MeshCredentials

SERIES_UID = "2.25.314159265358979323846264338327950288"
STUDY = common_pb2.StudyKey(facility="conformance", accession="CHECK1",
                            study_instance_uid="2.25.271828182845904523536028747135266249")


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.detail}"


@dataclass
class Case:
    """Synthetic model input and outputs for one model, plus what must be rejected."""

    model_input: ModelInput
    valid: dict[str, np.ndarray]
    no_detections: dict[str, np.ndarray]
    # (check name, outputs as tensors) that must be answered with INVALID_ARGUMENT.
    garbage: list[tuple[str, list[common_pb2.Tensor]]] = field(default_factory=list)


def _stack(modality: str, slices: int, rows: int, cols: int, spacing: float, gap: float,
           views: tuple[str, str] | None = None) -> ModelInput:
    sops = np.array([f"{SERIES_UID}.{k + 1}" for k in range(slices)])
    if views is None:  # tilted 12° about x, so slice index × spacing along z is wrong
        tilt = math.radians(12.0)
        row_dir, col_dir = np.array([1.0, 0, 0]), np.array([0, math.cos(tilt), math.sin(tilt)])
        origin = np.array([-spacing * cols / 2, -spacing * rows / 2, -200.0])
        normal = np.cross(row_dir, col_dir)
        positions = np.array([origin + normal * gap * k for k in range(slices)])
        orientation = np.concatenate([row_dir, col_dir])
    else:  # projection images: no patient geometry
        positions, orientation = np.full((slices, 3), np.nan), np.full(6, np.nan)
    return ModelInput(
        volume=np.broadcast_to(np.float32(0), (slices, rows, cols)),
        positions=positions, orientation=orientation, pixel_spacing=np.array([spacing, spacing]),
        slice_spacing=gap if slices > 1 else math.nan, sop_instance_uids=sops,
        frames=np.ones(slices, np.int32), modality=modality,
        laterality=np.array([views[0] if views else ""] * slices),
        view_position=np.array([views[1] if views else ""] * slices))


def _tensors(outputs: dict[str, np.ndarray], **changes: np.ndarray | None) -> list[
        common_pb2.Tensor]:
    merged = {**outputs, **changes}
    return [tensor_to_proto(n, a) for n, a in merged.items() if a is not None]


def _common_garbage(valid: dict[str, np.ndarray]) -> list[tuple[str, list[common_pb2.Tensor]]]:
    first = next(iter(valid))
    truncated = _tensors(valid)
    truncated[0].raw_contents = truncated[0].raw_contents[:-3]
    junk = _tensors(valid)
    junk[0].datatype, junk[0].raw_contents = "BYTES", b"\x00garbage\xff" * 4
    return [("no outputs", []),
            (f"{first} missing", _tensors(valid, **{first: None})),
            (f"{first} bytes truncated", truncated),
            (f"{first} as BYTES", junk)]


def chest_ct_nodules() -> Case:
    mi = _stack("CT", 120, 512, 512, 0.7, 1.25)
    boxes = np.array([[40, 200, 150, 46, 212, 162], [80, 300, 350, 83, 306, 357]], np.float32)
    valid = {"BOXES": boxes, "SCORES": np.array([0.93, 0.61], np.float32)}
    case = Case(mi, valid, {"BOXES": np.zeros((0, 6), np.float32),
                            "SCORES": np.zeros((0,), np.float32)})
    case.garbage = _common_garbage(valid) + [
        ("BOXES [N, 5]", _tensors(valid, BOXES=boxes[:, :5].copy())),
        ("BOXES/SCORES row counts differ", _tensors(valid, SCORES=np.ones(3, np.float32) / 2)),
        ("NaN scores", _tensors(valid, SCORES=np.array([np.nan, 0.5], np.float32))),
        ("box outside the volume",
         _tensors(valid, BOXES=np.array([[40, 200, 150, 46, 212, 900]] * 2, np.float32))),
    ]
    return case


def mammo_masses() -> Case:
    mi = _stack("MG", 1, 3328, 2560, 0.07, math.nan, views=("L", "CC"))
    boxes = np.array([[1200, 1500, 1420, 1710]], np.float32)
    valid = {"BOXES": boxes, "SCORES": np.array([0.88], np.float32),
             "SUSPICION": np.array([0.88], np.float32)}
    case = Case(mi, valid, {"BOXES": np.zeros((0, 4), np.float32),
                            "SCORES": np.zeros((0,), np.float32),
                            "SUSPICION": np.array([0.02], np.float32)})
    case.garbage = _common_garbage(valid) + [
        ("BOXES [N, 3]", _tensors(valid, BOXES=boxes[:, :3].copy())),
        ("SUSPICION empty", _tensors(valid, SUSPICION=np.zeros((0,), np.float32))),
        ("NaN scores", _tensors(valid, SCORES=np.array([np.nan], np.float32))),
        ("box outside the image",
         _tensors(valid, BOXES=np.array([[1200, 1500, 9000, 1710]], np.float32))),
    ]
    return case


def brain_mr_lesions() -> Case:
    mi = _stack("MR", 28, 256, 256, 0.9, 5.0)
    zz, yy, xx = np.mgrid[0:28, 0:256, 0:256]
    lesion = ((zz - 14) * 5.0) ** 2 + ((yy - 120) * 0.9) ** 2 + ((xx - 130) * 0.9) ** 2 <= 8.0 ** 2
    valid = {"MASK": lesion.astype(np.uint8)}
    case = Case(mi, valid, {"MASK": np.zeros((28, 256, 256), np.uint8)})
    case.garbage = _common_garbage(valid) + [
        ("MASK rank 1", _tensors(valid, MASK=np.ones(16, np.uint8))),
        ("MASK shape differs from the series", _tensors(valid, MASK=np.ones((29, 256, 256),
                                                                             np.uint8))),
        ("MASK empty", _tensors(valid, MASK=np.zeros((0, 256, 256), np.uint8))),
    ]
    return case


CASES: dict[str, Callable[[], Case]] = {
    "chest_ct_nodules": chest_ct_nodules, "mammo_masses": mammo_masses,
    "brain_mr_lesions": brain_mr_lesions,
}


async def run_checks(target: str, model: str, timeout_s: float = 30.0,
                     credentials: MeshCredentials | None = None) -> list[CheckResult]:
    """Every check against the normaliser at `target` for `model`, in order (over mutual TLS
    with `credentials` when given)."""
    if model not in CASES:
        return [CheckResult("synthetic cases", False, f"no synthetic cases for model {model!r} "
                            f"(known: {', '.join(CASES)})")]
    case = CASES[model]()
    results: list[CheckResult] = []
    async with ExternalNormaliser(target, timeout_s=timeout_s, study=STUDY,
                                  credentials=credentials) as client:
        results.append(await _describe(client, model))
        if results[-1].detail.startswith(f"normaliser at {target}: DescribeNormalizer UNAVAILABLE"):
            return results  # nothing listens there: the other checks would only repeat it
        results.append(await _expect_findings(client, case, case.valid, model, "valid outputs",
                                              need_findings=True))
        results.append(await _expect_findings(client, case, case.no_detections, model,
                                              "no detections", need_findings=False))
        for name, tensors in case.garbage:
            results.append(await _expect_rejected(client, case, tensors, model, name))
        results.append(await _expect_findings(client, case, case.valid, model,
                                              "still answers after garbage", need_findings=True))
    return results


async def _describe(client: ExternalNormaliser, model: str) -> CheckResult:
    try:
        described = await client.describe()
    except Exception as exc:
        return CheckResult("describe", False, str(exc))
    if model not in described.model_names:
        return CheckResult("describe", False, f"serves {list(described.model_names)}, not "
                                              f"{model}")
    return CheckResult("describe", True, f"serves {', '.join(described.model_names)} (version "
                                         f"{described.normalizer_version or 'unset'})")


def _request(case: Case, model: str) -> npb.NormalizeRequest:
    return build_request(case.model_input, {}, model, "conformance", series_uid=SERIES_UID,
                         ai_run_id="conformance-check", study=STUDY)


async def _expect_findings(client: ExternalNormaliser, case: Case,
                           outputs: dict[str, np.ndarray], model: str, name: str,
                           need_findings: bool) -> CheckResult:
    request = _request(case, model)
    request.outputs.extend(_tensors(outputs))
    try:
        response = await client.normalise_request(request)
        findings = [finding_from_proto(f) for f in response.findings]
        validate_findings(findings, case.model_input, SERIES_UID, model)
    except (ConversionError, InvalidResult) as exc:
        return CheckResult(name, False, f"invalid answer: {exc}")
    except Exception as exc:
        return CheckResult(name, False, f"call failed: {exc}")
    if need_findings and not findings:
        return CheckResult(name, False, "no findings for a confident detection")
    misplaced = _misplaced_centre(findings, case.model_input)
    if misplaced:
        return CheckResult(name, False, misplaced)
    kinds = sorted({f.kind for f in findings})
    return CheckResult(name, True, f"{len(findings)} valid finding"
                                   f"{'s' * (len(findings) != 1)} ({', '.join(kinds) or 'none'})")


def _misplaced_centre(findings: list[FindingDraft], mi: ModelInput) -> str | None:
    """A centre in mm must project into its box on (about) its key slice."""
    if not has_geometry(mi):
        return None
    sops = [str(s) for s in mi.sop_instance_uids]
    for index, f in enumerate(findings):
        if f.center_mm is None or f.bbox_px is None or f.sop_instance_uid not in sops:
            continue
        x, y, z = patient_to_voxel(mi, f.center_mm)
        x_min, y_min, x_max, y_max = f.bbox_px
        key = sops.index(f.sop_instance_uid)
        if not (x_min - 1 <= x <= x_max + 1 and y_min - 1 <= y <= y_max + 1
                and abs(z - key) <= 1.5):
            return (f"finding {index + 1}: center_mm {[round(v, 2) for v in f.center_mm]} lies "
                    f"at column {x:.1f}, row {y:.1f}, slice {z:.1f}: outside its box "
                    f"{list(f.bbox_px)} on slice {key} (compute it from ImagePositionPatient "
                    f"and ImageOrientationPatient)")
    return None


async def _expect_rejected(client: ExternalNormaliser, case: Case,
                           tensors: list[common_pb2.Tensor], model: str, name: str
                           ) -> CheckResult:
    request = _request(case, model)
    request.outputs.extend(tensors)
    check = f"rejects {name}"
    try:
        response = await client.normalise_request(request)
    except NormaliserRejected:
        return CheckResult(check, True, "INVALID_ARGUMENT")
    except Exception as exc:
        return CheckResult(check, False, f"expected INVALID_ARGUMENT, got {exc}")
    return CheckResult(check, False, f"expected INVALID_ARGUMENT, got {len(response.findings)} "
                                     f"finding(s)")
