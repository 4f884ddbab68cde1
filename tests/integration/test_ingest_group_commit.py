"""Group commit of received objects on a real PostgreSQL and a real pack segment on disk."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydicom.uid import generate_uid

from ingest_svc.facilities import FacilityDirectory, FacilityRef
from ingest_svc.study import group_commit
from ingest_svc.study.receive import _INDEX_RAW, Outcome, Receiver, _index_params
from sidecar_core.db import Database
from sidecar_core.dicom.parse import parse_instance
from sidecar_core.messaging.subjects import Topology
from sidecar_core.storage.objectstore import ObjectStore
from tests.helpers import add_facility, ct_slice, to_bytes

pytestmark = pytest.mark.integration
TOPOLOGY = Topology("groupc", "GROUPC")


@pytest.fixture()
def receiver(database_url: str, tmp_path: Path) -> Iterator[tuple[Receiver, FacilityRef]]:
    fid = add_facility(database_url, "north", "NORTH")
    db = Database(database_url)
    rec = Receiver(db, ObjectStore(tmp_path / "objects"), TOPOLOGY, FacilityDirectory(db),
                   64 * 2**20, threads=8)
    try:
        yield rec, FacilityRef(fid, "north", "NORTH")
    finally:
        rec.close()
        asyncio.run(db.close())


def test_concurrent_stores_share_syncs_and_index_statements(
        receiver: tuple[Receiver, FacilityRef], database_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    rec, facility = receiver
    real = os.fdatasync

    def slow_sync(fd: int) -> None:  # a slow disk: objects pile up behind each sync
        time.sleep(0.03)
        real(fd)

    monkeypatch.setattr(group_commit.os, "fdatasync", slow_sync)
    studies = [(generate_uid(), generate_uid()) for _ in range(2)]
    objects = [to_bytes(ct_slice(*studies[i % 2], z=i, accession=f"A{i % 2}"))
               for i in range(24)]
    loop = asyncio.new_event_loop()  # the service's loop (audits of refusals run there)
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(
                lambda data: rec.receive_blocking(facility, data, "dimse", "", loop, 20),
                objects))
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(5)
        loop.close()
    assert [r.outcome for r in results] == [Outcome.STORED] * 24
    syncs = rec._shared.syncs if rec._shared else None
    assert syncs is not None and syncs.items == 24 and syncs.groups < 24, syncs
    assert rec.index_groups.items == 24 and rec.index_groups.groups < 24
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("select i.sop_instance_uid, i.object_key, s.instance_count "
                            "from instances i join studies s on s.id = i.study_id").fetchall()
    assert len(rows) == 24 and {r[2] for r in rows} == {12}
    by_sop = {r[0]: r[1] for r in rows}
    for data in objects:  # every acknowledged object reads back exactly, from its key
        sop = parse_instance(data, 2**26).sop_instance_uid
        assert rec.objects.get(by_sop[sop]) == data


def test_one_bad_object_fails_alone_and_a_repeat_in_a_group_is_a_duplicate(
        receiver: tuple[Receiver, FacilityRef], database_url: str) -> None:
    rec, facility = receiver
    study, series = generate_uid(), generate_uid()
    parsed = [parse_instance(to_bytes(ct_slice(study, series, z=i)), 2**26)
              for i in range(3)]
    group: list[dict[str, Any]] = [
        {**_index_params(facility, p, f"sha256/{i:064x}", 10, "dimse")}
        for i, p in enumerate(parsed)]
    group.append({**group[0], "instance_id": uuid.uuid4()})  # the same instance again
    unknown = FacilityRef(uuid.uuid4(), "nowhere", None)  # breaks the facility foreign key
    group.append(_index_params(unknown, parsed[1], "sha256/" + "f" * 64, 10, "dimse"))
    with psycopg.connect(database_url, autocommit=True) as conn:
        out = group_commit.index_group(conn, _INDEX_RAW, group)
        assert [o[2] if isinstance(o, tuple) else "error" for o in out] == [
            "inserted", "inserted", "inserted", "duplicate", "error"]
        assert isinstance(out[4], psycopg.errors.ForeignKeyViolation)
        count = conn.execute("select count(*) from instances").fetchone()
    assert count == (3,)


def test_a_group_statement_indexes_in_one_transaction(
        receiver: tuple[Receiver, FacilityRef], database_url: str) -> None:
    rec, facility = receiver
    study, series = generate_uid(), generate_uid()
    group = [_index_params(facility, parse_instance(to_bytes(ct_slice(study, series, z=i)),
                                                    2**26),
                           f"sha256/{i:064x}", 10, "dimse") for i in range(5)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        xid_before = conn.execute("select txid_current()").fetchone()
        out = group_commit.index_group(conn, _INDEX_RAW, group)
        xid_after = conn.execute("select txid_current()").fetchone()
    assert all(isinstance(o, tuple) and o[2] == "inserted" for o in out)
    assert xid_before and xid_after and xid_after[0] - xid_before[0] == 2  # one in between
