"""`buf breaking` against the latest released contracts (protos/releases/N.binpb), as `make
test` runs it (scripts/buf-lint.sh): the tree as committed passes; removing an RPC or
renumbering a field in a copy of protos/ is reported by name; adding an RPC is not breaking."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BUF = ROOT / ".tools" / "buf" / "node_modules" / ".bin" / "buf"
RELEASES = ROOT / "protos" / "releases"

pytestmark = pytest.mark.skipif(not BUF.exists(), reason="Buf is not installed here; "
                                "`make buf-lint` (part of `make test`) installs it first")


def latest_release() -> Path:
    return max(RELEASES.glob("*.binpb"), key=lambda p: int(p.stem))


def breaking(protos: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BUF), "breaking", "--against", str(latest_release())],
                          cwd=protos, capture_output=True, text=True, timeout=120)


def edited(tmp_path: Path, file: str, old: str, new: str) -> Path:
    """A copy of the .proto sources (and buf.yaml) with one edit in `file`."""
    copy = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", copy, ignore=shutil.ignore_patterns(
        "*.py", "*.pyi", "__pycache__", "releases"))
    path = copy / "sidecar" / file
    text = path.read_text()
    assert old in text, f"{old!r} not in {file}"
    path.write_text(text.replace(old, new, 1))
    return copy


def test_the_releases_are_numbered_from_one() -> None:
    numbers = sorted(int(p.stem) for p in RELEASES.glob("*.binpb"))
    assert numbers == list(range(1, len(numbers) + 1)) and numbers


def test_the_committed_contracts_keep_the_latest_release() -> None:
    done = breaking(ROOT / "protos")
    assert done.returncode == 0, done.stdout + done.stderr


def test_removing_an_rpc_fails_and_names_it(tmp_path: Path) -> None:
    copy = edited(tmp_path, "workflow/v1/workflow_service.proto",
                  "  rpc GetAsset(GetAssetRequest) returns (GetAssetResponse);\n", "")
    done = breaking(copy)
    assert done.returncode != 0
    assert re.search(r'Previously present RPC "GetAsset" on service "WorkflowService" was '
                     r"deleted", done.stdout), done.stdout + done.stderr


def test_renumbering_a_field_fails_and_names_it(tmp_path: Path) -> None:
    copy = edited(tmp_path, "workflow/v1/review_service.proto",
                  "  string client_address = 3;", "  string client_address = 9;")
    done = breaking(copy)
    assert done.returncode != 0
    assert 'Previously present field "3" with name "client_address" on message "LoginRequest"' \
        in done.stdout, done.stdout + done.stderr


def test_adding_an_rpc_is_not_breaking(tmp_path: Path) -> None:
    copy = edited(tmp_path, "workflow/v1/workflow_service.proto",
                  "  rpc GetAsset(GetAssetRequest) returns (GetAssetResponse);\n",
                  "  rpc GetAsset(GetAssetRequest) returns (GetAssetResponse);\n"
                  "  rpc GetAssetAgain(GetAssetRequest) returns (GetAssetResponse);\n")
    done = breaking(copy)
    assert done.returncode == 0, done.stdout + done.stderr
