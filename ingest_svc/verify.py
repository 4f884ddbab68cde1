"""`sidecar objects verify`: every indexed instance still has its exact bytes.

Reads each instance row's object and checks it against its key (pack records: length and
SHA-256 from the key; content-addressed files: their SHA-256 name). Operators run it after a
crash, a disk incident or a restore; it reads only, and exits 1 when anything is missing or
damaged, listing what.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg

from sidecar_core.storage.objectstore import ObjectStore
from sidecar_core.storage.packstore import PackError, is_pack_key


@dataclass
class VerifyReport:
    checked: int = 0
    bytes_read: int = 0
    missing: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.damaged

    def lines(self, limit: int = 50) -> Iterator[str]:
        for label, items in (("missing", self.missing), ("damaged", self.damaged)):
            for item in items[:limit]:
                yield f"{label}: {item}"
            if len(items) > limit:
                yield f"... {len(items) - limit} more {label}"
        yield (f"{self.checked} objects checked ({self.bytes_read / 1e6:.1f} MB): "
               f"{self.checked - len(self.missing) - len(self.damaged)} intact, "
               f"{len(self.missing)} missing, {len(self.damaged)} damaged")


def verify_objects(database_url: str, store: ObjectStore, study_instance_uid: str = ""
                   ) -> VerifyReport:
    """Checks the objects of every indexed instance (of one study when given)."""
    sql = ("SELECT s.study_instance_uid, i.sop_instance_uid, i.object_key, i.size_bytes "
           "FROM instances i JOIN studies s ON s.id = i.study_id")
    params: dict[str, Any] = {}
    if study_instance_uid:
        sql += " WHERE s.study_instance_uid = %(study)s"
        params["study"] = study_instance_uid
    report = VerifyReport()
    with psycopg.connect(database_url) as conn, conn.cursor(name="verify") as cur:
        cur.execute(sql + " ORDER BY i.object_key", params)
        for study, sop, key, size in cur:
            report.checked += 1
            where = f"study {study} instance {sop} ({key})"
            try:
                data = store.get(key)
            except FileNotFoundError:
                report.missing.append(where)
                continue
            except PackError as exc:
                report.damaged.append(f"{where}: {exc}")
                continue
            report.bytes_read += len(data)
            if not is_pack_key(key) and store.key_for(data) != key:
                report.damaged.append(f"{where}: content does not match its name")
            elif size is not None and len(data) != size:
                report.damaged.append(f"{where}: {len(data)} bytes, the index says {size}")
    return report
