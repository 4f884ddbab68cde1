"""Large request tensors handed to a same-host Triton through system shared memory."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from tritonclient.utils import shared_memory as shm

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def same_host(url: str) -> bool:
    """Triton at a loopback address shares this machine's /dev/shm with us."""
    host = url.rsplit(":", 1)[0] if ":" in url else url
    return host.strip().lower() in LOOPBACK_HOSTS


@dataclass
class Region:
    """One system shared-memory region holding every input of one request, back to back."""

    name: str  # the name Triton knows it by
    key: str  # the POSIX shared-memory key (/dev/shm/<key>)
    size: int
    offsets: dict[str, tuple[int, int]]  # input name → (offset, byte size)
    handle: shm.SharedMemoryRegion


def fixed_size(array: np.ndarray) -> bool:
    """Numeric and bool tensors go into the region as they are; BYTES (strings, objects)
    need Triton's length-prefixed serialisation and travel in the request."""
    return np.asarray(array).dtype.kind in "biuf"


def total_bytes(inputs: Mapping[str, np.ndarray]) -> int:
    return sum(int(np.asarray(a).nbytes) for a in inputs.values() if fixed_size(a))


def create_region(inputs: Mapping[str, np.ndarray]) -> Region:
    """Creates a region sized for the fixed-size `inputs` and copies them in (one copy, no
    serialisation); the others are left out of `offsets`."""
    inputs = {name: array for name, array in inputs.items() if fixed_size(array)}
    token = uuid.uuid4().hex[:16]
    name, key = f"sidecar-{os.getpid()}-{token}", f"/sidecar-{os.getpid()}-{token}"
    offsets: dict[str, tuple[int, int]] = {}
    position = 0
    for input_name, array in inputs.items():
        nbytes = int(np.asarray(array).nbytes)
        offsets[input_name] = (position, nbytes)
        position += (nbytes + 63) // 64 * 64  # keep each tensor 64-byte aligned
    size = max(position, 64)
    handle = shm.create_shared_memory_region(name, key, size, create_only=True)
    try:
        for input_name, array in inputs.items():
            shm.set_shared_memory_region(
                handle, [np.ascontiguousarray(array)], offset=offsets[input_name][0]
            )
    except BaseException:
        shm.destroy_shared_memory_region(handle)
        raise
    return Region(name, key, size, offsets, handle)


def destroy_region(region: Region) -> None:
    with contextlib.suppress(Exception):
        shm.destroy_shared_memory_region(region.handle)


@contextlib.contextmanager
def region_for(inputs: Mapping[str, np.ndarray]) -> Iterator[Region]:
    region = create_region(inputs)
    try:
        yield region
    finally:
        destroy_region(region)
