"""Table VOI LUTs (VOI LUT Sequence, PS3.3 C.11.2.1.1): read the first table, apply it to 8 bits."""

# pydicom 3.0's ``apply_voi`` is not used: it holds the table indices in the dtype of the entries,
# so a table of more than 256 8-bit entries wraps its indices (input 300 reads entry 44), and it
# warns on float input, which is what the modality transform gives here. Where it is right
# (16-bit entries, integer input) the tests check this module against it.

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from sidecar_core.pixels.attributes import frame_group_item
from sidecar_core.pixels.errors import InvalidVoiLut
from sidecar_core.pixels.modality import LUT, NONE, ModalityTransform

MAX_ENTRIES = 1 << 16  # a first descriptor value of 0 means 2^16 entries


@dataclass(frozen=True, eq=False)
class VoiLut:
    """One VOI LUT table: input ``first_mapped + i`` maps to ``entries[i]``, ``bits`` bits wide.

    Inputs below ``first_mapped`` map to the first entry and inputs past the last mapped value
    to the last entry. ``levels`` is the table scaled to 0..255 by the entry bit depth.
    """

    first_mapped: int
    bits: int
    entries: np.ndarray  # uint16, one value per table entry
    name: str = "dicom"
    levels: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 16:
            raise InvalidVoiLut(f"{self.bits} bits per LUT entry (1 to 16 allowed)")
        if not 1 <= self.entries.size <= MAX_ENTRIES or self.entries.ndim != 1:
            raise InvalidVoiLut(f"a VOI LUT of {self.entries.size} entries")
        top = (1 << self.bits) - 1
        clipped = np.minimum(self.entries.astype(np.float64), top)  # values above the depth
        levels = np.floor(clipped * (255.0 / top) + 0.5).astype(np.uint8)
        object.__setattr__(self, "levels", levels)

    @property
    def n_entries(self) -> int:
        return int(self.entries.size)


def apply_voi_lut(values: np.ndarray, lut: VoiLut, *, invert: bool = False) -> np.ndarray:
    """Map modality values through a VOI LUT table to uint8 display values.

    Non-integer inputs (a fractional Rescale Slope) are rounded to the nearest input value and
    NaN (float pixel data) reads the first entry. ``invert`` flips the result after the VOI LUT,
    as the Presentation LUT does (MONOCHROME1 or Presentation LUT Shape INVERSE).
    """
    x = np.asarray(values, dtype=np.float64)
    index = np.floor(x + 0.5)
    index -= lut.first_mapped
    last = lut.n_entries - 1
    np.nan_to_num(index, copy=False, nan=0.0, posinf=float(last), neginf=0.0)
    np.clip(index, 0, last, out=index)
    levels = np.subtract(np.uint8(255), lut.levels) if invert else lut.levels
    return levels[index.astype(np.intp)]


def voi_input_signed(
    transform: ModalityTransform, pixel_representation: int, bits_stored: int
) -> bool:
    """Whether the VOI LUT's first mapped value reads as SS (PS3.3 C.11.2.1.1).

    Per Pixel Representation when there is no modality transform; SS when Rescale Slope and
    Intercept can give a negative value over the stored range (always so for CT in HU);
    US after a Modality LUT Sequence (its output is unsigned, C.11.1.1.1), and US otherwise.
    """
    if transform.kind == LUT:
        return False
    if transform.kind == NONE:
        return pixel_representation == 1
    bits = max(1, min(bits_stored, 32))
    if pixel_representation == 1:
        low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        low, high = 0, (1 << bits) - 1
    return any(
        slope * value + intercept < 0
        for slope, intercept in zip(transform.slopes, transform.intercepts, strict=True)
        for value in (low, high)
    )


def dicom_voi_lut(
    ds: Dataset, frame_index: int = 0, *, signed_input: bool, little_endian: bool = True
) -> VoiLut | None:
    """The first VOI LUT table of a frame (Frame VOI LUT macro, then top level), or None.

    An unusable table is dropped (None) as an invalid window is, so the image falls back to
    the auto window rather than failing to decode.
    """
    item = frame_group_item(ds, frame_index, "FrameVOILUTSequence")
    source = item if item is not None and item.get("VOILUTSequence") else ds
    sequence = source.get("VOILUTSequence")
    if not sequence:
        return None
    try:
        return read_voi_lut(sequence[0], signed_input=signed_input, little_endian=little_endian)
    except InvalidVoiLut:
        return None


def read_voi_lut(item: Dataset, *, signed_input: bool, little_endian: bool = True) -> VoiLut:
    """One VOI LUT Sequence item as a VoiLut; raises InvalidVoiLut when it cannot be used.

    LUT Descriptor: number of entries (0 = 2^16), first input value mapped (US or SS, per
    ``signed_input``, whatever VR the file used), bits per entry. LUT Data as US values or OW
    words; 8-bit entries may also come packed two to a word (PS3.3 C.11.2.1.1).
    """
    descriptor = _ints(item.get("LUTDescriptor"))
    if descriptor is None or len(descriptor) != 3:
        raise InvalidVoiLut(f"LUT Descriptor {item.get('LUTDescriptor')!r} is not 3 integers")
    count, first, bits = descriptor
    count = count % MAX_ENTRIES or MAX_ENTRIES  # also undoes a count read as SS
    if signed_input and first >= 1 << 15:
        first -= MAX_ENTRIES  # SS value in a US element (e.g. implicit VR, unsigned pixels)
    elif not signed_input and first < 0:
        first += MAX_ENTRIES
    if not 1 <= bits <= 16:
        raise InvalidVoiLut(f"{bits} bits per LUT entry (1 to 16 allowed)")
    if "LUTData" not in item:
        raise InvalidVoiLut("the VOI LUT Sequence item has no LUT Data")
    entries = _entries(item["LUTData"].value, count, bits, little_endian)
    name = str(item.get("LUTExplanation") or "").strip() or "dicom"
    return VoiLut(first_mapped=first, bits=bits, entries=entries, name=name)


def _ints(value: Any) -> tuple[int, ...] | None:
    if value is None or value == "":
        return None
    items = value if isinstance(value, list | tuple | MultiValue) else [value]
    try:
        return tuple(int(v) for v in items)
    except (TypeError, ValueError):
        return None


def _entries(value: Any, count: int, bits: int, little_endian: bool) -> np.ndarray:
    if isinstance(value, bytes | bytearray):
        if bits <= 8 and len(value) < 2 * count:  # packed: one byte per 8-bit entry
            if len(value) < count:
                raise InvalidVoiLut(f"LUT Data holds {len(value)} bytes for {count} entries")
            return np.frombuffer(value, dtype=np.uint8, count=count).astype(np.uint16)
        if len(value) < 2 * count:
            raise InvalidVoiLut(f"LUT Data holds {len(value)} bytes for {count} 16-bit entries")
        dtype = np.dtype("<u2" if little_endian else ">u2")
        return np.frombuffer(value, dtype=dtype, count=count).astype(np.uint16)
    numbers = _ints(value)
    if numbers is None or len(numbers) < count:
        held = 0 if numbers is None else len(numbers)
        raise InvalidVoiLut(f"LUT Data holds {held} values for {count} entries")
    # US values; a negative one can only be a 16-bit value read as SS
    return (np.asarray(numbers[:count], dtype=np.int64) % MAX_ENTRIES).astype(np.uint16)
