"""Builds DICOM JSON (PS3.18 Annex F) elements from keywords and plain Python values."""

from __future__ import annotations

from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

_NUMERIC = {"IS", "DS", "US", "UL", "SS", "SL", "FL", "FD", "SV", "UV"}


def tag_hex(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"not a DICOM keyword: {keyword}")
    return f"{tag:08X}"


def keyword_of(key: str) -> str | None:
    """A DICOM keyword for `key` given as keyword or as 8 hex digits; None when neither."""
    if tag_for_keyword(key) is not None:
        return key
    if len(key) == 8:
        try:
            return keyword_for_tag(int(key, 16)) or None
        except ValueError:
            return None
    return None


def vr_of(keyword: str) -> str:
    return str(dictionary_VR(keyword)).split(" or ")[0]


def _number(value: Any, vr: str) -> int | float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if vr in {"IS", "US", "UL", "SS", "SL", "SV", "UV"} else number


def _values(value: Any, vr: str) -> list[Any]:
    items = value if isinstance(value, list | tuple) else [value]
    out: list[Any] = []
    for item in items:
        if item is None or item == "":
            continue
        if vr in _NUMERIC:
            number = _number(item, vr)
            if number is not None:
                out.append(number)
        elif vr == "PN":  # a DICOM JSON PN object as stored, or a plain name
            out.append(dict(item) if isinstance(item, dict) else {"Alphabetic": str(item)})
        elif vr == "SQ":
            out.append(item)
        else:
            out.append(str(item))
    return out


def element(keyword: str, value: Any) -> tuple[str, dict[str, Any]]:
    """(tag, {"vr": ..., "Value": [...]}); an empty value gives an element without Value."""
    vr = vr_of(keyword)
    values = _values(value, vr)
    body: dict[str, Any] = {"vr": vr}
    if values:
        body["Value"] = values
    return tag_hex(keyword), body


def dataset(values: dict[str, Any]) -> dict[str, Any]:
    """A DICOM JSON object from {keyword: value}, tags in ascending order."""
    return dict(sorted(element(k, v) for k, v in values.items()))
