"""Regenerates the Python code of every .proto under protos/ (run: python -m protos.generate)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent
_IMPORT = re.compile(r"^(from|import) sidecar\.", re.MULTILINE)


def generate() -> int:
    """Runs protoc on all sources and rewrites imports to live under the `protos` package."""
    sources = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.proto"))
    for stale in ROOT.rglob("*_pb2*.py*"):
        stale.unlink()
    include = str(Path(protoc.__file__).parent / "_proto")
    rc = protoc.main(
        ["protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={ROOT}", f"--pyi_out={ROOT}",
         f"--grpc_python_out={ROOT}", *sources]
    )
    if rc != 0:
        return rc
    for out in ROOT.rglob("*_pb2*.py*"):
        text = out.read_text()
        out.write_text(_IMPORT.sub(r"\1 protos.sidecar.", text))
    for folder in {p.parent for p in ROOT.rglob("*_pb2.py")}:
        node = folder
        while node != ROOT:
            (node / "__init__.py").touch()
            node = node.parent
    return 0


if __name__ == "__main__":
    sys.exit(generate())
