"""The gateway's view of series indexes: RetrieveService answers, kept briefly, plus the
immutable derived objects (metadata, frame offsets) they name, kept by content key."""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from protos.sidecar.ingest.v1 import retrieve_service_pb2 as pb
from review_gateway.errors import ApiError
from sidecar_core.storage.objectstore import ObjectStore

_HTTP = {grpc.StatusCode.NOT_FOUND: (404, "NOT_FOUND"),
         grpc.StatusCode.INVALID_ARGUMENT: (400, "INVALID_ARGUMENT"),
         grpc.StatusCode.FAILED_PRECONDITION: (400, "FAILED_PRECONDITION"),
         grpc.StatusCode.UNAVAILABLE: (503, "UNAVAILABLE"),
         grpc.StatusCode.DEADLINE_EXCEEDED: (503, "UNAVAILABLE")}


def rpc_error(exc: grpc.aio.AioRpcError) -> ApiError:
    """The HTTP error for a failed RetrieveService call; details never carry paths."""
    status, code = _HTTP.get(exc.code(), (502, "UNAVAILABLE"))
    from sidecar_core.serving.grpc_server import error_info

    info = error_info(exc)
    reason = info.reason if info is not None else exc.code().name
    message = exc.details() or "retrieve service error"
    if status >= 500:
        message = f"the retrieve service failed ({exc.code().name})"
    return ApiError(status, code, reason, message)


@dataclass
class SeriesEntry:
    metadata_key: str
    frames_key: str
    facility: str
    instance_count: int
    fetched_at: float = field(default_factory=time.monotonic)


class _Lru:
    """Values by immutable content key, bounded by their total size in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._size = 0

    def get(self, key: str) -> Any:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: str, value: Any, size: int) -> None:
        if key in self._items:
            return
        self._items[key] = (value, size)
        self._size += size
        while self._size > self.max_bytes and len(self._items) > 1:
            _, (_, dropped) = self._items.popitem(last=False)
            self._size -= dropped


class WadoIndex:
    """Series indexes by (scope, study, series), re-checked with the ingest service after
    `ttl_s` (a series that grew gets a new index), and the derived objects they name."""

    def __init__(self, stub: Callable[[], Any], store: ObjectStore, timeout_s: float,
                 ttl_s: float = 2.0, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.stub = stub
        self.store = store
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self._entries: dict[tuple[tuple[str, ...], str, str], SeriesEntry] = {}
        self._objects = _Lru(max_bytes)

    async def series(self, facilities: list[str], study: str, series: str,
                     refresh: bool = False) -> SeriesEntry:
        key = (tuple(facilities), study, series)
        entry = self._entries.get(key)
        if entry is not None and not refresh and time.monotonic() - entry.fetched_at < self.ttl_s:
            return entry
        try:
            reply = await self.stub().GetSeriesIndex(pb.GetSeriesIndexRequest(
                study_instance_uid=study,
                series_instance_uid=series), timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            self._entries.pop(key, None)
            raise rpc_error(exc) from exc
        if len(self._entries) > 10_000:
            self._entries.clear()
        entry = self._entries[key] = SeriesEntry(reply.metadata_key, reply.frames_key,
                                                 reply.facility, reply.instance_count)
        return entry

    async def _object(self, key: str, parse: Callable[[bytes], Any]) -> Any:
        value = self._objects.get(key)
        if value is None:
            data = await asyncio.to_thread(self.store.get, key)
            value = parse(data)
            self._objects.put(key, value, len(data))
        return value

    async def metadata(self, entry: SeriesEntry) -> bytes:
        """The series' metadata JSON array, with `{WADO_ROOT}` still in its BulkDataURIs."""
        return await self._object(entry.metadata_key, lambda data: data)  # type: ignore[no-any-return]

    async def instance_metadata(self, entry: SeriesEntry, sop: str) -> dict[str, Any] | None:
        cache_key = "by-sop:" + entry.metadata_key
        by_sop = self._objects.get(cache_key)
        if by_sop is None:
            data = await self.metadata(entry)
            by_sop = {_sop_of(item): item for item in json.loads(data)}
            self._objects.put(cache_key, by_sop, len(data))
        return by_sop.get(sop)  # type: ignore[no-any-return]

    async def frames(self, entry: SeriesEntry) -> dict[str, Any]:
        return await self._object(entry.frames_key,  # type: ignore[no-any-return]
                                  lambda data: json.loads(data)["instances"])

    async def instance(self, facilities: list[str], study: str, series: str,
                       sop: str) -> tuple[SeriesEntry, dict[str, Any]]:
        """The series entry and the instance's frame index; 404 for an unknown instance
        (after one refresh: it may have arrived since the index was read)."""
        entry = await self.series(facilities, study, series)
        info = (await self.frames(entry)).get(sop)
        if info is None:
            entry = await self.series(facilities, study, series, refresh=True)
            info = (await self.frames(entry)).get(sop)
        if info is None:
            raise ApiError(404, "NOT_FOUND", "NOT_FOUND",
                           f"no instance {sop} in series {series} of study {study} is visible")
        return entry, info


def _sop_of(item: dict[str, Any]) -> str:
    values = item.get("00080018", {}).get("Value") or [""]
    return str(values[0])
