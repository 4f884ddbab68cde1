"""Studies for the retention tests: rows as the services write them, objects in a real store.

Received objects of expired and live studies are interleaved in the same pack segments, so
compaction has live records to move and dead ones to drop."""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from sidecar_core.storage.objectstore import ObjectStore


@dataclass
class Built:
    facility: str
    expired: list[uuid.UUID] = field(default_factory=list)
    live: list[uuid.UUID] = field(default_factory=list)
    uids: dict[uuid.UUID, str] = field(default_factory=dict)
    keys: dict[uuid.UUID, list[str]] = field(default_factory=dict)  # received objects
    assets: dict[uuid.UUID, list[str]] = field(default_factory=dict)
    data: dict[str, bytes] = field(default_factory=dict)  # key -> bytes


def build(database_url: str, store: ObjectStore, *, studies: int = 4, instances: int = 5,
          size: int = 20_000, retention_days: int | None = 30, facility: str = "ret_a",
          patient_of: dict[int, str] | None = None, segment_bytes: int = 1 << 20,
          writer: Any = None) -> Built:
    """`studies` studies in a final state, the even ones 40 days ago (expired at 30 days), the
    odd ones 1 day ago; each with `instances` received objects of `size` random bytes, one
    thumbnail asset and a draft. `writer`: a pack writer of the caller's, left open."""
    built = Built(facility)
    now = datetime.now(UTC)
    own = writer is None
    writer = writer or (store.pack_writer() if not hasattr(store, "packs") else
                        _writer(store, segment_bytes))
    with psycopg.connect(database_url, autocommit=True) as conn:
        fid = conn.execute(
            "INSERT INTO facilities (id, name, shadow_mode, quiet_period_s, retention_days) "
            "VALUES (%s, %s, false, 5, %s) ON CONFLICT (name) DO UPDATE SET name = excluded.name "
            "RETURNING id", (uuid.uuid4(), facility, retention_days)).fetchone()[0]  # type: ignore[index]
        rows = []
        for n in range(studies):
            sid, series = uuid.uuid4(), uuid.uuid4()
            uid = f"1.2.826.0.1.3680043.10.{os.getpid()}.{n}.{uuid.uuid4().int % 10**9}"
            expired = n % 2 == 0
            (built.expired if expired else built.live).append(sid)
            built.uids[sid] = uid
            final_at = now - timedelta(days=40 if expired else 1)
            patient = (patient_of or {}).get(n, f"PAT{n}")
            conn.execute(
                "INSERT INTO studies (id, facility_id, accession, study_instance_uid, state, "
                "ingest_status, instance_count, dicom_attributes, modality, description, "
                "completion_count, eligibility_reason, partial, ai_status, llm_status, "
                "review_status, handoff_status) VALUES "
                "(%s, %s, %s, %s, 'legacy_report_completed', 'complete', %s, %s, 'CT', '', 1, "
                "'', false, '', '', '', '')",
                (sid, fid, f"ACC{n}", uid, instances,
                 psycopg.types.json.Jsonb({"PatientID": patient})))
            conn.execute("INSERT INTO state_transitions (study_id, from_state, to_state, actor, "
                         "reason, at) VALUES (%s, 'draft_ready', 'legacy_report_completed', "
                         "'test', '', %s)",
                         (sid, final_at))
            conn.execute("INSERT INTO series (id, study_id, series_instance_uid, modality, "
                         "body_part, description, instance_count, preprocess_status, slice_count) "
                         "VALUES (%s, %s, %s, 'CT', '', '', 0, '', 0)",
                         (series, sid, uid + ".1"))
            rows.append((sid, series, uid))
            thumb = os.urandom(300)
            key = store.put(thumb)
            built.data[key] = thumb
            built.assets[sid] = [key]
            conn.execute("INSERT INTO assets (id, study_id, series_id, kind, object_key, "
                          "content_type, sha256, preset, slice_index, sop_instance_uid, frame, "
                          "meta) VALUES (%s, %s, %s, 'thumbnail', %s, 'image/png', %s, '', -1, "
                          "'', 0, '{}')", (uuid.uuid4(), sid, series, key,
                                               hashlib.sha256(thumb).hexdigest()))
            conn.execute("INSERT INTO drafts (id, study_id, status, generator, text, context) "
                         "VALUES (%s, %s, 'ready', 'template', 'report text', '{}')",
                         (uuid.uuid4(), sid))
            built.keys[sid] = []
        for i in range(instances):  # interleaved: each segment holds every study's objects
            for sid, series, uid in rows:
                data = os.urandom(size)
                key = writer.append(data)
                writer.keep()
                built.keys[sid].append(key)
                built.data[key] = data
                conn.execute(
                    "INSERT INTO instances (id, series_id, study_id, sop_instance_uid, "
                    "sop_class_uid, object_key, size_bytes, attributes, transfer_syntax_uid, "
                    "source) VALUES (%s, %s, %s, %s, '1.2.840.10008.5.1.4.1.1.2', %s, %s, '{}', "
                    "'1.2.840.10008.1.2.1', 'grpc')",
                    (uuid.uuid4(), series, sid, f"{uid}.1.{i}", key, len(data)))
    if own:
        writer.close()
    return built


def _writer(store: ObjectStore, segment_bytes: int):  # type: ignore[no-untyped-def]
    from sidecar_core.storage.packstore import PackWriter

    return PackWriter(store.packs.root, fsync=False, segment_bytes=segment_bytes,
                      allocate_bytes=1 << 16)
