"""`sidecar up` on a three-node NATS JetStream cluster with streams of three replicas: one node
SIGKILLed mid-run loses nothing and duplicates nothing."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.faults.conftest import running_stack
from tests.faults.harness import Faulty, _nats
from tests.faults.nats_cluster import NatsCluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[NatsCluster]:
    nodes = NatsCluster()
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.close()


@pytest.fixture(scope="module")
def up3(cluster: NatsCluster) -> Iterator[Faulty]:
    env = {"SIDECAR_NATS_URL": cluster.url, "SIDECAR_NATS_STREAM_REPLICAS": "3"}
    with running_stack(env=env) as faulty:
        yield faulty


def test_streams_have_three_replicas(up3: Faulty) -> None:
    async def replicas(js):  # type: ignore[no-untyped-def]
        return {name: (await js.stream_info(name)).config.num_replicas
                for name in ("SIDECAR_EVENTS", "SIDECAR_JOBS", "SIDECAR_AUDIT", "SIDECAR_DLQ",
                             "KV_SIDECAR_REDELIVERY")}

    assert set(_nats(up3.nats_url, replicas, up3.stack.data_dir).values()) == {3}


def test_a_node_killed_mid_run_loses_nothing(up3: Faulty, cluster: NatsCluster,
                                             tmp_path: Path) -> None:
    folders = [up3.chest(tmp_path, seed=80 + i, slices=48) for i in range(4)]
    with ThreadPoolExecutor(2) as pool:
        sending = [pool.submit(up3.send, "acc_north", f) for f in folders]
        first = sending[0].result()
        up3.wait(lambda: up3.state(first.study_id) is not None, "the first study received")
        cluster.kill_node(0)  # the node every process tried first
        sent = [s.result() for s in sending]
    for study in sent:
        assert up3.wait_final(study.study_id) == "ready_for_review"
    up3.assert_exactly_once([s.study_id for s in sent])
