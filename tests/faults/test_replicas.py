"""`sidecar up --replicas 2`: two processes of each stateless worker share the jobs through
the durable consumers; every study is done once, by whichever replica took it."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.faults.conftest import running_stack
from tests.faults.harness import Faulty


@pytest.fixture(scope="module")
def up2() -> Iterator[Faulty]:
    with running_stack("--replicas", "2") as faulty:
        yield faulty


def test_two_of_each_worker_share_the_work(up2: Faulty, tmp_path: Path) -> None:
    for kind in ("workflow", "preprocess", "normalizer"):
        assert len(up2.pids(kind)) == 2, kind
    folders = [up2.chest(tmp_path, seed=60 + i, slices=48) for i in range(6)]
    with ThreadPoolExecutor(3) as pool:
        sent = list(pool.map(lambda f: up2.send("acc_north", f), folders))
    for study in sent:
        assert up2.wait_final(study.study_id) == "ready_for_review"
    up2.assert_exactly_once([s.study_id for s in sent])
    logs = up2.stack.data_dir / "logs"
    for kind, line in (("preprocess", "preprocess job "), ("normalizer", "ai run ")):
        done = {name: (logs / f"{name}.log").read_text().count(line)
                for name in (kind, f"{kind}-2")}
        assert sum(done.values()) == len(sent), done
        assert all(done.values()), f"one {kind} replica did nothing: {done}"


def test_a_killed_replica_is_restarted_and_the_other_goes_on(up2: Faulty,
                                                              tmp_path: Path) -> None:
    pid = up2.pids("normalizer")[-1]
    os.kill(pid, signal.SIGKILL)
    sent = up2.send("acc_south", up2.chest(tmp_path, seed=70, slices=48))
    assert up2.wait_final(sent.study_id) == "ready_for_review"
    up2.wait(lambda: len(up2.pids("normalizer")) == 2 and pid not in up2.pids("normalizer"),
             "the replica restarted", 60)
    up2.assert_exactly_once([sent.study_id])
