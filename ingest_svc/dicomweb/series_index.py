"""Builds a series' WADO-RS index from its objects: DICOM JSON metadata and frame byte offsets.

Both are computed once per series (version) and kept as derived objects, so that a metadata
request reads one file and a frame request slices the stored object at known offsets instead of
parsing it. Frames of objects whose bytes cannot be sliced directly (big endian or deflated
syntaxes, bit-packed pixels, fragments that cannot be matched to frames) are marked `direct:
false` and decoded by the caller with pydicom.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from io import BytesIO
from struct import Struct
from typing import Any

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian

from ingest_svc.dicomweb.fast_json import ascii_reads_as_ascii, raw_json

log = logging.getLogger(__name__)

WADO_ROOT = "{WADO_ROOT}"  # replaced by the HTTP edge with its DICOMweb root URL
FORMAT_VERSION = 1
BULK_DATA_THRESHOLD = 1024  # larger top-level binary values are BulkDataURIs
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_PIXEL_TAG = Tag(0x7FE00010)
_PIXEL_TAGS = frozenset({_PIXEL_TAG, Tag(0x7FE00008), Tag(0x7FE00009)})
_ITEM = Struct("<HHL")


@dataclass
class InstanceRef:
    """One stored instance of the series, as the index lists it."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    object_key: str


def instance_json(ds: Dataset, ref: InstanceRef) -> dict[str, Any]:
    """The DICOM JSON of one instance; large top-level binary values become BulkDataURIs
    (`{WADO_ROOT}/studies/../instances/../bulkdata/TAG`), smaller and nested ones inline."""
    base = (f"{WADO_ROOT}/studies/{ref.study_instance_uid}/series/{ref.series_instance_uid}"
            f"/instances/{ref.sop_instance_uid}")
    out: dict[str, Any] = {}
    ascii_ok = ascii_reads_as_ascii(ds.get("SpecificCharacterSet"))
    for tag in sorted(ds.keys()):
        raw = ds.get_item(tag)  # not converted yet, unless something read it
        key = f"{int(tag):08X}"
        if isinstance(raw, RawDataElement) and raw.VR not in (None, "UN"):  # UN: pydicom may
            # know the element's real VR
            if raw.VR in _BINARY_VRS:
                if tag.is_private:
                    continue  # private binary blobs: neither displayed nor resolvable
                if raw.length > BULK_DATA_THRESHOLD or tag in _PIXEL_TAGS:
                    out[key] = {"vr": raw.VR, "BulkDataURI": f"{base}/bulkdata/{key}"}
                    continue
            fast = raw_json(raw, ascii_ok)
            if fast is not None:
                out[key] = fast
                continue
        try:
            elem = ds[tag]
            if elem.tag.is_private and elem.VR in _BINARY_VRS:
                continue
            if elem.VR in _BINARY_VRS and (_length(elem) > BULK_DATA_THRESHOLD
                                           or elem.tag in _PIXEL_TAGS):
                out[key] = {"vr": elem.VR, "BulkDataURI": f"{base}/bulkdata/{key}"}
            else:
                out[key] = elem.to_json_dict(None, 1 << 62)
        except Exception as exc:  # a value pydicom cannot express in JSON: leave it out
            log.warning("metadata of %s: %s left out (%s)", ref.sop_instance_uid, key,
                        type(exc).__name__)
    out["00083002"] = {"vr": "UI", "Value": [ref.transfer_syntax_uid]}
    return dict(sorted(out.items()))


def _length(elem: Any) -> int:
    value = elem.value
    return len(value) if isinstance(value, bytes | bytearray) else 0


def frame_index(data: bytes, ds: Dataset, ref: InstanceRef) -> dict[str, Any]:
    """Where each frame's bytes are in the stored object.

    `frames` is a list per frame of [offset, length] fragments (one fragment for native pixel
    data); `direct` says whether those bytes are the frame as served (native little endian
    bytes, or the encapsulated syntax's fragments); `n` is the number of frames (0: no pixels).
    """
    entry: dict[str, Any] = {"key": ref.object_key, "ts": ref.transfer_syntax_uid,
                             "series": ref.series_instance_uid, "n": 0, "direct": False,
                             "frames": [], "sop_class": str(ds.get("SOPClassUID", ""))}
    if _PIXEL_TAG not in ds:
        return entry
    n = _int(ds.get("NumberOfFrames"), 1) or 1
    entry["n"] = n
    syntax = UID(ref.transfer_syntax_uid)
    raw = ds.get_item(_PIXEL_TAG)
    tell = getattr(raw, "value_tell", None)
    if tell is None or syntax in (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian):
        return entry
    if syntax.is_encapsulated:
        frames = _encapsulated_frames(data, tell, n)
        if frames is not None:
            entry.update(frames=frames, direct=True)
        return entry
    rows, cols = _int(ds.get("Rows"), 0), _int(ds.get("Columns"), 0)
    bits = _int(ds.get("BitsAllocated"), 0)
    samples = _int(ds.get("SamplesPerPixel"), 1)
    if bits % 8 or not rows or not cols:
        return entry  # bit-packed (BitsAllocated 1) or undescribed: decoded by the caller
    size = rows * cols * samples * bits // 8
    length = int(getattr(raw, "length", 0))
    if length < size * n or tell + size * n > len(data):
        return entry  # truncated: the caller's decode names the problem
    entry.update(frames=[[[tell + i * size, size]] for i in range(n)], direct=True)
    return entry


def _encapsulated_frames(data: bytes, pos: int, n: int) -> list[list[list[int]]] | None:
    """Fragments per frame of encapsulated pixel data starting at `pos` (its first item, the
    Basic Offset Table); None when they cannot be matched to frames without decoding."""
    items: list[tuple[int, int]] = []  # (offset of the item header, value length)
    end = len(data)
    while pos + 8 <= end:
        group, element, length = _ITEM.unpack_from(data, pos)
        if (group, element) == (0xFFFE, 0xE0DD):
            break
        if (group, element) != (0xFFFE, 0xE000) or pos + 8 + length > end:
            return None
        items.append((pos, length))
        pos += 8 + length
    if not items:
        return None
    (bot_pos, bot_length), fragments = items[0], items[1:]
    if not fragments:
        return None
    spans = [[p + 8, length] for p, length in fragments]
    if n == 1:
        return [spans]
    if len(fragments) == n:
        return [[span] for span in spans]
    if bot_length and bot_length == 4 * n:
        offsets = list(Struct(f"<{n}L").unpack_from(data, bot_pos + 8))
        first = fragments[0][0]
        starts = [first + off for off in offsets] + [fragments[-1][0] + 8 + fragments[-1][1]]
        frames: list[list[list[int]]] = []
        for i in range(n):
            chosen = [[p + 8, length] for p, length in fragments
                      if starts[i] <= p < starts[i + 1]]
            if not chosen:
                return None
            frames.append(chosen)
        return frames
    return None


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def build(objects: list[tuple[InstanceRef, bytes]]) -> tuple[bytes, bytes]:
    """(metadata JSON, frames JSON) of a series from its instances' stored bytes."""
    metadata: list[dict[str, Any]] = []
    frames: dict[str, Any] = {}
    for ref, data in objects:
        try:
            ds = pydicom.dcmread(BytesIO(data), force=True)
        except Exception as exc:
            log.warning("series index: %s unreadable (%s)", ref.sop_instance_uid,
                        type(exc).__name__)
            continue
        frames[ref.sop_instance_uid] = frame_index(data, ds, ref)  # before any value is read
        metadata.append(instance_json(ds, ref))
    meta_bytes = json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode()
    frames_bytes = json.dumps({"version": FORMAT_VERSION, "instances": frames},
                              separators=(",", ":")).encode()
    return meta_bytes, frames_bytes
