"""`sidecar audit verify` refuses, in one line, a data dir that was never set up and a
database that does not answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar_app.cli import main
from tests.servers import free_port


def test_a_data_dir_that_was_never_set_up(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", "--data-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sidecar audit verify: error: no sidecar data dir at ")
    assert not (tmp_path / "none").exists()


def test_a_database_that_does_not_answer(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert main(["audit", "verify", "--database-url",
                 f"postgresql://x@127.0.0.1:{port}/none"]) == 2
    assert f"cannot reach the database at 127.0.0.1:{port} (connection refused)" in \
        capsys.readouterr().err
