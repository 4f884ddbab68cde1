"""Connected-component labelling in plain numpy (no scipy), for sparse N-D masks.

The reference models ship an identical copy of this file next to their model.py (Triton loads
each model directory on its own); tests/unit/normalizer_svc/builtin/test_builtin_normalisers.py
keeps them in sync.
"""

from __future__ import annotations

import itertools

import numpy as np


def _forward_offsets(ndim: int, connectivity: int) -> list[tuple[int, ...]]:
    """Half of the neighbour offsets (the other half is implied by symmetry)."""
    offsets = []
    for offset in itertools.product((-1, 0, 1), repeat=ndim):
        nonzero = sum(1 for v in offset if v)
        if 0 < nonzero <= connectivity and offset > (0,) * ndim:
            offsets.append(offset)
    return offsets


def label(mask: np.ndarray, connectivity: int = 1) -> tuple[np.ndarray, int]:
    """Labels the True components of `mask` 1..n (in order of their first voxel); 0 = background.

    `connectivity` is the number of coordinates a neighbour may differ in: 1 gives 4/6-connected,
    mask.ndim gives 8/26-connected components. Cost grows with the number of True voxels only.
    """
    mask = np.asarray(mask, dtype=bool)
    labels = np.zeros(mask.shape, dtype=np.int32)
    flat = np.flatnonzero(mask)
    if flat.size == 0:
        return labels, 0
    coords = np.array(np.unravel_index(flat, mask.shape))
    shape = np.array(mask.shape)[:, None]
    sources, targets = [], []
    for offset in _forward_offsets(mask.ndim, connectivity):
        moved = coords + np.array(offset)[:, None]
        inside = ((moved >= 0) & (moved < shape)).all(axis=0)
        neighbour = np.ravel_multi_index(tuple(moved[:, inside]), mask.shape)
        present = mask.ravel()[neighbour]
        sources.append(np.flatnonzero(inside)[present])
        targets.append(np.searchsorted(flat, neighbour[present]))
    a = np.concatenate(sources)
    b = np.concatenate(targets)
    parent = np.arange(flat.size)
    while True:  # hook larger roots under smaller ones, then jump pointers to the roots
        pa, pb = parent[a], parent[b]
        differ = pa != pb
        if not differ.any():
            break
        np.minimum.at(parent, np.maximum(pa, pb)[differ], np.minimum(pa, pb)[differ])
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    roots, compact = np.unique(parent, return_inverse=True)
    labels.ravel()[flat] = compact.astype(np.int32) + 1
    return labels, int(roots.size)


def bounding_boxes(labels: np.ndarray, count: int) -> np.ndarray:
    """[count, 2 * ndim] inclusive boxes (mins then maxes, in axis order) of labels 1..count."""
    flat = np.flatnonzero(labels)
    ids = labels.ravel()[flat] - 1
    coords = np.array(np.unravel_index(flat, labels.shape))
    boxes = np.zeros((count, 2 * labels.ndim), dtype=np.int64)
    for axis in range(labels.ndim):
        low = np.full(count, np.iinfo(np.int64).max)
        high = np.full(count, -1)
        np.minimum.at(low, ids, coords[axis])
        np.maximum.at(high, ids, coords[axis])
        boxes[:, axis], boxes[:, labels.ndim + axis] = low, high
    return boxes
