"""Decodes the instances of one series into a single stack in anatomical order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from pydicom.dataset import Dataset

from sidecar_core.pixels import budget as pixel_budget
from sidecar_core.pixels.decode import DecodedImage, decode_image
from sidecar_core.pixels.errors import EmptySeries, IncompatibleSlices, InvalidPixelDescription
from sidecar_core.pixels.geometry import SliceRef, pixel_spacing, slice_refs
from sidecar_core.pixels.modality import ModalityTransform
from sidecar_core.pixels.ordering import SliceOrder, order_slices

PROJECTION_MODALITIES = frozenset({"MG", "CR", "DX", "IO", "PX", "XA", "RF", "OP", "XC", "SM"})


@dataclass(frozen=True, eq=False)
class DecodedSeries:
    """All slices of a series stacked in anatomical order, with their identity and geometry."""

    image: DecodedImage  # frames [Z, Y, X] (or [Z, Y, X, 3]) in ``slices`` order
    slices: tuple[SliceRef, ...]
    order: SliceOrder
    pixel_spacing: tuple[float, float] | None  # (row spacing, column spacing) mm
    modality: str
    is_projection: bool  # MG/CR/DX...: one entry per image, no 3-D geometry implied

    @property
    def key_index(self) -> int:
        """The key slice: the middle of the ordered stack."""
        return (self.image.n_frames - 1) // 2


@dataclass(frozen=True, eq=False)
class PreDecoded:
    """One instance decoded ahead of its series (the preprocess process's early decode): what
    ``decode_series`` would compute from it alone, its image and its slices."""

    image: DecodedImage
    slices: tuple[SliceRef, ...]  # slice_refs of this dataset alone (dataset_index 0)


def predecode(ds: Dataset) -> PreDecoded:
    """Decodes one instance as ``decode_series`` does (raises what it would raise for it)."""
    image = decode_image(ds)
    return PreDecoded(image, tuple(slice_refs([ds], [_frame_count(ds)])))


def decode_series(
    datasets: Sequence[Dataset], early: Sequence[PreDecoded | None] | None = None
) -> DecodedSeries:
    """Decode, order and stack every frame of every instance of one series.

    The order comes from the headers first, so each instance is decoded straight into its
    place in the stack and memory peaks near one copy of the volume. ``early[i]``, where not
    None, is ``predecode(datasets[i])`` done earlier (the preprocess process's early decode):
    it is used as it is, and that dataset may lack its pixel data.
    """
    if not datasets:
        raise EmptySeries("no instances given")
    if early is not None and len(early) != len(datasets):
        raise ValueError(f"{len(early)} decoded instances for {len(datasets)} datasets")
    series_uids = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(series_uids) > 1:
        raise IncompatibleSlices(f"instances of {len(series_uids)} series given as one")
    pixel_budget.current().check_series(datasets)  # before any decode: from the headers
    modality = str(datasets[0].get("Modality", "") or "")
    projection = modality.upper() in PROJECTION_MODALITIES
    counts = [_frame_count(ds) for ds in datasets]
    if early is None:
        refs = slice_refs(datasets, counts)
    else:  # the same refs: each dataset's own are computed alone, then numbered
        refs = []
        for index, (ds, done) in enumerate(zip(datasets, early, strict=True)):
            own = done.slices if done is not None else slice_refs([ds], [counts[index]])
            refs.extend(replace(ref, dataset_index=index) for ref in own)
    order = order_slices(refs, use_geometry=not projection)
    ordered = [refs[i] for i in order.indices]
    z_of = {(ref.dataset_index, ref.frame_number): z for z, ref in enumerate(ordered)}
    key = ordered[(len(ordered) - 1) // 2]
    frames: np.ndarray | None = None
    first: DecodedImage | None = None
    key_image: DecodedImage | None = None
    slopes = [1.0] * len(ordered)
    intercepts = [0.0] * len(ordered)
    kinds: set[str] = set()
    lossy = False
    for index, ds in enumerate(datasets):
        done = early[index] if early is not None else None
        image = done.image if done is not None else decode_image(ds)
        expected = counts[index]
        if image.n_frames != expected:
            raise InvalidPixelDescription(
                f"NumberOfFrames is {expected} but {image.n_frames} frames were decoded"
            )
        if frames is None or first is None:
            first = image
            shape = (len(ordered), *image.frames.shape[1:])
            frames = np.empty(shape, dtype=image.frames.dtype)
        _check_compatible(first, image)
        for f in range(image.n_frames):
            z = z_of[(index, f + 1)]
            frames[z] = image.frames[f]
            slopes[z] = image.modality_transform.slopes[f]
            intercepts[z] = image.modality_transform.intercepts[f]
        kinds.add(image.modality_transform.kind)
        lossy = lossy or image.lossy
        if index == key.dataset_index:
            key_image = image
    assert frames is not None and first is not None and key_image is not None
    transform = ModalityTransform(
        kind=kinds.pop() if len(kinds) == 1 else "mixed",
        slopes=tuple(slopes),
        intercepts=tuple(intercepts),
        rescale_type=key_image.modality_transform.rescale_type,
    )
    stacked = replace(
        key_image, frames=frames, modality=modality, modality_transform=transform, lossy=lossy
    )
    return DecodedSeries(
        image=stacked,
        slices=tuple(ordered),
        order=order,
        pixel_spacing=pixel_spacing(datasets[key.dataset_index], key.frame_number - 1),
        modality=modality,
        is_projection=projection,
    )


def _frame_count(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError) as exc:
        raise InvalidPixelDescription(f"NumberOfFrames is not an integer: {exc}") from exc


def _check_compatible(first: DecodedImage, image: DecodedImage) -> None:
    if image.frames.shape[1:] != first.frames.shape[1:]:
        raise IncompatibleSlices(
            f"slices of different sizes: {first.frames.shape[1:]} and {image.frames.shape[1:]}"
        )
    if (image.photometric_interpretation, image.is_color) != (
        first.photometric_interpretation,
        first.is_color,
    ):
        raise IncompatibleSlices(
            "slices of different colour models: "
            f"{first.photometric_interpretation} and {image.photometric_interpretation}"
        )
