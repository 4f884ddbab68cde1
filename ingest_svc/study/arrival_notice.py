"""Notices of stored instances, for the preprocess process's early decode (issue 22 item 1).

After an instance's row is committed, the receiving thread hands its identity here; whatever
accumulated by the time the event loop runs (the members of one group commit arrive together)
goes out as one `sidecar.notice.v1.instances_stored` message on core NATS: at most once, in no
stream, never waited for. A notice that is lost (NATS down, the preprocess process restarting)
only costs speed: the preprocess job at completion reads whatever its cache lacks.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable

from protos.sidecar.events.v1 import events_pb2
from sidecar_core.dicom.parse import ParsedInstance

log = logging.getLogger(__name__)
MAX_NOTICE = 512  # instances per message at most (a message stays well under NATS's 1 MiB)

Publish = Callable[[bytes], Awaitable[None]]


class ArrivalNotices:
    """Batches stored instances from the receiving threads into notices sent on `loop`."""

    def __init__(self, publish: Publish, loop: asyncio.AbstractEventLoop) -> None:
        self._publish = publish
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: list[events_pb2.StoredInstance] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0  # messages handed to NATS (tests, metrics)
        self.lost = 0  # messages NATS refused (a lost notice costs only speed)

    def stored(self, p: ParsedInstance, object_key: str) -> None:
        """From any thread, once the instance's row is committed; returns at once."""
        notice = events_pb2.StoredInstance(
            study_instance_uid=p.study_instance_uid, series_instance_uid=p.series_instance_uid,
            sop_instance_uid=p.sop_instance_uid, object_key=object_key,
            modality=p.modality[:16],
            body_part=str(p.attributes.get("BodyPartExamined") or "")[:64])
        with self._lock:
            self._pending.append(notice)
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._flush)
        except RuntimeError:  # the loop is closed: the service is stopping
            with self._lock:
                self._scheduled = False

    def _flush(self) -> None:
        with self._lock:
            pending, self._pending, self._scheduled = self._pending, [], False
        for start in range(0, len(pending), MAX_NOTICE):
            message = events_pb2.InstancesStored(instances=pending[start:start + MAX_NOTICE])
            task = self._loop.create_task(self._send(message.SerializeToString()))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, data: bytes) -> None:
        try:
            await self._publish(data)
            self.sent += 1
        except Exception as exc:  # at most once: the job at completion reads what is missing
            self.lost += 1
            log.debug("arrival notice not sent: %s", exc)
