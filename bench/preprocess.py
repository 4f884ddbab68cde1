"""Benchmarks derived-asset generation for a synthetic 300-slice CT against a pydicom decode floor.

Run: ``.venv/bin/python -m bench.preprocess [--slices 300] [--size 512] [--workers 2] [--smoke]``

In-process: it times the preprocess worker's own functions (no server is involved), against
pydicom's decode of the same files as the floor.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from sidecar_core.display.render import preview_gif, thumbnail_png, viewport_pngs
from sidecar_core.pixels import (
    DecodedImage,
    DecodedSeries,
    decode_image,
    decode_series,
    model_input_from_series,
    save_model_input,
)
from sidecar_core.pixels.windowing import CT_PRESETS

CT_PRESET_NAMES = list(CT_PRESETS)


@lru_cache(maxsize=2)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return yy, xx


def phantom_slice(z: int, n_slices: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """int16 stored values (HU + 1024) of a chest-like slice: body, lungs, spine, noise."""
    yy, xx = _grid(size)
    t = z / max(n_slices - 1, 1)
    hu = np.full((size, size), -1000.0, dtype=np.float32)
    body = ((xx - 0.5) / 0.42) ** 2 + ((yy - 0.5) / 0.34) ** 2 < 1
    hu[body] = 40.0
    lung_r = 0.12 + 0.06 * np.sin(np.pi * t)
    for cx in (0.33, 0.67):
        hu[((xx - cx) / lung_r) ** 2 + ((yy - 0.47) / (lung_r * 1.6)) ** 2 < 1] = -850.0
    hu[((xx - 0.5) / 0.05) ** 2 + ((yy - 0.72) / 0.05) ** 2 < 1] = 700.0
    nodule = ((xx - 0.62) / 0.02) ** 2 + ((yy - 0.45) / 0.02) ** 2 < 1
    if abs(t - 0.5) < 0.03:
        hu[nodule] = 30.0
    hu += rng.normal(0.0, 15.0, hu.shape).astype(np.float32)
    return np.clip(np.round(hu + 1024.0), -1024, 3071).astype(np.int16)


def write_series(folder: Path, n_slices: int, size: int) -> list[Path]:
    """Write a CT series with pydicom: 1.25 mm axial slices, RescaleIntercept -1024."""
    rng = np.random.default_rng(7)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for z in range(n_slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.InstanceNumber = "CT", z + 1
        ds.ImagePositionPatient = [-250.0, -250.0, -1.25 * z]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [500 / size, 500 / size]
        ds.SliceThickness = 1.25
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelData = phantom_slice(z, n_slices, size, rng).tobytes()
        path = folder / f"ct_{z:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def floor(paths: Sequence[Path]) -> None:
    """The floor: read every file and decode its pixels with pydicom, nothing else."""
    for path in paths:
        _ = pydicom.dcmread(path).pixel_array


def _read_and_decode(paths: Sequence[Path]) -> DecodedSeries:
    return decode_series([pydicom.dcmread(p) for p in paths])


def _viewports(image: DecodedImage, preset: str) -> int:
    return sum(len(png) for png in viewport_pngs(image, preset))


def _series_wide(series: DecodedSeries) -> int:
    """Thumbnail, GIF preview and model-ready npz: the assets that need the whole series."""
    sizes = len(thumbnail_png(series.image)) + len(preview_gif(series.image))
    return sizes + len(save_model_input(model_input_from_series(series)))


def assets_serial(paths: Sequence[Path], stages: dict[str, tuple[float, float]]) -> None:
    """Everything in one thread, timing each stage (wall and CPU seconds)."""
    clock, cpu = time.perf_counter(), time.process_time()

    def lap(name: str) -> None:
        nonlocal clock, cpu
        now, now_cpu = time.perf_counter(), time.process_time()
        stages[name], clock, cpu = (now - clock, now_cpu - cpu), now, now_cpu

    series = _read_and_decode(paths)
    lap("read+decode+order+stack")
    thumbnail_png(series.image)
    lap("thumbnail")
    for preset in CT_PRESET_NAMES:
        _viewports(series.image, preset)
    lap(f"viewport PNGs ({len(CT_PRESET_NAMES)} presets)")
    preview_gif(series.image)
    lap("GIF preview")
    save_model_input(model_input_from_series(series))
    lap("model-ready npz (deflate level 1)")


def npz_levels(paths: Sequence[Path]) -> list[tuple[int, float, float]]:
    """(deflate level, seconds, MB) of the model-ready npz; level 0 stores it uncompressed."""
    model_input = model_input_from_series(_read_and_decode(paths))
    out = []
    for level in (0, 1, 6):
        start = time.perf_counter()
        size = len(save_model_input(model_input, compress_level=level))
        out.append((level, time.perf_counter() - start, size / 1e6))
    return out


def assets_threads(paths: Sequence[Path], workers: int) -> None:
    """Decode once, then render and compress on threads: zlib and numpy release the GIL."""
    series = _read_and_decode(paths)
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(_series_wide, series)]
        futures += [pool.submit(_viewports, series.image, p) for p in CT_PRESET_NAMES]
        for future in futures:
            future.result()


def _series_task(paths: Sequence[Path]) -> int:
    return _series_wide(_read_and_decode(paths))


def _viewport_task(paths: Sequence[Path]) -> int:
    """Viewports of some slices (each PNG is keyed by its SOP instance, so chunks are
    independent). Returns byte counts only: a real worker writes to the object store itself."""
    total = 0
    for path in paths:
        image = decode_image(pydicom.dcmread(path))
        total += sum(_viewports(image, preset) for preset in CT_PRESET_NAMES)
    return total


def assets_processes(paths: Sequence[Path], workers: int) -> None:
    """Processes: the series-wide assets in one task, viewports in chunks of slices."""
    chunks = [list(c) for c in np.array_split(np.array(paths, dtype=object), workers * 4)]
    with ProcessPoolExecutor(workers) as pool:
        futures = [pool.submit(_series_task, paths)]
        futures += [pool.submit(_viewport_task, chunk) for chunk in chunks if chunk]
        for future in futures:
            future.result()


def model_input_path(paths: Sequence[Path]) -> DecodedSeries:
    """The worker's critical path: parse + decode once + the model-ready npz (stored)."""
    from imaging_svc.assets.series_assets import decode_tolerant, model_input_asset

    series, _ = decode_tolerant([pydicom.dcmread(p) for p in paths])
    assert series is not None
    model_input_asset(series)
    return series


def display_path(series: DecodedSeries, workers: int) -> None:
    """What the worker renders after announcing the model input: thumbnail and GIF (viewports
    are rendered on demand)."""
    from imaging_svc.assets.series_assets import display_assets

    with ThreadPoolExecutor(workers) as pool:
        display_assets(series, pool)


def one_viewport(paths: Sequence[Path], series: DecodedSeries) -> None:
    """What the first request of a viewport costs in the ingest service (the RPC's render)."""
    from sidecar_core.display.viewports import render_slice, series_windows

    z = series.key_index
    window = series_windows(series, ["lung"])["lung"]
    by_sop = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in paths}
    dicom = by_sop[series.slices[z].sop_instance_uid].read_bytes()
    start = time.perf_counter()
    render_slice(dicom, series.slices[z].frame_number, "lung", window)
    _ONE_VIEWPORT.append(time.perf_counter() - start)


_ONE_VIEWPORT: list[float] = []


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    """Best wall time of ``repeat`` runs (the first run also pays first-touch memory costs)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true",
                        help="the smallest size (10 slices of 64x64, once): checks that it runs")
    args = parser.parse_args()
    if args.smoke:
        args.slices, args.size, args.repeat = 10, 64, 1
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        paths = write_series(Path(tmp), args.slices, args.size)
        took = time.perf_counter() - start
        print(f"wrote {len(paths)} CT slices of {args.size}x{args.size} in {took:.1f} s")
        t_floor = best_of(args.repeat, lambda: floor(paths))
        best_stages: dict[str, tuple[float, float]] = {}
        t_serial = math.inf
        for _ in range(args.repeat):
            stages: dict[str, tuple[float, float]] = {}
            seconds = best_of(1, lambda: assets_serial(paths, stages))  # noqa: B023
            if seconds < t_serial:
                t_serial, best_stages = seconds, stages
        t_threads = best_of(args.repeat, lambda: assets_threads(paths, args.workers))
        t_procs = best_of(args.repeat, lambda: assets_processes(paths, args.workers))
        levels = npz_levels(paths)
        t_model = best_of(args.repeat, lambda: model_input_path(paths))
        decoded = model_input_path(paths)
        t_display = best_of(args.repeat, lambda: display_path(decoded, args.workers))
        best_of(max(args.repeat, 5), lambda: one_viewport(paths, decoded))
        t_viewport = min(_ONE_VIEWPORT)  # the render alone, not the header scan finding the file
    n = len(paths)
    print(
        f"best of {args.repeat}; {os.cpu_count()} CPUs; assets = thumbnail + "
        f"{len(CT_PRESET_NAMES)} x {n} viewport PNGs + GIF + model npz\n"
    )
    print(f"{'measure':<38}{'seconds':>9}{'slices/s':>10}{'x floor':>9}{'CPU s':>8}")
    rows = [("floor: dcmread + pixel_array", t_floor, None), ("assets, serial", t_serial, None)]
    rows += [(f"  {name}", wall, cpu) for name, (wall, cpu) in best_stages.items()]
    rows += [
        (f"assets, {args.workers} threads", t_threads, None),
        (f"assets, {args.workers} processes", t_procs, None),
    ]
    for name, seconds, cpu in rows:
        cpu_text = f"{cpu:>8.2f}" if cpu is not None else ""
        print(f"{name:<38}{seconds:>9.2f}{n / seconds:>10.0f}{seconds / t_floor:>9.1f}{cpu_text}")
    print("\nthe preprocess worker's two phases (decode once):")
    print(f"  model-ready input (read + decode + npz stored): {t_model:6.2f} s = "
          f"{t_model / t_floor:.2f}x the pydicom decode floor ({t_floor:.2f} s)")
    print(f"  display assets after it ({args.workers} threads): {t_display:6.2f} s, "
          f"{n / t_display:.0f} slices/s = {(n / t_display) / (n / t_floor):.2f}x the decode rate")
    print(f"  one viewport on demand (read + decode one slice + PNG): {t_viewport * 1000:6.1f} ms "
          f"(all {len(CT_PRESET_NAMES)} x {n} eagerly, the old way: the serial viewport row)")
    print("\nmodel-ready npz by deflate level (6 = numpy's savez_compressed default):")
    for level, seconds, megabytes in levels:
        print(f"  level {level}: {seconds:6.2f} s  {megabytes:7.1f} MB")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
