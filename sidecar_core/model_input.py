"""The model-ready input's file format (docs/model-input.md, `sidecar.model_input.v1`).

The preprocess worker (sidecar_core.pixels.volume) writes it and the normalizer
(normalizer_svc.builtin.model_input) reads it; this module is the one place that names the
format and its arrays and reads an archive's arrays, so writer and reader cannot drift apart.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np

FORMAT = "sidecar.model_input.v1"
KEYS = (
    "format",
    "volume",
    "positions",
    "orientation",
    "pixel_spacing",
    "slice_spacing",
    "sop_instance_uids",
    "frames",
    "modality",
    "laterality",
    "view_position",
)


VIEW_MIN_BYTES = 2**20  # stored arrays from this size on are read-only views of the archive


class ModelInputFormatError(ValueError):
    """Bytes or arrays that are not a `sidecar.model_input.v1` model input."""


def check_arrays(arrays: dict[str, np.ndarray]) -> None:
    """The format tag first (a different format is named as such), then every array."""
    fmt = str(arrays["format"]) if "format" in arrays else ""
    if fmt != FORMAT:
        raise ModelInputFormatError(f"model input format is {fmt!r}, expected {FORMAT!r}")
    missing = [key for key in KEYS if key not in arrays]
    if missing:
        raise ModelInputFormatError(f"model input lacks {missing}")


def read_arrays(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of a model-input archive (.npz, no pickles), checked by `check_arrays`.

    Large members stored uncompressed (what the preprocess worker writes) come back as
    read-only views of `data`, not copies: for a 300-slice CT that saves copying 150 MB."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            arrays = {}
            for info in archive.infolist():
                name = info.filename.removesuffix(".npy")
                view = _stored_view(data, info)
                arrays[name] = view if view is not None else _read_member(archive, info)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelInputFormatError(f"not a readable npz archive: {exc}") from exc
    check_arrays(arrays)
    return arrays


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    with archive.open(info) as member:
        return np.lib.format.read_array(member, allow_pickle=False)


_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zipfile's own layout of a local file header


def _stored_view(data: bytes, info: zipfile.ZipInfo) -> np.ndarray | None:
    """The member's array as a view of `data` when it is stored uncompressed and holds plain
    numbers; None when it must be read the ordinary way (deflated, strings, objects)."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    start = info.header_offset
    header = _LOCAL_HEADER.unpack_from(data, start)
    if header[0] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"bad local header for {info.filename}")
    name_len, extra_len = header[-2], header[-1]
    begin = start + _LOCAL_HEADER.size + name_len + extra_len
    member = memoryview(data)[begin:begin + info.file_size]
    if len(member) != info.file_size or zlib.crc32(member) != info.CRC:
        raise zipfile.BadZipFile(f"{info.filename} is damaged: its CRC-32 does not match")
    stream = io.BytesIO(member)
    version = np.lib.format.read_magic(stream)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = read_header(stream)
    if dtype.hasobject or dtype.kind not in "biuf":
        return None
    count = int(np.prod(shape, dtype=np.int64))
    offset = begin + stream.tell()
    if offset + count * dtype.itemsize > begin + info.file_size:
        raise ValueError(f"{info.filename} is shorter than its header says")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    array = array.reshape(shape, order="F" if fortran else "C")
    return array if array.nbytes >= VIEW_MIN_BYTES else array.copy()  # small ones writable
