"""Large request tensors handed to a same-host Triton through system shared memory: regions
kept registered between requests (RegionPool), and the ones a killed process left behind."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tritonclient.utils import shared_memory as shm

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
PREFIX = "sidecar-"  # regions are named sidecar-<pid>-<token>, in Triton and in /dev/shm
GRANULE = 2**20
KEEP_BYTES = 2**30  # idle regions kept for the next requests, per client


def same_host(url: str) -> bool:
    """Triton at a loopback address shares this machine's /dev/shm with us."""
    host = url.rsplit(":", 1)[0] if ":" in url else url
    return host.strip().lower() in LOOPBACK_HOSTS


@dataclass
class Region:
    """One system shared-memory region; a request puts its inputs in it back to back."""

    name: str  # the name Triton knows it by
    key: str  # the POSIX shared-memory key (/dev/shm/<key>)
    size: int
    handle: shm.SharedMemoryRegion
    offsets: dict[str, tuple[int, int]] = field(default_factory=dict)  # input → (offset, bytes)


def fixed_size(array: np.ndarray) -> bool:
    """Numeric and bool tensors go into the region as they are; BYTES (strings, objects)
    need Triton's length-prefixed serialisation and travel in the request."""
    return np.asarray(array).dtype.kind in "biuf"


def total_bytes(inputs: Mapping[str, np.ndarray]) -> int:
    return sum(int(np.asarray(a).nbytes) for a in inputs.values() if fixed_size(a))


def layout(inputs: Mapping[str, np.ndarray]) -> tuple[dict[str, tuple[int, int]], int]:
    """Where each fixed-size input goes (64-byte aligned) and the bytes they need in all."""
    offsets: dict[str, tuple[int, int]] = {}
    position = 0
    for input_name, array in inputs.items():
        if fixed_size(array):
            nbytes = int(np.asarray(array).nbytes)
            offsets[input_name] = (position, nbytes)
            position += (nbytes + 63) // 64 * 64
    return offsets, max(position, 64)


def allocate(size: int) -> Region:
    """A new region of at least `size` bytes (rounded up to whole MiB so that it serves the
    next, slightly larger study too)."""
    size = (size + GRANULE - 1) // GRANULE * GRANULE
    token = uuid.uuid4().hex[:16]
    name, key = f"{PREFIX}{os.getpid()}-{token}", f"/{PREFIX}{os.getpid()}-{token}"
    handle = shm.create_shared_memory_region(name, key, size, create_only=True)
    return Region(name, key, size, handle)


def fill(region: Region, inputs: Mapping[str, np.ndarray]) -> None:
    """Copies the fixed-size `inputs` into the region (one copy, no serialisation)."""
    offsets, needed = layout(inputs)
    if needed > region.size:
        raise ValueError(f"{needed} bytes of inputs do not fit region {region.name} "
                         f"({region.size} bytes)")
    for input_name, (offset, _) in offsets.items():
        shm.set_shared_memory_region(
            region.handle, [np.ascontiguousarray(inputs[input_name])], offset=offset)
    region.offsets = offsets


def destroy_region(region: Region) -> None:
    with contextlib.suppress(Exception):
        shm.destroy_shared_memory_region(region.handle)


class RegionPool:
    """Registered regions kept between requests.

    Creating, registering and first touching a fresh region cost more than the copy into it
    (page faults: 100 × 512² float32 is 105 MB), so a region is used again by the next request
    that fits in it, up to `keep_bytes` of idle regions. Not thread-safe: one event loop."""

    def __init__(self, keep_bytes: int = KEEP_BYTES) -> None:
        self.keep_bytes = keep_bytes
        self.idle: list[Region] = []

    def take(self, size: int) -> Region | None:
        """The smallest idle region of `size` bytes or more (at most 4× more), out of the
        pool; None when none fits."""
        fitting = [r for r in self.idle if size <= r.size <= max(4 * size, GRANULE)]
        if not fitting:
            return None
        region = min(fitting, key=lambda r: r.size)
        self.idle.remove(region)
        return region

    def give_back(self, region: Region) -> list[Region]:
        """Keeps `region` for later; returns the regions evicted to stay within keep_bytes
        (the oldest first), which the caller unregisters and destroys."""
        self.idle.append(region)
        evicted = []
        while self.idle and sum(r.size for r in self.idle) > self.keep_bytes:
            evicted.append(self.idle.pop(0))
        return evicted

    def drain(self) -> list[Region]:
        regions, self.idle = self.idle, []
        return regions


def orphaned_keys(shm_dir: Path = Path("/dev/shm")) -> list[str]:
    """Keys (/dev/shm names) of regions left by sidecar processes that no longer run (killed
    before they could destroy them)."""
    return [path.name for path in shm_dir.glob(f"{PREFIX}*") if not owner_alive(path.name)]


def owner_alive(region_name: str) -> bool:
    """Whether the process that created a region called `region_name` still runs (True for a
    name that is not ours)."""
    if not region_name.startswith(PREFIX):
        return True
    pid = region_name.removeprefix(PREFIX).split("-", 1)[0]
    return not pid.isdigit() or _alive(int(pid))


def unlink_key(key: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(Path("/dev/shm") / key.lstrip("/"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
