"""Retention and purge through `sidecar up`: studies sent by C-STORE and processed, then
`sidecar purge --patient` (gone from the worklist, the study API, QIDO/WADO and the object store,
the other patient's study intact, audited, `sidecar objects verify` and `sidecar audit verify`
passing), and the workflow service's scheduled pass deleting an expired study by itself.

This module starts its own stack: a retention pass every 2 s, compaction without age or grace
(`SIDECAR_RETENTION_*`), so the scheduled pass is seen within seconds."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sidecar_core.storage.objectstore import ObjectStore
from sidecar_core.storage.packstore import PackKey, is_pack_key
from tests.acceptance.stack import Stack, add_facilities, new_stack, run_cli, stack_root

INTERVAL_S = 2
PURGE_AT = "ret_purge"  # no retention setting: only the purge deletes there
EXPIRE_AT = "ret_expire"  # retention_days=1; chest CT models only, so a brain MR is ineligible


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with stack_root() as root:
        running = new_stack(root, facilities=())
        running.env = {"SIDECAR_RETENTION_INTERVAL_S": str(INTERVAL_S),
                       "SIDECAR_RETENTION_COMPACT_MIN_AGE_S": "0",
                       "SIDECAR_RETENTION_COMPACT_GRACE_S": "0"}
        add_facilities(running, PURGE_AT, EXPIRE_AT)
        done = running.cli("facility", "set", EXPIRE_AT, "--models", "chest_ct_nodules",
                           "--retention-days", "1", "--operator", "ret_admin")
        assert done.returncode == 0, done.stdout + done.stderr
        try:
            running.start()
            yield running
        finally:
            running.stop()


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {timeout:.0f} s")


def _send(stack: Stack, folder: Path, facility: str, seed: int) -> dict[str, Any]:
    """`sidecar synth` a brain MR and send it by C-STORE (`sidecar ingest --via dimse`)."""
    assert run_cli("synth", str(folder), "--kind", "brain-mr", "--seed", str(seed)) \
        .returncode == 0
    done = stack.cli("ingest", str(folder), "--facility", facility, "--via", "dimse",
                     "--target", stack.address("dicom"), "--ingest-address",
                     stack.address("ingest"), "--complete")
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(json.loads((folder / "ground_truth.json").read_text()))


def _state(stack: Stack, uid: str) -> str:
    rows = stack.sql("select state from studies where study_instance_uid = %s", uid)
    return str(rows[0][0]) if rows else ""


def _keys(stack: Stack, uid: str) -> dict[str, list[str]]:
    rows = stack.sql(
        "select 'received', i.object_key from instances i join studies s on s.id = i.study_id "
        "where s.study_instance_uid = %s union all select 'asset', a.object_key from assets a "
        "join studies s on s.id = a.study_id where s.study_instance_uid = %s", uid, uid)
    found: dict[str, list[str]] = {"received": [], "asset": []}
    for kind, key in rows:
        found[kind].append(key)
    return found


def _record_is_zeroed(root: Path, key: str) -> bool:
    k = PackKey.parse(key)
    path = root / "packs" / f"{k.segment}.pack"
    if not path.exists():
        return True  # its segment was rewritten by compaction, without it
    with path.open("rb") as fh:
        fh.seek(k.offset)
        return fh.read(k.length) == bytes(k.length)


def _metric(stack: Stack, name: str, facility: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://{stack.address('workflow-metrics')}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("facility") == facility:
                return float(sample.value)
    return None


def test_purge_of_a_patient_through_sidecar_up(stack: Stack, tmp_path: Path) -> None:
    gone = _send(stack, tmp_path / "gone", PURGE_AT, 61)
    kept = _send(stack, tmp_path / "kept", PURGE_AT, 62)
    assert gone["patient_id"] != kept["patient_id"]
    for truth in (gone, kept):
        _wait(lambda t=truth: _state(stack, t["study_instance_uid"]) == "ready_for_review", 300,
              f"study {truth['accession_number']} ready_for_review")
    token = stack.login()
    with stack.client(token) as http:
        ids = {t["study_instance_uid"]: http.get("/api/v1/studies", params={
            "accession": t["accession_number"]}).json()["studies"][0]["id"] for t in (gone, kept)}
    gone_uid, kept_uid = gone["study_instance_uid"], kept["study_instance_uid"]
    gone_keys, kept_keys = _keys(stack, gone_uid), _keys(stack, kept_uid)
    assert gone_keys["received"] and gone_keys["asset"], "processed: received and derived"
    objects = Path(stack.data_dir) / "objects"
    store = ObjectStore(objects, fsync=False)
    assert all(store.exists(k) for k in gone_keys["asset"] + gone_keys["received"])

    refused = stack.cli("purge", "--patient", gone["patient_id"], "--facility", PURGE_AT,
                        "--reason", " ", "--operator", "dpo")
    assert refused.returncode != 0 and "reason" in refused.stderr
    done = stack.cli("purge", "--patient", gone["patient_id"], "--facility", PURGE_AT,
                     "--reason", "deletion request DR-61", "--operator", "dpo")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"deleted study of study {ids[gone_uid]} ({PURGE_AT})" in done.stdout

    with stack.client(token) as http:
        assert http.get("/api/v1/studies", params={
            "accession": gone["accession_number"]}).json()["studies"] == []
        assert http.get(f"/api/v1/studies/{ids[gone_uid]}").status_code == 404
        qido = http.get("/dicomweb/studies", params={"StudyInstanceUID": gone_uid})
        assert qido.status_code in (200, 204), qido.text
        assert qido.status_code == 204 or qido.json() == []
        assert http.get(f"/dicomweb/studies/{gone_uid}/metadata").status_code == 404
        assert http.get(f"/dicomweb/studies/{gone_uid}").status_code == 404
        # the other patient's study: untouched
        assert http.get(f"/api/v1/studies/{ids[kept_uid]}").status_code == 200
        qido = http.get("/dicomweb/studies", params={"StudyInstanceUID": kept_uid})
        assert [s["0020000D"]["Value"][0] for s in qido.json()] == [kept_uid]
        assert http.get(f"/dicomweb/studies/{kept_uid}/metadata").status_code == 200
    # the store: content-addressed objects (derived SR/SEG, display assets) deleted, received
    # pack records zeroed (in the segment the receiver still appends to)
    assert stack.sql("select 1 from studies where study_instance_uid = %s", gone_uid) == []
    every = gone_keys["received"] + gone_keys["asset"]
    assert any(is_pack_key(k) for k in every) and not all(is_pack_key(k) for k in every)
    for key in every:
        assert _record_is_zeroed(objects, key) if is_pack_key(key) else not store.exists(key), \
            key
    assert _keys(stack, kept_uid) == kept_keys
    for key in kept_keys["received"] + kept_keys["asset"]:
        assert store.get(key), key  # reads back, verified against its key
    assert stack.sql("select 1 from retention_pending_objects") == []
    # audited: one study.purged with the reason and the operator, no PatientID
    [(actor, context)] = stack.sql("select actor, context from audit_events where type = "
                                   "'study.purged' and study_instance_uid = %s", gone_uid)
    assert actor == "operator:dpo"
    assert context["reason"] == "deletion request DR-61" and context["operator"] == "dpo"
    assert context["objects"] >= len(gone_keys["received"])
    assert gone["patient_id"] not in json.dumps(context)
    verify = stack.cli("objects", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "0 missing, 0 damaged" in verify.stdout
    chain = stack.cli("audit", "verify")
    assert chain.returncode == 0, chain.stdout + chain.stderr


def test_the_scheduled_pass_deletes_an_expired_study(stack: Stack, tmp_path: Path) -> None:
    truth = _send(stack, tmp_path / "old", EXPIRE_AT, 63)
    uid = truth["study_instance_uid"]
    _wait(lambda: _state(stack, uid) == "ineligible", 300, "the study ineligible (final)")
    keys = _keys(stack, uid)
    assert keys["received"]
    assert _metric(stack, "sidecar_storage_bytes", EXPIRE_AT) is not None  # the passes run
    # two days ago (a test may): the facility keeps studies 1 day after their final state
    import psycopg

    with psycopg.connect(stack.runtime()["database_url"]) as conn:
        conn.execute("update state_transitions set at = at - interval '2 days' where study_id "
                     "= (select id from studies where study_instance_uid = %s)", (uid,))

    def deleted() -> bool:
        return bool(stack.sql("select 1 from audit_events where type = 'retention.deleted' "
                              "and study_instance_uid = %s and context->>'scope' = 'objects'",
                              uid))

    _wait(deleted, 60, "the scheduled pass's retention.deleted")
    [(context,)] = stack.sql("select context from audit_events where type = "
                             "'retention.deleted' and study_instance_uid = %s and "
                             "context->>'scope' = 'objects'", uid)
    assert context["objects"] >= len(keys["received"]) and context["bytes"] > 0
    assert stack.sql("select 1 from instances i join studies s on s.id = i.study_id where "
                     "s.study_instance_uid = %s", uid) == []
    [(deleted_at,)] = stack.sql("select objects_deleted_at from studies where "
                                "study_instance_uid = %s", uid)
    assert deleted_at is not None  # the study row stays, marked
    store = ObjectStore(Path(stack.data_dir) / "objects", fsync=False)
    assert not any(store.exists(k) for k in keys["asset"] if not is_pack_key(k))
    _wait(lambda: _metric(stack, "sidecar_storage_bytes", EXPIRE_AT) == 0, 30,
          "sidecar_storage_bytes of the facility at 0")
    verify = stack.cli("objects", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
