"""Test-only Triton model: tells which Python environment and numpy the backend stub runs."""

from __future__ import annotations

import sys

import numpy as np
import triton_python_backend_utils as pb_utils


def _text(value: str) -> np.ndarray:
    return np.array([value.encode()], dtype=np.object_)


class TritonPythonModel:
    def execute(self, requests: list) -> list:
        return [
            pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor("NUMPY_VERSION", _text(np.__version__)),
                    pb_utils.Tensor("PREFIX", _text(sys.prefix)),
                    pb_utils.Tensor("EXECUTABLE", _text(sys.executable)),
                    pb_utils.Tensor("ROUND_TRIP", np.arange(4, dtype=np.float32) + 0.5),
                ]
            )
            for _ in requests
        ]
