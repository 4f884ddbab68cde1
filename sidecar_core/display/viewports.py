"""Viewport images on demand: one slice in one preset, rendered on first request and stored."""

from __future__ import annotations

import asyncio
import hashlib
import io
import uuid
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import pydicom
from sqlalchemy import func, select

from sidecar_core.db import Database
from sidecar_core.display.render import PNG_CONTENT_TYPE, viewport_png
from sidecar_core.errors import InvalidArgument, NotFound
from sidecar_core.pixels.decode import decode_image
from sidecar_core.pixels.display import window_for
from sidecar_core.pixels.errors import PixelPipelineError
from sidecar_core.pixels.series import DecodedSeries
from sidecar_core.pixels.voi_lut import VoiLut
from sidecar_core.pixels.windowing import Window
from sidecar_core.storage.objectstore import ObjectStore
from sidecar_core.store.models import Asset, Facility, Instance, Series, Study

VIEWPORT = "viewport"


def slice_refs(series: DecodedSeries) -> list[list[Any]]:
    """[[SOPInstanceUID, frame], ...] per slice index, in the series' anatomical order."""
    return [[s.sop_instance_uid, s.frame_number] for s in series.slices]


def series_windows(series: DecodedSeries, presets: Sequence[str]) -> dict[str, Any]:
    """The window each preset resolves to for the whole series (``auto`` over all frames);
    None where there is no single window (colour, a VOI LUT table): resolved per slice."""
    out: dict[str, Any] = {}
    for preset in presets:
        try:
            window = window_for(series.image, preset)
        except PixelPipelineError:
            continue
        out[preset] = (
            {"center": window.center, "width": window.width, "function": window.function}
            if isinstance(window, Window) else None
        )
    return out


def render_slice(dicom: bytes, frame: int, preset: str, window: dict[str, Any] | None) -> bytes:
    """The viewport PNG of one frame (1-based) of one stored object, in the series' window."""
    image = decode_image(pydicom.dcmread(io.BytesIO(dicom)))
    voi: Window | VoiLut | None
    if image.is_color:
        voi = None
    elif window is not None:
        voi = Window(float(window["center"]), float(window["width"]),
                     str(window.get("function") or "LINEAR"), preset)
    else:
        voi = window_for(image, preset)
    return viewport_png(image.frames[max(frame, 1) - 1], voi, invert=image.display_inverted)


@dataclass
class Made:
    asset: Asset
    rendered: bool


class ViewportRenderer:
    """Renders, stores and records viewport images; one row per (series, preset, slice)."""

    def __init__(self, db: Database, objects: ObjectStore, pool: Executor | None = None) -> None:
        self.db = db
        self.objects = objects
        self.pool = pool
        self._inflight: dict[tuple[uuid.UUID, str, int], asyncio.Future[Made]] = {}

    async def ensure(self, allowed: Sequence[str] | None, study_id: str, series_id: str,
                     slice_index: int, preset: str) -> Made:
        """The viewport's Asset row, rendered now if there is none (scoped to ``allowed``;
        None for every facility)."""
        series = await self._series(allowed, _uuid(study_id, "study"), _uuid(series_id, "series"))
        return await self.ensure_for(series, slice_index, preset)

    async def ensure_for(self, series: Series, slice_index: int, preset: str) -> Made:
        """As ``ensure`` for a series already scoped (the overlay worker's path)."""
        key = (series.id, preset, slice_index)
        pending = self._inflight.get(key)
        if pending is not None:  # one render per process for concurrent first requests
            return Made((await asyncio.shield(pending)).asset, False)
        future: asyncio.Future[Made] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            made = await self._ensure(series, slice_index, preset)
            future.set_result(made)
            return made
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no warning when nobody else waits
            raise
        finally:
            del self._inflight[key]

    async def _ensure(self, series: Series, slice_index: int, preset: str) -> Made:
        refs = series.slice_refs or []
        windows = series.windows or {}
        if not refs or series.windows is None:
            raise NotFound("VIEWPORTS_NOT_READY",
                           "the series' display assets are not made yet: retry shortly",
                           series_id=str(series.id))
        if preset not in windows:
            raise NotFound("PRESET_NOT_FOUND",
                           f"series has no window preset {preset!r}; its presets: "
                           f"{', '.join(sorted(windows)) or 'none'}",
                           series_id=str(series.id), preset=preset[:64])
        if not 0 <= slice_index < len(refs):
            raise NotFound("SLICE_NOT_FOUND",
                           f"slice {slice_index} is outside the series (0..{len(refs) - 1})",
                           series_id=str(series.id), slice_index=slice_index)
        existing = await self._existing(series.id, preset, slice_index)
        if existing is not None:
            return Made(existing, False)
        sop, frame = str(refs[slice_index][0]), int(refs[slice_index][1] or 1)
        async with self.db.read() as s:
            object_key = await s.scalar(select(Instance.object_key).where(
                Instance.series_id == series.id, Instance.sop_instance_uid == sop))
        if object_key is None:
            raise NotFound("SLICE_NOT_STORED", "the slice's instance is no longer stored",
                           series_id=str(series.id), slice_index=slice_index)
        loop = asyncio.get_running_loop()
        png, stored = await loop.run_in_executor(
            self.pool, self._render_and_put, object_key, frame, preset, windows[preset])
        async with self.db.unit_of_work() as s:
            await s.execute(select(func.pg_advisory_xact_lock(
                func.hashtext(f"viewport:{series.id}:{preset}:{slice_index}"))))
            again = await s.scalar(_row_query(series.id, preset, slice_index))
            if again is not None:
                return Made(again, False)
            row = Asset(study_id=series.study_id, series_id=series.id, kind=VIEWPORT,
                        preset=preset, slice_index=slice_index, sop_instance_uid=sop,
                        frame=frame, object_key=stored, content_type=PNG_CONTENT_TYPE,
                        sha256=hashlib.sha256(png).hexdigest(), meta={"bytes": len(png)})
            s.add(row)
            await s.flush()
        return Made(row, True)

    def _render_and_put(self, object_key: str, frame: int, preset: str,
                        window: dict[str, Any] | None) -> tuple[bytes, str]:
        png = render_slice(self.objects.get(object_key), frame, preset, window)
        return png, self.objects.put(png)

    async def _existing(self, series_id: uuid.UUID, preset: str, slice_index: int
                        ) -> Asset | None:
        async with self.db.read() as s:
            return await s.scalar(_row_query(series_id, preset, slice_index))

    async def _series(self, allowed: Sequence[str] | None, study_id: uuid.UUID,
                      series_id: uuid.UUID) -> Series:
        query = (select(Series).join(Study, Study.id == Series.study_id)
                 .join(Facility, Facility.id == Study.facility_id)
                 .where(Series.id == series_id, Series.study_id == study_id))
        if allowed is not None:
            query = query.where(Facility.name.in_(list(allowed)))
        async with self.db.read() as s:
            series = await s.scalar(query)
        if series is None:
            raise NotFound("SERIES_NOT_FOUND", "no such series in this study",
                           study_id=str(study_id), series_id=str(series_id))
        return series


def _row_query(series_id: uuid.UUID, preset: str, slice_index: int) -> Any:
    return (select(Asset).where(Asset.series_id == series_id, Asset.kind == VIEWPORT,
                                Asset.preset == preset, Asset.slice_index == slice_index)
            .order_by(Asset.created_at).limit(1))


def _uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise InvalidArgument(f"INVALID_{what.upper()}_ID", f"{what} id must be a UUID") from None
