"""Reads what the DICOM results are built from: a run's findings, the referenced received
instances' headers, the analysed series in model-input order, and the findings' masks."""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from imaging_svc.derived.content import DerivedFinding, RunInfo
from sidecar_core.model_input import read_arrays
from sidecar_core.storage.objectstore import ObjectStore
from sidecar_core.store.models import AiRun, Asset, Finding, Instance, Series

DERIVED = "derived"  # instances.source of every object the sidecar writes itself


@dataclass
class RunRecord:
    run: RunInfo
    status: str
    study_id: uuid.UUID
    series_id: uuid.UUID | None
    findings: list[DerivedFinding]


def to_derived(f: Finding) -> DerivedFinding:
    return DerivedFinding(
        finding_id=str(f.id), label=f.label, code=f.code or "", confidence=float(f.confidence),
        kind=f.kind, series_instance_uid=f.series_instance_uid,
        sop_instance_uid=f.sop_instance_uid, frame=int(f.frame or 1),
        bbox_px=tuple(f.bbox_px) if f.bbox_px else None,
        points_px=tuple(f.points_px) if f.points_px else None,
        center_mm=tuple(f.center_mm) if f.center_mm else None,
        measurements={k: float(v) for k, v in (f.measurements or {}).items()
                      if isinstance(v, int | float)},
        review_status=f.review_status or "pending", mask_object_key=f.mask_object_key or "")


async def load_run(s: AsyncSession, run_id: uuid.UUID) -> RunRecord | None:
    run = (await s.execute(select(AiRun).where(AiRun.id == run_id))).scalar_one_or_none()
    if run is None:
        return None
    series_uid = ""
    if run.series_id is not None:
        series_uid = (await s.execute(select(Series.series_instance_uid).where(
            Series.id == run.series_id))).scalar_one_or_none() or ""
    rows = (await s.execute(select(Finding).where(
        Finding.ai_run_id == run.id, Finding.visible.is_(True)))).scalars().all()
    info = RunInfo(str(run.id), run.model_name, run.model_version, series_uid)
    return RunRecord(info, run.status, run.study_id, run.series_id, [to_derived(f) for f in rows])


async def received_keys(s: AsyncSession, study_id: uuid.UUID, sop_uids: list[str]
                        ) -> dict[str, str]:
    """SOPInstanceUID → object key of the study's received instances named."""
    rows = (await s.execute(select(Instance.sop_instance_uid, Instance.object_key).where(
        Instance.study_id == study_id, Instance.sop_instance_uid.in_(sop_uids),
        Instance.source != DERIVED))).all()
    return {uid: key for uid, key in rows}


async def series_keys(s: AsyncSession, series_id: uuid.UUID) -> dict[str, str]:
    rows = (await s.execute(select(Instance.sop_instance_uid, Instance.object_key).where(
        Instance.series_id == series_id, Instance.source != DERIVED))).all()
    return {uid: key for uid, key in rows}


async def model_input_key(s: AsyncSession, series_id: uuid.UUID) -> str | None:
    return (await s.execute(select(Asset.object_key).where(
        Asset.series_id == series_id, Asset.kind == "model_input").order_by(
        Asset.created_at.desc()).limit(1))).scalar_one_or_none()


def header(objects: ObjectStore, key: str) -> Dataset:
    return pydicom.dcmread(io.BytesIO(objects.get(key)), stop_before_pixels=True)


def full(objects: ObjectStore, key: str) -> Dataset:
    return pydicom.dcmread(io.BytesIO(objects.get(key)))


def slice_order(objects: ObjectStore, key: str) -> list[tuple[str, int]]:
    """(SOPInstanceUID, frame) of each slice of the model input, in the masks' order."""
    arrays = read_arrays(objects.get(key))
    uids = np.asarray(arrays["sop_instance_uids"]).astype(str).ravel().tolist()
    frames = np.asarray(arrays["frames"]).astype(int).ravel().tolist()
    return list(zip(uids, frames, strict=True))


def mask(objects: ObjectStore, key: str) -> np.ndarray:
    with np.load(io.BytesIO(objects.get(key)), allow_pickle=False) as npz:
        return np.asarray(npz["mask"]).astype(bool)
