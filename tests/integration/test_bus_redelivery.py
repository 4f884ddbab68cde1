"""The job consumer loop on a real NATS JetStream: heartbeats keep a long job, a vanished
worker's job comes back after one ack wait, and each redelivery knows its cause."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest

from sidecar_core.errors import TransientError
from sidecar_core.messaging.bus import ACK_WAIT_EXPIRED, Bus, Delivery, heartbeat_interval
from sidecar_core.messaging.subjects import ConsumerSpec, Topology
from tests.servers import NatsServer

pytestmark = pytest.mark.integration


async def _bus(nats: NatsServer) -> tuple[Bus, ConsumerSpec]:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    topology = Topology(prefix, prefix.upper())
    bus = await Bus.connect(nats.url, topology, auth=nats.auth())
    spec = ConsumerSpec(topology.jobs_stream, "test-worker", topology.subject("job.v1.test"),
                        ack_wait_s=1.5, max_deliver=4, backoff_s=(0.2,))
    return bus, spec


async def _run(bus: Bus, spec: ConsumerSpec, handler, until) -> None:  # type: ignore[no-untyped-def]
    stop = asyncio.Event()
    task = asyncio.create_task(bus.consume(spec, handler, stop))
    try:
        await asyncio.wait_for(until.wait(), 30)
    finally:
        stop.set()
        await task


def test_heartbeats_come_several_times_per_ack_wait() -> None:
    assert heartbeat_interval(30) == 6 and heartbeat_interval(300) == 10
    assert heartbeat_interval(1) == 0.5


async def test_a_job_longer_than_the_ack_wait_is_delivered_once(nats: NatsServer) -> None:
    bus, spec = await _bus(nats)
    seen: list[int] = []
    done = asyncio.Event()

    async def slow(delivery: Delivery) -> None:
        seen.append(delivery.attempt)
        await asyncio.sleep(spec.ack_wait_s * 3)  # the heartbeats keep the message ours
        done.set()

    await bus.publish(spec.filter_subject, b"job", "long-1")
    await _run(bus, spec, slow, done)
    await asyncio.sleep(spec.ack_wait_s * 1.5)
    assert seen == [1]
    await bus.close()


async def test_a_nak_is_redelivered_with_its_cause(nats: NatsServer) -> None:
    bus, spec = await _bus(nats)
    deliveries: list[Delivery] = []
    done = asyncio.Event()

    async def flaky(delivery: Delivery) -> None:
        deliveries.append(delivery)
        if delivery.attempt == 1:
            raise TransientError("Triton unavailable")
        done.set()

    await bus.publish(spec.filter_subject, b"job", "flaky-1")
    await _run(bus, spec, flaky, done)
    assert [d.attempt for d in deliveries] == [1, 2]
    assert deliveries[0].cause == ""
    assert deliveries[1].cause == "retry after attempt 1: TransientError: Triton unavailable"
    assert deliveries[1].consumer == "test-worker"
    await bus.close()


async def test_a_vanished_workers_job_comes_back_after_the_ack_wait(nats: NatsServer) -> None:
    bus, spec = await _bus(nats)
    await bus.ensure_consumer(spec)
    await bus.publish(spec.filter_subject, b"job", "orphan-1")
    # a worker takes the job and dies: nothing acknowledges, nothing says "in progress"
    sub = await bus.js.pull_subscribe_bind(spec.durable, stream=spec.stream)
    [taken] = await sub.fetch(1, timeout=5)
    assert taken.metadata.num_delivered == 1
    deliveries: list[Delivery] = []
    done = asyncio.Event()

    async def survivor(delivery: Delivery) -> None:
        deliveries.append(delivery)
        done.set()

    await _run(bus, dataclasses.replace(spec), survivor, done)
    [again] = deliveries
    assert again.attempt == 2 and again.cause == ACK_WAIT_EXPIRED
    await bus.close()


async def test_an_existing_cause_bucket_of_another_configuration_is_used(
        nats: NatsServer) -> None:
    import nats as nats_py
    from nats.js.api import KeyValueConfig

    prefix = f"t{uuid.uuid4().hex[:8]}"
    nc = await nats_py.connect(nats.url, **nats.connect_options())
    await nc.jetstream().create_key_value(config=KeyValueConfig(
        bucket=f"{prefix.upper()}_REDELIVERY", history=5))
    await nc.close()
    bus = await Bus.connect(nats.url, Topology(prefix, prefix.upper()), auth=nats.auth())
    assert bus.causes is not None
    await bus.close()


async def test_an_existing_durable_takes_its_new_subject(nats: NatsServer) -> None:
    """A release that moves a durable to another subject (the SR/SEG writer's, from
    ai_run.v1.finished to ai_run.v1.findings_stored) updates it in place."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    topology = Topology(prefix, prefix.upper())
    bus = await Bus.connect(nats.url, topology, auth=nats.auth())
    old = ConsumerSpec(topology.events_stream, "moved-worker",
                       topology.subject("ai_run.v1.finished"), ack_wait_s=5, max_deliver=2)
    await bus.ensure_consumer(old)
    new = dataclasses.replace(old, filter_subject=topology.subject("ai_run.v1.findings_stored"))
    await bus.ensure_consumer(new)
    info = await bus.js.consumer_info(new.stream, new.durable)
    assert info.config.filter_subject == new.filter_subject
    await bus.publish(old.filter_subject, b"old", "moved-old-1")
    await bus.publish(new.filter_subject, b"new", "moved-new-1")
    seen: list[bytes] = []
    done = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        seen.append(delivery.data)
        done.set()

    await _run(bus, new, handler, done)
    assert seen == [b"new"]
    await bus.close()
