"""Decode on arrival (issue 22 item 1): instances are decoded while their study still arrives.

The ingest sends a notice once an instance's row is committed (`sidecar.notice.v1.
instances_stored`, core NATS, at most once: ingest_svc/study/arrival_notice.py). The preprocess
process decodes the noticed instances of series a model may cover into this cache, on one
thread at low priority, so that the preprocess job at completion finds most of its series
decoded. The cache is never the source of truth:

- an entry is keyed by the object key, which carries the object's SHA-256, so a re-sent
  instance with other bytes is another key and an entry always belongs to the bytes its row
  names; the job still takes the instance list from the index;
- the job takes each instance from the cache where it is there and reads and decodes the others
  itself (a lost notice, a restart, an eviction, a series that grew after completion), then
  orders, checks and stacks the whole set as before: the model input is the same bytes with or
  without the cache (tests/unit/imaging_svc/test_early_decode.py);
- it is bounded in bytes (least recently used first out) and in age (a TTL); it holds only what
  decoded cleanly (a failure is left for the job to meet and report).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import pydicom
from pydicom.dataset import Dataset

from protos.sidecar.events.v1 import events_pb2
from sidecar_core.observability import metrics
from sidecar_core.pixels.decode import PIXEL_KEYWORDS
from sidecar_core.pixels.series import PreDecoded, predecode
from sidecar_core.registry import Registry
from sidecar_core.storage.objectstore import ObjectStore
from sidecar_core.storage.packstore import PackError, PackKey, is_pack_key

log = logging.getLogger(__name__)
DECODE_NICE = 10  # the early-decode thread yields the CPU to ingest and to the jobs
MAX_QUEUED = 8192  # noticed instances waiting for the decode thread, at most (oldest dropped)
WAIT_FOR_DECODE_S = 30.0  # the job waits this long at most for an instance being decoded


def lower_thread_priority(nice: int) -> None:
    """Makes the calling thread nicer (Linux: a thread's own niceness)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


@dataclass(frozen=True, eq=False)
class Decoded:
    """One instance decoded early: its header (the pixel data dropped), its image and slices."""

    dataset: Dataset
    pre: PreDecoded
    nbytes: int  # what it holds, about
    at: float  # when it was cached (the cache's clock)


def decode_object(data: bytes) -> Decoded | None:
    """Parses and decodes one stored object as the preprocess job would; None when it does
    not decode (the job meets that failure again and reports it)."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        pre = predecode(ds)
    except Exception as exc:
        log.debug("early decode: not decoded (%s), left to the job", exc)
        return None
    for keyword in PIXEL_KEYWORDS:  # the image holds the pixels now; the header is kept
        if keyword in ds:
            delattr(ds, keyword)
    header = max(len(data) - int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0)
                 * 2 * pre.image.n_frames, 4096)  # about: the bytes besides 16-bit pixels
    return Decoded(ds, pre, int(pre.image.frames.nbytes) + 4 * header, 0.0)


class DecodeCache:
    """Decoded instances by object key: bounded in bytes (LRU) and age (TTL), filled by one
    low-priority thread from noticed keys, read by the preprocess job with `take`."""

    def __init__(self, read: Callable[[str], bytes], max_bytes: int, ttl_s: float,
                 *, clock: Callable[[], float] = time.monotonic, nice: int = DECODE_NICE,
                 start: bool = True) -> None:
        self._read = read
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._nice = nice
        self._entries: OrderedDict[str, Decoded] = OrderedDict()
        self._queue: OrderedDict[str, None] = OrderedDict()
        self._working: set[str] = set()
        self._cond = threading.Condition()
        self._stopped = False
        self.bytes = 0
        self.hits = self.misses = self.decoded = self.evicted = self.dropped = 0
        self._thread: threading.Thread | None = None
        if start and max_bytes > 0:
            self._thread = threading.Thread(target=self._run, name="early-decode", daemon=True)
            self._thread.start()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __len__(self) -> int:
        with self._cond:
            return len(self._entries)

    def notice(self, keys: Iterable[str]) -> int:
        """Queues keys for the decode thread (those not cached, queued or being decoded);
        returns how many were queued."""
        if not self.enabled:
            return 0
        queued = 0
        with self._cond:
            for key in keys:
                if key in self._entries or key in self._queue or key in self._working:
                    continue
                self._queue[key] = None
                queued += 1
            while len(self._queue) > MAX_QUEUED:
                self._queue.popitem(last=False)
                self.dropped += 1
            if queued:
                self._cond.notify_all()
        return queued

    def take(self, key: str, wait_s: float = WAIT_FOR_DECODE_S) -> Decoded | None:
        """The key's decoded instance, or None: then the caller reads and decodes it itself (a
        key still queued is taken off the queue: the caller is faster). Waits for a key being
        decoded right now."""
        with self._cond:
            deadline = self._clock() + wait_s
            while key in self._working and self._clock() < deadline:
                self._cond.wait(timeout=0.5)
            entry = self._entries.get(key)
            if entry is not None and self._clock() - entry.at <= self.ttl_s:
                self._entries.move_to_end(key)
                self.hits += 1
                metrics.EARLY_DECODE.labels("hit").inc()
                return entry
            self._queue.pop(key, None)
            self.misses += 1
            metrics.EARLY_DECODE.labels("miss").inc()
            return None

    def forget(self, keys: Iterable[str]) -> None:
        """Drops the keys (their series' model input is stored: memory goes back)."""
        with self._cond:
            for key in keys:
                self._queue.pop(key, None)
                entry = self._entries.pop(key, None)
                if entry is not None:
                    self.bytes -= entry.nbytes

    def put(self, key: str, entry: Decoded) -> bool:
        """Adds an entry (evicting the least recently used); False when it alone is over the
        bound."""
        with self._cond:
            return self._put_locked(key, entry)

    def _put_locked(self, key: str, entry: Decoded) -> bool:
        if entry.nbytes > self.max_bytes:
            return False
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old.nbytes
        self._entries[key] = entry
        self.bytes += entry.nbytes
        self._evict()
        return key in self._entries

    def decode_next(self) -> bool:
        """Decodes the oldest queued key on this thread; False when none was queued."""
        with self._cond:
            if not self._queue:
                return False
            key, _ = self._queue.popitem(last=False)
            self._working.add(key)
        entry = None
        try:
            decoded = decode_object(self._read(key))
            if decoded is not None:
                entry = replace(decoded, at=self._clock())
        except Exception as exc:  # unreadable now: the job reads it again and reports it
            log.debug("early decode of %s: %s", key, exc)
        finally:
            with self._cond:  # cached before it stops being "in work": `take` sees one or other
                if entry is not None:
                    self.decoded += 1
                    metrics.EARLY_DECODE.labels("decoded").inc()
                    self._put_locked(key, entry)
                self._working.discard(key)
                self._cond.notify_all()
        return True

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._queue.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _evict(self) -> None:
        now = self._clock()
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if now - entry.at <= self.ttl_s and self.bytes <= self.max_bytes:
                # the oldest used is fresh and the total fits; a stale entry further on is
                # skipped by `take` and goes when it reaches the front
                break
            del self._entries[key]
            self.bytes -= entry.nbytes
            self.evicted += 1

    def _run(self) -> None:
        lower_thread_priority(self._nice)
        while True:
            with self._cond:
                while not self._queue and not self._stopped:
                    self._cond.wait(timeout=30)
                    self._evict()  # the TTL applies while idle too
                if self._stopped:
                    return
            try:
                self.decode_next()
            except Exception:  # never let the thread die: the cache only saves time
                log.warning("early decode failed", exc_info=True)


def acceptable_key(key: str) -> bool:
    """A received object's key (`pack/...`) or a content-addressed one; nothing else is read."""
    try:
        if is_pack_key(key):
            PackKey.parse(key)
        else:
            ObjectStore.check_key(key)
    except (ValueError, PackError):
        return False
    return True


def keys_to_decode(data: bytes, registry: Registry) -> list[str]:
    """The object keys of a notice whose series some enabled model may cover (an early guess
    from the modality and body part; eligibility decides at completion)."""
    try:
        notice = events_pb2.InstancesStored.FromString(data)
    except Exception as exc:
        log.warning("undecodable arrival notice ignored: %s", exc)
        return []
    return [i.object_key for i in notice.instances
            if acceptable_key(i.object_key) and registry.may_cover(i.modality, i.body_part)]
