"""Test-only Triton model that sleeps SECONDS (default 5) before answering, for deadline tests."""

from __future__ import annotations

import time

import numpy as np
import triton_python_backend_utils as pb_utils

DEFAULT_SECONDS = 5.0


class TritonPythonModel:
    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, "SECONDS")
            seconds = (
                float(tensor.as_numpy().reshape(-1)[0]) if tensor is not None else DEFAULT_SECONDS
            )
            time.sleep(max(0.0, seconds))
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("SLEPT", np.array([seconds], np.float32))]
                )
            )
        return responses
