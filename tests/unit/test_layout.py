"""The floor plan stays readable: no product folder is a flat heap of modules, every product
package says what it owns, and the unit tests mirror the package layout."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "tests" / "unit"
PRODUCT = ["protos", "sidecar_core", "sidecar_synth", "ingest_svc", "imaging_svc",
           "normalizer_svc", "workflow_svc", "review_gateway", "sidecar_app"]
MOST_MODULES = 16
# Folders whose files are numbered steps or generated code, not rooms to read.
NOT_ROOMS = {"sidecar_core/store/migrations/versions"}
# Tests of the repository as a whole stand at the top of tests/unit.
REPOSITORY_TESTS = {"test_layout.py", "test_repository_docs.py"}


def packages() -> list[Path]:
    found = []
    for top in PRODUCT:
        for init in (ROOT / top).rglob("__init__.py"):
            if "node_modules" not in init.parts and "_pb2" not in init.name:
                found.append(init.parent)
    return found


def test_no_product_folder_holds_more_than_a_room_of_modules() -> None:
    crowded = []
    for folder in packages():
        rel = folder.relative_to(ROOT).as_posix()
        modules = [p for p in folder.glob("*.py")
                   if p.name != "__init__.py" and not p.name.endswith(("_pb2.py", "_pb2_grpc.py"))]
        if rel not in NOT_ROOMS and len(modules) > MOST_MODULES:
            crowded.append(f"{rel}: {len(modules)} modules")
    assert not crowded, crowded


def test_every_service_subpackage_says_what_it_owns() -> None:
    silent = []
    for folder in packages():
        rel = folder.relative_to(ROOT)
        if rel.parts[0] == "protos" or len(rel.parts) < 2:
            continue
        tree = ast.parse((folder / "__init__.py").read_text())
        if not ast.get_docstring(tree):
            silent.append(rel.as_posix())
    assert not silent, f"subpackages without a docstring saying what they own: {silent}"


def test_unit_tests_mirror_the_package_layout() -> None:
    stray = sorted(p.name for p in UNIT.glob("test_*.py") if p.name not in REPOSITORY_TESTS)
    assert not stray, f"unit tests belong in tests/unit/<package path>/: {stray}"
    orphans = []
    for folder in UNIT.rglob("*"):
        if folder.is_dir() and folder.name != "__pycache__":
            rel = folder.relative_to(UNIT)
            if not (ROOT / rel).is_dir():
                orphans.append(rel.as_posix())
    assert not orphans, f"tests/unit folders that mirror no folder of the repository: {orphans}"
