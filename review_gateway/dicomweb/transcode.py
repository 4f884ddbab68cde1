"""The slow paths of WADO-RS with pydicom (and pylibjpeg): transcoding, decoded frames."""

from __future__ import annotations

import threading
from collections import OrderedDict
from io import BytesIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import pack_bits
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from sidecar_core.pixels import budget
from sidecar_core.pixels.errors import PixelBudgetExceeded


class TranscodeError(Exception):
    """The object cannot be turned into what was asked (a message without paths)."""


class OverPixelBudget(TranscodeError):
    """The object's header declares more pixels than this process decodes (never decoded)."""


def read(data: bytes) -> Dataset:
    try:
        return pydicom.dcmread(BytesIO(data), force=True)
    except Exception as exc:
        raise TranscodeError(f"the stored object cannot be read ({type(exc).__name__})") from exc


def _decoded(ds: Dataset) -> np.ndarray:
    try:
        budget.current().check_dataset(ds)
    except PixelBudgetExceeded as exc:
        raise OverPixelBudget(str(exc)) from exc
    try:
        array = ds.pixel_array
    except Exception as exc:
        raise TranscodeError(f"the pixel data cannot be decoded ({type(exc).__name__}: "
                             f"{str(exc)[:160]})") from exc
    n = int(ds.get("NumberOfFrames", 1) or 1)
    return array if n > 1 else array[np.newaxis, ...]  # [frames, rows, columns(, samples)]


def instance(data: bytes, target: str) -> bytes:
    """The object re-encoded in an uncompressed little endian syntax (`target`)."""
    ds = read(data)
    stored = UID(str(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)))
    if "PixelData" in ds and (stored.is_encapsulated or not stored.is_little_endian):
        array = _decoded(ds)
        if stored.is_encapsulated:
            ds.PhotometricInterpretation = _decoded_photometric(ds)
            if "PlanarConfiguration" in ds:
                ds.PlanarConfiguration = 0
        pixels = array.astype(array.dtype.newbyteorder("<"), copy=False)
        bits = int(ds.get("BitsAllocated", 8) or 8)
        raw = pack_bits(pixels.reshape(-1)) if bits == 1 else pixels.tobytes()
        ds.PixelData = raw + (b"\0" if len(raw) % 2 else b"")
        ds["PixelData"].VR = "OB" if bits <= 8 else "OW"
        ds["PixelData"].is_undefined_length = False
    ds.file_meta.TransferSyntaxUID = UID(target)
    out = BytesIO()
    try:
        ds.save_as(out, implicit_vr=target == ImplicitVRLittleEndian, little_endian=True,
                   enforce_file_format=True)
    except Exception as exc:
        raise TranscodeError(f"the object cannot be re-encoded ({type(exc).__name__})") from exc
    return out.getvalue()


def _decoded_photometric(ds: Dataset) -> str:
    pi = str(ds.get("PhotometricInterpretation", ""))
    return "RGB" if pi.startswith("YBR") else pi


class FrameDecoder:
    """Frames decoded to uncompressed little endian bytes, a few objects' worth kept."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._cache: OrderedDict[str, list[bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def uncompressed(self, key: str, data: bytes) -> list[bytes]:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        ds = read(data)
        array = _decoded(ds)
        bits = int(ds.get("BitsAllocated", 8) or 8)
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        frames = [pack_bits(f.reshape(-1)) if bits == 1 else f.tobytes() for f in little]
        with self._lock:
            self._cache[key] = frames
            while len(self._cache) > self.keep:
                self._cache.popitem(last=False)
        return frames


def encapsulated(data: bytes, n: int) -> list[bytes]:
    """The frames of encapsulated pixel data whose fragments the index could not place."""
    ds = read(data)
    try:
        return list(generate_frames(ds.PixelData, number_of_frames=n))
    except Exception as exc:
        raise TranscodeError(f"the pixel data's fragments cannot be split into frames "
                             f"({type(exc).__name__})") from exc
