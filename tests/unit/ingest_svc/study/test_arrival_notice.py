"""Arrival notices: what the receiving threads hand over goes out batched, at most once, and a
publisher that fails loses the notice without touching the caller."""

from __future__ import annotations

import asyncio
import threading

from ingest_svc.study.arrival_notice import MAX_NOTICE, ArrivalNotices
from protos.sidecar.events.v1 import events_pb2
from sidecar_core.dicom.parse import ParsedInstance


def parsed(n: int, body_part: str = "CHEST") -> ParsedInstance:
    return ParsedInstance("1.2.3", "1.2.3.4", f"1.2.3.4.{n}", "1.2.840.10008.5.1.4.1.1.2",
                          "1.2.840.10008.1.2.1", "ACC1",
                          attributes={"Modality": "CT", "BodyPartExamined": body_part})


async def test_instances_stored_together_go_out_in_one_notice() -> None:
    sent: list[bytes] = []

    async def publish(data: bytes) -> None:
        sent.append(data)

    notices = ArrivalNotices(publish, asyncio.get_running_loop())
    threads = [threading.Thread(target=notices.stored, args=(parsed(i), f"pack/k{i}"))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _ in range(20):
        await asyncio.sleep(0.01)
    got = [i for data in sent for i in events_pb2.InstancesStored.FromString(data).instances]
    assert sorted(i.object_key for i in got) == sorted(f"pack/k{i}" for i in range(8))
    assert len(sent) == notices.sent and 1 <= len(sent) <= 8
    one = got[0]
    assert (one.study_instance_uid, one.series_instance_uid, one.modality, one.body_part) == (
        "1.2.3", "1.2.3.4", "CT", "CHEST")


async def test_a_large_group_is_split_and_a_failed_publish_is_only_counted() -> None:
    sizes: list[int] = []
    fail = True

    async def publish(data: bytes) -> None:
        if fail:
            raise ConnectionError("nats is down")
        sizes.append(len(events_pb2.InstancesStored.FromString(data).instances))

    notices = ArrivalNotices(publish, asyncio.get_running_loop())
    notices.stored(parsed(0), "pack/a")  # from the loop's own thread too
    await asyncio.sleep(0.05)
    assert notices.lost == 1 and notices.sent == 0
    fail = False
    for i in range(MAX_NOTICE + 3):
        notices.stored(parsed(i), f"pack/{i}")
    await asyncio.sleep(0.05)
    assert sorted(sizes) == [3, MAX_NOTICE] and notices.sent == 2
