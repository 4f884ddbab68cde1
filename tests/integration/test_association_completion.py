"""Completion on DIMSE association release (per facility), with dcmtk's storescu as the sender."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid

from sidecar_core.db import Database
from sidecar_core.errors import InvalidArgument, NotFound
from sidecar_core.messaging.subjects import Topology
from tests.helpers import add_facility, ct_slice, to_bytes
from tests.integration.test_dimse import (
    STORESCU,
    Ingest,
    _run,
    require_dcmtk,
    running_ingest,
    wait_for,
)
from workflow_svc.operations import facility_settings

pytestmark = pytest.mark.integration

# facility → (AE title, completion mode, quiet period s); every quiet period but explicit's is
# an hour, so only the association release can complete those studies within the test
FACILITIES = {
    "assoc": ("ASSOC_PACS", "association", 3600.0),
    "quiet": ("QUIET_PACS", "quiet", 3600.0),
    "explicit": ("EXPLICIT_PACS", "explicit", 0.0),
}
SETTLE_S = 0.3


async def set_completion(db: Database, facility: str, **settings: object) -> tuple[str, float]:
    """The facility's completion settings through the one facility-settings writer."""
    saved = await facility_settings.save(db, Topology(), facility_settings.settings_table([]),
                                         facility, settings, "test", False, via="test")
    return saved["completion_mode"], saved["association_settle_s"]


@pytest.fixture()
async def ingest(database_url: str, nats: Any, tmp_path: Path) -> AsyncIterator[Ingest]:
    db = Database(database_url)
    try:
        for name, (ae, mode, quiet) in FACILITIES.items():
            add_facility(database_url, name, ae_title=ae, quiet_period_s=quiet)
            assert await set_completion(db, name, completion_mode=mode,
                                        association_settle_s=SETTLE_S) == (mode, SETTLE_S)
    finally:
        await db.close()
    async with running_ingest(database_url, nats, tmp_path) as svc:
        yield svc


def _folder(tmp_path: Path, name: str, n: int = 3) -> tuple[str, Path]:
    study, series = generate_uid(), generate_uid()
    folder = tmp_path / name
    folder.mkdir()
    for z in range(n):
        (folder / f"ct{z}.dcm").write_bytes(to_bytes(ct_slice(study, series, z=float(z),
                                                              accession=name.upper())))
    return study, folder


async def _storescu(ingest: Ingest, facility: str, folder: Path) -> None:
    ae = FACILITIES[facility][0]
    done = await asyncio.to_thread(_run, [STORESCU, "+sd", "+r", "-aet", ae, "-aec", "SIDECAR",
                                          "127.0.0.1", str(ingest.dicom_port), str(folder)])
    assert done.returncode == 0, done.stderr


def _status(ingest: Ingest, study: str) -> str:
    (status,), = ingest.rows("select ingest_status from studies where study_instance_uid=%s",
                             study)
    return str(status)


async def test_association_release_completes_the_study(ingest: Ingest, tmp_path: Path) -> None:
    require_dcmtk()
    study, folder = _folder(tmp_path, "assoc")
    await _storescu(ingest, "assoc", folder)
    await wait_for(lambda: _status(ingest, study) == "complete")
    (n, settled), = ingest.rows(
        "select instance_count, extract(epoch from completed_at - last_instance_at) "
        "from studies where study_instance_uid=%s", study)
    assert n == 3
    assert float(settled) >= SETTLE_S, "completed only after the settle time"
    (context,), = ingest.rows("select context from audit_events where type='study.received' "
                              "and study_instance_uid=%s", study)
    context = context if isinstance(context, dict) else json.loads(context)
    assert context["reason"] == "association released"
    assert context["instance_count"] == 3


async def test_release_leaves_quiet_and_explicit_facilities_alone(ingest: Ingest,
                                                                  tmp_path: Path) -> None:
    require_dcmtk()
    quiet, quiet_folder = _folder(tmp_path, "quiet")
    explicit, explicit_folder = _folder(tmp_path, "explicit")
    await _storescu(ingest, "quiet", quiet_folder)
    await _storescu(ingest, "explicit", explicit_folder)
    # a study of the association facility sent afterwards completes: the others had their turn
    marker, marker_folder = _folder(tmp_path, "assoc")
    await _storescu(ingest, "assoc", marker_folder)
    await wait_for(lambda: _status(ingest, marker) == "complete")
    await asyncio.sleep(10 * SETTLE_S)  # the explicit facility's quiet period (0 s) passed too
    assert _status(ingest, quiet) == "receiving", "quiet: waits for its quiet period"
    assert _status(ingest, explicit) == "receiving", "explicit: only CompleteStudy completes"


async def test_completion_settings_are_checked(database_url: str) -> None:
    add_facility(database_url, "checked")
    db = Database(database_url)
    try:
        assert await set_completion(db, "checked") == ("quiet", 1.0)  # the defaults
        with pytest.raises(InvalidArgument) as bad_mode:
            await set_completion(db, "checked", completion_mode="whenever")
        assert (bad_mode.value.reason, bad_mode.value.metadata["field"]) == (
            "INVALID_FACILITY_SETTING", "completion_mode")
        with pytest.raises(InvalidArgument) as bad_settle:
            await set_completion(db, "checked", association_settle_s=-1)
        assert (bad_settle.value.reason, bad_settle.value.metadata["field"]) == (
            "INVALID_FACILITY_SETTING", "association_settle_s")
        with pytest.raises(NotFound):
            await set_completion(db, "nobody", completion_mode="association")
        assert await set_completion(db, "checked") == ("quiet", 1.0), "nothing changed"
    finally:
        await db.close()
