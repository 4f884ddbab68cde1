"""Test-only Triton model returning empty, mis-shaped or NaN outputs, chosen by its MODE input."""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils


def outputs_for(mode: str) -> tuple[np.ndarray, np.ndarray]:
    if mode == "empty":
        return np.zeros((0, 6), np.float32), np.zeros((0,), np.float32)
    if mode == "misshaped":
        return np.ones((3, 5), np.float32), np.ones((2,), np.float32)
    if mode == "nan":
        return np.full((1, 6), np.nan, np.float32), np.array([np.nan], np.float32)
    if mode == "out_of_range":
        return np.array([[0, 0, 0, 9999, 9999, 9999]], np.float32), np.array([7.0], np.float32)
    return np.array([[1, 2, 3, 4, 5, 6]], np.float32), np.array([0.5], np.float32)


class TritonPythonModel:
    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "MODE").as_numpy().reshape(-1)[0]
            mode = raw.decode() if isinstance(raw, bytes) else str(raw)
            if mode == "error":
                responses.append(
                    pb_utils.InferenceResponse(
                        output_tensors=[],
                        error=pb_utils.TritonError("garbage_model: asked to fail"),
                    )
                )
                continue
            boxes, scores = outputs_for(mode)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("BOXES", boxes),
                        pb_utils.Tensor("SCORES", scores),
                    ]
                )
            )
        return responses
