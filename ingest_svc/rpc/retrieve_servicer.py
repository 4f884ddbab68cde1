"""RetrieveService over gRPC: thin mapping between protobuf and the WADO-RS domain."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc

from ingest_svc.dicomweb import rendered, retrieve
from protos.sidecar.ingest.v1 import retrieve_service_pb2 as pb
from protos.sidecar.ingest.v1 import retrieve_service_pb2_grpc as pb_grpc
from sidecar_core.db import Database
from sidecar_core.errors import InvalidArgument
from sidecar_core.security.user_auth import require_user
from sidecar_core.serving.grpc_server import handle_errors
from sidecar_core.storage.objectstore import ObjectStore
from sidecar_core.storage.packstore import is_pack_key


class RetrieveServicer(pb_grpc.RetrieveServiceServicer):
    def __init__(self, db: Database, objects: ObjectStore, render_threads: int = 4) -> None:
        self.db = db
        self.objects = objects
        self.indexes = retrieve.SeriesIndexes(db, objects)
        self._render = ThreadPoolExecutor(render_threads, thread_name_prefix="render")
        self._background: set[asyncio.Task[None]] = set()

    @handle_errors
    async def ListStoredInstances(self, request: pb.ListStoredInstancesRequest,
                                  context: grpc.aio.ServicerContext
                                  ) -> pb.ListStoredInstancesResponse:
        if request.sop_instance_uid and not request.series_instance_uid:
            raise InvalidArgument("MISSING_SERIES", "an instance needs its series UID")
        if request.page_token and not request.page_token.isdigit():
            raise InvalidArgument("INVALID_PAGE_TOKEN", "page_token must be a whole number")
        offset = int(request.page_token or 0)
        found = await retrieve.list_instances(
            self.db, require_user().scope(), request.study_instance_uid,
            request.series_instance_uid, request.sop_instance_uid, max(0, request.page_size),
            offset)
        more = bool(request.page_size) and len(found) == request.page_size
        return pb.ListStoredInstancesResponse(
            instances=[pb.StoredInstance(**vars(s)) for s in found],
            next_page_token=str(offset + len(found)) if more else "")

    @handle_errors
    async def GetSeriesIndex(self, request: pb.GetSeriesIndexRequest,
                             context: grpc.aio.ServicerContext) -> pb.GetSeriesIndexResponse:
        index = await self.indexes.get(require_user().scope(),
                                       request.study_instance_uid, request.series_instance_uid)
        return pb.GetSeriesIndexResponse(**vars(index))

    @handle_errors
    async def RenderFrame(self, request: pb.RenderFrameRequest,
                          context: grpc.aio.ServicerContext) -> pb.RenderFrameResponse:
        opts = rendered.options(
            request.media_type,
            (request.window_center, request.window_width, request.window_function)
            if request.has_window else None,
            (request.viewport_width, request.viewport_height)
            if request.viewport_width or request.viewport_height else None,
            request.quality)
        if request.object_key and request.sop_instance_uid:
            if not is_pack_key(request.object_key):
                raise InvalidArgument("INVALID_OBJECT_KEY", "object_key names no stored object")
            key = request.object_key
        else:
            found = await retrieve.list_instances(
                self.db, require_user().scope(), request.study_instance_uid,
                request.series_instance_uid, request.sop_instance_uid)
            if not request.sop_instance_uid:
                first_series = found[0].series_instance_uid
                in_series = [s for s in found if s.series_instance_uid == first_series]
                found = [in_series[(len(in_series) - 1) // 2]]  # the middle one
            key = found[0].object_key
        loop = asyncio.get_running_loop()

        def work() -> bytes:
            return rendered.render(self.objects.get(key), request.frame_number or 1, opts)

        image = await loop.run_in_executor(self._render, work)
        return pb.RenderFrameResponse(image=image, media_type=opts.media_type)

    def prebuild(self, study_ids: list[uuid.UUID]) -> None:
        """Schedules building the series indexes of just-completed studies (in the background)."""
        task = asyncio.get_running_loop().create_task(self.indexes.prebuild(study_ids))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def close(self) -> None:
        for task in self._background:
            task.cancel()
        self._render.shutdown(wait=False, cancel_futures=True)
