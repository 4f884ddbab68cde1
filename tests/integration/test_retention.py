"""The retention pass and purge on a real PostgreSQL and a real local object store: expired
studies lose their objects and report text, live ones keep every byte, pack segments are
compacted, each deletion is audited; a segment a writer holds is never touched."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from sidecar_core.messaging.subjects import Topology
from sidecar_core.storage.objectstore import ObjectStore
from sidecar_core.storage.packstore import PackWriter
from tests.acceptance.stack import clean_env, run_cli
from tests.retention_data import Built, build
from workflow_svc.operations import retention

pytestmark = pytest.mark.integration
FAST = retention.Options(compact_threshold=0.75, compact_min_age_s=0, compact_grace_s=0)


def _rows(url: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def _pack_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted((root / "packs").glob("*.pack")))


def assert_live_intact(url: str, store: ObjectStore, built: Built) -> None:
    for sid in built.live:
        keys = [r[0] for r in _rows(url, "select object_key from instances where study_id = %s "
                                    "order by sop_instance_uid", sid)]
        assert len(keys) == len(built.keys[sid])
        got = sorted(store.get(k) for k in keys)
        assert got == sorted(built.data[k] for k in built.keys[sid])
        for key in built.assets[sid]:
            assert store.get(key) == built.data[key]


def assert_expired_gone(url: str, store: ObjectStore, built: Built, root: Path) -> None:
    packs = _pack_bytes(root)
    for sid in built.expired:
        assert _rows(url, "select 1 from instances where study_id = %s", sid) == []
        assert _rows(url, "select 1 from assets where study_id = %s", sid) == []
        assert _rows(url, "select 1 from drafts where study_id = %s", sid) == []
        for key in built.keys[sid]:
            assert built.data[key][:64] not in packs, "an expired object's bytes are on disk"
        for key in built.assets[sid]:
            assert not store.exists(key)


def test_a_pass_deletes_the_expired_and_compacts(database_url: str, tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects", fsync=False)
    built = build(database_url, store, studies=6, instances=6, size=30_000,
                  segment_bytes=400_000)
    before = _pack_bytes(tmp_path / "objects")
    report = retention.run_pass(database_url, store, Topology(), options=FAST)
    assert report is not None
    deleted = {(d.study_id, d.scope) for d in report.deleted}
    assert deleted == {(str(s), scope) for s in built.expired for scope in ("objects", "reports")}
    assert all(d.bytes == 6 * 30_000 for d in report.deleted if d.scope == "objects")
    assert report.compaction is not None and report.compaction.rewritten
    assert report.compaction.freed >= 3 * 6 * 30_000 * 0.9
    assert len(_pack_bytes(tmp_path / "objects")) < len(before) * 0.6
    assert_live_intact(database_url, store, built)
    assert_expired_gone(database_url, store, built, tmp_path / "objects")
    # the study rows stay, marked; the audit has one event per study and scope
    marked = _rows(database_url, "select count(*) from studies where objects_deleted_at is not "
                   "null and reports_deleted_at is not null")[0][0]
    assert marked == 3
    events = _rows(database_url, "select study_id, context from audit_events where type = "
                   "'retention.deleted'")
    assert {(r[0], r[1]["scope"]) for r in events} == {
        (s, scope) for s in built.expired for scope in ("objects", "reports")}
    assert all(r[1]["bytes"] == 6 * 30_000 and r[1]["objects"] == 7 for r in events
               if r[1]["scope"] == "objects")
    assert report.usage == {"ret_a": 3 * 6 * 30_000}
    # a second pass finds nothing more to delete and leaves everything as it is
    again = retention.run_pass(database_url, store, Topology(), options=FAST)
    assert again is not None and again.deleted == []
    assert_live_intact(database_url, store, built)
    verify = run_cli("objects", "verify", "--database-url", database_url, "--objects-dir",
                     str(tmp_path / "objects"), env=clean_env())
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "18 objects checked" in verify.stdout


def test_dry_run_deletes_nothing(database_url: str, tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects", fsync=False)
    built = build(database_url, store, studies=2, instances=2, segment_bytes=100_000)
    before = _pack_bytes(tmp_path / "objects")
    report = retention.run_pass(database_url, store, Topology(), dry_run=True, options=FAST)
    assert report is not None and len(report.deleted) == 2
    assert _pack_bytes(tmp_path / "objects") == before
    assert len(_rows(database_url, "select 1 from instances")) == 4
    assert _rows(database_url, "select 1 from audit_events where type = 'retention.deleted'") == []
    assert built.expired


def test_no_retention_setting_keeps_everything(database_url: str, tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects", fsync=False)
    build(database_url, store, studies=2, instances=2, retention_days=None)
    report = retention.run_pass(database_url, store, Topology(), options=FAST)
    assert report is not None and report.deleted == []
    assert len(_rows(database_url, "select 1 from instances")) == 4


def test_a_held_segment_is_not_compacted(database_url: str, tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects", fsync=False)
    build(database_url, store, studies=2, instances=2, segment_bytes=10_000_000)
    writer = PackWriter(store.packs.root, fsync=False)
    writer.append(b"an object being received")  # this writer's segment: held, no row yet
    held = writer._segment
    try:
        report = retention.run_pass(database_url, store, Topology(), options=FAST)
        assert report is not None and report.compaction is not None
        assert held not in report.compaction.removed_empty + report.compaction.rewritten
        assert (store.packs.root / f"{held}.pack").exists()
    finally:
        writer.close()


def test_purge_of_a_patient(database_url: str, tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects", fsync=False)
    built = build(database_url, store, studies=4, instances=3,
                  patient_of={0: "P-ONE", 1: "P-ONE", 2: "P-TWO", 3: "P-TWO"},
                  segment_bytes=10_000_000)
    gone = built.expired[0], built.live[0]  # studies 0 and 1: P-ONE, expired or not
    report = retention.purge(database_url, store, Topology(), facility="ret_a",
                             reason="GDPR art. 17 request 42", operator="dpo",
                             patient_id="P-ONE", options=FAST)
    assert {d.study_id for d in report.deleted} == {str(s) for s in gone}
    packs = _pack_bytes(tmp_path / "objects")
    for sid in gone:
        assert _rows(database_url, "select 1 from studies where id = %s", sid) == []
        for key in built.keys[sid]:
            assert built.data[key][:64] not in packs
        for key in built.assets[sid]:
            assert not store.exists(key)
    kept = [built.expired[1], built.live[1]]
    for sid in kept:
        rows = _rows(database_url, "select object_key from instances where study_id = %s", sid)
        assert sorted(store.get(r[0]) for r in rows) == sorted(built.data[k]
                                                                for k in built.keys[sid])
    events = _rows(database_url, "select actor, study_instance_uid, context from audit_events "
                   "where type = 'study.purged'")
    assert sorted(r[1] for r in events) == sorted(built.uids[s] for s in gone)
    assert all(r[0] == "operator:dpo" and r[2]["reason"] == "GDPR art. 17 request 42"
               and r[2]["objects"] == 4 for r in events)
    assert "P-ONE" not in str(events), "the audit names no patient"


def test_purge_refuses_bad_requests(database_url: str, tmp_path: Path) -> None:
    from sidecar_core.errors import InvalidArgument, NotFound

    store = ObjectStore(tmp_path / "objects", fsync=False)
    build(database_url, store, studies=1, instances=1)
    kwargs = {"facility": "ret_a", "operator": "dpo", "options": FAST}
    with pytest.raises(InvalidArgument) as exc:
        retention.purge(database_url, store, Topology(), reason=" ", patient_id="X", **kwargs)
    assert exc.value.reason == "PURGE_REASON_REQUIRED"
    with pytest.raises(NotFound) as nf:
        retention.purge(database_url, store, Topology(), reason="r", patient_id="nobody",
                        **kwargs)
    assert nf.value.reason == "NOTHING_TO_PURGE"
    with pytest.raises(NotFound) as nf:
        retention.purge(database_url, store, Topology(), reason="r", patient_id="PAT0",
                        facility="elsewhere", operator="dpo", options=FAST)
    assert nf.value.reason == "FACILITY_NOT_FOUND"
    assert len(_rows(database_url, "select 1 from instances")) == 1


def test_every_table_that_names_a_study_is_purged(database_url: str) -> None:
    """A table added later with a foreign key to studies or series must join the purge."""
    refs = _rows(database_url, """
        select distinct c.conrelid::regclass::text from pg_constraint c
        where c.contype = 'f' and c.confrelid::regclass::text in ('studies', 'series',
              'instances', 'ai_runs', 'findings')""")
    sql = " ".join(retention._DELETE_OBJECTS + retention._DELETE_REPORTS
                   + retention._DELETE_STUDY)
    missing = [t for (t,) in refs if f"FROM {t} " not in sql]
    assert missing == []


def test_a_segment_exactly_half_dead_is_rewritten_at_the_default_threshold(
        database_url: str, tmp_path: Path) -> None:
    """Live fraction ≤ threshold: one expired and one live study of equal sizes in one segment
    (exactly half of it dead) is compacted at the default 0.5."""
    store = ObjectStore(tmp_path / "objects", fsync=False)
    built = build(database_url, store, studies=2, instances=3, size=10_000,
                  segment_bytes=10_000_000)
    options = retention.Options(compact_min_age_s=0, compact_grace_s=0)
    assert options.compact_threshold == 0.5
    report = retention.run_pass(database_url, store, Topology(), options=options)
    assert report is not None and report.compaction is not None
    assert len(report.compaction.rewritten) == 1, report.compaction.line()
    assert report.compaction.bytes_after * 2 == report.compaction.bytes_before
    assert_live_intact(database_url, store, built)
    assert_expired_gone(database_url, store, built, tmp_path / "objects")


def test_a_purge_zeros_its_records_in_a_segment_a_writer_holds(database_url: str,
                                                              tmp_path: Path) -> None:
    """A deletion request's received bytes leave the disk at once, even in the segment the
    receiver still appends to (compaction may not rewrite it yet); the other records stay."""
    store = ObjectStore(tmp_path / "objects", fsync=False)
    writer = PackWriter(store.packs.root, fsync=False)
    built = build(database_url, store, studies=2, instances=2, writer=writer)
    try:
        report = retention.purge(database_url, store, Topology(), facility="ret_a",
                                 reason="request 9", operator="dpo", patient_id="PAT0",
                                 options=FAST)
        assert report.compaction is not None and report.compaction.rewritten == []  # held
        packs = _pack_bytes(tmp_path / "objects")
        gone = built.expired[0]
        for key in built.keys[gone]:
            assert built.data[key][:64] not in packs
        assert_live_intact(database_url, store, built)
        assert _rows(database_url, "select 1 from retention_pending_objects") == []
        key = writer.append(b"received after the purge")  # the writer goes on undisturbed
        writer.keep()
        assert store.get(key) == b"received after the purge"
    finally:
        writer.close()
