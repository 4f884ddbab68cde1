"""The pixel budget: what an object's header says its pixels need, refused before any decode."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from sidecar_core.pixels.errors import PixelBudgetExceeded

# Generous for real studies: a 4096 × 5120 mammogram, a ~100-frame breast tomosynthesis of that
# size (2.1 G pixels, 3.9 GiB at 16 bits), an enhanced CT or MR of 512 × 512 × 4000 frames;
# 65,535 × 65,535 × 1,000 (4.3 T pixels) is far beyond both.
DEFAULT_MAX_PIXELS = 2**31
DEFAULT_MAX_BYTES = 4 * 2**30  # 4 GiB of stored samples


@dataclass(frozen=True)
class PixelBudget:
    """The most pixels (Rows × Columns × NumberOfFrames) and bytes (× SamplesPerPixel ×
    BitsAllocated / 8) one object may decode to."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES

    def check(self, rows: int, columns: int, frames: int, samples: int = 1,
              bits_allocated: int = 16) -> None:
        """PixelBudgetExceeded naming the sizes when the object is over the budget."""
        pixels = rows * columns * frames
        size = math.ceil(pixels * samples * bits_allocated / 8)
        if pixels > self.max_pixels or size > self.max_bytes:
            raise PixelBudgetExceeded(
                f"{rows} rows × {columns} columns × {frames} frames = {pixels:,} pixels "
                f"({size:,} bytes of {samples} × {bits_allocated}-bit samples) is over the pixel "
                f"budget of {self.max_pixels:,} pixels and {self.max_bytes:,} bytes "
                "(SIDECAR_MAX_PIXELS, SIDECAR_MAX_PIXEL_BYTES): not decoded")

    def check_dataset(self, ds: Dataset) -> None:
        """`check` on the Image Pixel module of `ds` (header only: the pixel data is not read).
        Values that are missing or not numbers are left to the decoder to name."""
        dims = _dims(ds)
        if dims is not None:
            self.check(*dims)


    def check_series(self, datasets: Sequence[Dataset]) -> None:
        """The same budget for a series stacked into one volume (the sum of its objects), from
        the headers before any of them is decoded."""
        pixels = size = 0
        for ds in datasets:
            self.check_dataset(ds)
            dims = _dims(ds)
            if dims is not None:
                rows, columns, frames, samples, bits = dims
                pixels += rows * columns * frames
                size += math.ceil(rows * columns * frames * samples * bits / 8)
        if pixels > self.max_pixels or size > self.max_bytes:
            raise PixelBudgetExceeded(
                f"the series' {len(datasets)} objects hold {pixels:,} pixels ({size:,} bytes) "
                f"together, over the pixel budget of {self.max_pixels:,} pixels and "
                f"{self.max_bytes:,} bytes (SIDECAR_MAX_PIXELS, SIDECAR_MAX_PIXEL_BYTES): "
                "not stacked")


def _dims(ds: Dataset) -> tuple[int, int, int, int, int] | None:
    """(rows, columns, frames, samples, bits allocated) from the header; None when a value is
    missing or not a positive number (the decoder names that)."""
    dims = (_number(ds, "Rows", 0), _number(ds, "Columns", 0), _number(ds, "NumberOfFrames", 1),
            _number(ds, "SamplesPerPixel", 1), _number(ds, "BitsAllocated", 16))
    return dims if min(dims) >= 1 else None


def _number(ds: Dataset, keyword: str, default: int) -> int:
    value: Any = ds.get(keyword)
    try:
        return default if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return default


_current = PixelBudget()


def configure(budget: PixelBudget) -> None:
    """This process's budget (from its settings, at start), used by every decode."""
    global _current
    _current = budget


def current() -> PixelBudget:
    return _current
