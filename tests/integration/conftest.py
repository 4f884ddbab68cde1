"""Integration tests run services on `tmp_path` as their data dir: it carries the mesh's
certificates (DATA_DIR/tls) as `sidecar up` would have made them, from the tests' CA."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import pki as test_pki


@pytest.fixture(autouse=True)
def mesh_certificates(tmp_path: Path) -> Path:
    return test_pki.install(tmp_path)
