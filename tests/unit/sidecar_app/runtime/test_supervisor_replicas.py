"""`sidecar up --replicas N`: which extra processes the supervisor starts, and how."""

from __future__ import annotations

from pathlib import Path

from sidecar_app.cli import build_parser
from sidecar_app.runtime.supervisor import Mesh, UpOptions


def test_one_replica_starts_nothing_extra(tmp_path: Path) -> None:
    assert Mesh(UpOptions(tmp_path)).replicas() == []


def test_n_replicas_of_each_stateless_worker(tmp_path: Path) -> None:
    extra = {name: env for name, _module, env in Mesh(UpOptions(tmp_path, replicas=3)).replicas()}
    assert set(extra) == {f"{kind}-{i}" for kind in ("workflow", "preprocess", "normalizer")
                          for i in (2, 3)}
    assert extra["normalizer-2"] == {"SIDECAR_INSTANCE": "2", "SIDECAR_NORMALIZER_PORT": "0"}
    assert extra["workflow-3"] == {"SIDECAR_INSTANCE": "3", "SIDECAR_WORKFLOW_PORT": "0"}
    assert extra["preprocess-2"] == {"SIDECAR_INSTANCE": "2"}


def test_the_flag_and_its_environment_default(monkeypatch) -> None:
    assert build_parser().parse_args(["up", "--replicas", "2"]).replicas == 2
    monkeypatch.setenv("SIDECAR_REPLICAS", "4")
    assert build_parser().parse_args(["up"]).replicas == 4
