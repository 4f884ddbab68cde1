"""The whole sidecar mesh in one test process: real PostgreSQL, NATS, Triton; services as tasks."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy import text

from protos.sidecar.ingest.v1 import ingest_service_pb2 as ingest_pb
from protos.sidecar.ingest.v1 import ingest_service_pb2_grpc as ingest_grpc
from sidecar_core.db import Database
from sidecar_core.messaging.subjects import Topology
from sidecar_core.security import session_tokens
from tests import pki as test_pki
from tests.model_fixtures import (
    garbage_registry_entry,
    write_garbage_model,
    write_registry,
)
from tests.servers import NatsServer, free_port, fresh_database, nats_options
from tests.store_reader import StoreReader
from tests.triton_server import TritonServer, build_model_repository

log = logging.getLogger(__name__)

FINAL_STATES = frozenset({"ready_for_review", "ineligible", "preprocess_failed", "ai_failed"})
DEPLOY_MODELS = ("chest_ct_nodules", "mammo_masses", "brain_mr_lesions")
SERVICES = ("workflow", "ingest", "preprocess", "normalizer")
GROUND_TRUTH = "ground_truth.json"

@dataclass
class MeshOptions:
    """What the mesh runs with; the defaults suit fault tests (quick retries, short ack waits)."""

    garbage_model: bool = True
    inference_max_attempts: int = 3
    inference_budget_s: float = 10.0
    circuit_failure_threshold: int = 3
    circuit_cooldown_s: float = 1.0
    # Durable consumer name → ConsumerSpec fields to override (settings.consumer_overrides).
    consumers: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "preprocess-worker": {"ack_wait_s": 6.0, "backoff_s": (0.5, 1.0)},
        "ai-run-worker": {"max_deliver": 5, "backoff_s": (0.5, 1.0, 2.0, 3.0)},
        "workflow-events": {"backoff_s": (0.2, 0.5, 1.0)},
    })
    triton_startup_timeout: float = 120.0


@dataclass(frozen=True)
class Ingested:
    """What ingest_folder sent: the study, the RPC's answer and when the last one was acked."""

    study_instance_uid: str
    study_id: uuid.UUID
    response: ingest_pb.UploadInstancesResponse
    acknowledged_at: float


# The mesh service a task belongs to: read by the task factory when a task is created.
_OWNER: contextvars.ContextVar[str] = contextvars.ContextVar("mesh_service", default="")


class _TaskTracker:
    """A loop task factory remembering which mesh service created each task."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.previous = loop.get_task_factory()
        self.owned: dict[str, weakref.WeakSet[asyncio.Future[Any]]] = {}
        loop.set_task_factory(self._factory)  # type: ignore[arg-type]

    def _factory(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any],
                 **kwargs: Any) -> asyncio.Future[Any]:
        if self.previous is not None:
            task: asyncio.Future[Any] = self.previous(loop, coro, **kwargs)  # type: ignore[call-arg]
        else:
            task = asyncio.Task(coro, loop=loop, **kwargs)
        owner = _OWNER.get()
        if owner:
            self.own(owner, task)
        return task

    def own(self, owner: str, task: asyncio.Future[Any]) -> None:
        self.owned.setdefault(owner, weakref.WeakSet()).add(task)

    def tasks(self, owner: str) -> list[asyncio.Future[Any]]:
        return [t for t in self.owned.get(owner, ()) if not t.done()]

    def close(self) -> None:
        self.loop.set_task_factory(self.previous)


@dataclass
class _Service:
    name: str
    task: asyncio.Task[None]
    stop: asyncio.Event
    owner: str


class Mesh(StoreReader):
    """workflow, ingest, preprocess and normalizer services against one set of real servers.

        async with isolated_mesh(pg_admin_url, tmp_dir) as mesh:
            await mesh.add_facility("general")
            study = await mesh.ingest_folder("general", folder)
            state = await mesh.wait_for_final_state(study.study_id)

    Each service's ``run(settings, stop)`` coroutine runs as an asyncio task in the caller's
    loop, on free loopback ports and one data dir. Tasks a service creates are tracked (a task
    factory keyed by a context variable), so ``kill(name)`` takes a service down mid-job the
    way a crash would: every one of its tasks is cancelled, nothing is acknowledged or drained.
    Reads go through plain SQL on the mesh's own async engine.
    """

    def __init__(self, database_url: str, nats_url: str, root: Path,
                 options: MeshOptions | None = None) -> None:
        self.database_url = database_url
        self.nats_url = nats_url
        self.root = Path(root)
        self.options = options or MeshOptions()
        self.prefix = f"mesh{uuid.uuid4().hex[:8]}"
        self.topology = Topology(self.prefix, self.prefix.upper(), self.options.consumers)
        self.data_dir = self.root / "data"
        self.ports = {name: free_port() for name in ("ingest", "workflow", "normalizer")}
        self.registry_path = self.root / "models.yaml"
        self.triton: TritonServer | None = None
        self.db = Database(database_url, pool_size=4)
        self.services: dict[str, _Service] = {}
        self._tracker: _TaskTracker | None = None
        self._channel: grpc.aio.Channel | None = None
        self._generation = 0

    # ---- lifecycle -------------------------------------------------------------------------

    def aio_channel(self, service: str, as_: str = "operator") -> grpc.aio.Channel:
        """A channel to one service of the mesh, presenting `as_`'s certificate (mTLS)."""
        return test_pki.aio_channel(f"127.0.0.1:{self.ports[service]}", as_)

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        test_pki.install(self.data_dir)
        session_tokens.ensure_signing_key(self.data_dir)  # as `sidecar up` does
        NatsServer.install(self.data_dir)  # each service's NATS seed
        repo = self.root / "triton-models"
        build_model_repository(repo, include_test_models=False, models=DEPLOY_MODELS)
        extra = []
        if self.options.garbage_model:
            write_garbage_model(repo)
            extra.append(garbage_registry_entry())
        write_registry(self.registry_path, extra)
        self.triton = TritonServer(repo, startup_timeout=self.options.triton_startup_timeout,
                                   log_path=self.root / "tritonserver.log")
        self.triton.grpc_port, self.triton.http_port, self.triton.metrics_port = (
            free_port() for _ in range(3))
        self._tracker = _TaskTracker(asyncio.get_running_loop())
        triton_start = asyncio.create_task(asyncio.to_thread(self.triton.start))
        for name in SERVICES:
            self.start_service(name)
        self._channel = self.aio_channel("ingest")
        await self._wait_serving()
        await triton_start

    async def _wait_serving(self, timeout: float = 60.0) -> None:
        for name in ("ingest", "workflow", "normalizer"):
            channel = self.aio_channel(name)
            try:
                ready = asyncio.create_task(channel.channel_ready())
                deadline = time.monotonic() + timeout
                while not ready.done():
                    self._raise_if_crashed()
                    if time.monotonic() > deadline:
                        ready.cancel()
                        raise TimeoutError(f"{name} did not serve on port {self.ports[name]}")
                    await asyncio.sleep(0.05)
            finally:
                await channel.close()

    def _raise_if_crashed(self) -> None:
        for service in self.services.values():
            if service.task.done() and not service.task.cancelled() and service.task.exception():
                raise RuntimeError(f"{service.name} crashed") from service.task.exception()

    async def close(self) -> None:
        # All at once: an idle service takes about 2 s to drain and close (its fetch timeout).
        await asyncio.gather(*(self.stop_service(name) for name in list(self.services)),
                             return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()
        if self.triton is not None:
            await asyncio.to_thread(self.triton.stop)
        await self.db.close()
        if self._tracker is not None:
            self._tracker.close()

    def settings(self, name: str) -> Any:
        """The settings object of one service, as its process would read it from SIDECAR_*."""
        assert self.triton is not None
        common: dict[str, Any] = dict(
            database_url=self.database_url, nats_url=self.nats_url,
            triton_url=self.triton.grpc_url, data_dir=self.data_dir, fsync=False,
            subject_prefix=self.prefix, nats_stream_prefix=self.prefix.upper(),
            consumer_overrides=self.options.consumers,
            model_registry_path=self.registry_path,
            workflow_address=f"127.0.0.1:{self.ports['workflow']}",
            ingest_address=f"127.0.0.1:{self.ports['ingest']}",
            normalizer_address=f"127.0.0.1:{self.ports['normalizer']}")
        if name == "preprocess":
            from imaging_svc.settings import ImagingSettings

            return ImagingSettings(**common)
        if name == "ingest":
            from ingest_svc.settings import IngestSettings

            return IngestSettings(**common, ingest_port=self.ports["ingest"], dicom_port=0,
                                  completion_poll_s=0.1)
        if name == "workflow":
            from workflow_svc.settings import WorkflowSettings

            return WorkflowSettings(**common, workflow_port=self.ports["workflow"])
        if name == "normalizer":
            from normalizer_svc.settings import NormalizerSettings

            o = self.options
            return NormalizerSettings(
                **common, normalizer_port=self.ports["normalizer"],
                inference_max_attempts=o.inference_max_attempts,
                inference_budget_s=o.inference_budget_s,
                circuit_failure_threshold=o.circuit_failure_threshold,
                circuit_cooldown_s=o.circuit_cooldown_s)
        raise KeyError(name)

    def start_service(self, name: str) -> None:
        """Starts (or starts again) one service's run(settings, stop) as a task."""
        if name in self.services and not self.services[name].task.done():
            raise RuntimeError(f"{name} is already running")
        from imaging_svc import main as preprocess_main
        from ingest_svc import main as ingest_main
        from normalizer_svc import main as normalizer_main
        from workflow_svc import main as workflow_main

        runners = {"workflow": workflow_main.run, "ingest": ingest_main.run,
                   "preprocess": preprocess_main.run, "normalizer": normalizer_main.run}
        assert self._tracker is not None
        self._generation += 1
        owner = f"{name}#{self._generation}"
        stop = asyncio.Event()
        context = contextvars.copy_context()
        context.run(_OWNER.set, owner)
        task = asyncio.get_running_loop().create_task(
            runners[name](self.settings(name), stop), name=f"mesh:{owner}", context=context)
        self._tracker.own(owner, task)
        self.services[name] = _Service(name, task, stop, owner)

    async def stop_service(self, name: str, timeout: float = 30.0) -> None:
        """Graceful stop: the service finishes the message in hand, drains and closes."""
        service = self.services.pop(name)
        service.stop.set()
        await asyncio.wait_for(asyncio.gather(service.task, return_exceptions=True), timeout)

    async def kill(self, name: str) -> int:
        """Crash-like stop: cancels every task the service created; returns how many."""
        service = self.services.pop(name)
        assert self._tracker is not None
        tasks = self._tracker.tasks(service.owner)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return len(tasks)

    # ---- driving it ------------------------------------------------------------------------

    @property
    def ingest(self) -> ingest_grpc.IngestServiceStub:
        assert self._channel is not None
        return ingest_grpc.IngestServiceStub(self._channel)

    async def add_facility(self, name: str, *, shadow_mode: bool = False,
                           enabled_models: Sequence[str] | None = DEPLOY_MODELS,
                           quiet_period_s: float = 3600.0) -> uuid.UUID:
        """A facility; by default it runs the deploy models only (not the test ones) and
        completes studies only when told (CompleteStudy)."""
        fid = uuid.uuid4()
        async with self.db.unit_of_work() as s:
            await s.execute(text(
                "insert into facilities (id, name, shadow_mode, quiet_period_s, enabled_models) "
                "values (:id, :name, :shadow, :quiet, cast(:models as jsonb))"),
                {"id": fid, "name": name, "shadow": shadow_mode, "quiet": quiet_period_s,
                 "models": None if enabled_models is None else json.dumps(list(enabled_models))})
        return fid

    async def ingest_files(self, facility: str, files: Iterable[bytes | Path], *,
                           complete: bool = True) -> Ingested:
        """Sends DICOM objects in one UploadInstances stream, then CompleteStudy."""
        blobs = [f.read_bytes() if isinstance(f, Path) else f for f in files]
        if not blobs:
            raise ValueError("nothing to ingest")
        requests = [ingest_pb.UploadInstancesRequest(
            facility=facility if i == 0 else "", dicom=data, source_ref=str(i))
            for i, data in enumerate(blobs)]
        response = await self.ingest.UploadInstances(iter(requests))
        acknowledged = time.monotonic()
        rejected = [r for r in response.results
                    if r.outcome == ingest_pb.INSTANCE_OUTCOME_REJECTED]
        if rejected:
            raise AssertionError(f"ingest rejected {len(rejected)} objects: {rejected[0]}")
        uid = response.results[0].study_instance_uid
        if complete:
            await self.ingest.CompleteStudy(ingest_pb.CompleteStudyRequest(
                facility=facility, study_instance_uid=uid))
        return Ingested(uid, await self.study_id(facility, uid), response, acknowledged)

    async def ingest_folder(self, facility: str, folder: Path, *,
                            complete: bool = True) -> Ingested:
        """Every DICOM file of a folder (e.g. a synth study) as one study."""
        files = sorted(p for p in Path(folder).rglob("*") if p.is_file()
                       and p.name != GROUND_TRUTH)
        return await self.ingest_files(facility, files, complete=complete)

    async def study_id(self, facility: str, study_instance_uid: str) -> uuid.UUID:
        row = await self._one(
            "select s.id from studies s join facilities f on f.id = s.facility_id "
            "where f.name = :f and s.study_instance_uid = :uid",
            f=facility, uid=study_instance_uid)
        if row is None:
            raise LookupError(f"no study {study_instance_uid} at {facility}")
        return uuid.UUID(str(row[0]))

    async def wait_for(self, check: Callable[[], Coroutine[Any, Any, Any]], what: str,
                       timeout: float = 60.0, interval: float = 0.1) -> Any:
        """Polls `check` until it returns something truthy; fails with `what` after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            self._raise_if_crashed()
            value = await check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
            await asyncio.sleep(interval)

    async def wait_for_final_state(self, study_id: uuid.UUID, timeout: float = 90.0) -> str:
        async def final() -> str | None:
            state = await self.state(study_id)
            return state if state in FINAL_STATES else None

        try:
            return str(await self.wait_for(final, f"study {study_id} to finish", timeout))
        except TimeoutError as exc:
            history = await self.state_history(study_id)
            audit = await self.audit_types(study_id)
            raise TimeoutError(f"{exc}; states {history}; audit {audit}") from None

    async def wait_for_audit(self, study_id: uuid.UUID, event_type: str,
                             timeout: float = 60.0) -> dict[str, Any]:
        async def seen() -> dict[str, Any] | None:
            events = await self.audit_events(study_id, event_type)
            return events[0] if events else None

        return dict(await self.wait_for(seen, f"{event_type} of study {study_id}", timeout,
                                        interval=0.05))

    def object_path(self, key: str) -> Path:
        from sidecar_core.storage.objectstore import ObjectStore

        return ObjectStore(self.data_dir / "objects", fsync=False).path(key)

    async def consumer_pending(self, durable: str) -> tuple[int, int]:
        """(num_pending, num_ack_pending) of a durable consumer on the jobs stream."""
        import nats

        nc = await nats.connect(self.nats_url, **nats_options())
        try:
            info = await nc.jetstream().consumer_info(self.topology.jobs_stream, durable)
            return int(info.num_pending), int(info.num_ack_pending)
        finally:
            await nc.close()


@contextlib.asynccontextmanager
async def running_mesh(database_url: str, nats_url: str, root: Path,
                       options: MeshOptions | None = None) -> AsyncIterator[Mesh]:
    """The mesh on servers the caller already runs; every service stopped on exit."""
    mesh = Mesh(database_url, nats_url, root, options)
    try:
        await mesh.start()
        yield mesh
    finally:
        await mesh.close()


@contextlib.asynccontextmanager
async def isolated_mesh(pg_admin_url: str, root: Path,
                        options: MeshOptions | None = None) -> AsyncIterator[Mesh]:
    """A fresh migrated database and an own nats-server, both dropped on exit."""
    from sidecar_core.db import sqlalchemy_url
    from sidecar_core.store.migrate import upgrade

    with fresh_database(pg_admin_url) as url:
        await asyncio.to_thread(upgrade, sqlalchemy_url(url))
        nats = NatsServer()
        nats.start()
        try:
            async with running_mesh(url, nats.url, root, options) as mesh:
                yield mesh
        finally:
            nats.close()
