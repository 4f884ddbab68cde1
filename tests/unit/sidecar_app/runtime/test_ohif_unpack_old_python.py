"""OHIF's unpack on a Python without tarfile's extraction filters (Debian bookworm's 3.11.2, the
image's base): only package/dist, and a path that climbs out is refused."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from sidecar_app.runtime.ohif_fetch import IntegrityError, OhifLock, unpack

LOCK = OhifLock("@ohif/app", "0.0.0-test", "sha512-unused", "package/dist")


def _tarball(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o4777  # setuid bits must not survive
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture()
def no_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(tarfile, "data_filter")


def test_unpacks_dist_only_without_filters(no_filters: None, tmp_path: Path) -> None:
    tgz = _tarball(tmp_path / "ohif.tgz", {"package/dist/index.html": b"<html></html>",
                                           "package/dist/a/b.wasm": b"\0asm",
                                           "package/README.md": b"not dist"})
    unpack(tgz, LOCK, tmp_path / "out")
    dist = tmp_path / "out" / "dist"
    assert (dist / "index.html").read_bytes() == b"<html></html>"
    assert (dist / "a" / "b.wasm").exists() and not (tmp_path / "out" / "README.md").exists()
    assert (dist / "index.html").stat().st_mode & 0o7000 == 0
    assert dist.stat().st_mode & 0o005 == 0o005  # readable by the image's service user


def test_refuses_a_climbing_path_without_filters(no_filters: None, tmp_path: Path) -> None:
    tgz = _tarball(tmp_path / "ohif.tgz", {"package/dist/index.html": b"<html></html>",
                                           "package/dist/../../../evil": b"x"})
    with pytest.raises(IntegrityError, match="unsafe path"):
        unpack(tgz, LOCK, tmp_path / "out")
    assert not (tmp_path / "out" / "dist").exists()
