"""Retention and purge: what a facility keeps, for how long, and the deletion of the rest.

A facility's `retention_days` counts from the moment a study entered a final state
(study.states.FINAL_STATES); after it, the study's received DICOM, derived DICOM (SR, SEG),
display assets, model inputs, masks and DICOMweb indexes are deleted, and its report text (drafts,
LLM traces, the legacy report's raw message) after `report_retention_days` (the same days when
unset). The study row, its findings and review decisions stay (product data, no pixels, no text),
marked `objects_deleted_at` / `reports_deleted_at`. A purge (a deletion request) removes every
row of a study, regardless of age. Each study's deletion is one transaction and one audit event
(`retention.deleted`, `study.purged`) with counts and bytes; the same transaction lists the
study's objects in `retention_pending_objects`, and after the commit each is deleted (only when
no other row still names it: content-addressed objects are shared) and its line removed, so a
crash in between leaves a list that the next pass or purge finishes first. A purge also zeros its
pack records in place; all dead pack records are reclaimed by compaction
(sidecar_core.storage.compaction), which runs after the deletions.

One pass at a time across the mesh: a PostgreSQL advisory lock (`LOCK_KEY`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from sidecar_core import audit
from sidecar_core.errors import InvalidArgument, NotFound
from sidecar_core.messaging.subjects import Topology
from sidecar_core.observability import metrics
from sidecar_core.storage import compaction
from sidecar_core.storage.objectstore import ObjectStore
from sidecar_core.storage.packstore import is_pack_key
from workflow_svc.study.states import FINAL_STATES

log = logging.getLogger(__name__)
LOCK_KEY = 0x52455431  # "RET1": one retention pass or purge at a time
ACTOR = "retention"
# Fault tests: killed after a study's deletion committed, before any of its objects went.
CRASH_AFTER_COMMIT = "deletion_committed"
_FINAL = sorted(s.value for s in FINAL_STATES)

# Studies whose final state is older than their facility's days; `{days}` is the column.
_EXPIRED = """
SELECT s.id, f.name, s.accession, s.study_instance_uid
FROM studies s JOIN facilities f ON f.id = s.facility_id
WHERE {days} IS NOT NULL AND s.{done} IS NULL AND s.state = ANY(%(final)s)
  AND (SELECT max(t.at) FROM state_transitions t
       WHERE t.study_id = s.id AND t.to_state = s.state)
      < %(now)s - make_interval(days => {days})
ORDER BY s.created_at
"""
# Every column that names an object; a content-addressed object is deleted only when none does.
_KEY_COLUMNS = (("instances", "object_key"), ("assets", "object_key"),
                ("findings", "mask_object_key"), ("dicomweb_series_index", "metadata_key"),
                ("dicomweb_series_index", "frames_key"))
_STUDY_KEYS = """
SELECT object_key, size_bytes FROM instances WHERE study_id = %(id)s
UNION ALL SELECT object_key, 0 FROM assets WHERE study_id = %(id)s
UNION ALL SELECT mask_object_key, 0 FROM findings WHERE study_id = %(id)s AND mask_object_key <> ''
UNION ALL SELECT d.metadata_key, 0 FROM dicomweb_series_index d JOIN series r ON r.id = d.series_id
  WHERE r.study_id = %(id)s
UNION ALL SELECT d.frames_key, 0 FROM dicomweb_series_index d JOIN series r ON r.id = d.series_id
  WHERE r.study_id = %(id)s
"""
# The object rows of a study, children first.
_DELETE_OBJECTS = (
    "DELETE FROM derived_objects WHERE study_id = %(id)s",
    "DELETE FROM dicomweb_series_index WHERE series_id IN "
    "(SELECT id FROM series WHERE study_id = %(id)s)",
    "DELETE FROM assets WHERE study_id = %(id)s",
    "DELETE FROM instances WHERE study_id = %(id)s",
    "UPDATE findings SET mask_object_key = '' WHERE study_id = %(id)s",
)
_DELETE_REPORTS = (
    "DELETE FROM chat_messages WHERE study_id = %(id)s",
    "DELETE FROM llm_traces WHERE study_id = %(id)s",
    "DELETE FROM drafts WHERE study_id = %(id)s",
    "UPDATE hl7_messages SET raw = ''::bytea WHERE id IN "
    "(SELECT hl7_message_id FROM legacy_reports WHERE study_id = %(id)s)",
    "UPDATE legacy_reports SET raw = '{}'::jsonb, report_text_enc = NULL "
    "WHERE study_id = %(id)s",
)
# Everything else of a study, for a purge (after the objects and the reports).
_DELETE_STUDY = (
    "DELETE FROM review_events WHERE study_id = %(id)s",
    "DELETE FROM findings WHERE study_id = %(id)s",
    "DELETE FROM exports WHERE study_id = %(id)s",
    "DELETE FROM ai_runs WHERE study_id = %(id)s",
    "DELETE FROM handoffs WHERE study_id = %(id)s",
    "DELETE FROM hl7_messages WHERE id IN "
    "(SELECT hl7_message_id FROM legacy_reports WHERE study_id = %(id)s)",
    "DELETE FROM legacy_reports WHERE study_id = %(id)s",
    "DELETE FROM state_transitions WHERE study_id = %(id)s",
    "DELETE FROM prior_studies WHERE study_id = %(id)s",
    "DELETE FROM prior_lookups WHERE study_id = %(id)s",
    "DELETE FROM series WHERE study_id = %(id)s",
    "DELETE FROM studies WHERE id = %(id)s",
)


@dataclass
class Deleted:
    """One study's deletion, as audited."""

    study_id: str
    facility: str
    scope: str  # objects | reports | study
    objects: int = 0
    bytes: int = 0
    rows: int = 0


@dataclass
class RetentionReport:
    dry_run: bool = False
    deleted: list[Deleted] = field(default_factory=list)
    compaction: compaction.CompactionReport | None = None
    swept: int = 0  # objects an interrupted pass had left, deleted now
    usage: dict[str, int] = field(default_factory=dict)

    def lines(self) -> Iterator[str]:
        verb = "would delete" if self.dry_run else "deleted"
        for d in self.deleted:
            yield (f"{verb} {d.scope} of study {d.study_id} ({d.facility}): {d.objects} "
                   f"object(s), {d.bytes} bytes, {d.rows} row(s)")
        if self.swept:
            yield f"finished an interrupted deletion: {self.swept} object(s) deleted"
        yield (f"retention: {len(self.deleted)} deletion(s), "
               f"{sum(d.objects for d in self.deleted)} object(s), "
               f"{sum(d.bytes for d in self.deleted)} bytes")
        if self.compaction is not None:
            yield self.compaction.line()
        for facility, size in sorted(self.usage.items()):
            yield f"storage: {facility} {size} bytes"


@dataclass(frozen=True)
class Options:
    """How a pass runs (RetentionSettings fills them from the environment)."""

    compact_threshold: float = 0.5
    compact_min_age_s: float = 60.0
    compact_grace_s: float = 5.0
    crash_at: str | None = None  # fault tests: compaction.STEPS or CRASH_AFTER_COMMIT


@contextmanager
def _locked(database_url: str, wait: bool) -> Iterator[psycopg.Connection[Any] | None]:
    """An autocommit connection holding the retention lock; None when another pass holds it
    and `wait` is false."""
    url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as conn:
        if wait:
            conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        elif not conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:  # type: ignore[index]
            yield None
            return
        try:
            yield conn
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


def run_pass(database_url: str, store: ObjectStore, topology: Topology, *,
             dry_run: bool = False, options: Options = Options(),
             now: datetime | None = None, wait: bool = True) -> RetentionReport | None:
    """One retention pass: expired objects, expired report text, then compaction of the local
    pack segments. None when another pass holds the lock and `wait` is false."""
    now = now or datetime.now(UTC)
    with _locked(database_url, wait) as conn:
        if conn is None:
            return None
        report = RetentionReport(dry_run=dry_run)
        if not dry_run:
            report.swept = sweep_pending(conn, store)
        for scope, days, done in (
                ("objects", "f.retention_days", "objects_deleted_at"),
                ("reports", "coalesce(f.report_retention_days, f.retention_days)",
                 "reports_deleted_at")):
            rows = conn.execute(_EXPIRED.format(days=days, done=done),
                                {"final": _FINAL, "now": now}).fetchall()
            for study_id, facility, accession, uid in rows:
                ref = audit.StudyRef(facility, accession, uid, study_id)
                report.deleted.append(_delete_study(
                    conn, store, topology, ref, scope, dry_run, "retention.deleted", ACTOR,
                    {"reason": "retention", "scope": scope}, options.crash_at))
        if not _is_remote(store):
            report.compaction = compaction.compact(
                conn, store.packs.root, threshold=options.compact_threshold,
                min_age_s=options.compact_min_age_s, grace_s=options.compact_grace_s,
                dry_run=dry_run, crash_at=options.crash_at)
        report.usage = usage(conn)
    for facility, size in report.usage.items():
        metrics.STORAGE_BYTES.labels(facility).set(size)
    return report


def purge(database_url: str, store: ObjectStore, topology: Topology, *, facility: str,
          reason: str, operator: str, study_uid: str = "", patient_id: str = "",
          dry_run: bool = False, options: Options = Options()) -> RetentionReport:
    """A deletion request: every study of a patient (or one study) of a facility, all its rows
    and objects, whatever its age or state; audited `study.purged` with the reason and the
    operator. Compaction follows, so the received bytes leave the disk too."""
    reason, operator = reason.strip(), operator.strip()[:64]
    if not reason or len(reason) > 500:
        raise InvalidArgument("PURGE_REASON_REQUIRED", "give the deletion request's reason "
                              "(1 to 500 characters)", field="reason")
    if not operator:
        raise InvalidArgument("OPERATOR_REQUIRED", "name the operator", field="operator")
    if bool(study_uid) == bool(patient_id):
        raise InvalidArgument("PURGE_TARGET_REQUIRED", "name either a study (StudyInstanceUID) "
                              "or a patient (PatientID)", field="study")
    if len(study_uid) > 64 or len(patient_id) > 64:
        raise InvalidArgument("PURGE_TARGET_INVALID", "a StudyInstanceUID or PatientID is at "
                              "most 64 characters", field="study" if study_uid else "patient")
    with _locked(database_url, True) as conn:
        assert conn is not None  # waited for the lock
        if conn.execute("SELECT 1 FROM facilities WHERE name = %s", (facility,)).fetchone() \
                is None:
            raise NotFound("FACILITY_NOT_FOUND", f"no facility {facility!r}", facility=facility)
        sql = ("SELECT s.id, f.name, s.accession, s.study_instance_uid FROM studies s "
               "JOIN facilities f ON f.id = s.facility_id WHERE f.name = %(facility)s AND ")
        sql += ("s.study_instance_uid = %(key)s" if study_uid
                else "s.dicom_attributes->>'PatientID' = %(key)s")
        rows = conn.execute(sql + " ORDER BY s.created_at",
                            {"facility": facility, "key": study_uid or patient_id}).fetchall()
        if not rows:
            raise NotFound("NOTHING_TO_PURGE", f"no study of facility {facility!r} matches",
                           facility=facility)
        report = RetentionReport(dry_run=dry_run)
        if not dry_run:
            report.swept = sweep_pending(conn, store)
        target = {"study_instance_uid": study_uid} if study_uid else {"patient": "(given)"}
        for study_id, fac, accession, uid in rows:
            ref = audit.StudyRef(fac, accession, uid, study_id)
            report.deleted.append(_delete_study(
                conn, store, topology, ref, "study", dry_run, "study.purged",
                "operator:" + operator, {"reason": reason, "operator": operator,
                                         "request": target, "studies": len(rows)},
                options.crash_at))
        if not _is_remote(store):
            report.compaction = compaction.compact(
                conn, store.packs.root, threshold=1.0, min_age_s=options.compact_min_age_s,
                grace_s=options.compact_grace_s, dry_run=dry_run, crash_at=options.crash_at)
        report.usage = usage(conn)
    return report


def _delete_study(conn: psycopg.Connection[Any], store: ObjectStore, topology: Topology,
                  ref: audit.StudyRef, scope: str, dry_run: bool, event: str, actor: str,
                  context: dict[str, Any], crash_at: str | None = None) -> Deleted:
    """One study's rows in one transaction with its audit event and the list of its objects
    to delete (retention_pending_objects), then the objects (sweep_pending)."""
    params = {"id": ref.study_id}
    done = Deleted(str(ref.study_id), ref.facility, scope)
    keys: dict[str, int] = {}
    if scope in ("objects", "study"):
        for key, size in conn.execute(_STUDY_KEYS, params).fetchall():
            keys[key] = max(keys.get(key, 0), int(size or 0))
    statements = {"objects": _DELETE_OBJECTS, "reports": _DELETE_REPORTS,
                  "study": _DELETE_OBJECTS + _DELETE_REPORTS + _DELETE_STUDY}[scope]
    done.objects, done.bytes = len(keys), sum(keys.values())
    if dry_run:
        return done
    with conn.transaction():
        for statement in statements:
            done.rows += conn.execute(statement, params).rowcount or 0
        if scope == "objects":
            conn.execute("UPDATE studies SET objects_deleted_at = now() WHERE id = %(id)s", params)
        elif scope == "reports":
            conn.execute("UPDATE studies SET reports_deleted_at = now() WHERE id = %(id)s", params)
        audit.record_sync(conn, topology, event, actor, ref, context={
            **context, "objects": done.objects, "bytes": done.bytes, "rows": done.rows})
        scrub = scope == "study"  # a deletion request: the pack bytes go now, not at compaction
        pending = [(k, scrub) for k in keys if scrub or not is_pack_key(k)]
        if pending:
            with conn.cursor() as cur:
                cur.executemany(_PENDING, pending)
    compaction.crash_point(CRASH_AFTER_COMMIT, crash_at)
    sweep_pending(conn, store, [k for k, _ in pending])
    reason = "retention" if event == "retention.deleted" else "purge"
    metrics.RETENTION_DELETED.labels(ref.facility, reason).inc(done.objects)
    metrics.RETENTION_DELETED_BYTES.labels(ref.facility, reason).inc(done.bytes)
    return done


_PENDING = ("INSERT INTO retention_pending_objects (object_key, scrub) VALUES (%s, %s) "
            "ON CONFLICT (object_key) DO UPDATE SET scrub = "
            "retention_pending_objects.scrub OR excluded.scrub")


def sweep_pending(conn: psycopg.Connection[Any], store: ObjectStore,
                  keys: list[str] | None = None) -> int:
    """Deletes the listed objects (`keys`, or every one listed: what a crash left) that no row
    names any more, and removes their lines; an object that cannot be deleted now stays listed
    for the next pass. Returns how many objects were deleted or zeroed."""
    if keys is None:
        rows = conn.execute("SELECT object_key, scrub FROM retention_pending_objects "
                            "ORDER BY created_at").fetchall()
    elif keys:
        rows = conn.execute("SELECT object_key, scrub FROM retention_pending_objects "
                            "WHERE object_key = ANY(%s)", (keys,)).fetchall()
    else:
        return 0
    done = 0
    for key, scrub in rows:
        if not _named(conn, key):
            try:
                if not is_pack_key(key):
                    done += bool(store.delete(key))
                elif scrub and not _is_remote(store):
                    done += bool(store.scrub(key))
            except OSError as exc:  # listed still: the next pass tries again
                log.warning("object %s not deleted (next pass retries): %s", key, exc)
                continue
        conn.execute("DELETE FROM retention_pending_objects WHERE object_key = %s", (key,))
    return done


def _named(conn: psycopg.Connection[Any], key: str) -> bool:
    """Whether any row still names the object (content-addressed objects are shared)."""
    sql = " UNION ALL ".join(f"(SELECT 1 FROM {t} WHERE {c} = %(k)s LIMIT 1)"
                             for t, c in _KEY_COLUMNS)
    return conn.execute(sql, {"k": key}).fetchone() is not None


def _is_remote(store: ObjectStore) -> bool:
    return not hasattr(store, "packs")


def usage(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Bytes of the indexed DICOM objects per facility (the disk-usage metric)."""
    rows = conn.execute("SELECT f.name, coalesce(sum(i.size_bytes), 0) FROM facilities f "
                        "LEFT JOIN studies s ON s.facility_id = f.id "
                        "LEFT JOIN instances i ON i.study_id = s.id GROUP BY f.name").fetchall()
    return {name: int(size) for name, size in rows}


class Scheduler:
    """The pass inside `sidecar up`: every `interval_s` (off at 0), skipped while another
    process runs one."""

    def __init__(self, database_url: str, store: ObjectStore, topology: Topology,
                 interval_s: float, options: Options = Options()) -> None:
        self.database_url, self.store, self.topology = database_url, store, topology
        self.interval_s, self.options = interval_s, options

    async def run(self, stop: Any) -> None:
        import asyncio
        import contextlib

        if self.interval_s <= 0:
            return
        while not stop.is_set():
            started = time.monotonic()
            try:
                report = await asyncio.to_thread(
                    run_pass, self.database_url, self.store, self.topology,
                    options=self.options, wait=False)
                if report is not None:
                    for line in report.lines():
                        log.info("%s", line)
            except Exception:
                log.exception("retention pass failed; trying again at the next interval")
            wait = max(1.0, self.interval_s - (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
