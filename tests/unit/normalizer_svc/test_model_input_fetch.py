"""The normalizer's fetch of a model input announced before its durable write ended: missing or
damaged bytes (a machine crash before the sync) are retried, not failed; bad content is not."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from normalizer_svc.worker import AiRunWorker
from sidecar_core.errors import TransientError
from sidecar_core.pixels.volume import ModelInput, save_model_input
from sidecar_core.storage.objectstore import ObjectStore


def fetch(store: ObjectStore, key: str):  # type: ignore[no-untyped-def]
    return AiRunWorker._model_input(SimpleNamespace(objects=store), key)  # type: ignore[arg-type]


def archive() -> bytes:
    z = 3
    return save_model_input(ModelInput(
        volume=np.arange(z * 4 * 4, dtype=np.float32).reshape(z, 4, 4),
        positions=np.zeros((z, 3)), orientation=np.array([1.0, 0, 0, 0, 1, 0]),
        pixel_spacing=np.array([1.0, 1.0]), slice_spacing=1.0,
        sop_instance_uids=("1", "2", "3"), frames=np.ones(z, dtype=np.int32), modality="CT",
        laterality=("",) * z, view_position=("",) * z), compress_level=0)


def test_an_intact_model_input_is_read(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path, fsync=False)
    key = store.put_unsynced(archive())
    assert fetch(store, key).volume.shape == (3, 4, 4)


def test_missing_or_damaged_bytes_are_retried(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path, fsync=False)
    data = archive()
    key = ObjectStore.key_for(data)
    with pytest.raises(TransientError, match="not in the object store"):
        fetch(store, key)
    store.put_unsynced(data)
    store.path(key).write_bytes(data[: len(data) // 2])  # what a machine crash may leave
    with pytest.raises(TransientError, match="damaged"):
        fetch(store, key)
    store.put_unsynced(data, repair=True)  # the redone preprocess job
    assert fetch(store, key).volume.shape == (3, 4, 4)


def test_content_that_is_its_digest_but_no_model_input_is_not_retried(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path, fsync=False)
    key = store.put(b"not an npz archive")
    with pytest.raises(Exception) as raised:
        fetch(store, key)
    assert not isinstance(raised.value, TransientError)
