"""Test-only model repository additions: a Triton model with mis-shaped outputs and a registry
that adds it to deploy/models.yaml (the mesh tests use both)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from sidecar_core.registry import DEFAULT_PATH as DEPLOY_REGISTRY

# A test-only Triton model registered as `chest_ct_garbage` (coverage of chest_ct_nodules): it
# answers every request with outputs of the wrong shape, which validation must reject.
GARBAGE_MODEL = "chest_ct_garbage"
_GARBAGE_CONFIG = """\
name: "chest_ct_garbage"
backend: "python"
max_batch_size: 0
input [
  { name: "VOLUME" data_type: TYPE_FP32 dims: [ -1, -1, -1 ] },
  { name: "SPACING" data_type: TYPE_FP32 dims: [ 3 ] }
]
output [
  { name: "BOXES" data_type: TYPE_FP32 dims: [ -1, -1 ] },
  { name: "SCORES" data_type: TYPE_FP32 dims: [ -1 ] }
]
instance_group [ { count: 1 kind: KIND_CPU } ]
parameters [ { key: "model_version" value: { string_value: "test-misshaped-1" } } ]
"""
_GARBAGE_SOURCE = '''\
"""Test-only: BOXES [3, 5] and SCORES [2] whatever the input (never deploy it)."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("BOXES", np.ones((3, 5), np.float32)),
            pb_utils.Tensor("SCORES", np.ones((2,), np.float32))]) for _ in requests]
'''


def garbage_registry_entry() -> dict[str, Any]:
    """The registry entry of the garbage model: chest_ct_nodules' coverage and outputs."""
    raw = yaml.safe_load(DEPLOY_REGISTRY.read_text())
    chest = next(m for m in raw["models"] if m["name"] == "chest_ct_nodules")
    return {**chest, "name": GARBAGE_MODEL, "triton_model": GARBAGE_MODEL, "version": "1",
            "description": "Test-only model with mis-shaped outputs"}


def write_garbage_model(repo: Path) -> None:
    (repo / GARBAGE_MODEL / "1").mkdir(parents=True, exist_ok=True)
    (repo / GARBAGE_MODEL / "config.pbtxt").write_text(_GARBAGE_CONFIG)
    (repo / GARBAGE_MODEL / "1" / "model.py").write_text(_GARBAGE_SOURCE)


def write_registry(path: Path, extra_models: Sequence[Mapping[str, Any]] = ()) -> Path:
    """deploy/models.yaml plus `extra_models`, written to `path` (validated by the services)."""
    raw = yaml.safe_load(DEPLOY_REGISTRY.read_text())
    raw["models"] = [*raw["models"], *[dict(m) for m in extra_models]]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
