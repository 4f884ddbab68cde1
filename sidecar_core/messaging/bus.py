"""NATS JetStream: stream/consumer declaration, idempotent publishing and the job consumer loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from protos.sidecar.events.v1 import events_pb2
from sidecar_core.errors import PermanentError, TransientError
from sidecar_core.messaging.nats_auth import NatsAuth
from sidecar_core.messaging.permissions import bucket
from sidecar_core.messaging.subjects import ConsumerSpec, Topology
from sidecar_core.observability import logs, metrics, tracing

log = logging.getLogger(__name__)


@dataclass
class Delivery:
    """One delivered message as a handler sees it."""

    subject: str
    data: bytes
    attempt: int
    msg_id: str
    max_deliver: int
    consumer: str = ""
    # Why this delivery is not the first: "ack_wait_expired: ..." when the worker that held it
    # stopped without an answer (killed, lost its connection), "retry: ..." after a nak.
    cause: str = ""

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_deliver


Handler = Callable[[Delivery], Awaitable[None]]
ACK_WAIT_EXPIRED = (
    "ack_wait_expired: the worker holding it stopped without acknowledging (killed, crashed "
    "or disconnected)"
)


class Bus:
    """A connected JetStream context with the sidecar's topology declared."""

    def __init__(self, nc: Client, topology: Topology, replicas: int = 1) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.topology = topology
        self.replicas = replicas
        self.causes: KeyValue | None = None

    @classmethod
    async def connect(cls, url: str, topology: Topology, name: str = "sidecar",
                      replicas: int = 1, *, auth: NatsAuth | None = None,
                      declare: bool = True) -> Bus:
        """Connects to one server or a comma-separated list of cluster members as the user of
        `auth` (its nkey or creds, its mesh certificate when the server requires TLS);
        `declare=False` for a process that only listens (it may not manage streams)."""
        servers = [u.strip() for u in url.split(",") if u.strip()]
        nc = await nats.connect(servers=servers, name=name, max_reconnect_attempts=-1,
                                reconnect_time_wait=0.5,
                                **(auth.connect_options() if auth else {}))
        bus = cls(nc, topology, replicas)
        if declare:
            await bus.declare()
        return bus

    async def declare(self) -> None:
        """Creates or updates every stream (idempotent)."""
        for spec in self.topology.streams:
            config = StreamConfig(
                name=spec.name,
                subjects=list(spec.subjects),
                retention=RetentionPolicy.WORK_QUEUE if spec.work_queue else RetentionPolicy.LIMITS,
                duplicate_window=120.0,
                num_replicas=self.replicas,
            )
            try:
                await self.js.add_stream(config=config)
            except BadRequestError:
                await self.js.update_stream(config=config)
        # Why a message was nak'd, per consumer and stream sequence: the next delivery's cause.
        name = bucket(self.topology)
        try:
            self.causes = await self.js.create_key_value(config=KeyValueConfig(
                bucket=name, history=1, ttl=86400.0, storage=StorageType.FILE,
                replicas=self.replicas))
        except BadRequestError:  # exists with another configuration (e.g. replicas): use it
            self.causes = await self.js.key_value(name)

    async def ensure_consumer(self, spec: ConsumerSpec) -> None:
        config = ConsumerConfig(
            durable_name=spec.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=spec.ack_wait_s,
            max_deliver=spec.max_deliver,
            filter_subject=spec.filter_subject or None,
            max_ack_pending=spec.max_ack_pending,
        )
        try:
            info = await self.js.consumer_info(spec.stream, spec.durable)
        except NotFoundError:
            await self.js.add_consumer(spec.stream, config=config)
            return
        current = info.config
        if (current.ack_wait, current.max_deliver, current.max_ack_pending,
                current.filter_subject or None) != (
                config.ack_wait, config.max_deliver, config.max_ack_pending,
                config.filter_subject):
            # A changed policy or subject reaches an existing deployment: update the durable in
            # place (it keeps its position in the stream).
            log.info("updating consumer %s: ack_wait %s max_deliver %s filter %s", spec.durable,
                     config.ack_wait, config.max_deliver, config.filter_subject)
            await self.js.add_consumer(spec.stream, config=config)

    async def publish(self, subject: str, payload: bytes, msg_id: str,
                      headers: dict[str, str] | None = None) -> bool:
        """Publishes with Nats-Msg-Id (and any `headers`, e.g. the trace context); returns
        False when JetStream saw it as a duplicate."""
        ack = await self.js.publish(subject, payload,
                                    headers={**(headers or {}), "Nats-Msg-Id": msg_id})
        return not ack.duplicate

    async def dead_letter(self, spec: ConsumerSpec, delivery: Delivery, exc: BaseException) -> None:
        if self.topology.is_dead_letter(delivery.subject):  # never a letter about a letter
            log.error("%s: giving up on dead letter %s: %s", spec.durable, delivery.msg_id, exc)
            return
        letter = events_pb2.DeadLetter(
            original_subject=delivery.subject,
            original_payload=delivery.data,
            original_msg_id=delivery.msg_id,
            deliveries=delivery.attempt,
            consumer=spec.durable,
            error_class=type(exc).__name__,
            error_message=str(exc)[:2000],
        )
        letter.at.FromDatetime(datetime.now(UTC))
        metrics.JOBS_FAILED.labels(
            spec.durable, delivery.subject.removeprefix(self.topology.prefix + ".")).inc()
        await self.publish(
            self.topology.dlq_subject(delivery.subject),
            letter.SerializeToString(),
            msg_id=f"dlq:{spec.durable}:{delivery.msg_id or delivery.subject}",
        )

    async def consume(
        self, spec: ConsumerSpec, handler: Handler, stop: asyncio.Event, batch: int = 1
    ) -> None:
        """Runs `handler` for each message until `stop` is set.

        Success acks. TransientError (and unexpected errors) naks with the spec's backoff until
        the last delivery, which goes to the dead-letter stream. PermanentError goes to the
        dead-letter stream at once: the handler has already recorded its audit event.
        """
        await self.ensure_consumer(spec)
        sub = await self.js.pull_subscribe_bind(spec.durable, stream=spec.stream)
        while not stop.is_set():
            try:
                msgs = await sub.fetch(batch, timeout=1.0)
            except (TimeoutError, NatsTimeout):
                continue
            except Exception:  # connection trouble: nats reconnects by itself
                log.warning("fetch from %s failed", spec.durable, exc_info=True)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                await self._handle(spec, handler, msg)
        with contextlib.suppress(Exception):  # nc.drain() waits 30 s on a fetched pull sub
            await sub.unsubscribe()

    async def _handle(self, spec: ConsumerSpec, handler: Handler, msg: Msg) -> None:
        headers = msg.headers or {}
        delivery = Delivery(
            msg.subject,
            msg.data,
            msg.metadata.num_delivered,
            headers.get("Nats-Msg-Id", ""),
            spec.max_deliver,
            consumer=spec.durable,
        )
        cause_key = f"{spec.durable}.{msg.metadata.sequence.stream}"
        if delivery.attempt > 1:
            metrics.REDELIVERIES.labels(spec.durable).inc()
            delivery.cause = await self._cause(cause_key)
            log.info("%s: redelivery %d of %s: %s", spec.durable, delivery.attempt,
                     delivery.msg_id or msg.subject, delivery.cause)
        heartbeat = asyncio.create_task(_keep_alive(msg, spec.ack_wait_s))
        try:
            with tracing.consuming(msg.subject, headers, delivery.msg_id), logs.bind(
                    job_id=delivery.msg_id, subject=msg.subject, attempt=delivery.attempt):
                await handler(delivery)
        except PermanentError as exc:
            log.warning("%s: permanent failure on %s: %s", spec.durable, msg.subject, exc)
            await self.dead_letter(spec, delivery, exc)
            await msg.term()
        except Exception as exc:
            transient = isinstance(exc, TransientError)
            log.warning(
                "%s: %s failure on %s (attempt %d): %s",
                spec.durable,
                "transient" if transient else "unexpected",
                msg.subject,
                delivery.attempt,
                exc,
                exc_info=not transient,
            )
            if delivery.is_last_attempt:
                await self.dead_letter(spec, delivery, exc)
                await msg.term()
            else:
                backoff = spec.backoff_s[min(delivery.attempt - 1, len(spec.backoff_s) - 1)]
                await self._remember(cause_key, f"retry after attempt {delivery.attempt}: "
                                                f"{type(exc).__name__}: {exc}")
                await msg.nak(delay=backoff)
        else:
            await msg.ack()
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _remember(self, key: str, cause: str) -> None:
        if self.causes is None:
            return
        try:
            await self.causes.put(key, cause[:500].encode())
        except Exception:  # the cause is a courtesy to the audit; the nak matters more
            log.warning("could not record the redelivery cause of %s", key, exc_info=True)

    async def _cause(self, key: str) -> str:
        """The recorded nak reason of this message, else: its ack wait ran out."""
        if self.causes is not None:
            try:
                entry = await self.causes.get(key)
                if entry.value:
                    return entry.value.decode(errors="replace")
            except KeyNotFoundError:
                pass
            except Exception:
                log.warning("could not read the redelivery cause of %s", key, exc_info=True)
        return ACK_WAIT_EXPIRED

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.drain()


def heartbeat_interval(ack_wait_s: float) -> float:
    """How often a running job says "in progress": several times per ack wait, so one late
    beat on a busy machine does not let the message be redelivered to another worker."""
    return max(min(ack_wait_s / 5, 10.0), 0.5)


async def _keep_alive(msg: Msg, ack_wait_s: float) -> None:
    """Tells JetStream a running handler is alive, so its job is redelivered only once the
    worker is gone: ack waits stay short (a killed worker's job is taken up within one)."""
    while True:
        await asyncio.sleep(heartbeat_interval(ack_wait_s))
        with contextlib.suppress(Exception):
            await msg.in_progress()
