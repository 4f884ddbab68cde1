"""Output checks shared by the built-in normalisers: present, shaped, finite, in range."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from normalizer_svc.builtin.findings import InvalidModelOutput


def output(
    outputs: Mapping[str, np.ndarray], name: str, ndim: int, trailing: tuple[int, ...] = ()
) -> np.ndarray:
    """outputs[name] as an array of `ndim` dimensions ending in `trailing`; else invalid."""
    if name not in outputs or outputs[name] is None:
        raise InvalidModelOutput(f"output {name} is missing")
    array = np.asarray(outputs[name])
    if array.ndim != ndim or (trailing and tuple(array.shape[-len(trailing) :]) != trailing):
        want = "[" + ", ".join(["N"] * (ndim - len(trailing)) + [str(t) for t in trailing]) + "]"
        raise InvalidModelOutput(f"output {name} has shape {list(array.shape)}, expected {want}")
    if array.dtype.kind not in "fiub":
        raise InvalidModelOutput(f"output {name} has non-numeric dtype {array.dtype}")
    if not np.isfinite(array.astype(np.float64)).all():
        raise InvalidModelOutput(f"output {name} contains NaN or infinity")
    return array


def scores(outputs: Mapping[str, np.ndarray], name: str, count: int) -> np.ndarray:
    """A [count] vector of probabilities in 0..1 (a 1e-6 rounding slack is clipped)."""
    values = output(outputs, name, 1).astype(np.float64)
    if values.shape[0] != count:
        raise InvalidModelOutput(f"output {name} has {values.shape[0]} values for {count} boxes")
    if ((values < -1e-6) | (values > 1 + 1e-6)).any():
        raise InvalidModelOutput(f"output {name} has values outside 0..1")
    return np.clip(values, 0.0, 1.0)


def within(name: str, low: np.ndarray, high: np.ndarray, limits: tuple[int, ...]) -> None:
    """Inclusive index boxes must be ordered and inside an array of shape `limits`."""
    limit = np.array(limits)
    if (low < 0).any() or (high >= limit).any() or (low > high).any():
        raise InvalidModelOutput(f"output {name} has boxes outside the image or inverted")
