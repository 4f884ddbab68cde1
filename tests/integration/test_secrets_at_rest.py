"""Secret settings at rest on a real PostgreSQL: a database from before sealing is converted in
place (nothing lost, twice is a no-op), a value sealed with an unknown key is left as it is, and
a rotation re-seals everything with the new key."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import text

from sidecar_core.db import Database
from sidecar_core.secret_box import SecretBox, facility_context
from sidecar_core.store.models import Facility
from workflow_svc.operations.facility_settings import seal_plaintext

pytestmark = pytest.mark.integration


async def _stored(db: Database) -> dict[str, tuple[str | None, str | None]]:
    async with db.read() as s:
        rows = (await s.execute(text("select name, handoff_secret, llm_api_key from facilities")
                                )).all()
    return {r.name: (r.handoff_secret, r.llm_api_key) for r in rows}


async def test_plaintext_is_sealed_in_place_and_rotation_reseals(db: Database) -> None:
    old_key = os.urandom(32)
    old = SecretBox(old_key)
    stranger = SecretBox(os.urandom(32)).seal("unknown", facility_context("west",
                                                                          "handoff_secret"))
    async with db.unit_of_work() as s:
        s.add(Facility(name="north", handoff_secret="north webhook", llm_api_key="sk-north"))
        s.add(Facility(name="south", handoff_secret=None, llm_api_key="sk-south"))
        s.add(Facility(name="west", handoff_secret=stranger))
    assert await seal_plaintext(db, old) == 3
    stored = await _stored(db)
    assert stored["west"] == (stranger, None)  # not openable here: left alone, not lost
    assert stored["south"][0] is None
    assert old.open(stored["north"][0], facility_context("north", "handoff_secret")) == \
        "north webhook"
    assert old.open(stored["south"][1], facility_context("south", "llm_api_key")) == "sk-south"
    assert "sk-" not in repr(stored) and "webhook" not in repr(stored)
    assert await seal_plaintext(db, old) == 0  # already sealed: nothing to do

    # rotation: the new key seals, the old one only opens
    new = SecretBox(os.urandom(32), previous=(old_key,))
    assert await seal_plaintext(db, new) == 3
    resealed = await _stored(db)
    for name, column, plain in (("north", "handoff_secret", "north webhook"),
                                ("north", "llm_api_key", "sk-north"),
                                ("south", "llm_api_key", "sk-south")):
        value = resealed[name][0 if column == "handoff_secret" else 1]
        assert value is not None and value.startswith(f"sealed:v1:{new.key_id}:")
        assert new.open(value, facility_context(name, column)) == plain
    assert resealed["west"] == (stranger, None)


async def test_the_dicomweb_pacs_credential_of_an_older_database_is_sealed(db: Database) -> None:
    async with db.unit_of_work() as s:
        s.add(Facility(name="east", pacs_dicomweb_url="https://pacs.example/dicom-web",
                       pacs_dicomweb_auth="Bearer east-token"))
    box = SecretBox(os.urandom(32))
    assert await seal_plaintext(db, box) == 1
    async with db.read() as s:
        stored = (await s.execute(text("select pacs_dicomweb_auth from facilities "
                                       "where name = 'east'"))).scalar_one()
    assert stored.startswith("sealed:v1:") and "east-token" not in stored
    assert box.open(stored, facility_context("east", "pacs_dicomweb_auth")) == "Bearer east-token"
