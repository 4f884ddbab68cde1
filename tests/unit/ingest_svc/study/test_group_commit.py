"""The leader/follower stage and the shared pack writer, on real threads and a real segment."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ingest_svc.study import group_commit
from ingest_svc.study.group_commit import GroupStage, SharedPackWriter
from sidecar_core.storage.packstore import PackReader, PackWriter


def test_a_lone_caller_leads_a_group_of_one_at_once() -> None:
    stage: GroupStage[int, int] = GroupStage()
    seen: list[list[int]] = []

    def run(group: list[int]) -> list[int]:
        seen.append(group)
        return [x * 2 for x in group]

    assert [stage.submit(i, run) for i in range(3)] == [0, 2, 4]
    assert seen == [[0], [1], [2]] and stage.groups == 3


def test_callers_arriving_during_a_group_share_the_next_one() -> None:
    stage: GroupStage[int, int] = GroupStage()
    sizes: list[int] = []

    def run(group: list[int]) -> list[int]:
        sizes.append(len(group))
        time.sleep(0.05)  # a slow sync: the others queue meanwhile
        return [x + 100 for x in group]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: stage.submit(i, run), range(16)))
    assert results == [i + 100 for i in range(16)]  # each caller gets its own result
    assert sum(sizes) == 16 and stage.groups == len(sizes) < 16 and max(sizes) > 1


def test_a_failed_group_fails_each_of_its_members_and_the_stage_goes_on() -> None:
    stage: GroupStage[int, int] = GroupStage(max_group=4)
    fail = threading.Event()
    fail.set()

    def run(group: list[int]) -> list[int | BaseException]:
        if fail.is_set():
            raise OSError("disk failed")
        return [ValueError("bad") if x == 7 else x for x in group]

    with pytest.raises(OSError, match="disk failed"):
        stage.submit(1, run)
    fail.clear()
    assert stage.submit(2, run) == 2
    with pytest.raises(ValueError, match="bad"):
        stage.submit(7, run)


def test_the_shared_writer_syncs_once_per_group_across_segments(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        synced.append(fd)
        time.sleep(0.02)
        real(fd)

    monkeypatch.setattr(group_commit.os, "fdatasync", counting)
    # small segments: the writer moves on to new ones while groups are being synced
    writer = SharedPackWriter(PackWriter(tmp_path, segment_bytes=64 * 1024,
                                         allocate_bytes=32 * 1024))
    blobs = [os.urandom(5000 + i) for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(writer.append, blobs))
    writer.close()
    reader = PackReader(tmp_path)
    assert [reader.get(k) for k in keys] == blobs  # every record intact, checked by its hash
    assert len({k.split("/")[1] for k in keys}) > 1  # more than one segment
    assert 0 < len(synced) < len(blobs) and writer.syncs.items == len(blobs)
