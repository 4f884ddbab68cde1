"""Conversions between the Normalizer contract's protobufs and FindingDraft / ModelInput / numpy."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from normalizer_svc.builtin.findings import FindingDraft
from normalizer_svc.builtin.model_input import ModelInput, ModelInputLike
from protos.sidecar.common.v1 import common_pb2
from protos.sidecar.normalizer.v1 import normalizer_service_pb2 as npb

DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(t).newbyteorder("<") for name, t in {
        "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
        "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
        "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    }.items()
}
KINDS = {"classification": common_pb2.FINDING_KIND_CLASSIFICATION,
         "box": common_pb2.FINDING_KIND_BOX, "polygon": common_pb2.FINDING_KIND_POLYGON,
         "point": common_pb2.FINDING_KIND_POINT, "mask": common_pb2.FINDING_KIND_MASK,
         "summary": common_pb2.FINDING_KIND_SUMMARY}
_KIND_NAMES = {v: k for k, v in KINDS.items()}
UNITS = {"mm": "mm", "ml": "ml", "mm2": "mm2", "mm3": "mm3", "cm": "cm", "pct": "%", "hu": "HU",
         "px": "px", "count": "1"}
MAX_TENSOR_BYTES = 1 << 31


class ConversionError(ValueError):
    """A protobuf that cannot be turned into its domain value (bad tensor, geometry, finding)."""


def tensor_to_proto(name: str, array: np.ndarray) -> common_pb2.Tensor:
    array = np.asarray(array)
    datatype = next((k for k, v in DTYPES.items() if v == array.dtype.newbyteorder("<")), None)
    if datatype is None:
        raise ConversionError(f"tensor {name}: numpy dtype {array.dtype} has no Triton datatype")
    data = np.ascontiguousarray(array, dtype=DTYPES[datatype]).tobytes()
    return common_pb2.Tensor(name=name, datatype=datatype, shape=list(array.shape),
                             raw_contents=data)


def tensor_from_proto(tensor: common_pb2.Tensor) -> np.ndarray:
    """The numpy array of a tensor; raises ConversionError when type, shape and bytes disagree."""
    dtype = DTYPES.get(tensor.datatype)
    if dtype is None:
        raise ConversionError(f"tensor {tensor.name or '(unnamed)'}: datatype "
                              f"{tensor.datatype!r} is not supported")
    shape = [int(d) for d in tensor.shape]
    if any(d < 0 for d in shape):
        raise ConversionError(f"tensor {tensor.name}: shape {shape} has a negative dimension")
    count = math.prod(shape)
    if count * dtype.itemsize != len(tensor.raw_contents):
        raise ConversionError(f"tensor {tensor.name}: {len(tensor.raw_contents)} bytes do not fit "
                              f"shape {shape} of {tensor.datatype} ({count * dtype.itemsize} "
                              f"bytes)")
    return np.frombuffer(tensor.raw_contents, dtype=dtype).reshape(shape).astype(
        dtype.newbyteorder("="), copy=False)


def outputs_from_proto(tensors: Any) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for t in tensors:
        if not t.name:
            raise ConversionError("an output tensor has no name")
        if t.name in arrays:
            raise ConversionError(f"output {t.name} appears more than once")
        arrays[t.name] = tensor_from_proto(t)
    return arrays


def geometry_from_input(mi: ModelInputLike) -> npb.ImageGeometry:
    slices, rows, columns = (int(v) for v in np.shape(mi.volume))
    positions = np.asarray(mi.positions, dtype=np.float64).reshape(-1)
    orientation = np.asarray(mi.orientation, dtype=np.float64).reshape(-1)
    return npb.ImageGeometry(
        slices=slices, rows=rows, columns=columns,
        positions=positions.tolist() if np.isfinite(positions).all() else [],
        orientation=orientation.tolist() if np.isfinite(orientation).all() else [],
        pixel_spacing=[float(v) for v in np.asarray(mi.pixel_spacing).reshape(-1)],
        slice_spacing=float(mi.slice_spacing),
        sop_instance_uids=[str(s) for s in mi.sop_instance_uids],
        frames=[int(f) for f in mi.frames],
        laterality=[str(s) for s in mi.laterality],
        view_position=[str(s) for s in mi.view_position],
    )


def input_from_geometry(geometry: npb.ImageGeometry, modality: str) -> ModelInput:
    """A ModelInput without pixels (a zero-stride volume of the right shape) from a request."""
    z, y, x = geometry.slices, geometry.rows, geometry.columns
    if z < 1 or y < 1 or x < 1:
        raise ConversionError(f"geometry must have ≥ 1 slices, rows and columns, got "
                              f"{z}×{y}×{x}")

    def per_slice(name: str, values: Any, default: Any) -> list[Any]:
        values = list(values)
        if not values:
            return [default] * z
        if len(values) != z:
            raise ConversionError(f"geometry {name} has {len(values)} values for {z} slices")
        return values

    positions = list(geometry.positions)
    if positions and len(positions) != 3 * z:
        raise ConversionError(f"geometry positions has {len(positions)} values; expected "
                              f"{3 * z} (3 per slice)")
    if geometry.orientation and len(geometry.orientation) != 6:
        raise ConversionError(f"geometry orientation has {len(geometry.orientation)} values, "
                              f"expected 6")
    if geometry.pixel_spacing and len(geometry.pixel_spacing) != 2:
        raise ConversionError(f"geometry pixel_spacing has {len(geometry.pixel_spacing)} values, "
                              f"expected 2")
    sops = per_slice("sop_instance_uids", geometry.sop_instance_uids, None)
    if any(not s for s in sops):
        raise ConversionError("geometry sop_instance_uids must name the instance of every slice")
    return ModelInput(
        volume=np.broadcast_to(np.float32(0), (z, y, x)),
        positions=np.array(positions, np.float64).reshape(z, 3) if positions
        else np.full((z, 3), np.nan),
        orientation=np.array(list(geometry.orientation) or [math.nan] * 6, np.float64),
        pixel_spacing=np.array(list(geometry.pixel_spacing) or [math.nan] * 2, np.float64),
        slice_spacing=float(geometry.slice_spacing) if z > 1 else math.nan,
        sop_instance_uids=np.array(sops),
        frames=np.array(per_slice("frames", geometry.frames, 1), np.int32),
        modality=modality,
        laterality=np.array(per_slice("laterality", geometry.laterality, "")),
        view_position=np.array(per_slice("view_position", geometry.view_position, "")),
    )


def finding_to_proto(f: FindingDraft, ai_run_id: str = "",
                     finding_id: str = "") -> common_pb2.Finding:
    pb = common_pb2.Finding(
        finding_id=finding_id, ai_run_id=ai_run_id, model_name=f.model_name,
        model_version=f.model_version, label=f.label, code=f.code or "",
        confidence=float(f.confidence), kind=KINDS.get(f.kind, common_pb2.FINDING_KIND_UNSPECIFIED),
        series_instance_uid=f.series_instance_uid or "", sop_instance_uid=f.sop_instance_uid or "",
        frame=int(f.frame or 0), bbox_px=[float(v) for v in f.bbox_px or []],
        center_mm=[float(v) for v in f.center_mm or []],
        points_px=[float(v) for v in (f.properties or {}).get("points_px") or []],
        summary=f.summary or "",
    )
    for name, value in (f.measurements or {}).items():
        pb.measurements.add(name=name, value=float(value), unit=_unit(name))
    if f.mask is not None:
        pb.mask.CopyFrom(tensor_to_proto("mask", np.asarray(f.mask).astype(np.uint8)))
    return pb


def finding_from_proto(pb: common_pb2.Finding) -> FindingDraft:
    """A FindingDraft from a normaliser's answer; raises ConversionError on a broken one."""
    kind = _KIND_NAMES.get(pb.kind)
    if kind is None:
        raise ConversionError(f"finding {pb.label!r}: kind {pb.kind} is not a known FindingKind")
    mask = None
    if pb.HasField("mask"):
        mask = tensor_from_proto(pb.mask)
        if mask.dtype != np.uint8:
            raise ConversionError(f"finding {pb.label!r}: mask is {pb.mask.datatype}, not UINT8")
        if mask.size and mask.max() <= 1:
            mask = mask.astype(bool)  # FindingDraft masks are boolean; other values stay to fail
    properties: dict[str, Any] = {}
    if pb.points_px:
        properties["points_px"] = list(pb.points_px)
    try:
        return FindingDraft(
            label=pb.label, code=pb.code, confidence=pb.confidence, kind=kind,
            model_name=pb.model_name, model_version=pb.model_version,
            sop_instance_uid=pb.sop_instance_uid or None, frame=pb.frame or None,
            bbox_px=list(pb.bbox_px) or None, center_mm=list(pb.center_mm) or None,
            measurements={m.name: m.value for m in pb.measurements}, summary=pb.summary,
            mask=mask, series_instance_uid=pb.series_instance_uid or None,
            properties=properties,
        )
    except ValueError as exc:
        raise ConversionError(f"finding {pb.label!r}: {exc}") from exc


def _unit(name: str) -> str:
    return UNITS.get(name.rsplit("_", 1)[-1].lower(), "") if "_" in name else ""
