"""Benchmark: the ingest hot path's header reader vs pydicom, microseconds per object.

Run: .venv/bin/python -m bench.parse_header [--smoke]
In-process: it times the ingest service's header reader itself (no server is involved).
Baseline in the same run: `_parse_with_pydicom` (pydicom `dcmread(stop_before_pixels=True)`,
the reader every object took before), with the service's pydicom settings (validation IGNORE).
Objects: a 64x64 and a 512x512 synthetic CT, and pydicom's CT_small.dcm (GE, private tags).
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path

import pydicom.config
from pydicom.data import get_testdata_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sidecar_core.dicom.parse import _parse_with_pydicom, parse_instance  # noqa: E402
from tests.helpers import ct_slice, to_bytes  # noqa: E402

LIMIT = 1 << 30


def per_call_us(fn: object, data: bytes, number: int, repeat: int = 7) -> float:
    best = min(timeit.repeat(lambda: fn(data, LIMIT), number=number, repeat=repeat))  # type: ignore[operator]
    return best / number * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="a few calls per object, once: checks that it runs")
    smoke = parser.parse_args().smoke
    scale, repeat = (100, 1) if smoke else (1, 7)
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    objects = {f"synthetic CT {n}x{n}": to_bytes(ct_slice(rows=n, cols=n)) for n in (64, 512)}
    ct_small = get_testdata_file("CT_small.dcm")
    if ct_small:
        objects["pydicom CT_small.dcm"] = Path(str(ct_small)).read_bytes()
    for label, data in objects.items():
        assert parse_instance(data, LIMIT) == _parse_with_pydicom(data, LIMIT), label
        old = per_call_us(_parse_with_pydicom, data, 500 // scale, repeat)
        new = per_call_us(parse_instance, data, 5000 // scale, repeat)
        print(f"{label:22s} {len(data):8d} B  pydicom {old:7.1f} us  header reader "
              f"{new:6.1f} us  ratio {old / new:5.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
