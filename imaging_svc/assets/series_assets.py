"""All display assets and the model input of one series, from its datasets (pure, no I/O)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from sidecar_core.display.render import (
    GIF_CONTENT_TYPE,
    PNG_CONTENT_TYPE,
    preview_gif,
    thumbnail_png,
)
from sidecar_core.display.viewports import series_windows, slice_refs
from sidecar_core.pixels.decode import decode_image
from sidecar_core.pixels.errors import PixelPipelineError
from sidecar_core.pixels.series import DecodedSeries, PreDecoded, decode_series
from sidecar_core.pixels.volume import (
    MODEL_INPUT_CONTENT_TYPE,
    model_input_from_series,
    save_model_input,
)
from sidecar_core.pixels.windowing import presets_for

log = logging.getLogger(__name__)


@dataclass
class AssetBlob:
    kind: str  # thumbnail, viewport, preview, model_input
    content_type: str
    data: bytes
    preset: str = ""
    slice_index: int = -1
    sop_instance_uid: str = ""
    frame: int = 0


@dataclass
class ObjectFailure:
    sop_instance_uid: str
    error_class: str
    message: str


@dataclass
class SeriesAssets:
    blobs: list[AssetBlob] = field(default_factory=list)
    failures: list[ObjectFailure] = field(default_factory=list)
    presets: list[str] = field(default_factory=list)
    slice_count: int = 0
    slice_refs: list[list[Any]] = field(default_factory=list)  # [sop, frame] per slice index
    windows: dict[str, Any] = field(default_factory=dict)  # resolved window per preset
    model_input_error: ObjectFailure | None = None

    @property
    def has_model_input(self) -> bool:
        return any(b.kind == "model_input" for b in self.blobs)


def decode_tolerant(
    datasets: Sequence[Dataset], early: Sequence[PreDecoded | None] | None = None
) -> tuple[DecodedSeries | None, list[ObjectFailure]]:
    """Decodes the series; objects that cannot be decoded are dropped and reported, not fatal.
    ``early[i]``, where not None, is ``datasets[i]`` decoded already (the early decode)."""
    done: list[PreDecoded | None] = list(early) if early is not None else [None] * len(datasets)
    try:
        return decode_series(datasets, done), []
    except PixelPipelineError:
        pass
    good: list[Dataset] = []
    good_images: list[PreDecoded | None] = []
    failures = []
    for ds, pre in zip(datasets, done, strict=True):
        try:
            if pre is None:
                decode_image(ds)  # decodes, or names why not (decoded again when stacked)
            good_images.append(pre)
            good.append(ds)
        except PixelPipelineError as exc:
            failures.append(
                ObjectFailure(str(ds.get("SOPInstanceUID", "")), type(exc).__name__, str(exc))
            )
    if not good:
        return None, failures
    try:
        return decode_series(good, good_images), failures
    except PixelPipelineError as exc:
        failures.append(ObjectFailure("", type(exc).__name__, str(exc)))
        return None, failures


def describe(assets: SeriesAssets, series: DecodedSeries) -> None:
    """The per-series facts the key-slice lookup needs (cheap: on the critical path). The
    windows on-demand viewports need come with the display assets (``auto`` reads the volume)."""
    assets.slice_count = series.image.n_frames
    assets.presets = presets_for(series.modality, series.image.has_dicom_window)
    assets.slice_refs = slice_refs(series)


def model_input_asset(series: DecodedSeries, compress_level: int = 0) -> AssetBlob | ObjectFailure:
    """The model-ready input of a decoded series (the critical path: stored uncompressed by
    default, deflate would take longer than the decode itself), or why there is none."""
    try:
        return AssetBlob(
            "model_input",
            MODEL_INPUT_CONTENT_TYPE,
            save_model_input(model_input_from_series(series), compress_level=compress_level),
        )
    except PixelPipelineError as exc:
        return ObjectFailure("", type(exc).__name__, str(exc))


def display_assets(
    series: DecodedSeries, pool: ThreadPoolExecutor | None = None, max_preview_frames: int = 64
) -> list[AssetBlob]:
    """What a series shows before anyone opens it: the thumbnail and the GIF preview.

    Viewport PNGs are rendered on demand, one slice and preset at a time
    (``sidecar_core.display.viewports``); ``pool`` is accepted for the callers' sake."""
    image = series.image
    key = series.key_index
    blobs = [
        AssetBlob(
            "thumbnail",
            PNG_CONTENT_TYPE,
            thumbnail_png(image),
            slice_index=key,
            sop_instance_uid=series.slices[key].sop_instance_uid,
            frame=series.slices[key].frame_number,
        )
    ]
    if image.n_frames > 1:
        blobs.append(
            AssetBlob(
                "preview", GIF_CONTENT_TYPE, preview_gif(image, max_frames=max_preview_frames)
            )
        )
    return blobs


def build_series_assets(
    datasets: Sequence[Dataset],
    pool: ThreadPoolExecutor | None = None,
    max_preview_frames: int = 64,
) -> SeriesAssets:
    """Everything at once (decode once, model input beside the display assets)."""
    out = SeriesAssets()
    series, out.failures = decode_tolerant(datasets)
    if series is None:
        return out
    out.slice_count = series.image.n_frames
    describe(out, series)
    out.windows = series_windows(series, out.presets)
    pending = pool.submit(model_input_asset, series, 1) if pool is not None else None
    out.blobs.extend(display_assets(series, pool, max_preview_frames))
    made = pending.result() if pending is not None else model_input_asset(series, 1)
    if isinstance(made, AssetBlob):
        out.blobs.append(made)
    else:
        out.model_input_error = made
    return out
