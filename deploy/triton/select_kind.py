"""Switches the model repository's instance groups between KIND_CPU and KIND_GPU.

    python deploy/triton/select_kind.py --kind gpu --out /srv/triton/models   # copy, then edit
    python deploy/triton/select_kind.py --kind cpu                            # edit in place

Only the `kind:` of each `instance_group` entry changes (plus `gpus: [...]` with --gpus); the
models' code is the same for both kinds.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
_GROUP = re.compile(r"instance_group\s*\[(?P<body>.*?)\]\s*$", re.S | re.M)
_KIND = re.compile(r"kind:\s*KIND_(CPU|GPU)")
_GPUS = re.compile(r"\s*gpus:\s*\[[^\]]*\]")


def rewrite(config: str, kind: str, gpus: list[int] | None = None) -> str:
    """config.pbtxt text with every instance group set to KIND_<kind>."""

    def group(match: re.Match[str]) -> str:
        body = _GPUS.sub("", match.group("body"))
        body = _KIND.sub(f"kind: KIND_{kind.upper()}", body)
        if gpus and kind == "gpu":
            body = body.replace("kind: KIND_GPU", f"kind: KIND_GPU gpus: {gpus}")
        return f"instance_group [{body}]"

    if not _GROUP.search(config):
        raise ValueError("config has no instance_group")
    return _GROUP.sub(group, config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("cpu", "gpu"), required=True)
    parser.add_argument("--repository", type=Path, default=HERE / "models")
    parser.add_argument("--out", type=Path, help="copy the repository here and edit the copy")
    parser.add_argument("--gpus", help="comma-separated GPU ids for KIND_GPU, e.g. 0,1")
    args = parser.parse_args(argv)
    repository = args.repository
    if args.out:
        shutil.copytree(
            repository, args.out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
        )
        repository = args.out
    gpus = [int(g) for g in args.gpus.split(",")] if args.gpus else None
    for config in sorted(repository.glob("*/config.pbtxt")):
        config.write_text(rewrite(config.read_text(), args.kind, gpus))
        print(f"{config}: KIND_{args.kind.upper()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
