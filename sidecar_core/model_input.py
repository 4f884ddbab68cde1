"""The model-ready input's file format (docs/model-input.md, `sidecar.model_input.v1`).

The preprocess worker (ingest_svc.pixels.volume) writes it and the normalizer
(normalizer_svc.builtin.model_input) reads it; this module is the one place that names the
format and its arrays and reads an archive's arrays, so writer and reader cannot drift apart.
"""

from __future__ import annotations

import io
import zipfile

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
    """The arrays of a model-input archive (.npz, no pickles), checked by `check_arrays`."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelInputFormatError(f"not a readable npz archive: {exc}") from exc
    check_arrays(arrays)
    return arrays
