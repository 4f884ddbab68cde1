"""Synthetic DICOM studies with known ground truth, to measure the reference models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sidecar_synth.brain_mr import generate_brain_mr
from sidecar_synth.chest_ct import generate_chest_ct
from sidecar_synth.common import GROUND_TRUTH_FILE, GroundTruth, Lesion
from sidecar_synth.mammo import generate_mammo

KINDS = ("chest-ct", "mammo", "brain-mr")
_GENERATORS: dict[str, Callable[..., GroundTruth]] = {
    "chest-ct": generate_chest_ct,
    "mammo": generate_mammo,
    "brain-mr": generate_brain_mr,
}

__all__ = ["GROUND_TRUTH_FILE", "KINDS", "GroundTruth", "Lesion", "generate"]


def generate(kind: str, out_dir: str | Path, seed: int, **opts: Any) -> GroundTruth:
    """Writes one synthetic study of `kind` into `out_dir` plus ground_truth.json; returns it.

    Same kind, seed and options → byte-identical files. `negative=True` gives a negative control
    (no lesions). Options per kind are the keyword arguments of generate_chest_ct,
    generate_mammo and generate_brain_mr.
    """
    try:
        generator = _GENERATORS[kind]
    except KeyError:
        raise ValueError(
            f"unknown synthetic study kind {kind!r}; expected one of {KINDS}"
        ) from None
    out = Path(out_dir)
    truth = generator(out, seed, **opts)
    truth.write(out)
    return truth
