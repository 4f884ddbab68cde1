"""DICOM JSON of unconverted (raw) elements straight from their bytes, for the common VRs.

Building a series' metadata converts every element of every instance through pydicom, which
costs most of the build. This converter handles the plain cases - explicit VR little endian
values of numbers, and printable ASCII text whose character set reads ASCII as ASCII - the way
pydicom's `DataElement.to_json_dict` presents them, and returns None for anything else, which
the caller then converts with pydicom (tests compare both on pydicom's test files).
"""

from __future__ import annotations

import math
from struct import Struct
from typing import Any

from pydicom.charset import python_encoding
from pydicom.dataelem import RawDataElement

_TEXT_MULTI = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "SH", "TM", "UI"})
_TEXT_SINGLE = frozenset({"LT", "ST", "UT", "UR"})
_NUMBERS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d"}
_SIZES = {vr: Struct("<" + code).size for vr, code in _NUMBERS.items()}
_PRINTABLE = bytes(range(0x20, 0x7F))


def ascii_reads_as_ascii(charset: Any) -> bool:
    """Whether printable ASCII bytes decode to the same text under this Specific Character Set
    (not so for e.g. ISO_IR 13, whose 0x5C is a yen sign)."""
    terms = charset if isinstance(charset, list | tuple) else [charset or ""]
    first = str(terms[0] if terms else "").strip() or "ISO_IR 6"
    encoding = python_encoding.get(first)
    if encoding is None:
        return False
    try:
        return _PRINTABLE.decode(encoding) == _PRINTABLE.decode("ascii")
    except (LookupError, UnicodeError):
        return False


def raw_json(raw: RawDataElement, ascii_ok: bool) -> dict[str, Any] | None:
    """{"vr", "Value"} of a raw element as pydicom would give it, or None (convert with pydicom)."""
    vr, value = raw.VR, raw.value
    if vr is None or not isinstance(value, bytes) or not raw.is_little_endian \
            or raw.length == 0xFFFFFFFF:
        return None
    if vr in _NUMBERS:
        size = _SIZES[vr]
        if len(value) % size:
            return None
        if not value:
            return {"vr": vr}
        numbers = list(Struct(f"<{len(value) // size}{_NUMBERS[vr]}").unpack(value))
        if vr in ("FL", "FD") and not all(math.isfinite(n) for n in numbers):
            return None
        return {"vr": vr, "Value": numbers}
    if vr not in _TEXT_MULTI and vr not in _TEXT_SINGLE and vr not in ("DS", "IS"):
        return None
    if not ascii_ok or not value.isascii():
        return None
    text = value.decode("ascii").rstrip(" \x00")
    if not text:
        return {"vr": vr}
    if not text.isprintable():
        return None
    if vr in _TEXT_SINGLE:
        return {"vr": vr, "Value": [text]}
    parts = text.split("\\")
    if any(not p or p != p.strip() for p in parts):
        return None  # empty values or padding inside: pydicom's rules decide
    if vr == "DS":
        try:
            floats = [float(p) for p in parts]
        except ValueError:
            return None
        return {"vr": vr, "Value": floats} if all(math.isfinite(f) for f in floats) else None
    if vr == "IS":
        if not all(p.lstrip("+-").isdigit() for p in parts):
            return None
        return {"vr": vr, "Value": [int(p) for p in parts]}
    return {"vr": vr, "Value": parts}
