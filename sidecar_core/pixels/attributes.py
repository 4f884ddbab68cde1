"""Reads pixel-related attributes from classic and enhanced (functional-group) DICOM datasets."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from sidecar_core.pixels.errors import InvalidWindow
from sidecar_core.pixels.windowing import LINEAR, VOI_LUT_FUNCTIONS, Window


def frame_group_item(ds: Dataset, frame_index: int, sequence: str) -> Dataset | None:
    """First item of a functional-group macro for a 0-based frame: per-frame, then shared."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame_index < len(per_frame):
        seq = per_frame[frame_index].get(sequence)
        if seq:
            return seq[0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        seq = shared[0].get(sequence)
        if seq:
            return seq[0]
    return None


def frame_value(ds: Dataset, frame_index: int, sequence: str, keyword: str) -> Any:
    """A value from a functional-group macro, else the top-level element, else None."""
    item = frame_group_item(ds, frame_index, sequence)
    if item is not None:
        value = item.get(keyword)
        if value not in (None, ""):
            return value
    value = ds.get(keyword)
    return None if value in (None, "") else value


def as_floats(value: Any) -> tuple[float, ...] | None:
    """A DS/IS/FD value (single or multi-valued) as floats; None if absent or malformed."""
    if value is None or value == "":
        return None
    items: Iterable[Any] = value if isinstance(value, list | tuple | MultiValue) else [value]
    try:
        return tuple(float(v) for v in items)
    except (TypeError, ValueError):
        return None


def as_strings(value: Any) -> tuple[str, ...]:
    """A CS/LO value (single or multi-valued) as stripped strings; empty when absent."""
    if value is None or value == "":
        return ()
    items: Iterable[Any] = value if isinstance(value, list | tuple | MultiValue) else [value]
    return tuple(str(v).strip() for v in items)


def first_float(value: Any) -> float | None:
    """The first number of a possibly multi-valued numeric element."""
    values = as_floats(value)
    return values[0] if values else None


def dicom_windows(ds: Dataset, frame_index: int = 0) -> tuple[Window, ...]:
    """Every valid Window Center/Width pair the file carries for a frame, in file order.

    Pairs with an invalid width for their VOI LUT function (PS3.3 C.11.2.1.2) are dropped
    rather than rendered wrongly; an unknown VOILUTFunction is read as LINEAR.
    """
    item = frame_group_item(ds, frame_index, "FrameVOILUTSequence")
    source = item if item is not None and "WindowCenter" in item else ds
    centers = as_floats(source.get("WindowCenter")) or ()
    widths = as_floats(source.get("WindowWidth")) or ()
    names = as_strings(source.get("WindowCenterWidthExplanation"))
    function = str(source.get("VOILUTFunction") or LINEAR).strip().upper()
    if function not in VOI_LUT_FUNCTIONS:
        function = LINEAR
    windows: list[Window] = []
    for i, (center, width) in enumerate(zip(centers, widths, strict=False)):
        name = names[i] if i < len(names) and names[i] else "dicom"
        try:
            windows.append(Window(center, width, function, name))
        except InvalidWindow:
            continue
    return tuple(windows)
