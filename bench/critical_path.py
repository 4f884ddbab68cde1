"""The critical path's stages before and after issue 13, side by side in one process.

Wall and CPU seconds of what stands between the last instance and the model on the same
300 x 512^2 synthetic chest CT, alternating old and new each repetition (a shared, loaded
machine slows both alike; CPU seconds are the steadier figure):

- preprocess: before, the worker built every asset before announcing anything (thumbnail,
  1,200 viewport PNGs, GIF, model npz at deflate level 1); now it reads and decodes once,
  stores the model npz uncompressed and announces it, then renders the display assets;
- fetch: the normalizer loading the model npz (inflate level 1 before, stored now);
- the reference chest CT model itself: ``detect_nodules`` now vs the copy at ``--old-model``
  (default: the version of issue 13's measurement, read with ``git show``).

Run: ``.venv/bin/python -m bench.critical_path [--slices 300] [--repeat 2] [--smoke]``

In-process: it times the preprocess worker's, the normalizer's and the model's own functions
(no server is involved). ``--smoke``: 40 slices of 128², once.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import numpy as np
import pydicom

from imaging_svc.assets.series_assets import build_series_assets, decode_tolerant, model_input_asset
from normalizer_svc.builtin.model_input import ModelInput
from sidecar_synth import generate

REPO = Path(__file__).resolve().parents[1]
MODEL = "deploy/triton/models/chest_ct_nodules/1/model.py"
OLD_COMMIT = "e3cbaa5"  # the code issue 13 measured


def _module(name: str, path: Path) -> ModuleType:
    sys.path.insert(0, str(REPO / Path(MODEL).parent))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--old-model", type=Path, help="old model.py (default: git show)")
    parser.add_argument("--smoke", action="store_true", help="the smallest size: checks it runs")
    args = parser.parse_args()
    if args.smoke:
        args.slices, args.size, args.repeat = 40, 128, 1
    with tempfile.TemporaryDirectory(prefix="critical-path-") as tmp:
        root = Path(tmp)
        old_model = args.old_model
        if old_model is None:
            old_model = root / "old_model.py"
            old_model.write_bytes(subprocess.run(["git", "show", f"{OLD_COMMIT}:{MODEL}"],
                                                 cwd=REPO, check=True,
                                                 capture_output=True).stdout)
        old, new = _module("old_chest", old_model), _module("new_chest", REPO / MODEL)
        truth = generate("chest-ct", root / "ct", 11, slices=args.slices, rows=args.size,
                         cols=args.size)
        blobs = [(root / "ct" / name).read_bytes() for name in truth.files]

        def datasets() -> list[pydicom.Dataset]:
            return [pydicom.dcmread(io.BytesIO(b)) for b in blobs]

        pool = ThreadPoolExecutor(2)
        results: dict[str, list[tuple[float, float]]] = {}

        def record(name: str, fn: Callable[[], object]) -> None:
            results.setdefault(name, []).append(timed(fn))

        series, _ = decode_tolerant(datasets())
        assert series is not None
        level1 = build_series_assets(datasets(), pool).blobs[-1].data
        stored = model_input_asset(series)
        assert not isinstance(stored, type(None)) and hasattr(stored, "data")
        volume = ModelInput.from_npz(stored.data).volume
        spacing = ModelInput.from_npz(stored.data).spacing_zyx
        for _ in range(args.repeat):
            record("floor: pydicom dcmread + pixel_array", lambda: [d.pixel_array
                                                                    for d in datasets()])
            record("preprocess before: all assets, npz level 1",
                   lambda: build_series_assets(datasets(), pool))
            record("preprocess now: decode once + npz stored",
                   lambda: model_input_asset(decode_tolerant(datasets())[0]))  # type: ignore[arg-type]
            record("fetch before: npz level 1", lambda: ModelInput.from_npz(level1))
            record("fetch now: npz stored", lambda: ModelInput.from_npz(stored.data))
            record("chest model before", lambda: old.detect_nodules(volume, spacing))
            record("chest model now", lambda: new.detect_nodules(volume, spacing))
        pool.shutdown()
        same = all(np.array_equal(a, b) for a, b in zip(old.detect_nodules(volume, spacing),
                                                         new.detect_nodules(volume, spacing),
                                                         strict=True))
    print(f"{args.slices} x {args.size}^2 chest CT; best of {args.repeat} (old and new "
          f"alternating)\n{'stage':<46}{'wall s':>9}{'CPU s':>9}")
    for name, runs in results.items():
        wall = min(w for w, _ in runs)
        cpu = min(c for _, c in runs)
        print(f"{name:<46}{wall:>9.2f}{cpu:>9.2f}")
    floor = min(c for _, c in results["floor: pydicom dcmread + pixel_array"])
    now = min(c for _, c in results["preprocess now: decode once + npz stored"])
    print(f"\nmodel-ready input / pydicom decode (CPU): {now / floor:.2f}x")
    print(f"chest model outputs identical before and now: {same}")
    print(f"load average at the end: {__import__('os').getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
