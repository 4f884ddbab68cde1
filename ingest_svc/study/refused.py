"""Studies whose instances we had to refuse because of our own storage failure (disk, index).

The sender was told "not stored, send it again later" and will, so such a study is not quiet:
its quiet period counts from the last refusal, not only from the last stored instance.
Otherwise an outage longer than the quiet period completes a half-received study the moment
the index is back, before the sender's retry arrives (judged on part of its images, then
reopened). Kept in this process's memory: it covers the outages this process saw.
"""

from __future__ import annotations

import threading
import time
import uuid

KEEP_S = 3600.0  # longer than any quiet period (at most 3600 s)


class RefusedStudies:
    """(facility id, StudyInstanceUID) → when an instance of it was last refused; thread-safe
    (the DIMSE and receive threads record, the completion loop reads)."""

    def __init__(self, keep_s: float = KEEP_S) -> None:
        self.keep_s = keep_s
        self._lock = threading.Lock()
        self._at: dict[tuple[uuid.UUID, str], float] = {}

    def refused(self, facility_id: uuid.UUID, study_instance_uid: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._at[(facility_id, study_instance_uid)] = now
            self._prune(now)

    def ages(self) -> list[tuple[uuid.UUID, str, float]]:
        """(facility id, StudyInstanceUID, seconds since the last refusal) of each study."""
        now = time.monotonic()
        with self._lock:
            self._prune(now)
            return [(f, uid, now - at) for (f, uid), at in self._at.items()]

    def _prune(self, now: float) -> None:
        for key in [k for k, at in self._at.items() if now - at > self.keep_s]:
            del self._at[key]
