"""Decode on arrival: the cache's bounds, keys and waiting, and the model input the preprocess
worker builds with it is byte for byte the one it builds without it."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from imaging_svc.assets.early_decode import (
    DecodeCache,
    Decoded,
    decode_object,
    keys_to_decode,
)
from imaging_svc.assets.series_assets import AssetBlob
from imaging_svc.assets.worker import PreprocessWorker
from protos.sidecar.events.v1 import events_pb2
from sidecar_core.messaging.subjects import Topology
from sidecar_core.pixels.volume import load_model_input
from sidecar_core.registry import load_registry
from sidecar_core.storage.objectstore import ObjectStore
from sidecar_synth import generate

SMALL_CT = {"slices": 24, "rows": 96, "cols": 96, "fov_mm": 340.0, "slice_spacing": 5.0}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fake(nbytes: int) -> Decoded:
    return Decoded(pydicom.Dataset(), None, nbytes, 0.0)  # type: ignore[arg-type]


def test_bounded_in_bytes_least_recently_used_first_out() -> None:
    clock = Clock()
    cache = DecodeCache(lambda k: b"", max_bytes=300, ttl_s=60, clock=clock, start=False)
    for key in ("a", "b", "c"):
        assert cache.put(key, Decoded(pydicom.Dataset(), None, 100, clock()))  # type: ignore
    assert cache.bytes == 300
    assert cache.take("a") is not None  # a is now the most recently used
    assert cache.put("d", Decoded(pydicom.Dataset(), None, 100, clock()))  # type: ignore
    assert cache.bytes == 300 and cache.evicted == 1
    assert cache.take("b") is None, "b was the least recently used"
    assert all(cache.take(k) is not None for k in ("a", "c", "d"))
    assert not cache.put("huge", Decoded(pydicom.Dataset(), None, 301, clock()))  # type: ignore
    assert cache.bytes == 300 and len(cache) == 3


def test_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    cache = DecodeCache(lambda k: b"", max_bytes=10_000, ttl_s=60, clock=clock, start=False)
    cache.put("old", Decoded(pydicom.Dataset(), None, 10, clock()))  # type: ignore[arg-type]
    clock.now += 30
    cache.put("new", Decoded(pydicom.Dataset(), None, 10, clock()))  # type: ignore[arg-type]
    clock.now += 31
    assert cache.take("old") is None, "61 s old"
    assert cache.take("new") is not None
    cache.put("newer", Decoded(pydicom.Dataset(), None, 10, clock()))  # type: ignore[arg-type]
    assert "old" not in cache._entries, "evicted once it reached the front"
    assert cache.bytes == 20


def test_disabled_cache_queues_nothing() -> None:
    cache = DecodeCache(lambda k: b"", max_bytes=0, ttl_s=60, start=False)
    assert not cache.enabled and cache.notice(["k"]) == 0 and not cache.decode_next()


@pytest.fixture(scope="module")
def chest(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    folder = tmp_path_factory.mktemp("chest")
    truth = generate("chest-ct", folder, 5, **SMALL_CT)
    return [(folder / name).read_bytes() for name in truth.files]


def test_a_resent_instance_with_other_bytes_is_another_key(chest: list[bytes],
                                                           tmp_path: Path) -> None:
    store = ObjectStore(tmp_path, fsync=False)
    first = store.put(chest[0])
    ds = pydicom.dcmread(store.path(first))
    ds.PixelData = bytes(len(ds.PixelData))  # same SOP Instance UID, other pixels
    import io

    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    second = store.put(buffer.getvalue())
    assert first != second
    cache = DecodeCache(store.get, max_bytes=2**30, ttl_s=60, start=False)
    cache.notice([first])
    assert cache.decode_next()
    assert cache.take(second) is None, "the other bytes are not served from the first's entry"
    hit = cache.take(first)
    assert hit is not None and hit.pre.image.frames.any()
    assert "PixelData" not in hit.dataset, "the header is kept without its pixels"


def test_take_waits_for_an_instance_being_decoded_and_steals_a_queued_one(
        chest: list[bytes], tmp_path: Path) -> None:
    store = ObjectStore(tmp_path, fsync=False)
    keys = [store.put(data) for data in chest[:2]]
    started, release = threading.Event(), threading.Event()

    def slow_read(key: str) -> bytes:
        started.set()
        release.wait(10)
        return store.get(key)

    cache = DecodeCache(slow_read, max_bytes=2**30, ttl_s=60, start=False)
    assert cache.notice(keys) == 2 and cache.notice(keys) == 0
    worker = threading.Thread(target=cache.decode_next)
    worker.start()
    assert started.wait(10)
    got: list[Any] = []
    taker = threading.Thread(target=lambda: got.append(cache.take(keys[0])))
    taker.start()
    time.sleep(0.2)
    assert not got, "it waits for the decode in progress"
    release.set()
    taker.join(10)
    worker.join(10)
    assert got and got[0] is not None
    assert cache.take(keys[1]) is None, "still queued: the job decodes it itself"
    assert not cache.decode_next(), "and the thread no longer does"


def test_a_failed_decode_is_left_to_the_job(tmp_path: Path) -> None:
    assert decode_object(b"not dicom at all") is None
    store = ObjectStore(tmp_path, fsync=False)
    key = store.put(b"\0" * 200)
    cache = DecodeCache(store.get, max_bytes=2**30, ttl_s=60, start=False)
    cache.notice([key, "sha256/" + "0" * 64])  # the second does not exist
    assert cache.decode_next() and cache.decode_next()
    assert len(cache) == 0 and cache.bytes == 0


def test_notices_of_series_no_model_covers_are_ignored() -> None:
    registry = load_registry()
    pack = "pack/" + "0" * 16 + "/0/100/" + "a" * 64
    notice = events_pb2.InstancesStored(instances=[
        events_pb2.StoredInstance(object_key=pack, modality="CT", body_part="CHEST"),
        events_pb2.StoredInstance(object_key="sha256/" + "b" * 64, modality="CT", body_part=""),
        events_pb2.StoredInstance(object_key="sha256/" + "c" * 64, modality="CT",
                                  body_part="ABDOMEN"),
        events_pb2.StoredInstance(object_key="sha256/" + "d" * 64, modality="US"),
        events_pb2.StoredInstance(object_key="../../etc/passwd", modality="CT"),
        events_pb2.StoredInstance(object_key="pack/../x/0/1/" + "e" * 64, modality="CT"),
    ])
    keys = keys_to_decode(notice.SerializeToString(), registry)
    assert keys == [pack, "sha256/" + "b" * 64]
    assert keys_to_decode(b"\xff\xff garbage", registry) == []


def model_input_bytes(worker: PreprocessWorker, keys: list[str]) -> bytes:
    made = worker._model_input(keys)
    [blob] = [b for b in made.assets.blobs if isinstance(b, AssetBlob)]
    assert blob.kind == "model_input" and not made.assets.failures
    return blob.data


def test_model_input_with_early_decode_is_byte_identical(chest: list[bytes],
                                                         tmp_path: Path) -> None:
    store = ObjectStore(tmp_path, fsync=False)
    keys = [store.put(data) for data in chest]
    keys.reverse()  # the index's order is not the anatomical one
    plain = PreprocessWorker(None, store, Topology())  # type: ignore[arg-type]
    expected = model_input_bytes(plain, keys)
    cache = DecodeCache(store.get, max_bytes=2**30, ttl_s=600, start=False)
    early = PreprocessWorker(None, store, Topology(), cache=cache)  # type: ignore[arg-type]
    cache.notice(keys[::2])  # half arrived with a notice: the rest were lost
    while cache.decode_next():
        pass
    assert len(cache) == len(keys[::2])
    got = model_input_bytes(early, keys)
    assert cache.hits == len(keys[::2]) and cache.misses == len(keys) - len(keys[::2])
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(expected).hexdigest()
    cache.notice(keys)  # every one noticed
    while cache.decode_next():
        pass
    assert model_input_bytes(early, keys) == expected
    assert load_model_input(expected).volume.shape == (SMALL_CT["slices"], 96, 96)


def test_a_series_that_grows_after_completion(chest: list[bytes], tmp_path: Path) -> None:
    store = ObjectStore(tmp_path, fsync=False)
    keys = [store.put(data) for data in chest]
    first, later = keys[:16], keys[16:]
    cache = DecodeCache(store.get, max_bytes=2**30, ttl_s=600, start=False)
    worker = PreprocessWorker(None, store, Topology(), cache=cache)  # type: ignore[arg-type]
    cache.notice(first)
    while cache.decode_next():
        pass
    at_completion = load_model_input(model_input_bytes(worker, first))
    assert at_completion.volume.shape[0] == 16
    cache.forget(first)  # stored: the worker lets them go
    assert len(cache) == 0 and cache.bytes == 0
    cache.notice(later)  # arrive after completion, reopen the study
    while cache.decode_next():
        pass
    grown = model_input_bytes(worker, keys)
    plain = PreprocessWorker(None, store, Topology())  # type: ignore[arg-type]
    assert grown == model_input_bytes(plain, keys)
    volume = load_model_input(grown).volume
    assert volume.shape[0] == len(keys)
    assert np.array_equal(np.sort(load_model_input(grown).positions[:, 2]),
                          load_model_input(grown).positions[:, 2])


def test_the_decode_thread_fills_the_cache(chest: list[bytes], tmp_path: Path) -> None:
    store = ObjectStore(tmp_path, fsync=False)
    keys = [store.put(data) for data in chest[:4]]
    cache = DecodeCache(store.get, max_bytes=2**30, ttl_s=600)
    try:
        cache.notice(keys)
        deadline = time.monotonic() + 30
        while len(cache) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(cache) == 4 and cache.decoded == 4
    finally:
        cache.close()
